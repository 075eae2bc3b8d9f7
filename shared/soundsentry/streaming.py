"""Faust glue shared by the stream services: decode each record or park it, never crash on data."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import faust
from google.protobuf.message import Message

from soundsentry.contracts import decode
from soundsentry.deadletter import dead_letter
from soundsentry.exceptions import BadMessageError
from soundsentry.metrics import StreamMetrics
from soundsentry.topics import TopicSpec

__all__ = ["decode_or_park", "park"]

M = TypeVar("M", bound=Message)

logger = logging.getLogger(__name__)


async def park(
    event: faust.EventT[Any],
    error: BadMessageError,
    *,
    dlq: Any,
    metrics: StreamMetrics,
    service: str,
) -> None:
    """Park the event's original record in ``dlq`` with headers saying why, and count it.

    Returns once Kafka acknowledged the dead letter.
    """
    message = event.message
    letter = dead_letter(
        error,
        key=message.key,
        value=message.value,
        service=service,
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
    )
    delivery = await dlq.send(key=letter.key, value=letter.value, headers=list(letter.headers))
    # Faust would only log a failed send and commit past the record: wait for Kafka's ack so
    # a failure propagates (crashing the worker) before the bad record counts as handled.
    await delivery
    metrics.messages_dead_lettered.labels(service, message.topic, letter.reason).inc()
    logger.warning(
        "parked record %s[%d]@%d in %s: %s: %s",
        message.topic,
        message.partition,
        message.offset,
        dlq.get_topic_name(),
        error.reason,
        error,
    )


async def decode_or_park(
    event: faust.EventT[Any],
    spec: TopicSpec[M],
    *,
    dlq: Any,
    metrics: StreamMetrics,
    service: str,
) -> M | None:
    """Decode the event's value as ``spec.message_type``; park it and return None if it is bad."""
    metrics.messages_consumed.labels(service, event.message.topic).inc()
    try:
        return decode(spec.message_type, event.message.value)
    except BadMessageError as error:
        await park(event, error, dlq=dlq, metrics=metrics, service=service)
        return None
