"""The per-message error policy, in one place.

Bad data (a :class:`~soundsentry.exceptions.BadMessageError`) is skipped, counted and parked in
the topic's dead-letter twin with headers that say why; the stream carries on. Anything else
(broken infrastructure, bugs) propagates, so the process crashes and its supervisor
(Kubernetes) restarts it, resuming from the last committed offset without losing data.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from soundsentry.exceptions import BadMessageError
from soundsentry.runtime.metrics import StreamMetrics

__all__ = [
    "MAX_PARKED_VALUE_BYTES",
    "DeadLetter",
    "SourceRecord",
    "dead_letter",
    "send_dead_letter",
]

logger = logging.getLogger(__name__)

# Kafka headers are bytes; keep the error text bounded so a huge message cannot bloat the DLQ.
_MAX_MESSAGE_BYTES = 2048
# A record can arrive as large as the broker allows; its dead letter (value plus headers) must
# still fit the producer's request limit (1 MiB by default), or parking it fails and the stage
# stops on it. Larger values are parked truncated, with their size and SHA-256.
MAX_PARKED_VALUE_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A bad record as it is parked: the original key and value, plus why and where from."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    reason: str


def dead_letter(
    error: BadMessageError,
    *,
    key: bytes | None,
    value: bytes | None,
    service: str,
    source_topic: str,
    partition: int,
    offset: int,
) -> DeadLetter:
    """Build the dead-letter record for a message that failed with ``error``."""
    message = str(error).encode("utf-8", "replace")[:_MAX_MESSAGE_BYTES]
    headers: tuple[tuple[str, bytes], ...] = (
        ("soundsentry.error.reason", error.reason.encode()),
        ("soundsentry.error.message", message),
        ("soundsentry.service", service.encode()),
        ("soundsentry.source.topic", source_topic.encode()),
        ("soundsentry.source.partition", str(partition).encode()),
        ("soundsentry.source.offset", str(offset).encode()),
    )
    if value is not None and len(value) > MAX_PARKED_VALUE_BYTES:
        headers += (
            ("soundsentry.value.size", str(len(value)).encode()),
            ("soundsentry.value.sha256", hashlib.sha256(value).hexdigest().encode()),
        )
        value = value[:MAX_PARKED_VALUE_BYTES]
    if key is not None and len(key) > _MAX_MESSAGE_BYTES:
        headers += (("soundsentry.key.size", str(len(key)).encode()),)
        key = key[:_MAX_MESSAGE_BYTES]
    return DeadLetter(key=key, value=value, headers=headers, reason=error.reason)


class SourceRecord(Protocol):
    """A consumed record as aiokafka and Faust both give it."""

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


async def send_dead_letter(
    record: SourceRecord,
    error: BadMessageError,
    *,
    send: Callable[[DeadLetter], Awaitable[Awaitable[Any]]],
    dlq: str,
    metrics: StreamMetrics,
    service: str,
) -> None:
    """Send ``record`` as a dead letter (headers saying why) through ``send``, wait for Kafka's
    acknowledgement, count and log it. A failed send propagates, crashing the worker before the
    bad record counts as handled (Faust would only log it and commit past the record)."""
    letter = dead_letter(
        error,
        key=record.key,
        value=record.value,
        service=service,
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )
    delivery = await send(letter)
    await delivery
    metrics.messages_dead_lettered.labels(service, record.topic, letter.reason).inc()
    logger.warning(
        "parked record %s[%d]@%d in %s: %s: %s",
        record.topic,
        record.partition,
        record.offset,
        dlq,
        error.reason,
        error,
    )
