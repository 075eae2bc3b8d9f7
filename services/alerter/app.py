"""The alerter's Faust app: window scores in, started/ended events out, state in a table.

One agent reads the scores topic in batches (up to ``max_batch_scores`` records, waiting at
most ``max_batch_ms``), decodes each record (undecodable ones, and scores outside [0, 1], are
parked in the scores DLQ) and feeds it to the :class:`~soundsentry.alerting.engine.AlertEngine`. The
events it causes go to the events topic keyed by sensor; then each touched sensor's trackers are
written to a Faust table and its changelog (``<app id>-trackers-changelog``, keyed by sensor, in
the partition of the sensor's scores), one record batch per partition.

Delivery is at least once: a batch counts as processed only after Kafka acknowledged its events
and its state. A crash before that replays the batch from the stored state of before: the same
events come out again with the same ids (consumers drop duplicates), and windows the stored
state has already seen are ignored. The state comes back from the changelog when a worker (re)
starts or takes over a partition.

Model cards and the rules file are re-read every ``reload_interval_s``; a label that becomes
disabled ends its open events at once.

Notifications (with a destinations file, :class:`NotifySettings`): a second agent reads the
events topic and hands each event to the :class:`~soundsentry.notify.notifier.Notifier` without
waiting; the event's record stays uncommitted until every destination has delivered it or given up
on it, in which case the record is parked in the events DLQ naming the destination and the problem.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence, Set
from typing import Any, cast

import faust
from faust.types import TP
from mode import CrashingSupervisor
from prometheus_client import CollectorRegistry

from soundsentry.alerting.engine import AlertEngine, AlertRules, NotificationPolicy, decode_state
from soundsentry.contracts import Event, WindowScores, kind_name, sensor_key
from soundsentry.exceptions import BadMessageError, ConfigurationError
from soundsentry.models.model_set import ModelCard, read_cards
from soundsentry.notify.notifier import (
    Notifier,
    delivery_id,
)
from soundsentry.notify.settings import NotifySettings, build_notifier
from soundsentry.recency import LastHeard
from soundsentry.runtime.faust_topics import faust_raw_topic, faust_topic
from soundsentry.runtime.faust_transport import RecoveryStalledError, recovery_stalled_for
from soundsentry.runtime.metrics import SensorFilter
from soundsentry.runtime.record_batches import send_batches
from soundsentry.runtime.settings import KafkaSettings, TopicSettings
from soundsentry.runtime.streaming import (
    decode_or_park,
    new_app,
    park,
    process_in_batches,
    run_worker,
    update_consumer_lag,
)
from soundsentry.runtime.topics import DLQ_PARTITIONS, EVENTS, SCORES, TopicLayout
from soundsentry.services.alerter.metrics import AlerterMetrics
from soundsentry.services.alerter.settings import AlerterSettings

__all__ = [
    "SERVICE",
    "AlerterService",
    "check_copartitioned",
    "create_app",
    "main",
]

logger = logging.getLogger(__name__)

SERVICE = "alerter"


class AlerterService:
    """The alerter's Faust app, engine, state table and metrics; built by :func:`create_app`."""

    def __init__(
        self,
        app: faust.App,
        *,
        engine: AlertEngine,
        cards: Mapping[str, ModelCard],
        rules: AlertRules,
        metrics: AlerterMetrics,
        settings: AlerterSettings,
        topics: TopicLayout,
        registry: CollectorRegistry,
    ) -> None:
        self.app = app
        self.engine = engine
        self.notifier: Notifier | None = None
        self.metrics = metrics
        self.settings = settings
        self.topics = topics
        self.registry = registry
        self._cards = dict(cards)
        self._rules = rules
        self.policy = NotificationPolicy(rules)
        self.source = faust_raw_topic(app, topics, topics.name(SCORES))
        self.dlq = faust_raw_topic(app, topics, topics.dlq(SCORES), partitions=DLQ_PARTITIONS)
        self.events = faust_topic(app, topics, EVENTS)
        # Keyed by the raw sensor key. The alerter writes its changelog itself (_store), in the
        # partition of the sensor's scores; Faust reads it back when it (re)assigns partitions.
        # use_partitioner only spares Faust a current event when it writes (it no longer does).
        self.table = app.Table(
            f"{SERVICE}-trackers",
            default=None,
            partitions=topics.partitions,
            # Raw bytes both ways: values are AlertEngine.encoded_state, and without
            # value_type=bytes Faust would decode them as JSON when it recovers the table.
            key_type=bytes,
            value_type=bytes,
            use_partitioner=True,
        )
        app.agent(self.source, name=f"{SERVICE}.track", supervisor_strategy=CrashingSupervisor)(
            self._agent
        )
        app.on_partitions_assigned.connect(self._assigned)
        # The partition of each sensor's scores, to forget sensors whose partition went away.
        self._sensor_partitions: dict[str, TP] = {}
        # When each sensor in memory last sent scores (monotonic seconds).
        self._last_seen = LastHeard()
        app.timer(min(60.0, settings.state_idle_s / 4), name=f"{SERVICE}.idle")(self._forget_idle)
        if settings.reload_interval_s:
            app.timer(settings.reload_interval_s, name=f"{SERVICE}.reload")(self.reload)
        # Started at the first assignment: Faust starts timers only after the first recovery.
        self._recovery_watch: asyncio.Future[None] | None = None
        self.events_dlq = faust_raw_topic(
            app, topics, topics.dlq(EVENTS), partitions=DLQ_PARTITIONS
        )
        self._storing = asyncio.Lock()
        # Records of events whose notifications are under way, by delivery id.
        self._notifying: dict[str, faust.EventT[Any]] = {}

    def attach_notifier(self, notifier: Notifier) -> None:
        """Notify every event on the events topic through ``notifier`` (before the app starts;
        its dead-letter callback should be :meth:`park_notification`)."""
        self.notifier = notifier
        self.app.agent(
            faust_raw_topic(self.app, self.topics, self.topics.name(EVENTS)),
            name=f"{SERVICE}.notify",
            supervisor_strategy=CrashingSupervisor,
        )(self._notify_agent)
        self.app.on_before_shutdown.connect(self._close_notifier)

    def _stored(self, sensor_id: str) -> Mapping[str, Any] | None:
        # An unreadable state raises: the engine logs it and starts the sensor afresh.
        data = self.table.get(sensor_key(sensor_id))
        return None if data is None else decode_state(cast(bytes, data))

    async def _assigned(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # faust sends Signal[Set[TP]]: receiver(app, assigned, signal=...). Trackers of sensors
        # whose partition is still ours stay: they are the newest state (Faust's memory store
        # does not always get a partition's table back after a rebalance that returns it to
        # the same worker). Others come back from the table if the partition returns later.
        (assigned,) = args
        gone = [s for s, tp in self._sensor_partitions.items() if tp not in assigned]
        self.engine.forget(gone)
        for sensor_id in gone:
            del self._sensor_partitions[sensor_id]
            self._last_seen.forget(sensor_id)
        self.metrics.sensors.set(self.engine.sensors)
        if self._recovery_watch is None and self.settings.recovery_stall_s:
            self._recovery_watch = asyncio.ensure_future(self._watch_recovery())

    async def _forget_idle(self) -> None:
        """Drop from memory the trackers of sensors silent for ``state_idle_s`` (their state
        is in the table, read back if they send again)."""
        limit = self.settings.state_idle_s
        gone = self._last_seen.pop_silent(time.monotonic(), limit)
        if not gone:
            return
        for sensor_id in gone:
            self._sensor_partitions.pop(sensor_id, None)
        self.engine.forget(gone)
        self.metrics.sensors.set(self.engine.sensors)
        logger.info("dropped the trackers of %d sensors silent for %g s", len(gone), limit)

    def check_recovery(self) -> None:
        """Raise RecoveryStalledError when the state table's recovery has stalled."""
        recovery = self.app.tables.recovery  # type: ignore[attr-defined]  # untyped in Faust
        stalled = recovery_stalled_for(recovery, time.monotonic())
        if stalled > self.settings.recovery_stall_s:
            raise RecoveryStalledError(
                f"state table recovery read no changelog record for {stalled:.1f} s while it "
                "still needs some; exiting so that the supervisor restarts the alerter"
            )

    async def _watch_recovery(self) -> None:
        interval = min(5.0, max(0.5, self.settings.recovery_stall_s / 3))
        while not self.app.should_stop:
            await asyncio.sleep(interval)
            try:
                self.check_recovery()
            except RecoveryStalledError as error:
                await self.app.crash(error)  # logs it; the worker exits with status 1
                return
            except Exception:  # e.g. a Faust upgrade renamed what it reads: keep watching
                logger.exception("alerter: cannot check the state table's recovery")

    async def _agent(self, stream: faust.StreamT[bytes]) -> None:
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        source = self.source.get_topic_name()
        changelog = self.table.changelog_topic.get_topic_name()
        check_copartitioned(
            source,
            await producer.partitions_for(source),
            changelog,
            await producer.partitions_for(changelog),
        )
        await process_in_batches(
            stream,
            self.process_batch,
            max_records=self.settings.max_batch_scores,
            within_s=self.settings.max_batch_ms / 1000,
        )

    async def process_batch(self, events: Sequence[faust.EventT[Any]]) -> None:
        """Track one batch of score records; return when Kafka has its events and state."""
        started = time.perf_counter()
        metrics = self.metrics
        last_offsets: dict[TP, int] = {}
        touched: set[str] = set()
        out: list[Event] = []
        for event in events:
            message = event.message
            last_offsets[message.tp] = max(message.offset, last_offsets.get(message.tp, -1))
            scores = await decode_or_park(
                event, SCORES, dlq=self.dlq, metrics=metrics.stream, service=SERVICE
            )
            if scores is None:
                continue
            assert isinstance(scores, WindowScores)
            try:
                outcome = self.engine.process(scores, self._stored)
            except BadMessageError as error:
                await park(event, error, dlq=self.dlq, metrics=metrics.stream, service=SERVICE)
                continue
            if outcome.skipped:
                metrics.scores_skipped.labels(outcome.skipped).inc()
            if outcome.skipped not in ("revision", "unknown_model"):
                touched.add(scores.sensor_id)
                self._sensor_partitions[scores.sensor_id] = message.tp
                # Before any await: a sensor in the batch being stored is never idle.
                self._last_seen.heard(scores.sensor_id, time.monotonic())
            out += outcome.events
        await self._publish(out, touched)
        update_consumer_lag(self.app, last_offsets, metrics.consumer_lag)
        metrics.sensors.set(self.engine.sensors)
        metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _publish(self, events: Sequence[Event], sensors: set[str]) -> None:
        """Send ``events``, then the state of ``sensors``; return when Kafka has all of it."""
        deliveries = [
            await self.events.send(key=sensor_key(event.sensor_id), value=event) for event in events
        ]
        # Faust only logs a failed send and would commit past it: wait for Kafka's acks.
        await asyncio.gather(*deliveries)
        published_ns = time.time_ns()
        for event in events:
            self.metrics.count_event(event, kind_name(event.kind), published_ns)
        await self._store(sensors)

    async def _store(self, sensors: Iterable[str]) -> None:
        """Put the trackers of ``sensors`` in the table and its changelog; return when Kafka
        has stored them, or raise (a crash must not commit offsets past state that was lost).

        Each sensor's record goes to the changelog partition of its scores, where the worker
        that owns the partition next reads it back, in one record batch per partition:
        ``table[key] = state`` costs a send with Faust's buffer and futures per key (with the
        flush, about a fifth of the alerter's CPU by py-spy in ``benchmarks/pipeline.py``), and
        Faust's flush only logs a send that failed.
        """
        # One write at a time (the agent's and a reload's): a write that encoded its states
        # first must hand them all to the producer first, or an older state could land last.
        async with self._storing:
            by_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
            for sensor_id in sensors:
                state = self.engine.encoded_state(sensor_id)
                tp = self._sensor_partitions.get(sensor_id)
                if state is None or tp is None:  # its partition was revoked meanwhile
                    continue
                key = sensor_key(sensor_id)
                self.table.data[key] = state  # the store only: the changelog record is below
                by_partition[tp.partition].append((key, state))
            if not by_partition:
                return
            producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
            topic = self.table.changelog_topic.get_topic_name()
            deliveries = []
            for partition, records in by_partition.items():
                deliveries += await send_batches(producer, topic, partition, records)
        acks = await asyncio.gather(*(ack for ack, _ in deliveries), return_exceptions=True)
        for ack in acks:  # every ack retrieved first, so that asyncio reports none as lost
            if isinstance(ack, BaseException):
                raise ack

    async def _notify_agent(self, stream: faust.StreamT[bytes]) -> None:
        assert self.notifier is not None
        async for record in stream.events():
            message = await decode_or_park(
                record, EVENTS, dlq=self.events_dlq, metrics=self.metrics.stream, service=SERVICE
            )
            if message is None:
                continue
            assert isinstance(message, Event)
            suppressed = self.policy.decide(message)
            if suppressed is not None:
                self.metrics.notifications_suppressed.labels(suppressed).inc()
                continue
            # One more reference: the record is committed only when every destination is done.
            record.message.incref()
            key = delivery_id(message)
            self._notifying[key] = record
            self.notifier.submit(message).add_done_callback(
                functools.partial(self._notified, record, key)
            )

    def _notified(self, record: faust.EventT[Any], key: str, _: object) -> None:
        if self._notifying.get(key) is record:
            del self._notifying[key]
        record.ack()

    async def park_notification(self, event: Event, destination: str, problem: str) -> None:
        """The notifier's dead-letter callback: park the event's record, naming the problem."""
        record = self._notifying.get(delivery_id(event))
        if record is None:  # not from the events topic (cannot happen in the service)
            logger.error(
                "notification %s to %s given up: %s", delivery_id(event), destination, problem
            )
            return
        error = BadMessageError("notification_failed", f"{destination}: {problem}")
        await park(record, error, dlq=self.events_dlq, metrics=self.metrics.stream, service=SERVICE)

    async def _close_notifier(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assert self.notifier is not None
        await self.notifier.close(timeout_s=5.0)

    async def reload(self) -> bool:
        """Re-read the model cards and the rules file; True when something changed."""
        try:
            cards = read_cards(self.settings.model_dir)
            rules = self.settings.alert_rules()
        except ConfigurationError:
            self.metrics.reloads.labels("failed").inc()
            logger.exception("alerter reload failed; the previous rules keep applying")
            return False
        if cards == self._cards and rules == self._rules:
            return False
        self._cards, self._rules = cards, rules
        self.policy.use_rules(rules)
        ended = self.engine.use_rules(rules, cards)
        await self._publish([event for _, event in ended], {sensor for sensor, _ in ended})
        self.metrics.reloads.labels("applied").inc()
        logger.info("alerter rules reloaded: %d models, %d events ended", len(cards), len(ended))
        return True


def check_copartitioned(
    source: str, source_partitions: Set[int], changelog: str, changelog_partitions: Set[int]
) -> None:
    """Refuse to run when the scores topic and the state's changelog have different partitions:
    a sensor's state is kept in the changelog partition numbered like its scores partition,
    which Faust assigns with it (after partitions were added to one of them, say).

    Raises
    ------
    ConfigurationError
        naming both topics and their partition counts.
    """
    if source_partitions != changelog_partitions:
        raise ConfigurationError(
            f"{source} has {len(source_partitions)} partitions and the alerter's state "
            f"changelog {changelog} {len(changelog_partitions)}: they must be equal (a "
            "sensor's state lives in the changelog partition of its scores); give both the "
            "same count, or delete the changelog topic to start the trackers afresh"
        )


def create_app(
    kafka: KafkaSettings,
    topics: TopicLayout,
    settings: AlerterSettings,
    *,
    registry: CollectorRegistry,
    notify: NotifySettings | None = None,
    secrets: Mapping[str, str] | None = None,
) -> AlerterService:
    """Build the alerter's Faust app (nothing connects until it starts).

    ``secrets`` holds the environment variables named by the destinations (default: the
    process environment).

    Raises
    ------
    ConfigurationError
        when the model directory has no usable card, or the rules or destinations file is
        unusable.
    """
    cards = read_cards(settings.model_dir)
    rules = settings.alert_rules()
    app = new_app(settings.app_id, kafka, topics, data_dir=settings.data_dir)
    service = AlerterService(
        app,
        engine=AlertEngine(cards, rules),
        cards=cards,
        rules=rules,
        metrics=AlerterMetrics.create(registry, SensorFilter(settings.sensor_metrics)),
        settings=settings,
        topics=topics,
        registry=registry,
    )
    if notify is not None:
        notifier = build_notifier(
            notify,
            dead_letter=service.park_notification,
            registry=registry,
            secrets=os.environ if secrets is None else secrets,
        )
        if notifier is not None:
            service.attach_notifier(notifier)
    return service


def main(*, loglevel: str = "INFO") -> int:
    """``soundsentry alerter``: settings from the environment, run until stopped."""
    registry = CollectorRegistry()
    service = create_app(
        KafkaSettings(),
        TopicLayout.from_settings(TopicSettings()),
        AlerterSettings(),
        registry=registry,
        notify=NotifySettings(),
    )
    return run_worker(service, loglevel=loglevel)
