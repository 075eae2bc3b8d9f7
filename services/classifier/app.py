"""The classifier: feature windows in, per-label scores out, bad records parked.

A :class:`~soundsentry.runtime.batchapp.BatchApp` reads the windows topic in batches (up to
``max_batch_windows`` records, waiting at most ``max_batch_ms``), decodes each record
(undecodable ones, and windows whose shape does not fit their profile, are parked in the
windows DLQ), and scores the whole batch with :meth:`ModelSet.score`: every model whose profile
matches a window, one ONNX call per model for all sensors of the batch, windows below a model's
silence gate skipped. Each model's scores of each window go to the scores topic keyed by
sensor, with a deterministic id.

Hot reload: every ``reload_interval_s`` the model directory is re-read
(:class:`~soundsentry.models.model_set.ModelDirectory`); new and changed cards serve from the next
batch, a card that fails to load is logged and counted while its previous version keeps serving.

Escalation (optional, :class:`~soundsentry.services.classifier.settings.EscalationSettings`):
after a window's first-stage scores are sent, an uncertain one is offered to the
:class:`~soundsentry.escalation.escalator.Escalator`, which calls the second stage in a task of its
own; scoring goes on meanwhile. When the answer comes, a revision (the merged scores, with
``escalated_to`` set and a score id of its own) goes to the scores topic too.

Delivery is at least once, as in the featurizer: a batch's offsets are committed only after
Kafka acknowledged every score of the batch; a failed send crashes the worker, which restarts
from the last commit; consumers drop the duplicates by ``score_id``. A partition's commit stays
behind the record of an escalated window until its revision is acknowledged (or the escalation
gave up), so a crash in between escalates it again rather than losing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence, Set

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from soundsentry.contracts import sensor_key
from soundsentry.escalation.escalator import (
    EscalationMetrics,
    Escalator,
    OnnxSecondStage,
    RekognitionSecondStage,
    Revision,
    SecondStage,
)
from soundsentry.escalation.policy import (
    CircuitBreaker,
    EscalationPolicy,
    RateBudget,
    UncertaintyBand,
)
from soundsentry.exceptions import BadMessageError, ConfigurationError
from soundsentry.features.featurizer import FeatureProfile, Window, window_from_proto
from soundsentry.models.model_set import (
    ModelDirectory,
    ModelSet,
    ReloadReport,
    load_model,
    score_to_proto,
)
from soundsentry.runtime.batchapp import BatchApp, Record, decode_or_park, park, run_batch_service
from soundsentry.runtime.metrics import SensorFilter
from soundsentry.runtime.settings import KafkaSettings, TopicSettings
from soundsentry.runtime.topics import SCORES, WINDOWS, TopicLayout
from soundsentry.services.classifier.metrics import ClassifierMetrics
from soundsentry.services.classifier.settings import ClassifierSettings, EscalationSettings

__all__ = ["SERVICE", "ClassifierService", "build_escalator", "create_app", "main"]

logger = logging.getLogger(__name__)

SERVICE = "classifier"


class ClassifierService:
    """The classifier's batch app, its models and its metrics; built by :func:`create_app`."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        models: ModelDirectory,
        metrics: ClassifierMetrics,
        settings: ClassifierSettings,
        topics: TopicLayout,
        registry: CollectorRegistry,
        escalator: Escalator | None = None,
    ) -> None:
        self.escalator = escalator
        self._revisions: set[asyncio.Task[None]] = set()
        self.registry = registry
        self.directory = models
        self.metrics = metrics
        self.settings = settings
        self.topics = topics
        self.source = topics.name(WINDOWS)
        self.dlq = topics.dlq(WINDOWS)
        self.scores = topics.name(SCORES)
        # Offsets of records whose escalation is under way, per partition (with multiplicity:
        # two models may escalate the same window).
        self._escalating: dict[TopicPartition, Counter[int]] = {}
        self._use(models.models)
        timers = []
        if settings.reload_interval_s:
            timers.append((settings.reload_interval_s, self._reload_timer))
        self.app = BatchApp(
            SERVICE,
            kafka,
            topics,
            group_id=settings.app_id,
            source=self.source,
            process=self.process_batch,
            max_records=settings.max_batch_windows,
            linger_ms=settings.max_batch_ms,
            first_needed=self.first_needed,
            on_lost=self.on_partitions_revoked,
            timers=timers,
            on_stop=self._finish_escalations if escalator is not None else None,
        )

    def _use(self, models: ModelSet) -> None:
        self.models = models
        self._profiles: dict[str, FeatureProfile] = {p.name: p for p in models.profiles()}
        self._labels = {m.name: list(m.card.labels) for m in models.models}
        self.metrics.models_loaded.set(len(models.models))

    def reload_models(self) -> ReloadReport:
        """Re-read the model directory; the next batch uses what changed."""
        report = self.directory.refresh()
        for card in report.loaded:
            self.metrics.model_reloads.labels(card, "loaded").inc()
            logger.info("model card %s loaded", card)
        for card in report.removed:
            self.metrics.model_reloads.labels(card, "removed").inc()
            logger.info("model card %s removed", card)
        for card, problem in report.failed:
            self.metrics.model_reloads.labels(card, "failed").inc()
            logger.error("model reload: %s", problem)
        if report.changed:
            self._use(self.directory.models)
        return report

    async def _reload_timer(self) -> None:
        self.reload_models()

    def _check_shape(self, window: Window) -> None:
        profile = self._profiles.get(window.profile)
        if profile is None:
            return  # counted as unmatched: a profile for other consumers is not an error
        expected = (profile.num_bands, profile.window_frames)
        if window.log_mel_db.shape != expected:
            raise BadMessageError(
                "window_shape_mismatch",
                f"window {window.window_id} of profile {window.profile!r} has "
                f"{window.log_mel_db.shape[0]} bands x {window.log_mel_db.shape[1]} frames; "
                f"the loaded models of that profile take {expected[0]} x {expected[1]}",
            )

    async def process_batch(self, records: Sequence[Record]) -> None:
        """Score one batch of window records; the next commit waits for its scores."""
        app, metrics = self.app, self.metrics
        windows: list[Window] = []
        sources: dict[str, Record] = {}  # window id -> its record, for escalation
        unmatched: Counter[str] = Counter()
        metrics.stream.messages_consumed.labels(SERVICE, self.source).inc(len(records))
        for record in records:
            decoded = await decode_or_park(
                app, record, WINDOWS, dlq=self.dlq, metrics=metrics.stream
            )
            if decoded is None:
                continue
            try:
                window = window_from_proto(decoded)
                self._check_shape(window)
            except BadMessageError as error:
                await park(app, record, error, dlq=self.dlq, metrics=metrics.stream)
                continue
            if window.profile in self._profiles:
                windows.append(window)
                sources[window.window_id] = record
            else:
                unmatched[window.profile] += 1
        for profile, count in unmatched.items():
            metrics.windows_unmatched.labels(profile).inc(count)

        started = time.perf_counter()
        results = self.models.score(windows)
        metrics.inference_seconds.observe(time.perf_counter() - started)
        metrics.batch_windows.observe(len(records))
        send = app.producer.send
        deliveries = []
        for result in results:
            counter = metrics.windows_gated if result.gated else metrics.windows_scored
            counter.labels(result.model).inc()
            labels = self._labels[result.model]
            window = result.window
            metrics.sensors.observe(
                window.sensor_id, result.model, labels, result.scores.tolist(), window.rms_dbfs
            )
            value = score_to_proto(result, labels).SerializeToString()
            deliveries.append(await send(self.scores, value, key=sensor_key(window.sensor_id)))
            if self.escalator is not None:
                job = self.escalator.offer(result, labels)
                if job is not None:
                    self._follow(job, sources[result.window.window_id], labels)
        app.update_lag(records, metrics.consumer_lag)
        # The commit that covers this batch waits for these; a failed one crashes the app.
        app.before_commit(deliveries)

    def first_needed(self) -> Mapping[TopicPartition, int]:
        """Per partition, the first record with an escalation under way."""
        return {tp: min(offsets) for tp, offsets in self._escalating.items() if offsets}

    def on_partitions_revoked(self, revoked: Set[TopicPartition]) -> None:
        """Forget the lag gauges of partitions this worker lost (escalations under way finish
        and publish; the next owner may escalate the same windows again)."""
        for tp in revoked:
            self._escalating.pop(tp, None)
            with contextlib.suppress(KeyError):  # no batch from it yet
                self.metrics.consumer_lag.remove(str(tp.partition))

    def _follow(
        self,
        job: asyncio.Task[Revision | None],
        record: Record,
        labels: Sequence[str],
    ) -> None:
        # The record stays uncommitted until the revision is out.
        tp = TopicPartition(record.topic, record.partition)
        self._escalating.setdefault(tp, Counter())[record.offset] += 1
        task = asyncio.get_running_loop().create_task(self._publish_revision(job, record, labels))
        self._revisions.add(task)
        task.add_done_callback(self._revisions.discard)

    async def _publish_revision(
        self,
        job: asyncio.Task[Revision | None],
        record: Record,
        labels: Sequence[str],
    ) -> None:
        try:
            revision = await job
            if revision is not None:
                value = score_to_proto(revision.result, labels, escalated_to=revision.escalated_to)
                delivery = await self.app.producer.send(
                    self.scores,
                    value.SerializeToString(),
                    key=sensor_key(revision.result.window.sensor_id),
                )
                await delivery
        except asyncio.CancelledError:
            raise  # shutting down: the record stays uncommitted and is escalated again
        except Exception as exc:
            # A bug or a failed send: as for a batch, crash without committing the record.
            logger.exception("publishing the revision of window %s failed", job.get_name())
            await self.app.crash(exc)
            return
        offsets = self._escalating.get(TopicPartition(record.topic, record.partition))
        if offsets is not None:
            offsets[record.offset] -= 1
            if offsets[record.offset] <= 0:
                del offsets[record.offset]

    async def _finish_escalations(self) -> None:
        """On shutdown: give calls in flight a moment, then publish what they revised."""
        assert self.escalator is not None
        grace = min(self.escalator.timeout_s, 5.0)
        await self.escalator.drain(grace)
        if self._revisions:
            _done, late = await asyncio.wait(set(self._revisions), timeout=grace)
            for task in late:
                task.cancel()


def build_escalator(
    settings: EscalationSettings, *, registry: CollectorRegistry, threads: int = 1
) -> Escalator | None:
    """The escalator the settings describe, or None when escalation is off.

    Raises
    ------
    ConfigurationError
        for a band, ARN or ONNX card that cannot work.
    """
    if settings.backend == "none":
        return None
    backend: SecondStage
    if settings.backend == "rekognition":
        backend = RekognitionSecondStage(
            project_version_arn=settings.rekognition_project_version_arn,
            min_confidence=settings.rekognition_min_confidence,
            region=settings.rekognition_region,
            endpoint_url=settings.rekognition_endpoint_url,
            label_map=settings.rekognition_label_map,
            timeout_s=settings.timeout_s,
        )
    else:
        if settings.onnx_card is None:  # checked by the settings; keeps mypy informed
            raise ConfigurationError("escalation backend onnx needs ONNX_CARD")
        backend = OnnxSecondStage(load_model(settings.onnx_card, threads=threads))
    policy = EscalationPolicy(
        {label: UncertaintyBand(low, high) for label, (low, high) in settings.bands.items()}
    )
    return Escalator(
        backend,
        policy=policy,
        budget=RateBudget(settings.calls_per_minute, settings.calls_per_sensor_per_minute),
        breaker=CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s),
        merge=settings.merge,
        timeout_s=settings.timeout_s,
        retries=settings.retries,
        backoff_base_s=settings.backoff_base_s,
        backoff_cap_s=settings.backoff_cap_s,
        max_concurrency=settings.max_concurrency,
        max_pending=settings.max_pending,
        metrics=EscalationMetrics.create(registry),
    )


def create_app(
    kafka: KafkaSettings,
    topics: TopicLayout,
    settings: ClassifierSettings,
    *,
    registry: CollectorRegistry,
    escalation: EscalationSettings | None = None,
) -> ClassifierService:
    """Build the classifier and load its models (nothing connects until it starts).

    Raises
    ------
    ConfigurationError
        when the model directory is empty or holds a card that does not fit its model, or
        the escalation settings cannot work.
    """
    models = ModelDirectory(settings.model_dir, threads=settings.inference_threads)
    escalator = (
        build_escalator(escalation, registry=registry, threads=settings.inference_threads)
        if escalation is not None
        else None
    )
    return ClassifierService(
        kafka,
        models=models,
        metrics=ClassifierMetrics.create(registry, SensorFilter(settings.sensor_metrics)),
        settings=settings,
        topics=topics,
        registry=registry,
        escalator=escalator,
    )


def main(*, loglevel: str = "INFO") -> int:
    """``soundsentry classifier``: settings from the environment, run until stopped."""
    registry = CollectorRegistry()
    service = create_app(
        KafkaSettings(),
        TopicLayout.from_settings(TopicSettings()),
        ClassifierSettings(),
        registry=registry,
        escalation=EscalationSettings(),
    )
    return run_batch_service(service, loglevel=loglevel)
