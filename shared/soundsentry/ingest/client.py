"""The sensor side of ingest: stream audio over gRPC as a microphone would.

Used by ``soundsentry push`` (and the load generator): a file becomes s16le AudioChunks with
sequence numbers, sample indices and capture times; the client sends them on one bidirectional
stream and counts the acknowledgements.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from soundsentry.audio.pcm import file_blocks, s16_chunks
from soundsentry.contracts import AudioChunk, ChunkAck
from soundsentry.exceptions import ConfigurationError
from soundsentry.v1 import soundsentry_pb2_grpc

__all__ = ["PushResult", "file_chunks", "open_channel", "push", "reconnects_for"]

_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]


@dataclass(slots=True)
class PushResult:
    stream_id: str = ""
    sent: int = 0
    published: int = 0
    # rejected chunks by reason (a code other than OK)
    rejected: Counter[str] = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0
    reconnects: int = 0

    @property
    def ok(self) -> bool:
        return self.sent == self.published


# How long a push retries a server that has never answered (a wrong address, nothing running).
_FIRST_CONNECT_S = 5.0


def file_chunks(
    path: str | Path,
    *,
    sensor_id: str,
    stream_id: str | None = None,
    chunk_ms: int = 100,
    start_time_ns: int | None = None,
) -> Iterator[AudioChunk]:
    """Cut an audio file into s16le chunks of ``chunk_ms`` milliseconds (channels kept), read
    lazily. Capture times start at ``start_time_ns`` (default: now).

    Raises
    ------
    ConfigurationError
        when the file cannot be read or ``chunk_ms`` is not positive.
    """
    if chunk_ms <= 0:
        raise ConfigurationError(f"chunk_ms must be positive, got {chunk_ms}")
    rate, blocks = file_blocks(path, block_s=chunk_ms / 1000)
    return s16_chunks(
        blocks,
        sensor_id=sensor_id,
        stream_id=stream_id or uuid.uuid4().hex,
        sample_rate_hz=rate,
        start_time_ns=time.time_ns() if start_time_ns is None else start_time_ns,
    )


def open_channel(target: str, tls_ca: Path | None = None) -> grpc.aio.Channel:
    """A channel to the ingest service, with TLS when ``tls_ca`` is given."""
    if tls_ca is None:
        return grpc.aio.insecure_channel(target)
    return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(tls_ca.read_bytes()))


# Stream failures worth reconnecting for: the server went away or is restarting.
_RECONNECT_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN}
)


def reconnects_for(error: grpc.aio.AioRpcError) -> bool:
    """Whether a push reconnects after ``error``: the server went away or is restarting.

    grpc's asyncio client reports a chunk written to a stream the server has already ended
    (ingest killed mid-stream) as INTERNAL "Failed execute_batch" instead of the stream's own
    status (grpc/grpc#36066); it is that broken stream, not a server error.
    """
    if error.code() in _RECONNECT_CODES:
        return True
    return error.code() == grpc.StatusCode.INTERNAL and '"execute_batch"' in (
        error.debug_error_string() or ""
    )


class _Session:
    """The chunks of one push across reconnections: what was sent and not yet answered."""

    def __init__(self, chunks: Iterable[AudioChunk], *, realtime: bool) -> None:
        self.source = iter(chunks)
        self.realtime = realtime
        self.result = PushResult()
        self.started = time.monotonic()
        self.unanswered: dict[int, AudioChunk] = {}  # sent, not yet answered
        self.retry: list[AudioChunk] = []  # answered UNAVAILABLE: send again
        self.finished = False

    @property
    def done(self) -> bool:
        return self.finished and not self.unanswered and not self.retry

    async def requests(self) -> AsyncIterator[AudioChunk]:
        """One stream's chunks: those to send again first, in sequence order (so the stream
        stays in order in Kafka), then new ones."""
        again = sorted([*self.retry, *self.unanswered.values()], key=lambda c: c.sequence)
        self.retry.clear()
        for chunk in again:
            yield chunk
        for chunk in self.source:
            # Counted as unanswered at once: if this stream breaks while it waits, the next
            # one sends it.
            self.result.stream_id = chunk.stream_id
            self.result.sent += 1
            self.unanswered[chunk.sequence] = chunk
            if self.realtime:
                frames = len(chunk.pcm) // (2 * max(chunk.channels, 1))
                due = self.started + (chunk.start_sample + frames) / chunk.sample_rate_hz
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            yield chunk
        self.finished = True

    def answered(self, ack: ChunkAck) -> bool:
        """Count an answer; False when the stream must be dropped (a chunk not stored)."""
        result = self.result
        chunk = self.unanswered.pop(ack.sequence, None)
        if ack.code == 0:
            result.published += 1
        elif ack.code == _UNAVAILABLE and chunk is not None:
            # Not stored. Later chunks must not overtake it in Kafka (the featurizer would
            # see a gap): it and everything after it go again, in order, on a new stream.
            self.retry.append(chunk)
            return False
        else:
            result.rejected[ack.reason or f"code_{ack.code}"] += 1
            result.messages.append(f"#{ack.sequence}: {ack.reason}: {ack.message}")
        return True


async def push(
    target: str,
    chunks: Iterable[AudioChunk],
    *,
    token: str | None = None,
    realtime: bool = False,
    tls_ca: Path | None = None,
    timeout_s: float | None = None,
    reconnect_s: float = 60.0,
    channel: grpc.aio.Channel | None = None,
) -> PushResult:
    """Stream ``chunks`` to the ingest service at ``target`` and wait for every answer.

    With ``realtime``, each chunk is sent when a microphone would have finished capturing it.
    When the stream breaks (the server restarts, the connection drops), the client connects
    again with backoff for up to ``reconnect_s`` seconds without progress and sends the chunks
    not yet answered again, in order, with their sequence numbers: the featurizer drops the
    copies that were stored before the break. A chunk answered ``UNAVAILABLE`` (Kafka did not
    store it) ends the stream the same way, so that it is stored before the chunks after it.
    ``channel`` shares one connection between many streams (the load generator); it is left
    open.
    """
    session = _Session(chunks, realtime=realtime)
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    progress = time.monotonic()
    delay = 0.1
    first = True
    while True:
        try:
            async with (
                open_channel(target, tls_ca) if channel is None else nullcontext(channel)
            ) as connection:
                if first and channel is None:
                    # A server never reached is a mistake to report soon (a wrong address,
                    # nothing running), not an outage to wait out.
                    try:
                        await asyncio.wait_for(connection.channel_ready(), _FIRST_CONNECT_S)
                    except TimeoutError:
                        raise ConfigurationError(
                            f"cannot connect to ingest at {target} within {_FIRST_CONNECT_S:g} "
                            "s: is soundsentry ingest (or serve) running there, with TLS "
                            "exactly when --tls-ca is given?"
                        ) from None
                first = False
                stub = soundsentry_pb2_grpc.IngestStub(connection)
                call = stub.StreamAudio(session.requests(), metadata=metadata, timeout=timeout_s)
                ack: ChunkAck
                async for ack in call:
                    progress, delay = time.monotonic(), 0.1
                    if not session.answered(ack):
                        call.cancel()
                        session.result.reconnects += 1
                        break
        except grpc.aio.AioRpcError as exc:
            if not reconnects_for(exc) or time.monotonic() - progress > reconnect_s:
                raise
            session.result.reconnects += 1
        if session.done:
            break
        if time.monotonic() - progress > reconnect_s:
            waiting = len(session.unanswered) + len(session.retry)
            raise ConfigurationError(
                f"{target}: {waiting} chunks still unanswered after {reconnect_s} s without "
                "progress"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)
    session.result.seconds = time.monotonic() - session.started
    return session.result
