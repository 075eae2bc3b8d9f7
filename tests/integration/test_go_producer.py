"""The Go example sensor (examples/go-producer) produces AudioChunks a Python consumer reads.

It proves the contract works across languages: the Go program reads a WAV file and produces to
Kafka directly with its own generated protobuf code; here the records are read back with
aiokafka and checked against the WAV's samples.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundsentry.contracts import AudioChunk, SampleFormat, decode, sensor_key
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import AUDIO, TopicLayout
from tests.integration.topic_helpers import at_least, consume_until

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "go-producer"
SAMPLE_RATE = 16_000
CHUNK_MS = 100

# Checked at collection, so a machine without Go does not start a broker for nothing.
pytestmark = pytest.mark.skipif(
    shutil.which("go") is None,
    reason="the Go toolchain (`go`) is not on PATH; it is needed to build examples/go-producer",
)


@pytest.fixture(scope="module")
def go_producer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example built with ``go build`` (the first build downloads modules)."""
    go = shutil.which("go")
    assert go is not None  # see pytestmark
    binary = tmp_path_factory.mktemp("go-producer") / "producer"
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-buildvcs=false")  # the example sits inside this repo's checkout
    result = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=EXAMPLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert result.returncode == 0, f"go build failed:\n{result.stdout}\n{result.stderr}"
    return binary


def write_test_wav(
    path: Path, *, seconds: float, channels: int, wav_format: str = "WAV"
) -> np.ndarray:
    """A tone plus noise as int16 PCM; returns the samples, shape (frames, channels)."""
    rng = np.random.default_rng(7)
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    columns = [
        0.4 * np.sin(2 * np.pi * (440.0 * (c + 1)) * t) + 0.05 * rng.standard_normal(t.size)
        for c in range(channels)
    ]
    samples = np.round(np.clip(np.stack(columns, axis=1), -1.0, 1.0) * 32767).astype(np.int16)
    sf.write(path, samples, SAMPLE_RATE, format=wav_format, subtype="PCM_16")
    read_back, _ = sf.read(path, dtype="int16", always_2d=True)
    np.testing.assert_array_equal(read_back, samples)
    return samples


@pytest.fixture(
    # The stereo file uses the WAVE_FORMAT_EXTENSIBLE header, the mono one the plain PCM one.
    params=[(1, 2.3, "WAV"), (2, 1.05, "WAVEX")],
    ids=["mono", "stereo-wavex"],
)
def wav_file(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 16 kHz WAV file and its int16 samples, shape (frames, channels)."""
    channels, seconds, wav_format = request.param
    path = tmp_path / f"{channels}ch.wav"
    samples = write_test_wav(path, seconds=seconds, channels=channels, wav_format=wav_format)
    return path, samples


async def consume_chunks(
    kafka_settings: KafkaSettings, topic: str, group: str, expected: int
) -> list[tuple[bytes | None, AudioChunk]]:
    # Nothing beyond the expected chunks (e.g. duplicates from retries) may arrive.
    records = await consume_until(kafka_settings, topic, group, at_least(expected), drain_s=0.5)
    return [(r.key, decode(AudioChunk, r.value)) for r in records]


async def test_go_producer_chunks_arrive_as_audio_chunks_holding_the_wav_samples(
    go_producer: Path,
    wav_file: tuple[Path, np.ndarray],
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
) -> None:
    wav, samples = wav_file
    channels = samples.shape[1]
    frames_per_chunk = SAMPLE_RATE * CHUNK_MS // 1000
    expected_chunks = -(-len(samples) // frames_per_chunk)  # the last one is shorter
    sensor = f"site-1/mic-{uuid.uuid4().hex[:6]}"
    topic = topic_layout.name(AUDIO)

    process = await asyncio.create_subprocess_exec(
        str(go_producer),
        f"--bootstrap={kafka_settings.bootstrap_servers}",
        f"--topic={topic}",
        f"--sensor={sensor}",
        f"--chunk-ms={CHUNK_MS}",
        str(wav),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, f"producer failed:\n{stdout.decode()}\n{stderr.decode()}"
    summary = stdout.decode()
    assert f"produced {expected_chunks} chunks, {len(samples)} frames" in summary, summary

    received = await consume_chunks(kafka_settings, topic, consumer_group, expected_chunks)

    assert len(received) == expected_chunks
    assert all(key == sensor_key(sensor) for key, _ in received)
    chunks = [chunk for _, chunk in received]  # one key, so one partition, in order
    assert [c.sequence for c in chunks] == list(range(expected_chunks))
    assert len({c.stream_id for c in chunks}) == 1
    uuid.UUID(chunks[0].stream_id)  # a UUID, new each run
    start_sample = 0
    for chunk in chunks:
        assert chunk.sensor_id == sensor
        assert chunk.sample_rate_hz == SAMPLE_RATE
        assert chunk.channels == channels
        assert chunk.sample_format == SampleFormat.SAMPLE_FORMAT_S16LE
        assert chunk.start_sample == start_sample
        frames, rest = divmod(len(chunk.pcm), 2 * channels)
        assert rest == 0
        assert frames == min(frames_per_chunk, len(samples) - start_sample)
        start_sample += frames
    assert start_sample == len(samples)

    # captured_at = stream start + start_sample / rate (to the nanosecond).
    origin = chunks[0].captured_at.ToNanoseconds()
    for chunk in chunks:
        offset_ns = chunk.start_sample * 1_000_000_000 // SAMPLE_RATE
        assert chunk.captured_at.ToNanoseconds() - origin == offset_ns

    pcm = np.frombuffer(b"".join(c.pcm for c in chunks), dtype="<i2")
    np.testing.assert_array_equal(pcm, samples.reshape(-1))  # interleaved frames


async def test_go_producer_exits_non_zero_when_the_topic_does_not_exist(
    go_producer: Path, tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    wav = tmp_path / "short.wav"
    write_test_wav(wav, seconds=0.3, channels=1)
    process = await asyncio.create_subprocess_exec(
        str(go_producer),
        f"--bootstrap={kafka_settings.bootstrap_servers}",
        f"--topic=no-such-topic-{uuid.uuid4().hex[:10]}",
        "--sensor=site-1/mic-missing",
        str(wav),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        stdout, stderr = await process.communicate()
    assert process.returncode == 1, f"expected a failure:\n{stdout.decode()}\n{stderr.decode()}"
    assert b"not acknowledged" in stderr, stderr.decode()
    assert not stdout  # no success summary
