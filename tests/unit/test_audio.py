from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr
from google.protobuf.timestamp_pb2 import Timestamp

from soundsentry.audio.pcm import (
    ChunkError,
    ChunkLimits,
    StreamResampler,
    chunk_frames,
    decode_pcm,
    file_blocks,
    load_audio,
    s16_chunks,
    validate_chunk,
)
from soundsentry.contracts import AudioChunk, SampleFormat
from soundsentry.exceptions import ConfigurationError

S16 = SampleFormat.SAMPLE_FORMAT_S16LE
F32 = SampleFormat.SAMPLE_FORMAT_F32LE


def _chunk(**overrides: object) -> AudioChunk:
    fields: dict[str, object] = {
        "sensor_id": "mic-1",
        "stream_id": "s",
        "sample_rate_hz": 16_000,
        "channels": 1,
        "sample_format": S16,
        "pcm": b"\x00\x01" * 1600,
    }
    fields.update(overrides)
    return AudioChunk(**fields)  # type: ignore[arg-type]


def test_s16_decodes_to_full_scale_floats() -> None:
    pcm = np.array([0, 16384, -32768, 32767], dtype="<i2").tobytes()
    samples = decode_pcm(pcm, sample_format=S16)
    assert samples.dtype == np.float32
    np.testing.assert_array_equal(samples, [0.0, 0.5, -1.0, 32767 / 32768])


def test_f32_decodes_and_interleaved_channels_are_averaged() -> None:
    stereo = np.array([[0.5, -0.5], [1.0, 0.0], [0.25, 0.25]], dtype="<f4")
    samples = decode_pcm(stereo.tobytes(), sample_format=F32, channels=2)
    np.testing.assert_array_equal(samples, [0.0, 0.5, 0.25])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_f32_samples_are_rejected(bad: float) -> None:
    pcm = np.array([0.1, bad, 0.2], dtype="<f4").tobytes()
    with pytest.raises(ChunkError, match="1 of 3 samples are NaN or infinite") as caught:
        decode_pcm(pcm, sample_format=F32)
    assert caught.value.reason == "non_finite_samples"


def test_bytes_that_are_not_whole_frames_are_rejected() -> None:
    with pytest.raises(ChunkError, match="not whole 2-channel frames") as caught:
        decode_pcm(b"\x00" * 6, sample_format=S16, channels=2)
    assert caught.value.reason == "odd_byte_count"


@pytest.mark.parametrize(
    ("overrides", "reason", "words"),
    [
        ({"sensor_id": ""}, "missing_sensor_id", "sensor_id is empty"),
        ({"sensor_id": "x" * 300}, "bad_sensor_id", "at most 256 bytes"),
        ({"sensor_id": "mic\n1"}, "bad_sensor_id", "printable"),
        ({"stream_id": ""}, "missing_stream_id", "stream_id is empty"),
        (
            {"captured_at": Timestamp(seconds=10**12)},
            "bad_captured_at",
            "captured_at .* is outside 1970-01-01..2200-01-01",
        ),
        ({"captured_at": Timestamp(seconds=-1)}, "bad_captured_at", "outside"),
        ({"sample_rate_hz": 0}, "bad_sample_rate", "sample_rate_hz=0 is outside"),
        ({"sample_rate_hz": 10_000_000}, "bad_sample_rate", "outside the accepted"),
        ({"channels": 64}, "bad_channels", "channels=64 exceeds"),
        ({"sample_format": 0}, "bad_sample_format", "is not SAMPLE_FORMAT_S16LE"),
        ({"pcm": b""}, "empty_pcm", "pcm is empty"),
        ({"pcm": b"\x00" * 3}, "odd_byte_count", "not a whole number of 1-channel s16le"),
        ({"pcm": b"\x00" * 1_000_000}, "oversized_chunk", "more than the maximum of 900000"),
        (
            {"pcm": b"\x00" * 400_000, "sample_rate_hz": 8_000},
            "oversized_chunk",
            "25.00 s of audio",
        ),
    ],
)
def test_invalid_chunks_are_named(overrides: dict[str, object], reason: str, words: str) -> None:
    with pytest.raises(ChunkError, match=words) as caught:
        validate_chunk(_chunk(**overrides))
    assert caught.value.reason == reason


def test_a_valid_chunk_passes_and_limits_are_configurable() -> None:
    validate_chunk(_chunk())
    with pytest.raises(ChunkError) as caught:
        validate_chunk(_chunk(), ChunkLimits(min_sample_rate_hz=44_100))
    assert caught.value.reason == "bad_sample_rate"


@pytest.mark.parametrize(
    ("suffix", "subtype", "tolerance"),
    [
        ("wav", "PCM_16", 1e-4),
        ("flac", "PCM_16", 1e-4),
        ("ogg", "VORBIS", 0.05),
        ("mp3", None, 0.05),
    ],
)
def test_audio_files_of_each_format_load_as_mono_float32(
    tmp_path: Path, suffix: str, subtype: str | None, tolerance: float
) -> None:
    rate = 16_000
    t = np.arange(rate) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([tone, tone], axis=1)
    path = tmp_path / f"tone.{suffix}"
    soundfile.write(path, stereo, rate, subtype=subtype)
    samples, loaded_rate = load_audio(path)
    assert loaded_rate == rate
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    # Lossy codecs add padding and delay; compare the level and the pitch, not the samples.
    assert abs(float(np.sqrt(np.mean(samples**2))) - 0.5 / np.sqrt(2)) < tolerance
    spectrum = np.abs(np.fft.rfft(samples[: rate // 2]))
    assert abs(np.argmax(spectrum) * 2 - 440) <= 2


def test_missing_or_non_audio_files_raise_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read audio file"):
        load_audio(tmp_path / "nope.wav")
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    with pytest.raises(ConfigurationError, match=r"notes\.wav"):
        load_audio(text)


def test_streaming_resampler_output_does_not_depend_on_chunking() -> None:
    rng = np.random.default_rng(7)
    signal = (rng.standard_normal(44_100) * 0.1).astype(np.float32)
    whole = StreamResampler(in_rate_hz=44_100, out_rate_hz=16_000).process(signal, last=True)
    stream = StreamResampler(in_rate_hz=44_100, out_rate_hz=16_000)
    cuts = [0, 1, 100, 4410, 4411, 30_000, signal.size]
    parts = [stream.process(signal[a:b]) for a, b in itertools.pairwise(cuts)]
    parts.append(stream.process(np.empty(0, dtype=np.float32), last=True))
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal(whole, soxr.resample(signal, 44_100, 16_000))


def test_s16_chunks_number_frames_and_times_like_a_microphone() -> None:
    stereo = np.arange(40, dtype=np.int16).reshape(20, 2)
    blocks = [stereo[:8], stereo[8:8], stereo[8:]]  # an empty block is skipped
    chunks = list(
        s16_chunks(blocks, sensor_id="m", stream_id="s", sample_rate_hz=8000, start_time_ns=10**9)
    )
    assert [(c.sequence, c.start_sample, c.channels) for c in chunks] == [(0, 0, 2), (1, 8, 2)]
    assert chunks[1].captured_at.ToNanoseconds() == 10**9 + 8 * 1_000_000_000 // 8000
    pcm = b"".join(c.pcm for c in chunks)
    np.testing.assert_array_equal(np.frombuffer(pcm, dtype="<i2"), stereo.ravel())
    untimed = next(s16_chunks([stereo], sensor_id="m", stream_id="s", sample_rate_hz=8000))
    assert not untimed.HasField("captured_at")


def test_file_blocks_stream_a_file_lazily(tmp_path: Path) -> None:
    samples = (np.arange(16_000) % 200 - 100).astype(np.int16)
    soundfile.write(tmp_path / "a.wav", samples, 16_000, subtype="PCM_16")
    rate, blocks = file_blocks(tmp_path / "a.wav", block_s=0.3)
    parts = list(blocks)
    assert rate == 16_000
    assert [p.shape for p in parts] == [(4800, 1)] * 3 + [(1600, 1)]
    np.testing.assert_array_equal(np.concatenate(parts)[:, 0], samples)
    with pytest.raises(ConfigurationError, match="cannot read audio file"):
        file_blocks(tmp_path / "missing.wav", block_s=0.1)


@pytest.mark.parametrize(
    ("overrides", "frames"),
    [
        ({}, 1600),  # the fixture's s16le mono chunk
        ({"channels": 2}, 800),
        ({"sample_format": SampleFormat.SAMPLE_FORMAT_F32LE, "channels": 2}, 400),
    ],
)
def test_a_chunks_frames_count_per_channel(overrides: dict[str, object], frames: int) -> None:
    chunk = _chunk(**overrides)
    validate_chunk(chunk)
    assert chunk_frames(chunk) == frames
