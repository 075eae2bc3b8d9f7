"""The featurizer's Faust app: audio chunks in, feature windows out, bad records parked.

One agent reads the raw audio topic in batches (up to ``max_batch_chunks`` records, waiting at
most ``max_batch_ms``), decodes each record (undecodable ones are parked in the audio DLQ),
featurizes the whole batch in one :meth:`Featurizer.process` call (chunks from every sensor of
the worker's partitions together), parks the chunks the featurizer rejected, and sends every
finished window to the windows topic keyed by its sensor.

Delivery is at least once: a batch's records are acknowledged (and their offsets become
committable) only after Kafka acknowledged every window of the batch; a failed send crashes
the worker, which restarts from the last committed offset. Windows have deterministic ids, so
consumers drop the duplicates a restart produces.

Nothing is lost across a crash either: a chunk's record stays unacknowledged (so uncommitted)
while windows still to come need its audio (:meth:`Featurizer.needed_from`): about one window
and one hop of records per sensor. A restarted worker reads them again and rebuilds exactly the
windows the crashed one had not finished. Faust is told not to wait for these records when
partitions are revoked (``stream_wait_empty=False``): the next owner reads them again. A worker
keeps the state of the partitions a rebalance leaves with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence, Set
from typing import Any

import faust
from faust.types import TP
from mode import CrashingSupervisor
from prometheus_client import CollectorRegistry

from soundsentry.contracts import AudioChunk, SampleFormat, sensor_key
from soundsentry.features import Featurizer, window_to_proto
from soundsentry.services.featurizer.metrics import FeaturizerMetrics
from soundsentry.services.featurizer.settings import FeaturizerSettings
from soundsentry.settings import KafkaSettings, TopicSettings
from soundsentry.streaming import (
    decode_or_park,
    new_app,
    park,
    process_in_batches,
    run_worker,
    update_consumer_lag,
)
from soundsentry.topics import AUDIO, DLQ_PARTITIONS, WINDOWS, TopicLayout

__all__ = ["SERVICE", "FeaturizerService", "create_app", "main"]

logger = logging.getLogger(__name__)

SERVICE = "featurizer"
_F32 = SampleFormat.SAMPLE_FORMAT_F32LE


class FeaturizerService:
    """The featurizer's Faust app, its featurizer and its metrics; built by :func:`create_app`.

    ``await service.app.start()`` / ``await service.app.stop()`` run it inside an event loop
    (tests); :func:`main` runs it as a worker process.
    """

    def __init__(
        self,
        app: faust.App,
        *,
        featurizer: Featurizer,
        metrics: FeaturizerMetrics,
        settings: FeaturizerSettings,
        topics: TopicLayout,
        registry: CollectorRegistry,
    ) -> None:
        self.app = app
        self.registry = registry
        self.featurizer = featurizer
        self.metrics = metrics
        self.settings = settings
        self.topics = topics
        self.source = topics.faust_raw_topic(app, topics.name(AUDIO))
        self.dlq = topics.faust_raw_topic(app, topics.dlq(AUDIO), partitions=DLQ_PARTITIONS)
        self.windows = topics.faust_topic(app, WINDOWS)
        # The partition each sensor's chunks came from, to drop its state when it is revoked.
        self._sensor_partitions: dict[str, TP] = {}
        # Per sensor, the records whose audio windows still need: (stream, end sample, record).
        self._held: dict[str, deque[tuple[str, int, faust.EventT[Any]]]] = {}
        # When each sensor with held records last sent audio (monotonic seconds).
        self._last_heard: dict[str, float] = {}
        app.timer(1.0, name=f"{SERVICE}.release_idle")(self._idle_timer)
        # A crash in the agent (a bug, or Kafka refusing a window) stops the worker, so that it
        # restarts from the last committed offset instead of skipping the failed batch.
        app.agent(self.source, name=f"{SERVICE}.featurize", supervisor_strategy=CrashingSupervisor)(
            self._agent
        )
        app.on_partitions_assigned.connect(self._assigned_signal)

    async def _agent(self, stream: faust.StreamT[bytes]) -> None:
        await process_in_batches(
            stream,
            self.process_batch,
            max_records=self.settings.max_batch_chunks,
            within_s=self.settings.max_batch_ms / 1000,
        )

    async def process_batch(self, events: Sequence[faust.EventT[Any]]) -> None:
        """Featurize one batch of raw audio records; return when Kafka has all its windows."""
        metrics = self.metrics
        chunks: list[AudioChunk] = []
        sources: list[faust.EventT[Any]] = []  # sources[i] is the record of chunks[i]
        last_offsets: dict[TP, int] = {}
        for event in events:
            message = event.message
            last_offsets[message.tp] = max(message.offset, last_offsets.get(message.tp, -1))
            chunk = await decode_or_park(
                event, AUDIO, dlq=self.dlq, metrics=metrics.stream, service=SERVICE
            )
            if chunk is not None:
                chunks.append(chunk)
                sources.append(event)

        started = time.perf_counter()
        result = self.featurizer.process(chunks)
        metrics.batch_seconds.observe(time.perf_counter() - started)
        metrics.batch_chunks.observe(len(events))

        rejected = set()
        for index, error in result.rejected:
            rejected.add(index)
            await park(sources[index], error, dlq=self.dlq, metrics=metrics.stream, service=SERVICE)
        touched = set()
        for index, chunk in enumerate(chunks):
            if index not in rejected:  # a rejected chunk leaves no state behind
                self._sensor_partitions[chunk.sensor_id] = sources[index].message.tp
                self._hold(chunk, sources[index])
                touched.add(chunk.sensor_id)
        for reason, count in result.events.items():
            metrics.sequence_events.labels(reason).inc(count)
        deliveries = []
        for window in result.windows:
            deliveries.append(
                await self.windows.send(
                    key=sensor_key(window.sensor_id), value=window_to_proto(window)
                )
            )
            metrics.windows.labels(window.profile).inc()
        metrics.sensors.set(self.featurizer.sensors)
        update_consumer_lag(self.app, last_offsets, metrics.consumer_lag)
        # Faust only logs a failed send and would commit past it: wait for Kafka's acks
        # (producer_acks=-1) so that a failure crashes the worker before the batch is acked.
        await asyncio.gather(*deliveries)
        now = time.monotonic()
        for sensor_id in touched:
            self._release(sensor_id)
            if sensor_id in self._held:
                self._last_heard[sensor_id] = now
        metrics.held_records.set(sum(len(held) for held in self._held.values()))

    async def _idle_timer(self) -> None:
        self._release_idle(time.monotonic())
        self.metrics.held_records.set(sum(len(held) for held in self._held.values()))

    def _release_idle(self, now: float) -> None:
        """Let go of the held records of sensors silent for ``hold_idle_s``: a sensor that has
        stopped must not hold back its partition's commits (after a crash its last, unfinished
        window is then not rebuilt; it would only finish if the sensor came back)."""
        limit = self.settings.hold_idle_s
        for sensor_id in [s for s, t in self._last_heard.items() if now - t >= limit]:
            del self._last_heard[sensor_id]
            for _, _, record in self._held.pop(sensor_id, ()):
                record.ack()

    def _hold(self, chunk: AudioChunk, record: faust.EventT[Any]) -> None:
        """Keep the chunk's record uncommitted until no window to come needs its audio."""
        frames = len(chunk.pcm) // (4 if chunk.sample_format == _F32 else 2)
        end = chunk.start_sample + frames // max(chunk.channels, 1)
        record.message.incref()
        self._held.setdefault(chunk.sensor_id, deque()).append((chunk.stream_id, end, record))

    def _release(self, sensor_id: str) -> None:
        held = self._held.get(sensor_id)
        if not held:
            return
        needed = self.featurizer.needed_from(sensor_id)
        while held:
            stream_id, end, record = held[0]
            if needed is not None and stream_id == needed[0] and end > needed[1]:
                break  # this chunk's audio (and all after it) is still needed
            held.popleft()
            record.ack()
        if not held:
            del self._held[sensor_id]
            self._last_heard.pop(sensor_id, None)

    def on_partitions_revoked(self, revoked: Set[TP]) -> None:
        """Drop the state of the sensors of partitions this worker lost, and their lag gauges.

        Called when a rebalance ends with the partitions the worker keeps: sensors of a
        partition that stays keep their state (Faust may go on reading it where it was, and if
        it reads the uncommitted records again, the repeats are dropped by sequence).
        """
        source = self.topics.name(AUDIO)
        gone = [s for s, tp in self._sensor_partitions.items() if tp in revoked]
        for sensor_id in gone:
            self.featurizer.forget(sensor_id)
            del self._sensor_partitions[sensor_id]
            # Not acknowledged, so not committed: the partition's next owner reads them again.
            self._held.pop(sensor_id, None)
            self._last_heard.pop(sensor_id, None)
        for tp in revoked:
            if tp.topic == source:
                with contextlib.suppress(KeyError):  # no batch from it yet
                    self.metrics.consumer_lag.remove(str(tp.partition))
        self.metrics.sensors.set(self.featurizer.sensors)
        if gone:
            logger.info("dropped the state of %d sensors of revoked partitions", len(gone))

    async def _assigned_signal(
        self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any
    ) -> None:
        # faust sends Signal[Set[TP]]: receiver(app, assigned, signal=...).
        (assigned,) = args
        lost = {tp for tp in self._sensor_partitions.values() if tp not in assigned}
        if lost:
            self.on_partitions_revoked(lost)


def create_app(
    kafka: KafkaSettings,
    topics: TopicLayout,
    settings: FeaturizerSettings,
    *,
    registry: CollectorRegistry,
) -> FeaturizerService:
    """Build the featurizer's Faust app (nothing connects until it starts).

    Raises
    ------
    ConfigurationError
        when the profiles file is unusable.
    """
    featurizer = Featurizer(settings.feature_profiles())
    app = new_app(settings.app_id, kafka, topics, data_dir=settings.data_dir, wait_empty=False)
    return FeaturizerService(
        app,
        featurizer=featurizer,
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
    return run_worker(service, loglevel=loglevel)
