"""The featurizer: audio chunks in, feature windows out, bad records parked.

A :class:`~soundsentry.runtime.batchapp.BatchApp` reads the raw audio topic in batches (up to
``max_batch_chunks`` records, waiting at most ``max_batch_ms``), decodes each record
(undecodable ones are parked in the audio DLQ), featurizes the whole batch in one
:meth:`Featurizer.process` call (chunks from every sensor of the worker's partitions
together), parks the chunks the featurizer rejected, and sends every finished window to the
windows topic keyed by its sensor.

Delivery is at least once: a batch's offsets are committed only after Kafka acknowledged every
window of the batch; a failed send crashes the worker, which restarts from the last commit.
Windows have deterministic ids, so consumers drop the duplicates a restart produces.

Nothing is lost across a crash either: a partition's commit stays behind the first record
whose audio windows still to come need (:meth:`Featurizer.needed_from`): about one window and
one hop of records per sensor. A restarted worker reads them again and rebuilds exactly the
windows the crashed one had not finished. A worker keeps the state of the partitions a
rebalance leaves with it; the records it reads again are dropped by sequence number.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence, Set

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from soundsentry.audio.pcm import chunk_frames
from soundsentry.contracts import AudioChunk, sensor_key
from soundsentry.features.featurizer import Featurizer, window_to_proto
from soundsentry.recency import LastHeard
from soundsentry.runtime.batchapp import BatchApp, Record, decode_or_park, park, run_batch_service
from soundsentry.runtime.settings import KafkaSettings, TopicSettings
from soundsentry.runtime.topics import AUDIO, WINDOWS, TopicLayout
from soundsentry.services.featurizer.metrics import FeaturizerMetrics
from soundsentry.services.featurizer.settings import FeaturizerSettings

__all__ = ["SERVICE", "FeaturizerService", "create_app", "main"]

logger = logging.getLogger(__name__)

SERVICE = "featurizer"


class FeaturizerService:
    """The featurizer's batch app, its featurizer and its metrics; built by :func:`create_app`.

    ``await service.app.start()`` / ``await service.app.stop()`` run it inside an event loop
    (tests); :func:`main` runs it as a worker process.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        featurizer: Featurizer,
        metrics: FeaturizerMetrics,
        settings: FeaturizerSettings,
        topics: TopicLayout,
        registry: CollectorRegistry,
    ) -> None:
        self.registry = registry
        self.featurizer = featurizer
        self.metrics = metrics
        self.settings = settings
        self.topics = topics
        self.source = topics.name(AUDIO)
        self.dlq = topics.dlq(AUDIO)
        self.windows = topics.name(WINDOWS)
        # The partition each sensor's chunks came from, to drop its state when it is revoked.
        self._sensor_partitions: dict[str, TopicPartition] = {}
        # Per sensor, the records whose audio windows still need: (stream, end sample, offset).
        self._held: dict[str, deque[tuple[str, int, int]]] = {}
        # When each sensor with held records last sent audio (monotonic seconds).
        self._last_heard = LastHeard()
        # When each sensor with state last sent audio (monotonic seconds).
        self._last_seen = LastHeard()
        self.app = BatchApp(
            SERVICE,
            kafka,
            topics,
            group_id=settings.app_id,
            source=self.source,
            process=self.process_batch,
            max_records=settings.max_batch_chunks,
            linger_ms=settings.max_batch_ms,
            first_needed=self.first_needed,
            on_lost=self.on_partitions_revoked,
            timers=[(1.0, self._idle_timer)],
        )

    async def process_batch(self, records: Sequence[Record]) -> None:
        """Featurize one batch of raw audio records; the next commit waits for its windows."""
        app, metrics = self.app, self.metrics
        chunks: list[AudioChunk] = []
        sources: list[Record] = []  # sources[i] is the record of chunks[i]
        metrics.stream.messages_consumed.labels(SERVICE, self.source).inc(len(records))
        for record in records:
            chunk = await decode_or_park(app, record, AUDIO, dlq=self.dlq, metrics=metrics.stream)
            if chunk is not None:
                chunks.append(chunk)
                sources.append(record)

        started = time.perf_counter()
        result = self.featurizer.process(chunks)
        metrics.batch_seconds.observe(time.perf_counter() - started)
        metrics.batch_chunks.observe(len(records))

        rejected = set()
        for index, error in result.rejected:
            rejected.add(index)
            await park(app, sources[index], error, dlq=self.dlq, metrics=metrics.stream)
        touched = set()
        for index, chunk in enumerate(chunks):
            if index not in rejected:  # a rejected chunk leaves no state behind
                record = sources[index]
                self._sensor_partitions[chunk.sensor_id] = TopicPartition(
                    record.topic, record.partition
                )
                self._hold(chunk, record.offset)
                touched.add(chunk.sensor_id)
        for reason, count in result.events.items():
            metrics.sequence_events.labels(reason).inc(count)
        send = app.producer.send
        deliveries = []
        per_profile: dict[str, int] = {}
        for window in result.windows:
            value = window_to_proto(window).SerializeToString()
            deliveries.append(await send(self.windows, value, key=sensor_key(window.sensor_id)))
            per_profile[window.profile] = per_profile.get(window.profile, 0) + 1
        for profile, count in per_profile.items():
            metrics.windows.labels(profile).inc(count)
        metrics.sensors.set(self.featurizer.sensors)
        app.update_lag(records, metrics.consumer_lag)
        # The commit that covers this batch waits for these; a failed one crashes the app.
        app.before_commit(deliveries)
        now = time.monotonic()
        for sensor_id in touched:
            self._release(sensor_id)
            if sensor_id in self._held:
                self._last_heard.heard(sensor_id, now)
            self._last_seen.heard(sensor_id, now)
        metrics.held_records.set(sum(len(held) for held in self._held.values()))

    def first_needed(self) -> Mapping[TopicPartition, int]:
        """Per partition, the offset of the first record whose audio is still needed."""
        first: dict[TopicPartition, int] = {}
        for sensor_id, held in self._held.items():
            tp = self._sensor_partitions[sensor_id]
            offset = held[0][2]
            if offset < first.get(tp, offset + 1):
                first[tp] = offset
        return first

    async def _idle_timer(self) -> None:
        now = time.monotonic()
        self._release_idle(now)
        self._forget_idle(now)
        self.metrics.held_records.set(sum(len(held) for held in self._held.values()))

    def _forget_idle(self, now: float) -> None:
        """Release the state of sensors silent for ``state_idle_s``, so memory is bounded by
        the sensors streaming, not by every sensor id ever seen."""
        limit = self.settings.state_idle_s
        gone = self._last_seen.pop_silent(now, limit)
        for sensor_id in gone:
            self.featurizer.forget(sensor_id)
            self._sensor_partitions.pop(sensor_id, None)
            self._held.pop(sensor_id, None)
            self._last_heard.forget(sensor_id)
        if gone:
            self.metrics.sensors.set(self.featurizer.sensors)
            logger.info("released the state of %d sensors silent for %g s", len(gone), limit)

    def _release_idle(self, now: float) -> None:
        """Let go of the held records of sensors silent for ``hold_idle_s``: a sensor that has
        stopped must not hold back its partition's commits (after a crash its last, unfinished
        window is then not rebuilt; it would only finish if the sensor came back)."""
        limit = self.settings.hold_idle_s
        for sensor_id in self._last_heard.pop_silent(now, limit):
            self._held.pop(sensor_id, None)

    def _hold(self, chunk: AudioChunk, offset: int) -> None:
        """Keep the chunk's record uncommitted until no window to come needs its audio."""
        end = chunk.start_sample + chunk_frames(chunk)
        self._held.setdefault(chunk.sensor_id, deque()).append((chunk.stream_id, end, offset))

    def _release(self, sensor_id: str) -> None:
        held = self._held.get(sensor_id)
        if not held:
            return
        needed = self.featurizer.needed_from(sensor_id)
        while held:
            stream_id, end, _ = held[0]
            if needed is not None and stream_id == needed[0] and end > needed[1]:
                break  # this chunk's audio (and all after it) is still needed
            held.popleft()
        if not held:
            del self._held[sensor_id]
            self._last_heard.forget(sensor_id)

    def on_partitions_revoked(self, revoked: Set[TopicPartition]) -> None:
        """Drop the state of the sensors of partitions this worker lost, and their lag gauges.

        Called when a rebalance ends with the partitions the worker keeps: sensors of a
        partition that stays keep their state (the worker reads its uncommitted records
        again, and the repeats are dropped by sequence).
        """
        gone = [s for s, tp in self._sensor_partitions.items() if tp in revoked]
        for sensor_id in gone:
            self.featurizer.forget(sensor_id)
            del self._sensor_partitions[sensor_id]
            # Not committed: the partition's next owner reads them again.
            self._held.pop(sensor_id, None)
            self._last_heard.forget(sensor_id)
            self._last_seen.forget(sensor_id)
        for tp in revoked:
            if tp.topic == self.source:
                with contextlib.suppress(KeyError):  # no batch from it yet
                    self.metrics.consumer_lag.remove(str(tp.partition))
        self.metrics.sensors.set(self.featurizer.sensors)
        if gone:
            logger.info("dropped the state of %d sensors of revoked partitions", len(gone))


def create_app(
    kafka: KafkaSettings,
    topics: TopicLayout,
    settings: FeaturizerSettings,
    *,
    registry: CollectorRegistry,
) -> FeaturizerService:
    """Build the featurizer (nothing connects until ``service.app.start()``).

    Raises
    ------
    ConfigurationError
        when the profiles file or the model cards are unusable.
    """
    return FeaturizerService(
        kafka,
        featurizer=Featurizer(settings.feature_profiles()),
        metrics=FeaturizerMetrics.create(registry),
        settings=settings,
        topics=topics,
        registry=registry,
    )


def main(*, loglevel: str = "INFO") -> int:
    """``soundsentry featurizer``: settings from the environment, run until stopped."""
    registry = CollectorRegistry()
    service = create_app(
        KafkaSettings(),
        TopicLayout.from_settings(TopicSettings()),
        FeaturizerSettings(),
        registry=registry,
    )
    return run_batch_service(service, loglevel=loglevel)
