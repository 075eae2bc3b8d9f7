"""gRPC ingest: sensors stream AudioChunks; each is checked, published to Kafka, and acknowledged
to the sensor only after Kafka acknowledged it (acks=all, idempotent producer).

Answers come back in the order the chunks were sent. At most ``max_in_flight`` chunks per stream
wait for Kafka; beyond that the server stops reading the stream, and gRPC flow control slows the
sensor down (backpressure). A bad chunk gets a ChunkAck with a non-zero code naming the problem;
the stream and every other sensor carry on.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import grpc
from aiokafka import AIOKafkaProducer
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from prometheus_client import CollectorRegistry, start_http_server

from soundsentry.audio.pcm import ChunkLimits, chunk_frames
from soundsentry.contracts import AudioChunk, ChunkAck, encode, sensor_key
from soundsentry.exceptions import ConfigurationError
from soundsentry.ingest.rules import (
    AudioRateLimiter,
    Code,
    SequenceTracker,
    TokenTable,
    Verdict,
    admit,
)
from soundsentry.runtime.settings import MAX_MESSAGE_BYTES, KafkaSettings, TopicSettings
from soundsentry.runtime.topics import AUDIO, TopicLayout
from soundsentry.services.ingest.metrics import IngestMetrics
from soundsentry.services.ingest.settings import IngestSettings
from soundsentry.v1 import soundsentry_pb2_grpc

__all__ = ["IngestServer", "IngestServicer", "main"]

logger = logging.getLogger(__name__)

SERVICE_NAME = "soundsentry.v1.Ingest"


@dataclass(slots=True)
class _Pending:
    chunk: AudioChunk
    delivery: Awaitable[Any]
    started: float


@dataclass(frozen=True, slots=True)
class _Close:
    """The server ends the stream: an unauthenticated or idle stream must not hold a slot."""

    code: grpc.StatusCode
    reason: str
    details: str


_Entry = ChunkAck | _Pending | _Close | None


def _bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


def _ack(chunk: AudioChunk, verdict: Verdict) -> ChunkAck:
    return ChunkAck(
        sensor_id=chunk.sensor_id,
        stream_id=chunk.stream_id,
        sequence=chunk.sequence,
        code=int(verdict.code),
        reason=verdict.reason,
        message=verdict.message,
    )


class ChunkSink(Protocol):
    """Where accepted chunks go: Kafka's producer, or the embedded pipeline of ``serve``.

    ``send`` may wait (backpressure) and returns the delivery to await.
    """

    async def send(self, topic: str, value: bytes, *, key: bytes) -> Awaitable[Any]: ...


class IngestServicer(soundsentry_pb2_grpc.IngestServicer):
    def __init__(
        self,
        *,
        producer: ChunkSink,
        topic: str,
        tokens: TokenTable | None,
        metrics: IngestMetrics,
        limits: ChunkLimits,
        max_in_flight: int,
        auth_timeout_s: float = 10.0,
        idle_timeout_s: float = 120.0,
        rate: AudioRateLimiter | None = None,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.tokens = tokens
        self.metrics = metrics
        self.limits = limits
        self.max_in_flight = max_in_flight
        self.auth_timeout_s = auth_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.rate = rate
        self.tracker = SequenceTracker()

    async def StreamAudio(  # noqa: N802 - the gRPC method name
        self,
        request_iterator: AsyncIterator[AudioChunk],
        context: grpc.aio.ServicerContext[AudioChunk, ChunkAck],
    ) -> AsyncIterator[ChunkAck]:
        token = _bearer(context.invocation_metadata())
        if self.tokens is not None and not token:
            # Nothing this stream sends could be accepted: free its slot at once.
            await self._close(
                context,
                _Close(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "missing_token",
                    "no bearer token: send metadata 'authorization: Bearer <token>'",
                ),
            )
        queue: asyncio.Queue[_Entry] = asyncio.Queue(maxsize=self.max_in_flight)
        reader = asyncio.create_task(self._read(request_iterator, token, queue))
        self.metrics.streams.inc()
        try:
            while (entry := await queue.get()) is not None:
                if isinstance(entry, _Close):
                    await self._close(context, entry)
                yield entry if isinstance(entry, ChunkAck) else await self._settle(entry)
            await reader  # re-raises what ended the reader, if anything did
        finally:
            reader.cancel()
            self.metrics.streams.dec()

    async def _close(
        self, context: grpc.aio.ServicerContext[AudioChunk, ChunkAck], close: _Close
    ) -> NoReturn:
        self.metrics.streams_closed.labels(close.reason).inc()
        logger.info("closing a stream from %s: %s", context.peer(), close.reason)
        await context.abort(close.code, f"{close.reason}: {close.details}")
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def _read(
        self, chunks: AsyncIterator[AudioChunk], token: str | None, queue: asyncio.Queue[_Entry]
    ) -> None:
        loop = asyncio.get_running_loop()
        # Until a chunk authenticates, the stream must do so by this time.
        auth_deadline = None if self.tokens is None else loop.time() + self.auth_timeout_s
        iterator = aiter(chunks)
        try:
            while True:
                wait = self.idle_timeout_s
                if auth_deadline is not None:
                    wait = min(wait, auth_deadline - loop.time())
                try:
                    async with asyncio.timeout(max(wait, 0.0)):
                        chunk = await anext(iterator)
                except StopAsyncIteration:
                    break
                except DecodeError as exc:  # bytes that are no AudioChunk: the stream is unusable
                    await queue.put(
                        _Close(grpc.StatusCode.INVALID_ARGUMENT, "malformed_message", str(exc))
                    )
                    return
                except TimeoutError:
                    await queue.put(self._timed_out(authenticated=auth_deadline is None))
                    return
                verdict = admit(
                    chunk, token=token, tokens=self.tokens, tracker=self.tracker, limits=self.limits
                )
                if auth_deadline is not None and verdict.code != Code.UNAUTHENTICATED:
                    auth_deadline = None  # its token is good for a sensor
                if not verdict.ok:
                    self.metrics.chunks.labels("rejected").inc()
                    self.metrics.rejects.labels(verdict.reason).inc()
                    logger.info(
                        "rejected chunk %s/%s#%d: %s: %s",
                        chunk.sensor_id,
                        chunk.stream_id,
                        chunk.sequence,
                        verdict.reason,
                        verdict.message,
                    )
                    await queue.put(_ack(chunk, verdict))
                    continue
                if self.rate is not None:
                    audio_s = chunk_frames(chunk) / chunk.sample_rate_hz
                    wait = self.rate.delay(chunk.sensor_id, audio_s)
                    if wait:  # too fast: hold the stream back (flow control), lose nothing
                        self.metrics.throttled_seconds.inc(wait)
                        await asyncio.sleep(wait)
                started = time.perf_counter()
                # send() waits while the producer's buffer is full, then returns the delivery.
                delivery = await self.producer.send(
                    self.topic, encode(chunk), key=sensor_key(chunk.sensor_id)
                )
                if self.tracker.accepted(chunk):
                    self.metrics.gaps.inc()
                self.metrics.in_flight.inc()
                await queue.put(_Pending(chunk, delivery, started))
        finally:
            await queue.put(None)

    def _timed_out(self, *, authenticated: bool) -> _Close:
        if authenticated:
            return _Close(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "idle_timeout",
                f"no chunk for {self.idle_timeout_s:g} s; reconnect to send more",
            )
        return _Close(
            grpc.StatusCode.UNAUTHENTICATED,
            "auth_timeout",
            f"no chunk authenticated within {self.auth_timeout_s:g} s",
        )

    async def _settle(self, pending: _Pending) -> ChunkAck:
        chunk = pending.chunk
        try:
            await pending.delivery
        except Exception as exc:
            # Not stored: the sensor may send this sequence again.
            self.tracker.forget(chunk)
            self.metrics.chunks.labels("failed").inc()
            logger.warning("publishing %s#%d failed: %r", chunk.sensor_id, chunk.sequence, exc)
            return _ack(
                chunk,
                Verdict(Code.UNAVAILABLE, "kafka_unavailable", f"Kafka did not store it: {exc}"),
            )
        finally:
            self.metrics.in_flight.dec()
        self.metrics.publish_seconds.observe(time.perf_counter() - pending.started)
        self.metrics.chunks.labels("published").inc()
        self.metrics.audio_bytes.inc(len(chunk.pcm))
        return _ack(chunk, Verdict(Code.OK))


class IngestServer:
    """The gRPC server, its Kafka producer and its health service, started and stopped together."""

    def __init__(
        self,
        settings: IngestSettings,
        kafka: KafkaSettings,
        topics: TopicLayout,
        *,
        registry: CollectorRegistry,
        limits: ChunkLimits | None = None,
        sink: ChunkSink | None = None,
    ) -> None:
        """``sink`` replaces the Kafka producer (``soundsentry serve``)."""
        self.settings = settings
        self.metrics = IngestMetrics.create(registry)
        tokens = TokenTable.from_file(settings.tokens_file) if settings.tokens_file else None
        if tokens is None:
            logger.warning(
                "ANONYMOUS INGEST: any client that reaches %s:%d may stream audio as any sensor "
                "(SOUNDSENTRY_INGEST_ALLOW_ANONYMOUS=true); set SOUNDSENTRY_INGEST_TOKENS_FILE "
                "for anything but development on loopback",
                settings.host,
                settings.port,
            )
        self._kafka: AIOKafkaProducer | None = None
        if sink is None:
            sink = self._kafka = AIOKafkaProducer(
                **kafka.producer_kwargs(linger_ms=settings.linger_ms)
            )
        self.producer: ChunkSink = sink
        self.servicer = IngestServicer(
            producer=self.producer,
            topic=topics.name(AUDIO),
            tokens=tokens,
            metrics=self.metrics,
            limits=limits or ChunkLimits(),
            max_in_flight=settings.max_in_flight,
            auth_timeout_s=settings.auth_timeout_s,
            idle_timeout_s=settings.idle_timeout_s,
            rate=(
                AudioRateLimiter(
                    settings.max_audio_rate, settings.audio_burst_s, clock=time.monotonic
                )
                if settings.max_audio_rate
                else None
            ),
        )
        self.health = health_aio.HealthServicer()
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 2 * MAX_MESSAGE_BYTES),
                # Without it a second ingest on a taken port binds too (SO_REUSEPORT) and the
                # kernel splits the sensors between them: fail at start instead.
                ("grpc.so_reuseport", 0),
            ],
            # Server-wide (HTTP/2's max_concurrent_streams would only bound each connection);
            # a stream beyond it is refused with RESOURCE_EXHAUSTED and the sensor retries.
            maximum_concurrent_rpcs=settings.max_streams,
        )
        soundsentry_pb2_grpc.add_IngestServicer_to_server(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        address = f"{settings.host}:{settings.port}"
        credentials = self._credentials()
        try:
            self.port = (
                self.server.add_secure_port(address, credentials)
                if credentials
                else self.server.add_insecure_port(address)
            )
        except RuntimeError as exc:  # grpc's "Failed to bind to address"
            raise ConfigurationError(
                f"ingest cannot listen on {address} (is the port taken?): {exc}"
            ) from exc

    def _credentials(self) -> grpc.ServerCredentials | None:
        s = self.settings
        if s.tls_cert_file is None or s.tls_key_file is None:
            return None
        client_ca = s.tls_client_ca_file.read_bytes() if s.tls_client_ca_file else None
        return grpc.ssl_server_credentials(
            [(s.tls_key_file.read_bytes(), s.tls_cert_file.read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )

    async def start(self) -> None:
        if self._kafka is not None:
            await self._kafka.start()
        await self.server.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        logger.info("ingest serving gRPC on port %d", self.port)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop taking streams, let open ones finish for ``grace_s``, then flush the producer."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        if self._kafka is not None:
            await self._kafka.stop()


async def _serve(settings: IngestSettings, registry: CollectorRegistry) -> None:
    # Built inside the running loop: aiokafka's producer binds to the loop it is created in.
    server = IngestServer(
        settings, KafkaSettings(), TopicLayout.from_settings(TopicSettings()), registry=registry
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()


def main() -> int:
    """``soundsentry ingest``: settings from the environment, serve until SIGTERM or Ctrl-C."""
    settings = IngestSettings()
    registry = CollectorRegistry()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, settings.metrics_host, registry=registry)
    asyncio.run(_serve(settings, registry))
    return 0
