"""Faust glue shared by the stream services: decode each record or park it, never crash on data."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import faust
from faust.types import TP
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry, Gauge

from soundsentry.contracts import decode
from soundsentry.exceptions import BadMessageError
from soundsentry.runtime.deadletter import DeadLetter, send_dead_letter
from soundsentry.runtime.faust_transport import App
from soundsentry.runtime.metrics import (
    MetricsSettings,
    StreamMetrics,
    prepare_worker,
    set_consumer_lag,
)
from soundsentry.runtime.settings import MAX_MESSAGE_BYTES, PRODUCER_BATCH_BYTES, KafkaSettings
from soundsentry.runtime.topics import TopicLayout, TopicSpec

__all__ = [
    "StreamService",
    "decode_or_park",
    "new_app",
    "park",
    "process_in_batches",
    "run_worker",
    "update_consumer_lag",
]

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

    def send(letter: DeadLetter) -> Awaitable[Awaitable[Any]]:
        return cast(
            Awaitable[Awaitable[Any]],
            dlq.send(key=letter.key, value=letter.value, headers=list(letter.headers)),
        )

    await send_dead_letter(
        event.message,
        error,
        send=send,
        dlq=dlq.get_topic_name(),
        metrics=metrics,
        service=service,
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


async def process_in_batches(
    stream: faust.StreamT[bytes],
    process: Callable[[Sequence[faust.EventT[Any]]], Awaitable[None]],
    *,
    max_records: int,
    within_s: float,
) -> None:
    """An agent's loop: ``process`` batches of up to ``max_records`` events, waiting at most
    ``within_s`` to fill one (events, not values: parking a record needs its topic, partition
    and offset).

    take_events acknowledges a batch's records whenever the generator is resumed or closed,
    which Faust does on the way down after a crash, and Faust then commits them: a failed batch
    would be skipped. One extra reference per record keeps it from ever counting as processed,
    so that the restarted worker reads the batch again.
    """
    batches = cast(faust.Stream[bytes], stream).take_events(max_records, within=within_s)
    async for events in batches:
        try:
            await process(events)
        except Exception:
            for event in events:
                event.message.incref()
            raise


def update_consumer_lag(app: faust.App, last_offsets: Mapping[TP, int], gauge: Gauge) -> None:
    """Set ``gauge`` (labelled by partition) to the records behind each partition's high-water
    mark, as of the last offset a batch took from it."""
    consumer = app.consumer
    assigned = consumer.assignment()

    def highwater(tp: TP) -> int | None:
        if tp not in assigned:  # revoked meanwhile; aiokafka asserts on unassigned ones
            return None
        # The next offset Kafka will assign (None before the partition's first fetch).
        mark: int | None = consumer.highwater(tp)
        return mark

    set_consumer_lag(gauge, last_offsets, highwater)


class StreamService(Protocol):
    """What :func:`run_worker` needs of a Faust service (the alerter)."""

    @property
    def app(self) -> faust.App: ...
    @property
    def registry(self) -> CollectorRegistry: ...
    @property
    def settings(self) -> MetricsSettings: ...


def run_worker(service: StreamService, *, loglevel: str = "INFO") -> int:
    """Run the service's app as a Faust worker until SIGTERM / Ctrl-C; return the exit status.

    Serves the service's registry on ``/metrics`` at ``settings.metrics_port`` (unless 0) while
    it runs.
    """
    stop_metrics = prepare_worker(service.settings, service.registry)
    worker = faust.Worker(service.app, loglevel=loglevel)
    try:
        worker.execute_from_commandline()  # always ends with SystemExit
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        stop_metrics()


def new_app(
    app_id: str,
    kafka: KafkaSettings,
    topics: TopicLayout,
    *,
    data_dir: Path | None,
    wait_empty: bool = True,
) -> faust.App:
    """A stream service's Faust app: in-memory store, no web server, producer acks from every
    in-sync replica, topics created with the layout's partitions and replication.

    ``wait_empty=False`` for a service that holds records unacknowledged indefinitely: Faust
    then neither waits for them when partitions are revoked or the worker stops (it would
    wait forever) nor commits them, so the next owner reads them again.
    """
    base = data_dir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    return App(
        app_id,
        broker=kafka.faust_broker_url(),
        broker_credentials=kafka.faust_credentials(),
        store="memory://",
        web_enabled=False,
        stream_wait_empty=wait_empty,
        broker_session_timeout=kafka.session_timeout_s,
        broker_heartbeat_interval=min(3.0, kafka.session_timeout_s / 3),
        producer_acks=-1,
        # Batches of many windows or scores per partition, as KafkaSettings.producer_kwargs.
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        producer_max_request_size=MAX_MESSAGE_BYTES,
        producer_linger=0.005,
        # Faust's default fetch (1 MiB per partition: some 300 chunks) left the featurizer
        # idle between fetches with a backlog waiting: 2.6x the drain rate with 8 MiB
        # (benchmarks/pipeline.py). The buffer holds what a fetch brings.
        consumer_max_fetch_size=8 * 1024 * 1024,
        stream_buffer_maxsize=32768,
        topic_partitions=topics.partitions,
        topic_replication_factor=topics.replication_factor,
        # Faust creates <datadir> and <datadir>/v1/tables at start even with the memory store;
        # the default (<cwd>/<app id>-data) fails on a read-only root filesystem.
        datadir=base / f"{app_id}-data",
    )
