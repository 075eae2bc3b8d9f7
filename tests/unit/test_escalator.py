"""The escalator: which windows go to the second stage, and how calls are made and merged.

The backend here is a scripted test double (each call takes the next scripted outcome), so
timing, failures and concurrency are under the test's control; the real backends are tested
against a real HTTP endpoint (moto's server) and a real ONNX model in test_second_stages.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from soundsentry.escalation.escalator import (
    EscalationMetrics,
    Escalator,
    Revision,
    SecondStageError,
)
from soundsentry.escalation.policy import (
    CircuitBreaker,
    EscalationPolicy,
    RateBudget,
    UncertaintyBand,
)
from soundsentry.exceptions import ConfigurationError
from soundsentry.features.featurizer import Window
from soundsentry.models.model_set import WindowScore

LABELS = ("smoke_alarm", "siren")
POLICY = EscalationPolicy({"smoke_alarm": UncertaintyBand(0.3, 0.7)})


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class ScriptedBackend:
    """Answers each call with the next scripted outcome: a dict, an exception, or "hang"."""

    name = "scripted"

    def __init__(self, *outcomes: object, supported: bool = True) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[str] = []
        self.running = 0
        self.most_running = 0
        self.release = asyncio.Event()
        self.supported = supported

    def supports(self, window: Window) -> bool:
        return self.supported

    async def classify(self, window: Window, labels: Sequence[str]) -> dict[str, float]:
        self.calls.append(window.window_id)
        outcome = self.outcomes.pop(0) if self.outcomes else {"smoke_alarm": 0.9}
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if outcome == "hang":
                await asyncio.Event().wait()
            if outcome == "gate":
                await self.release.wait()
                outcome = {"smoke_alarm": 0.9}
            if isinstance(outcome, Exception):
                raise outcome
            assert isinstance(outcome, dict)
            return outcome
        finally:
            self.running -= 1


def result(
    score: float, *, sensor: str = "mic-1", start: int = 0, gated: bool = False
) -> WindowScore:
    window = Window(
        window_id=f"{sensor}-{start}",
        sensor_id=sensor,
        stream_id="s",
        profile="full-16k",
        start_sample=start,
        num_samples=16_000,
        sample_rate_hz=16_000,
        log_mel_db=np.zeros((64, 49), dtype=np.float32),
        rms_dbfs=-20.0,
        start_time_ns=0,
    )
    return WindowScore(
        window=window,
        model="m",
        model_version="1",
        scores=np.array([score, 0.5], dtype=np.float32),
        frame_scores=None,
        gated=gated,
    )


def escalator(
    backend: ScriptedBackend,
    *,
    clock: FakeClock | None = None,
    registry: CollectorRegistry | None = None,
    sleeps: list[float] | None = None,
    **kwargs: object,
) -> Escalator:
    clock = clock or FakeClock()
    options: dict[str, object] = {
        "budget": RateBudget(600, 600, now=clock),
        "breaker": CircuitBreaker(3, 30.0, now=clock),
        "timeout_s": 1.0,
        "retries": 0,
        **kwargs,
    }

    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    return Escalator(
        backend,
        policy=POLICY,
        metrics=EscalationMetrics.create(registry or CollectorRegistry()),
        rng=random.Random(1),
        sleep=sleep,
        **options,  # type: ignore[arg-type]
    )


async def test_only_uncertain_labels_are_asked_about_and_merged() -> None:
    backend = ScriptedBackend({"smoke_alarm": 0.95, "siren": 0.0})
    registry = CollectorRegistry()
    runner = escalator(backend, registry=registry, merge="mean")
    task = runner.offer(result(0.5), LABELS)
    assert task is not None
    revision = await task
    assert isinstance(revision, Revision)
    assert revision.escalated_to == "scripted"
    assert revision.labels == ("smoke_alarm",)
    # smoke_alarm: mean of 0.5 and 0.95; siren was not uncertain, so its 0.5 stays.
    np.testing.assert_allclose(revision.result.scores, [0.725, 0.5], rtol=1e-6)
    sample = registry.get_sample_value
    assert (
        sample("soundsentry_escalation_windows_total", {"backend": "scripted", "result": "revised"})
        == 1
    )
    assert (
        sample("soundsentry_escalation_calls_total", {"backend": "scripted", "outcome": "ok"}) == 1
    )
    assert sample("soundsentry_escalation_pending") == 0


async def test_certain_gated_and_unsupported_windows_are_not_escalated() -> None:
    registry = CollectorRegistry()
    runner = escalator(ScriptedBackend(), registry=registry)
    assert runner.offer(result(0.1), LABELS) is None  # clearly absent
    assert runner.offer(result(0.8), LABELS) is None  # clearly present
    assert runner.offer(result(0.5, gated=True), LABELS) is None
    assert registry.get_sample_value("soundsentry_escalation_uncertain_windows_total") == 0
    registry = CollectorRegistry()
    other = escalator(ScriptedBackend(supported=False), registry=registry)
    assert other.offer(result(0.5), LABELS) is None
    assert (
        registry.get_sample_value("soundsentry_escalation_dropped_total", {"reason": "unsupported"})
        == 1
    )


async def test_the_budget_drops_windows_per_sensor_and_overall() -> None:
    registry = CollectorRegistry()
    clock = FakeClock()
    runner = escalator(
        ScriptedBackend(), clock=clock, registry=registry, budget=RateBudget(3, 2, now=clock)
    )
    tasks = [runner.offer(result(0.5, sensor="a", start=i), LABELS) for i in range(3)]
    assert [t is not None for t in tasks] == [True, True, False]
    assert runner.offer(result(0.5, sensor="b"), LABELS) is not None
    assert runner.offer(result(0.5, sensor="c"), LABELS) is None
    await asyncio.gather(*(t for t in tasks if t is not None))
    sample = registry.get_sample_value
    assert sample("soundsentry_escalation_dropped_total", {"reason": "budget_sensor"}) == 1
    assert sample("soundsentry_escalation_dropped_total", {"reason": "budget_overall"}) == 1


async def test_retries_back_off_and_a_failed_window_keeps_its_first_stage_score() -> None:
    backend = ScriptedBackend(
        SecondStageError("throttled", retryable=True),
        "hang",
        SecondStageError("still throttled", retryable=True),
    )
    registry = CollectorRegistry()
    sleeps: list[float] = []
    runner = escalator(
        backend,
        registry=registry,
        sleeps=sleeps,
        retries=2,
        timeout_s=0.05,
        backoff_base_s=0.1,
        backoff_cap_s=1.0,
    )
    task = runner.offer(result(0.5), LABELS)
    assert task is not None
    assert await task is None
    assert len(backend.calls) == 3
    assert len(sleeps) == 2
    assert 0.0 <= sleeps[0] <= 0.1
    assert 0.0 <= sleeps[1] <= 0.2
    sample = registry.get_sample_value
    assert (
        sample("soundsentry_escalation_calls_total", {"backend": "scripted", "outcome": "error"})
        == 2
    )
    assert (
        sample("soundsentry_escalation_calls_total", {"backend": "scripted", "outcome": "timeout"})
        == 1
    )
    assert (
        sample("soundsentry_escalation_windows_total", {"backend": "scripted", "result": "failed"})
        == 1
    )


async def test_a_request_error_is_not_retried() -> None:
    backend = ScriptedBackend(SecondStageError("bad image", retryable=False))
    runner = escalator(backend, retries=3)
    task = runner.offer(result(0.5), LABELS)
    assert task is not None
    assert await task is None
    assert len(backend.calls) == 1


async def test_the_breaker_opens_after_failed_windows_and_a_trial_closes_it() -> None:
    clock = FakeClock()
    registry = CollectorRegistry()
    failures = [SecondStageError("down", retryable=False) for _ in range(2)]
    backend = ScriptedBackend(*failures, {"smoke_alarm": 0.9})
    runner = escalator(
        backend, clock=clock, registry=registry, breaker=CircuitBreaker(2, 30.0, now=clock)
    )
    for start in range(2):
        task = runner.offer(result(0.5, start=start), LABELS)
        assert task is not None
        assert await task is None
    state = {"backend": "scripted"}
    assert registry.get_sample_value("soundsentry_escalation_breaker_state", state) == 2
    assert runner.offer(result(0.5, start=2), LABELS) is None  # open: no call at all
    assert len(backend.calls) == 2
    clock.t += 30.0
    trial = runner.offer(result(0.5, start=3), LABELS)
    assert trial is not None
    assert runner.offer(result(0.5, start=4), LABELS) is None  # only one trial at a time
    assert await trial is not None
    assert registry.get_sample_value("soundsentry_escalation_breaker_state", state) == 0
    assert (
        registry.get_sample_value(
            "soundsentry_escalation_dropped_total", {"reason": "breaker_open"}
        )
        == 2
    )


async def test_a_trial_refused_by_the_budget_is_given_back_to_the_breaker() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, now=clock)
    budget = RateBudget(60, 1, now=clock)
    runner = escalator(
        ScriptedBackend(SecondStageError("down", retryable=False)),
        clock=clock,
        breaker=breaker,
        budget=budget,
    )
    task = runner.offer(result(0.5, sensor="a"), LABELS)
    assert task is not None
    await task
    clock.t += 10.0
    assert runner.offer(result(0.5, sensor="a", start=1), LABELS) is None  # a's budget is spent
    assert breaker.state == "open"  # the trial was not used up
    assert runner.offer(result(0.5, sensor="b"), LABELS) is not None


async def test_calls_are_bounded_and_offers_never_wait() -> None:
    backend = ScriptedBackend(*["gate"] * 6)
    registry = CollectorRegistry()
    runner = escalator(backend, registry=registry, max_concurrency=2, max_pending=4)
    tasks = [runner.offer(result(0.5, start=i), LABELS) for i in range(6)]
    accepted = [t for t in tasks if t is not None]
    assert len(accepted) == 4  # two beyond max_pending were dropped at once
    await asyncio.sleep(0.01)
    assert backend.running == 2  # the other two wait for a slot, not for the caller
    assert registry.get_sample_value("soundsentry_escalation_pending") == 4
    backend.release.set()
    revisions = await asyncio.gather(*accepted)
    assert all(r is not None for r in revisions)
    assert backend.most_running == 2
    assert runner.pending == 0
    assert (
        registry.get_sample_value("soundsentry_escalation_dropped_total", {"reason": "queue_full"})
        == 2
    )


async def test_drain_cancels_what_does_not_finish_in_time() -> None:
    runner = escalator(ScriptedBackend("hang"), timeout_s=60.0)
    task = runner.offer(result(0.5), LABELS)
    assert task is not None
    await runner.drain(0.01)
    assert task.cancelled()
    assert runner.pending == 0


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"merge": "median"}, "merge policy"),
        ({"timeout_s": 0.0}, "timeout_s"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": 8, "max_pending": 4}, "max_pending"),
        ({"retries": -1}, "retries"),
    ],
)
def test_impossible_settings_are_refused(options: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        escalator(ScriptedBackend(), **options)
