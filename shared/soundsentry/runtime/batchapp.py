"""A batch-native Kafka consumer loop for the hot stages: records in by the thousand, explicit
commits, no per-record machinery.

Faust hands records to an agent one at a time: a consumer thread, a conductor, a stream buffer
and an event with its own acknowledgement per record. For 100 ms audio chunks that was about
80 % of the featurizer's CPU (4,800 chunks per CPU-second; a bare ``getmany`` loop doing the
same work, 19,500). :class:`BatchApp` runs aiokafka's ``getmany`` in the service's own event
loop and hands each batch to the service whole.

Delivery is at least once, with offsets instead of acknowledgements: once Kafka acknowledged
what a batch produced (``process`` hands its sends to :meth:`BatchApp.before_commit`; commits
wait for them, every ``commit_interval_s``), a partition may be committed up to the batch's
end, or less: ``first_needed`` lets the service hold back the
records whose data it will still need (the featurizer's unfinished windows), so that a crash
reads them again. A batch that raises crashes the app and is never committed.

Rebalances (aiokafka's eager protocol) are serialised with batches: the revoke callback waits
for the batch in progress, commits what is committable and tells the service which partitions
it lost once the new assignment is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence, Set
from typing import Any, Protocol, TypeAlias, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry, Gauge

from soundsentry.contracts import decode
from soundsentry.exceptions import BadMessageError
from soundsentry.runtime.deadletter import DeadLetter, send_dead_letter
from soundsentry.runtime.metrics import (
    MetricsSettings,
    StreamMetrics,
    prepare_worker,
    set_consumer_lag,
)
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import TopicLayout, TopicSpec, ensure_topics

__all__ = [
    "BatchApp",
    "BatchService",
    "Record",
    "commit_offsets",
    "decode_or_park",
    "park",
    "run_batch_service",
]

logger = logging.getLogger(__name__)

Record: TypeAlias = ConsumerRecord[bytes, bytes]
M = TypeVar("M", bound=Message)
Process = Callable[[Sequence[Record]], Awaitable[None]]

# Per partition, fetched records the loop may buffer: a fetch of 100 ms chunks holds ~2,500.
_MAX_PARTITION_FETCH_BYTES = 8 * 1024 * 1024


def commit_offsets(
    next_offsets: Mapping[TopicPartition, int],
    owned: Set[TopicPartition],
    first_needed: Mapping[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """What a commit may store per owned partition: the next offset to read, or the first
    record the service still needs if that is earlier."""
    return {
        tp: min(first_needed.get(tp, next_offset), next_offset)
        for tp, next_offset in next_offsets.items()
        if tp in owned
    }


class BatchApp:
    """One consumer group member reading ``source`` in batches; ``producer`` is for its output.

    ``await app.start()`` / ``await app.stop()`` run it inside an event loop;
    :func:`run_batch_service` runs it as a process.
    """

    def __init__(
        self,
        name: str,
        kafka: KafkaSettings,
        topics: TopicLayout,
        *,
        group_id: str,
        source: str,
        process: Process,
        max_records: int,
        linger_ms: int,
        first_needed: Callable[[], Mapping[TopicPartition, int]] | None = None,
        on_lost: Callable[[set[TopicPartition]], None] | None = None,
        timers: Sequence[tuple[float, Callable[[], Awaitable[None]]]] = (),
        on_stop: Callable[[], Awaitable[None]] | None = None,
        commit_interval_s: float = 1.0,
    ) -> None:
        self.name = name
        self.kafka = kafka
        self.topics = topics
        self.group_id = group_id
        self.source = source
        self.max_records = max_records
        self.linger_ms = linger_ms
        self.commit_interval_s = commit_interval_s
        self._process = process
        self._first_needed = first_needed or dict
        self._on_lost = on_lost
        self._timers = list(timers)
        self._on_stop = on_stop
        self.crash_reason: BaseException | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Held by a batch from fetch to commit, and by a rebalance's revoke callback.
        self._lock = asyncio.Lock()
        self._next: dict[TopicPartition, int] = {}  # next offset to read, per partition
        # Sends of processed batches Kafka has not acknowledged yet: awaited before a commit.
        self._unacked: list[asyncio.Future[Any]] = []
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self._owned: set[TopicPartition] = set()
        self.crashed = asyncio.Event()

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError(f"{self.name}: not started")
        return self._producer

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError(f"{self.name}: not started")
        return self._consumer

    def highwater(self, tp: TopicPartition) -> int | None:
        """The partition's high-water mark as of the last fetch (None before one)."""
        consumer = self.consumer
        if tp not in consumer.assignment():  # aiokafka asserts on unassigned ones
            return None
        value: int | None = consumer.highwater(tp)
        return value

    def before_commit(self, deliveries: Iterable[asyncio.Future[Any]]) -> None:
        """Have the next commit wait for these sends (a failed one crashes the app instead).

        A batch hands its sends over rather than waiting for them: the next batch is processed
        while they are under way. Waiting for each batch's acks made the classifier a round
        trip per batch slower than it could be, which at 400 sensors was more than it had.
        """
        self._unacked.extend(deliveries)

    def update_lag(self, records: Sequence[Record], gauge: Gauge) -> None:
        """Set ``gauge`` (labelled by partition) to the records behind each partition's
        high-water mark, as of the last of ``records`` from it."""
        last: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            last[tp] = max(record.offset, last.get(tp, -1))
        set_consumer_lag(gauge, last, self.highwater)

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        await ensure_topics(self.kafka, self.topics)
        self._producer = AIOKafkaProducer(**self.kafka.producer_kwargs())
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            **self.kafka.aiokafka_kwargs(),
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.linger_ms,
            max_partition_fetch_bytes=_MAX_PARTITION_FETCH_BYTES,
            session_timeout_ms=int(self.kafka.session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, self.kafka.session_timeout_s / 3) * 1000),
        )
        self._consumer.subscribe([self.source], listener=_Listener(self))
        await self._consumer.start()
        self._tasks.append(asyncio.create_task(self._guard(self._loop()), name=self.name))
        for interval, timer in self._timers:
            self._tasks.append(asyncio.create_task(self._guard(self._every(interval, timer))))

    async def stop(self) -> None:
        """Finish the batch in progress (and ``on_stop``'s work), commit, leave the group,
        flush the producer."""
        async with self._lock:
            for task in self._tasks:
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._on_stop is not None and self._producer is not None and self.crash_reason is None:
            await self._on_stop()
        if self._consumer is not None:
            if self.crash_reason is None:
                await self._commit(force=True)
            await self._consumer.stop()
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def crash(self, reason: BaseException) -> None:
        """Stop consuming for good: nothing of the failed batch gets committed."""
        if self.crash_reason is None:
            logger.error("%s crashed: %r", self.name, reason, exc_info=reason)
            self.crash_reason = reason
            self.crashed.set()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()

    async def _guard(self, work: Awaitable[None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or Kafka refusing output: restart from the commit
            await self.crash(exc)

    async def _every(self, interval: float, timer: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval)
            async with self._lock:
                await timer()

    async def _loop(self) -> None:
        consumer = self.consumer
        linger_s = self.linger_ms / 1000
        while True:
            waiting = time.monotonic()
            fetched = await consumer.getmany(timeout_ms=1000, max_records=self.max_records)
            count = sum(len(records) for records in fetched.values())
            wait = linger_s - (time.monotonic() - waiting)
            if 0 < count < self.max_records and wait > 0:
                # Let the batch fill for up to linger_ms: records trickle in one fetch at a time
                # at low load, and every batch has fixed costs (a featurizer call, a round trip
                # for the acks).
                await asyncio.sleep(wait)
                more = await consumer.getmany(timeout_ms=0, max_records=self.max_records - count)
                for tp, records in more.items():
                    fetched.setdefault(tp, []).extend(records)
            async with self._lock:
                # Checked under the lock: a rebalance may have run since the fetch. The
                # consumer's own assignment, not _owned: aiokafka fetches for new partitions
                # before it calls the listener that updates _owned.
                assigned = consumer.assignment()
                batch: list[Record] = []
                for tp, records in fetched.items():
                    if tp not in assigned or not records:
                        continue  # revoked while the fetch was on its way
                    batch.extend(records)
                    self._next[tp] = records[-1].offset + 1
                if batch:
                    await self._process(batch)
                await self._commit(force=False)

    def committable(self) -> dict[TopicPartition, int]:
        """Per owned partition, the offset a commit may store now."""
        return commit_offsets(self._next, self._owned, self._first_needed())

    async def _commit(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_commit < self.commit_interval_s:
            return
        self._last_commit = now
        if self._unacked:
            unacked, self._unacked = self._unacked, []
            await asyncio.gather(*unacked)  # a failed send raises: no commit past it
        offsets = {tp: o for tp, o in self.committable().items() if self._committed.get(tp) != o}
        if not offsets:
            return
        try:
            await self.consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        except KafkaError as exc:  # e.g. a rebalance under way: the next commit catches up
            logger.warning("%s: commit failed, retried with the next batch: %r", self.name, exc)
            return
        self._committed.update(offsets)

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            if self.crash_reason is None:
                try:
                    await self._commit(force=True)
                except Exception as exc:  # a failed send: never commit past it
                    await self.crash(exc)

    def _assigned(self, assigned: set[TopicPartition]) -> None:
        lost = self._owned - assigned
        self._owned = set(assigned)
        for tp in lost:
            self._next.pop(tp, None)
        # Kept partitions restart from their committed offsets: held records come again and
        # the service drops what it has seen (the featurizer by sequence number).
        for tp in assigned:
            self._next.pop(tp, None)
        self._committed.clear()
        if lost and self._on_lost is not None:
            self._on_lost(lost)


async def park(
    app: BatchApp,
    record: Record,
    error: BadMessageError,
    *,
    dlq: str,
    metrics: StreamMetrics,
) -> None:
    """Park ``record`` in ``dlq`` with headers saying why, count it; return once Kafka has it."""

    def send(letter: DeadLetter) -> Awaitable[Awaitable[Any]]:
        sent: Awaitable[Awaitable[Any]] = app.producer.send(
            dlq, letter.value, key=letter.key, headers=list(letter.headers)
        )
        return sent

    await send_dead_letter(record, error, send=send, dlq=dlq, metrics=metrics, service=app.name)


async def decode_or_park(
    app: BatchApp,
    record: Record,
    spec: TopicSpec[M],
    *,
    dlq: str,
    metrics: StreamMetrics,
) -> M | None:
    """Decode the record's value as ``spec.message_type``; park it and return None if bad."""
    try:
        return decode(spec.message_type, record.value)
    except BadMessageError as error:
        await park(app, record, error, dlq=dlq, metrics=metrics)
        return None


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, app: BatchApp) -> None:
        self.app = app

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.app._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.app._assigned(set(assigned))


class BatchService(Protocol):
    """What :func:`run_batch_service` needs of a service built on :class:`BatchApp`."""

    @property
    def app(self) -> BatchApp: ...
    @property
    def registry(self) -> CollectorRegistry: ...
    @property
    def settings(self) -> MetricsSettings: ...


def run_batch_service(service: BatchService, *, loglevel: str = "INFO") -> int:
    """Run the service until SIGTERM / Ctrl-C (exit status 0) or a crash (1), serving its
    registry on ``/metrics`` at ``settings.metrics_port`` (unless 0)."""
    logging.basicConfig(
        level=loglevel.upper(), format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
    )
    stop_metrics = prepare_worker(service.settings, service.registry)
    try:
        return asyncio.run(_serve(service.app))
    finally:
        stop_metrics()


async def _serve(app: BatchApp) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await app.start()
    logger.info("%s: consuming %s as group %s", app.name, app.source, app.group_id)
    waits: list[asyncio.Task[Any]] = [
        asyncio.create_task(stopping.wait()),
        asyncio.create_task(app.crashed.wait()),
    ]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await app.stop()
    return 1 if app.crash_reason is not None else 0
