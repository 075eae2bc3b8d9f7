"""Ingest's gRPC streams without Kafka (a sink stands in): streams that cannot or do not send
audio are closed, so they cannot hold the server's stream slots."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from soundsentry.contracts import AudioChunk, ChunkAck, SampleFormat
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import TopicLayout
from soundsentry.services.ingest.server import IngestServer
from soundsentry.services.ingest.settings import IngestSettings
from soundsentry.v1 import soundsentry_pb2_grpc


class _Sink:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    async def send(self, topic: str, value: bytes, *, key: bytes) -> asyncio.Future[None]:
        self.values.append(value)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def _chunk(sequence: int) -> AudioChunk:
    return AudioChunk(
        sensor_id="site-1/mic-1",
        stream_id="boot-1",
        sequence=sequence,
        start_sample=sequence * 1600,
        sample_rate_hz=16_000,
        channels=1,
        sample_format=SampleFormat.SAMPLE_FORMAT_S16LE,
        pcm=b"\x01\x00" * 1600,
    )


async def _stream(
    port: int, chunks: list[AudioChunk], *, token: str | None, hold: asyncio.Event
) -> tuple[list[ChunkAck], grpc.StatusCode]:
    """Send ``chunks``, then keep the stream open (sending nothing) until ``hold`` is set."""

    async def requests() -> AsyncIterator[AudioChunk]:
        for chunk in chunks:
            yield chunk
        await hold.wait()

    metadata = (("authorization", f"Bearer {token}"),) if token else None
    acks: list[ChunkAck] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = soundsentry_pb2_grpc.IngestStub(channel).StreamAudio(requests(), metadata=metadata)
        try:
            async for ack in call:
                acks.append(ack)  # noqa: PERF401 - kept when the call then fails
        except grpc.aio.AioRpcError as error:
            return acks, error.code()
        return acks, grpc.StatusCode.OK


async def _tokened_stream(
    tmp_path: Path,
    registry: CollectorRegistry,
    sink: _Sink,
    chunks: list[AudioChunk],
    *,
    token: str | None,
    hold: asyncio.Event,
    **settings: float,
) -> tuple[list[ChunkAck], grpc.StatusCode]:
    """One stream to a server whose tokens cover ``site-1/*`` (token ``gateway-secret``)."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"site-1/*": "gateway-secret"}))
    server = IngestServer(
        IngestSettings(port=0, host="127.0.0.1", metrics_port=0, tokens_file=tokens, **settings),
        KafkaSettings(),
        TopicLayout(),
        registry=registry,
        sink=sink,
    )
    await server.start()
    try:
        return await _stream(server.port, chunks, token=token, hold=hold)
    finally:
        hold.set()
        await server.stop(grace_s=0.5)


@pytest.mark.parametrize(
    "case",
    [
        (None, 1, grpc.StatusCode.UNAUTHENTICATED, "missing_token", 0),
        ("wrong", 1, grpc.StatusCode.UNAUTHENTICATED, "auth_timeout", 1),  # one bad_token ack
        ("wrong", 0, grpc.StatusCode.UNAUTHENTICATED, "auth_timeout", 0),
        ("gateway-secret", 2, grpc.StatusCode.DEADLINE_EXCEEDED, "idle_timeout", 2),
    ],
)
def test_streams_that_send_no_usable_audio_are_closed(
    tmp_path: Path, case: tuple[str | None, int, grpc.StatusCode, str, int]
) -> None:
    token, chunks, code, reason, acked = case
    registry, sink = CollectorRegistry(), _Sink()
    run = _tokened_stream(
        tmp_path,
        registry,
        sink,
        [_chunk(n) for n in range(chunks)],
        token=token,
        hold=asyncio.Event(),
        auth_timeout_s=0.3,
        idle_timeout_s=0.3,
    )
    acks, status = asyncio.run(run)
    assert status == code
    assert len(acks) == acked
    assert len(sink.values) == (acked if token == "gateway-secret" else 0)
    closed = registry.get_sample_value(
        "soundsentry_ingest_streams_closed_total", {"reason": reason}
    )
    assert closed == 1
    assert registry.get_sample_value("soundsentry_ingest_streams") == 0


def test_a_malformed_message_ends_its_stream_with_invalid_argument() -> None:
    registry = CollectorRegistry()

    async def scenario() -> grpc.aio.AioRpcError:
        server = IngestServer(
            IngestSettings(port=0, host="127.0.0.1", metrics_port=0, allow_anonymous=True),
            KafkaSettings(),
            TopicLayout(),
            registry=registry,
            sink=_Sink(),
        )
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                call = channel.stream_stream(
                    "/soundsentry.v1.Ingest/StreamAudio",
                    request_serializer=lambda data: data,
                    response_deserializer=lambda data: data,
                )

                async def garbage() -> AsyncIterator[bytes]:
                    yield b"\xff\xff\xff\xff"

                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    async for _ in call(garbage()):
                        pass
                return caught.value
        finally:
            await server.stop(grace_s=0.5)

    error = asyncio.run(scenario())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("malformed_message: ")
    closed = registry.get_sample_value(
        "soundsentry_ingest_streams_closed_total", {"reason": "malformed_message"}
    )
    assert closed == 1


def test_anonymous_ingest_is_announced_loudly(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        IngestServer(
            IngestSettings(port=0, host="127.0.0.1", metrics_port=0, allow_anonymous=True),
            KafkaSettings(),
            TopicLayout(),
            registry=CollectorRegistry(),
            sink=_Sink(),
        )

    with caplog.at_level("WARNING"):
        asyncio.run(scenario())
    assert any("ANONYMOUS INGEST" in r.getMessage() for r in caplog.records)


def test_a_sensor_sending_faster_than_the_rate_is_held_back_not_refused(
    tmp_path: Path,
) -> None:
    registry, sink = CollectorRegistry(), _Sink()
    done = asyncio.Event()
    done.set()  # the stream ends after its chunks
    # 0.1 s chunks, a burst of 0.3 s and 50x real time: the rest waits 2 ms a chunk.
    run = _tokened_stream(
        tmp_path,
        registry,
        sink,
        [_chunk(n) for n in range(10)],
        token="gateway-secret",
        hold=done,
        max_audio_rate=50.0,
        audio_burst_s=0.3,
    )
    acks, status = asyncio.run(run)
    assert status == grpc.StatusCode.OK
    assert [ack.code for ack in acks] == [0] * 10  # every chunk published
    assert len(sink.values) == 10
    throttled = registry.get_sample_value("soundsentry_ingest_throttled_seconds_total")
    # At most 7 chunks beyond the burst, 2 ms each (less as the real clock refills the budget).
    assert throttled is not None
    assert 0.0 < throttled <= 7 * 0.1 / 50.0 + 1e-9
