"""Second opinions for uncertain windows: the backends, and the escalator that runs them.

:mod:`soundsentry.escalation.policy` decides *whether* a window may be escalated (uncertainty band,
budget, circuit breaker); this module does the escalating:

* a :class:`SecondStage` backend scores one window: :class:`RekognitionSecondStage` renders it
  as the spectrogram PNG the Rekognition training export uses and calls DetectCustomLabels;
  :class:`OnnxSecondStage` runs a larger ONNX model;
* :class:`Escalator` offers each first-stage result to the policy and, when it may go, calls
  the backend in a task of its own, with a timeout, retries with jittered backoff and bounded
  concurrency, and merges the answer into the first-stage scores (:class:`Revision`).

:meth:`Escalator.offer` never waits: scoring of other windows is never held back by a slow or
failing backend. A window that cannot be escalated (queue full, breaker open, budget spent)
keeps its first-stage score, and the drop is counted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from soundsentry.audio.spectrogram_png import encode_png_gray, spectrogram_image
from soundsentry.aws import aws_client
from soundsentry.backoff import backoff_delays
from soundsentry.escalation.policy import (
    CircuitBreaker,
    EscalationPolicy,
    MergePolicy,
    RateBudget,
    merge_scores,
)
from soundsentry.exceptions import ConfigurationError, SoundSentryError
from soundsentry.features.featurizer import Window
from soundsentry.models.model_set import LoadedModel, WindowScore

__all__ = [
    "EscalationMetrics",
    "Escalator",
    "OnnxSecondStage",
    "RekognitionSecondStage",
    "Revision",
    "SecondStage",
    "SecondStageError",
]

logger = logging.getLogger(__name__)

_BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
# A call to a cloud model: tens of ms when warm, seconds when throttled or timing out.
_CALL_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class SecondStageError(SoundSentryError):
    """A second-stage call failed; ``retryable`` when trying again may help (throttling,
    server errors, network), not when the request itself is wrong (bad image, no access)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class SecondStage(Protocol):
    """A bigger model that scores one window at a time."""

    @property
    def name(self) -> str:
        """Goes into ``WindowScores.escalated_to`` and metric labels."""
        ...

    def supports(self, window: Window) -> bool:
        """Whether this backend can judge windows like this one (its profile and shape)."""
        ...

    async def classify(self, window: Window, labels: Sequence[str]) -> dict[str, float]:
        """A score in [0, 1] for each of ``labels`` the backend can judge; others are absent.

        Raises
        ------
        SecondStageError
            when the call failed.
        """
        ...


# -- Amazon Rekognition Custom Labels -------------------------------------------------------------

_PROJECT_VERSION_ARN = re.compile(
    r"^arn:aws[a-z-]*:rekognition:[a-z0-9-]+:\d{12}:project/.+/version/.+"
)
# Codes worth a retry: throttling and the service's own trouble. Anything else (bad image,
# access denied, model not running) fails the same way again.
_RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "InternalServerError",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


class RekognitionSecondStage:
    """DetectCustomLabels on a Rekognition Custom Labels project version.

    The window is rendered exactly as ``soundsentry dataset synth --rekognition`` renders
    training images (:mod:`soundsentry.audio.spectrogram_png`), so a model trained on that
    export sees the same pictures. An answer's labels are mapped to ours through ``label_map``
    (Rekognition name -> label; default: the same name) and confidences (0..100) become scores
    (0..1). Rekognition only returns labels above ``min_confidence``: a label the model knows
    but did not return scores 0. The labels it knows are the values of ``label_map``, or every
    label when the map is empty.

    boto3 is synchronous: each call runs in a worker thread, with botocore's own retries off
    (the escalator retries) and its socket timeouts at ``timeout_s``, so a hung connection
    frees its thread.

    Parameters
    ----------
    project_version_arn : str
        ``arn:aws:rekognition:<region>:<account>:project/<name>/version/<version>/<id>``.
    min_confidence : float
        Rekognition's ``MinConfidence``, 0..100.
    region, endpoint_url : str or None
        Where to call (``endpoint_url`` for VPC endpoints and tests); credentials come from
        boto3's usual chain (environment, profile, instance or pod role).
    client : optional
        A ready boto3 Rekognition client (tests); built from the arguments above otherwise.
    """

    name = "rekognition"

    def __init__(
        self,
        *,
        project_version_arn: str,
        min_confidence: float = 50.0,
        region: str | None = None,
        endpoint_url: str | None = None,
        label_map: Mapping[str, str] | None = None,
        timeout_s: float = 5.0,
        top_db: float = 80.0,
        client: Any = None,
    ) -> None:
        if not _PROJECT_VERSION_ARN.match(project_version_arn):
            raise ConfigurationError(
                f"rekognition: {project_version_arn!r} is not a Custom Labels project version "
                "ARN (arn:aws:rekognition:<region>:<account>:project/<name>/version/<v>/<id>)"
            )
        if not 0.0 <= min_confidence <= 100.0:
            raise ConfigurationError(
                f"rekognition: min_confidence={min_confidence} must be in 0..100"
            )
        self.project_version_arn = project_version_arn
        self.min_confidence = float(min_confidence)
        self.label_map = dict(label_map or {})
        self.top_db = top_db
        if client is None:
            client = aws_client(
                "rekognition",
                region=region or _region_of(project_version_arn),
                endpoint_url=endpoint_url,
                timeout_s=timeout_s,
            )
        self._client = client

    def supports(self, window: Window) -> bool:
        return window.log_mel_db.size > 0

    def render(self, window: Window) -> bytes:
        """The PNG sent for ``window`` (the training export's rendering)."""
        return encode_png_gray(spectrogram_image(window.log_mel_db, top_db=self.top_db))

    async def classify(self, window: Window, labels: Sequence[str]) -> dict[str, float]:
        image = self.render(window)
        answer = await asyncio.to_thread(self._detect, image)
        known = set(self.label_map.values()) if self.label_map else set(labels)
        scores = {label: 0.0 for label in labels if label in known}
        for found in answer:
            label = self.label_map.get(found["Name"], found["Name"])
            if label in scores:
                confidence = min(max(float(found["Confidence"]) / 100.0, 0.0), 1.0)
                scores[label] = max(scores[label], confidence)
        return scores

    def _detect(self, image: bytes) -> list[dict[str, Any]]:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            response = self._client.detect_custom_labels(
                ProjectVersionArn=self.project_version_arn,
                Image={"Bytes": image},
                MinConfidence=self.min_confidence,
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            raise SecondStageError(
                f"DetectCustomLabels failed: {code or status}: {error.get('Message', exc)}",
                retryable=code in _RETRYABLE_CODES or status >= 500 or status == 429,
            ) from exc
        except BotoCoreError as exc:  # connection refused, socket timeouts, ...
            raise SecondStageError(f"DetectCustomLabels failed: {exc}", retryable=True) from exc
        labels: list[dict[str, Any]] = response.get("CustomLabels", [])
        return labels


def _region_of(arn: str) -> str:
    return arn.split(":")[3]


# -- a larger ONNX model --------------------------------------------------------------------------


class OnnxSecondStage:
    """A larger ONNX model (a model card like any other) run only on escalated windows.

    It judges windows of its card's profile and answers for its card's labels. Inference runs
    in a worker thread, so the event loop keeps consuming meanwhile.
    """

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.name = f"onnx:{model.name}@{model.card.version}"
        self._shape = (model.profile.num_bands, model.profile.window_frames)

    def supports(self, window: Window) -> bool:
        return window.profile == self.model.profile.name and window.log_mel_db.shape == self._shape

    async def classify(self, window: Window, labels: Sequence[str]) -> dict[str, float]:
        scores, _ = await asyncio.to_thread(self.model.predict, window.log_mel_db[np.newaxis])
        wanted = set(labels)
        return {
            label: float(scores[0, index])
            for index, label in enumerate(self.model.card.labels)
            if label in wanted
        }


# -- the escalator --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Revision:
    """First-stage scores with the second stage's answer merged into the uncertain labels."""

    result: WindowScore
    escalated_to: str
    labels: tuple[str, ...]  # the labels that were uncertain and asked about


@dataclass(frozen=True, slots=True)
class EscalationMetrics:
    """Prometheus metrics of escalation (built against the registry passed in)."""

    offered: Counter
    dropped: Counter
    windows: Counter
    calls: Counter
    call_seconds: Histogram
    pending: Gauge
    breaker_state: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> EscalationMetrics:
        return cls(
            offered=Counter(
                "soundsentry_escalation_uncertain_windows_total",
                "Scored windows with at least one label in its uncertainty band.",
                registry=registry,
            ),
            dropped=Counter(
                "soundsentry_escalation_dropped_total",
                "Uncertain windows not escalated, by reason (budget_overall, budget_sensor, "
                "breaker_open, queue_full, unsupported): they keep their first-stage scores.",
                ["reason"],
                registry=registry,
            ),
            windows=Counter(
                "soundsentry_escalation_windows_total",
                "Escalated windows by backend and result (revised, failed after retries).",
                ["backend", "result"],
                registry=registry,
            ),
            calls=Counter(
                "soundsentry_escalation_calls_total",
                "Calls to the second stage (retries included) by backend and outcome "
                "(ok, error, timeout).",
                ["backend", "outcome"],
                registry=registry,
            ),
            call_seconds=Histogram(
                "soundsentry_escalation_call_seconds",
                "Seconds per call to the second stage, by backend.",
                ["backend"],
                buckets=_CALL_SECONDS_BUCKETS,
                registry=registry,
            ),
            pending=Gauge(
                "soundsentry_escalation_pending",
                "Escalations waiting for or in a call.",
                registry=registry,
            ),
            breaker_state=Gauge(
                "soundsentry_escalation_breaker_state",
                "Circuit breaker of the second stage: 0 closed, 1 half open, 2 open.",
                ["backend"],
                registry=registry,
            ),
        )


class Escalator:
    """Runs the second stage on uncertain windows, within budget, without blocking scoring.

    Parameters
    ----------
    backend : SecondStage
    policy, budget, breaker
        See :mod:`soundsentry.escalation.policy`. The breaker counts one failure per window that
        still failed after its retries.
    merge : {"replace", "max", "mean"}
        How an answer combines with the first-stage score of an uncertain label.
    timeout_s : float
        Per call; a timeout counts as a retryable failure.
    retries : int
        Further calls after a retryable failure, after jittered exponential backoff
        (``backoff_base_s`` doubling up to ``backoff_cap_s``).
    max_concurrency : int
        Calls in flight at once.
    max_pending : int
        Escalations accepted but unfinished (waiting for a call slot or in a call); beyond it
        windows are dropped (``queue_full``) rather than queued without bound.
    """

    def __init__(
        self,
        backend: SecondStage,
        *,
        policy: EscalationPolicy,
        budget: RateBudget,
        breaker: CircuitBreaker,
        merge: MergePolicy = "replace",
        timeout_s: float = 5.0,
        retries: int = 2,
        backoff_base_s: float = 0.2,
        backoff_cap_s: float = 5.0,
        max_concurrency: int = 4,
        max_pending: int = 256,
        metrics: EscalationMetrics | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        merge_scores(merge, 0.0, None)  # raises ConfigurationError for an unknown policy
        backoff_delays(retries, backoff_base_s, backoff_cap_s, random.Random(0))  # checks them
        if not timeout_s > 0:
            raise ConfigurationError(f"escalation: timeout_s={timeout_s} must be > 0")
        if max_concurrency < 1 or max_pending < max_concurrency:
            raise ConfigurationError(
                f"escalation: need 1 <= max_concurrency ({max_concurrency}) <= max_pending "
                f"({max_pending})"
            )
        self.backend = backend
        self.policy = policy
        self.budget = budget
        self.breaker = breaker
        self.merge: MergePolicy = merge
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.max_pending = max_pending
        self.metrics = metrics
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._slots = asyncio.Semaphore(max_concurrency)
        self._tasks: set[asyncio.Task[Revision | None]] = set()
        self._observe_breaker()

    @property
    def pending(self) -> int:
        """Escalations accepted and not finished."""
        return len(self._tasks)

    def offer(
        self, result: WindowScore, labels: Sequence[str]
    ) -> asyncio.Task[Revision | None] | None:
        """Escalate ``result`` if it is uncertain and allowed; never waits.

        Returns the task that resolves to the :class:`Revision` (None when the second stage
        failed after its retries), or None when the window is not escalated. Call it from the
        event loop that should run the calls.
        """
        if result.gated:
            return None
        uncertain = self.policy.uncertain_labels(labels, result.scores.tolist())
        if not uncertain:
            return None
        if self.metrics:
            self.metrics.offered.inc()
        reason = self._refusal(result.window)
        if reason is not None:
            if self.metrics:
                self.metrics.dropped.labels(reason).inc()
            return None
        task = asyncio.get_running_loop().create_task(
            self._escalate(result, tuple(labels), tuple(uncertain)),
            name=f"escalate {result.window.window_id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        if self.metrics:
            self.metrics.pending.set(len(self._tasks))
        return task

    def _refusal(self, window: Window) -> str | None:
        if not self.backend.supports(window):
            return "unsupported"
        if len(self._tasks) >= self.max_pending:
            return "queue_full"
        if not self.breaker.allow():
            self._observe_breaker()
            return "breaker_open"
        overall = self.budget.dropped_overall
        if not self.budget.try_acquire(window.sensor_id):
            self.breaker.release()
            self._observe_breaker()
            return "budget_overall" if self.budget.dropped_overall > overall else "budget_sensor"
        self._observe_breaker()
        return None

    def _finished(self, task: asyncio.Task[Revision | None]) -> None:
        self._tasks.discard(task)
        if self.metrics:
            self.metrics.pending.set(len(self._tasks))

    async def _escalate(
        self, result: WindowScore, labels: tuple[str, ...], uncertain: tuple[str, ...]
    ) -> Revision | None:
        async with self._slots:
            answer = await self._call(result.window, uncertain)
        backend = self.backend.name
        if answer is None:
            if self.metrics:
                self.metrics.windows.labels(backend, "failed").inc()
            return None
        merged = result.scores.copy()
        for label in uncertain:
            index = labels.index(label)
            merged[index] = merge_scores(self.merge, float(merged[index]), answer.get(label))
        if self.metrics:
            self.metrics.windows.labels(backend, "revised").inc()
        return Revision(replace(result, scores=merged), escalated_to=backend, labels=uncertain)

    async def _call(self, window: Window, labels: tuple[str, ...]) -> dict[str, float] | None:
        delays = backoff_delays(self.retries, self.backoff_base_s, self.backoff_cap_s, self._rng)
        backend = self.backend.name
        for attempt in range(self.retries + 1):
            started = time.perf_counter()
            try:
                answer = await asyncio.wait_for(
                    self.backend.classify(window, labels), self.timeout_s
                )
            except TimeoutError:
                outcome, retryable, problem = "timeout", True, f"no answer in {self.timeout_s} s"
            except SecondStageError as exc:
                outcome, retryable, problem = "error", exc.retryable, str(exc)
            else:
                outcome = "ok"
            if self.metrics:
                self.metrics.calls.labels(backend, outcome).inc()
                self.metrics.call_seconds.labels(backend).observe(time.perf_counter() - started)
            if outcome == "ok":
                self.breaker.record_success()
                self._observe_breaker()
                return answer
            logger.warning(
                "escalation of window %s to %s, attempt %d: %s",
                window.window_id,
                backend,
                attempt + 1,
                problem,
            )
            if not retryable or attempt == self.retries:
                break
            await self._sleep(delays[attempt])
        self.breaker.record_failure()
        self._observe_breaker()
        return None

    def _observe_breaker(self) -> None:
        if self.metrics:
            state = _BREAKER_STATES[self.breaker.state]
            self.metrics.breaker_state.labels(self.backend.name).set(state)

    async def drain(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the escalations in flight, then cancel the rest."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
