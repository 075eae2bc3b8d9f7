"""The gRPC ingest service against the real broker: acks after Kafka, bad chunks named, and
nothing lost for anyone else."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import soundfile
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from soundsentry.contracts import AudioChunk, SampleFormat, decode
from soundsentry.exceptions import ConfigurationError
from soundsentry.ingest.client import file_chunks, push
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import AUDIO, TopicLayout
from soundsentry.services.ingest.server import SERVICE_NAME, IngestServer
from soundsentry.services.ingest.settings import IngestSettings
from soundsentry.v1 import soundsentry_pb2_grpc
from tests.audio_fixtures import recording
from tests.integration.topic_helpers import at_least, consume_until

TOKENS = {"site-1/*": "gateway-token", "lobby": "lobby-token"}


@pytest.fixture
async def ingest(
    kafka_settings: KafkaSettings, topic_layout: TopicLayout, tmp_path: Path
) -> AsyncIterator[tuple[IngestServer, CollectorRegistry]]:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps(TOKENS))
    settings = IngestSettings(host="127.0.0.1", port=0, tokens_file=tokens, metrics_port=0)
    registry = CollectorRegistry()
    server = IngestServer(settings, kafka_settings, topic_layout, registry=registry)
    await server.start()
    try:
        yield server, registry
    finally:
        await server.stop(grace_s=1.0)


async def consume_chunks(
    settings: KafkaSettings, topic: str, count: int, group: str
) -> list[AudioChunk]:
    # Drain a second more: anything beyond the expected records would be a duplicate or leak.
    records = await consume_until(settings, topic, group, at_least(count), drain_s=1.0)
    chunks = [decode(AudioChunk, r.value) for r in records]
    assert all(r.key == c.sensor_id.encode() for r, c in zip(records, chunks, strict=True))
    return chunks


def write_wav(path: Path, name: str) -> np.ndarray:
    samples, rate = recording(name)
    soundfile.write(path, samples, rate, subtype="PCM_16")
    return samples


async def test_two_sensors_stream_files_and_kafka_has_every_sample_in_order(
    ingest: tuple[IngestServer, CollectorRegistry],
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
) -> None:
    server, registry = ingest
    target = f"127.0.0.1:{server.port}"
    files = {"site-1/mic-1": "siren", "lobby": "dog_bark"}
    tokens = {"site-1/mic-1": "gateway-token", "lobby": "lobby-token"}
    samples = {s: write_wav(tmp_path / f"{n}.wav", n) for s, n in files.items()}
    results = await asyncio.gather(
        *(
            push(
                target,
                file_chunks(tmp_path / f"{n}.wav", sensor_id=s, chunk_ms=100),
                token=tokens[s],
            )
            for s, n in files.items()
        )
    )
    assert all(r.ok and r.sent == 40 for r in results), results
    chunks = await consume_chunks(kafka_settings, topic_layout.name(AUDIO), 80, consumer_group)
    assert len(chunks) == 80
    for sensor, expected in samples.items():
        mine = [c for c in chunks if c.sensor_id == sensor]
        assert [c.sequence for c in mine] == list(range(40))
        assert [c.start_sample for c in mine] == [1600 * i for i in range(40)]
        pcm = np.frombuffer(b"".join(c.pcm for c in mine), dtype="<i2")
        np.testing.assert_array_equal(pcm, expected)
    assert (
        registry.get_sample_value("soundsentry_ingest_chunks_total", {"result": "published"}) == 80
    )
    assert registry.get_sample_value("soundsentry_ingest_publish_seconds_count") == 80
    assert registry.get_sample_value("soundsentry_ingest_audio_bytes_total") == 2 * 64000 * 2


def _good(sensor: str, sequence: int) -> AudioChunk:
    return AudioChunk(
        sensor_id=sensor,
        stream_id="s1",
        sequence=sequence,
        start_sample=1600 * sequence,
        sample_rate_hz=16_000,
        channels=1,
        sample_format=SampleFormat.SAMPLE_FORMAT_S16LE,
        pcm=np.full(1600, sequence, dtype="<i2").tobytes(),
    )


def _bad(sequence: int, **changes: Any) -> AudioChunk:
    chunk = _good("site-1/mic-2", sequence)
    for name, value in changes.items():
        setattr(chunk, name, value)
    return chunk


async def test_bad_chunks_get_named_errors_and_cost_nothing_else(
    ingest: tuple[IngestServer, CollectorRegistry],
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
) -> None:
    server, registry = ingest
    target = f"127.0.0.1:{server.port}"
    nan = np.array([0.0, np.nan] * 800, dtype="<f4").tobytes()
    stream: list[tuple[AudioChunk, str]] = [
        (_good("site-1/mic-2", 0), ""),
        (_bad(1, sample_format=SampleFormat.SAMPLE_FORMAT_F32LE, pcm=nan), "non_finite_samples"),
        (_good("site-1/mic-2", 1), ""),
        (_bad(2, pcm=b"\x00" * 3201), "odd_byte_count"),
        (_bad(2, sample_rate_hz=7), "bad_sample_rate"),
        (_bad(2, sample_rate_hz=10_000_000), "bad_sample_rate"),
        (_bad(2, pcm=b"\x00" * 1_000_000), "oversized_chunk"),
        (_bad(2, sample_format=SampleFormat.SAMPLE_FORMAT_UNSPECIFIED), "bad_sample_format"),
        (_bad(2, sensor_id="elsewhere/mic-1"), "bad_token"),  # unknown: told no more
        (_good("site-1/mic-2", 2), ""),
        (_good("site-1/mic-2", 2), "stale_sequence"),  # repeated
        (_good("site-1/mic-2", 1), "stale_sequence"),  # out of order
        (_good("site-1/mic-2", 3), ""),
    ]
    wrong_token = [_good("lobby", n) for n in range(3)]
    other = [_good("site-1/mic-3", n) for n in range(20)]
    results = await asyncio.gather(
        push(target, [c for c, _ in stream], token="gateway-token"),
        push(target, wrong_token, token="gateway-token"),
        push(target, other, token="gateway-token"),
    )
    mixed, wrong, clean = results
    expected_rejects = [r for _, r in stream if r]
    assert mixed.published == 4
    assert sorted(mixed.rejected.elements()) == sorted(expected_rejects)
    assert all("#" in m and ": " in m for m in mixed.messages)
    assert wrong.published == 0
    assert dict(wrong.rejected) == {"bad_token": 3}
    assert clean.ok
    assert clean.published == 20

    chunks = await consume_chunks(kafka_settings, topic_layout.name(AUDIO), 24, consumer_group)
    by_sensor: dict[str, list[int]] = {}
    for chunk in chunks:
        by_sensor.setdefault(chunk.sensor_id, []).append(chunk.sequence)
    assert by_sensor == {"site-1/mic-2": [0, 1, 2, 3], "site-1/mic-3": list(range(20))}
    for reason in set(expected_rejects) | {"bad_token"}:
        count = expected_rejects.count(reason) + (3 if reason == "bad_token" else 0)
        assert (
            registry.get_sample_value("soundsentry_ingest_rejects_total", {"reason": reason})
            == count
        ), reason


async def test_rejection_acks_come_back_in_order_with_grpc_codes(
    ingest: tuple[IngestServer, CollectorRegistry],
) -> None:
    server, _ = ingest
    chunks = [_good("site-1/mic-4", 0), _bad(1, pcm=b"\x00"), _good("site-1/mic-4", 1)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = soundsentry_pb2_grpc.IngestStub(channel)
        call = stub.StreamAudio(iter(chunks), metadata=(("authorization", "Bearer gateway-token"),))
        acks = [ack async for ack in call]
        assert await call.code() == grpc.StatusCode.OK  # a bad chunk never ends the stream
    assert [(a.sensor_id, a.sequence, a.code, a.reason) for a in acks] == [
        ("site-1/mic-4", 0, 0, ""),
        ("site-1/mic-2", 1, 3, "odd_byte_count"),
        ("site-1/mic-4", 1, 0, ""),
    ]
    assert acks[1].message.startswith("pcm is 1 bytes")


async def test_health_service_reports_serving(
    ingest: tuple[IngestServer, CollectorRegistry],
) -> None:
    server, _ = ingest
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_soundsentry_push_command_streams_a_file(
    ingest: tuple[IngestServer, CollectorRegistry],
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
) -> None:
    server, _ = ingest
    expected = write_wav(tmp_path / "glass.wav", "glass")
    command = [
        sys.executable, "-m", "soundsentry.cli", "push", str(tmp_path / "glass.wav"),
        "--sensor", "lobby", "--target", f"127.0.0.1:{server.port}",
        "--token", "lobby-token", "--chunk-ms", "250", "--stream-id", "cli-test",
    ]  # fmt: skip
    done = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await done.communicate()
    assert done.returncode == 0, err.decode()
    assert "stream cli-test: 4/4 chunks published" in out.decode()
    chunks = await consume_chunks(kafka_settings, topic_layout.name(AUDIO), 4, consumer_group)
    assert {c.stream_id for c in chunks} == {"cli-test"}
    np.testing.assert_array_equal(
        np.frombuffer(b"".join(c.pcm for c in chunks), dtype="<i2"), expected
    )
    # A wrong token: the command says why and fails. (The server runs on this event loop, so
    # the command must run without blocking it.)
    wrong = ["wrong" if arg == "lobby-token" else arg for arg in command]
    failed = await asyncio.create_subprocess_exec(
        *wrong, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await failed.communicate()
    assert failed.returncode == 1
    assert "rejected #0: bad_token" in err.decode()
    assert "0/4 chunks published in" in out.decode()
    assert out.decode().rstrip().endswith("rejected: bad_token=4")


def _tls_pair(tmp_path: Path) -> tuple[Path, Path]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return key, cert


async def test_tls_when_configured(
    kafka_settings: KafkaSettings, topic_layout: TopicLayout, tmp_path: Path
) -> None:
    key, cert = _tls_pair(tmp_path)
    settings = IngestSettings(
        host="127.0.0.1",
        port=0,
        allow_anonymous=True,
        tls_cert_file=cert,
        tls_key_file=key,
        metrics_port=0,
    )
    server = IngestServer(settings, kafka_settings, topic_layout, registry=CollectorRegistry())
    await server.start()
    try:
        target = f"localhost:{server.port}"
        secure = await push(target, [_good("tls-mic", 0)], tls_ca=cert)
        assert secure.ok
        assert secure.published == 1
        # Plaintext is refused: the handshake never completes, and push says so.
        with pytest.raises(ConfigurationError, match="cannot connect to ingest"):
            await push(target, [_good("tls-mic", 1)], timeout_s=5)
    finally:
        await server.stop(grace_s=1.0)


def test_settings_refuse_an_open_door_by_accident(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOUNDSENTRY_INGEST_TOKENS_FILE", raising=False)
    with pytest.raises(ValidationError, match="SOUNDSENTRY_INGEST_TOKENS_FILE"):
        IngestSettings()
    monkeypatch.setenv("SOUNDSENTRY_INGEST_ALLOW_ANONYMOUS", "true")
    assert IngestSettings().allow_anonymous


async def test_streams_beyond_the_limit_are_refused_and_the_open_one_carries_on(
    kafka_settings: KafkaSettings, topic_layout: TopicLayout
) -> None:
    settings = IngestSettings(
        host="127.0.0.1", port=0, allow_anonymous=True, max_streams=1, metrics_port=0
    )
    server = IngestServer(settings, kafka_settings, topic_layout, registry=CollectorRegistry())
    await server.start()
    release = asyncio.Event()

    async def slow_sensor() -> AsyncIterator[AudioChunk]:
        yield _good("held-mic", 0)
        await release.wait()
        yield _good("held-mic", 1)

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = soundsentry_pb2_grpc.IngestStub(channel)
            held = stub.StreamAudio(slow_sensor())
            first = await held.read()
            assert first.code == 0
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await push(f"127.0.0.1:{server.port}", [_good("second-mic", 0)], timeout_s=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            release.set()
            second = await held.read()
            assert (second.sequence, second.code) == (1, 0)
            assert await held.read() is grpc.aio.EOF
    finally:
        await server.stop(grace_s=1.0)
