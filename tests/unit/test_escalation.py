"""Escalation policy: bands, the rate budget, the circuit breaker, backoff and score merging.

Nothing here sleeps or measures time: budgets and breakers run on a :class:`FakeClock` that the
tests move by hand.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soundsentry.backoff import backoff_delays
from soundsentry.escalation.policy import (
    CircuitBreaker,
    EscalationPolicy,
    MergePolicy,
    RateBudget,
    UncertaintyBand,
    merge_scores,
)
from soundsentry.exceptions import BadMessageError, ConfigurationError


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


# -- UncertaintyBand and EscalationPolicy ---------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "high", "problem"),
    [
        (-0.1, 0.5, "low"),
        (0.2, 1.1, "high"),
        (0.5, 0.5, "must be < high"),
        (0.6, 0.4, "must be < high"),
        (math.nan, 0.5, "low"),
        (0.1, math.inf, "high"),
        (True, 0.5, "low"),
    ],
)
def test_band_rejects_impossible_bounds(low: float, high: float, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        UncertaintyBand(low, high)


def test_band_accepts_the_whole_unit_interval() -> None:
    band = UncertaintyBand(0.0, 1.0)
    assert band.contains(0.0)
    assert band.contains(0.999)
    assert not band.contains(1.0)


def test_band_is_half_open() -> None:
    band = UncertaintyBand(0.3, 0.7)
    assert band.contains(0.3)  # low is included
    assert band.contains(0.5)
    assert not band.contains(0.7)  # high is not
    assert not band.contains(math.nextafter(0.3, 0.0))
    assert band.contains(math.nextafter(0.7, 0.0))
    assert not band.contains(math.nan)


def test_band_is_frozen() -> None:
    band = UncertaintyBand(0.3, 0.7)
    with pytest.raises(AttributeError):
        band.low = 0.1  # type: ignore[misc]


def test_policy_picks_uncertain_labels_in_label_order() -> None:
    policy = EscalationPolicy(
        {
            "siren": UncertaintyBand(0.4, 0.8),
            "glass_break": UncertaintyBand(0.2, 0.6),
            "smoke_alarm": UncertaintyBand(0.3, 0.5),
        }
    )
    labels = ["glass_break", "dog_bark", "siren", "smoke_alarm"]
    # dog_bark has no band: never escalated, whatever its score.
    assert policy.uncertain_labels(labels, [0.5, 0.5, 0.79, 0.5]) == ["glass_break", "siren"]
    assert policy.uncertain_labels(labels, [0.2, 0.5, 0.4, 0.3]) == [
        "glass_break",
        "siren",
        "smoke_alarm",
    ]
    assert policy.uncertain_labels(labels, [0.1, 0.5, 0.9, 0.5]) == []
    assert policy.uncertain_labels([], []) == []


def test_policy_rejects_scores_that_do_not_match_labels() -> None:
    policy = EscalationPolicy({"siren": UncertaintyBand(0.4, 0.8)})
    with pytest.raises(BadMessageError, match="2 scores for 1 labels") as caught:
        policy.uncertain_labels(["siren"], [0.5, 0.5])
    assert caught.value.reason == "bad_scores"


def test_policy_bands_are_read_only_and_checked() -> None:
    bands = {"siren": UncertaintyBand(0.4, 0.8)}
    policy = EscalationPolicy(bands)
    bands["dog_bark"] = UncertaintyBand(0.0, 1.0)  # the caller's dict, not the policy's
    assert list(policy.bands) == ["siren"]
    with pytest.raises(TypeError):
        policy.bands["x"] = UncertaintyBand(0.1, 0.2)  # type: ignore[index]
    with pytest.raises(ConfigurationError, match="not an UncertaintyBand"):
        EscalationPolicy({"siren": (0.4, 0.8)})  # type: ignore[dict-item]
    assert EscalationPolicy().uncertain_labels(["siren"], [0.5]) == []


# -- RateBudget -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overall", "per_sensor", "max_sensors", "problem"),
    [
        (0, 10, 10, "overall_per_minute"),
        (-5, 10, 10, "overall_per_minute"),
        (10, 0.5, 10, "per_sensor_per_minute"),
        (10, math.nan, 10, "per_sensor_per_minute"),
        (math.inf, 10, 10, "overall_per_minute"),
        (10, 10, 0, "max_sensors"),
        (10, 10, 2.5, "max_sensors"),
    ],
)
def test_budget_rejects_impossible_settings(
    overall: float, per_sensor: float, max_sensors: int, problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        RateBudget(overall, per_sensor, max_sensors=max_sensors, now=FakeClock())


def test_budget_starts_full_and_refills_continuously() -> None:
    clock = FakeClock()
    budget = RateBudget(60, 60, now=clock)  # one call a second, bursts of 60
    assert all(budget.try_acquire("mic-1") for _ in range(60))
    assert not budget.try_acquire("mic-1")
    clock.advance(0.5)  # half a token
    assert not budget.try_acquire("mic-1")
    clock.advance(0.5)  # one token
    assert budget.try_acquire("mic-1")
    assert not budget.try_acquire("mic-1")
    clock.advance(3.0)
    assert [budget.try_acquire("mic-1") for _ in range(4)] == [True, True, True, False]
    clock.advance(3600.0)  # a long quiet spell refills to capacity, no more
    assert sum(budget.try_acquire("mic-1") for _ in range(100)) == 60
    assert budget.granted == 60 + 1 + 3 + 60


def test_budget_sensor_limit_drops_only_that_sensor() -> None:
    clock = FakeClock()
    budget = RateBudget(100, 3, now=clock)
    assert [budget.try_acquire("mic-1") for _ in range(4)] == [True, True, True, False]
    assert budget.try_acquire("mic-2")  # another sensor has its own bucket
    assert (budget.granted, budget.dropped_overall, budget.dropped_sensor) == (4, 0, 1)
    clock.advance(20.0)  # 3 / 60 per second: one token
    assert budget.try_acquire("mic-1")
    assert not budget.try_acquire("mic-1")
    assert (budget.granted, budget.dropped_overall, budget.dropped_sensor) == (5, 0, 2)


def test_budget_overall_limit_drops_every_sensor() -> None:
    clock = FakeClock()
    budget = RateBudget(3, 100, now=clock)
    assert [budget.try_acquire(f"mic-{i}") for i in range(5)] == [True, True, True, False, False]
    assert (budget.granted, budget.dropped_overall, budget.dropped_sensor) == (3, 2, 0)


def test_budget_both_spent_counts_as_overall() -> None:
    clock = FakeClock()
    budget = RateBudget(2, 2, now=clock)
    assert budget.try_acquire("mic-1")
    assert budget.try_acquire("mic-1")
    assert not budget.try_acquire("mic-1")
    assert (budget.dropped_overall, budget.dropped_sensor) == (1, 0)


def test_budget_sensor_drop_does_not_charge_overall() -> None:
    clock = FakeClock()
    budget = RateBudget(5, 2, now=clock)
    assert budget.try_acquire("noisy")
    assert budget.try_acquire("noisy")
    for _ in range(10):  # refused by its own bucket: must not eat the shared budget
        assert not budget.try_acquire("noisy")
    # The 3 calls left overall all go to other sensors; then the overall budget is spent.
    assert [budget.try_acquire("quiet-1") for _ in range(2)] == [True, True]
    assert budget.try_acquire("quiet-2")
    assert not budget.try_acquire("quiet-2")
    assert (budget.granted, budget.dropped_overall, budget.dropped_sensor) == (5, 1, 10)


def test_budget_overall_drop_does_not_charge_sensor() -> None:
    clock = FakeClock()
    budget = RateBudget(60, 2, now=clock)  # overall: one call a second; c: one per 30 s
    assert all(budget.try_acquire(f"other-{i}") for i in range(60))
    for _ in range(5):  # refused overall: sensor c must keep its full bucket of 2
        assert not budget.try_acquire("c")
    clock.advance(1.0)
    assert budget.try_acquire("c")
    clock.advance(1.0)  # far too soon for c to refill: this is its second original token
    assert budget.try_acquire("c")
    clock.advance(1.0)
    assert not budget.try_acquire("c")
    assert (budget.granted, budget.dropped_overall, budget.dropped_sensor) == (62, 5, 1)


def test_budget_evicts_least_recently_used_sensor_which_returns_full() -> None:
    clock = FakeClock()
    budget = RateBudget(1000, 1, max_sensors=2, now=clock)
    assert budget.try_acquire("a")
    assert budget.try_acquire("b")
    assert not budget.try_acquire("a")  # a is spent, and now the most recently used
    assert budget.try_acquire("c")  # evicts b, the least recently used
    assert budget.tracked_sensors == 2
    assert not budget.try_acquire("a")  # a was kept: still spent
    assert budget.try_acquire("b")  # b was evicted: back with a full bucket (evicts c)
    assert budget.tracked_sensors == 2
    assert budget.try_acquire("c")  # c too
    assert (budget.granted, budget.dropped_sensor) == (5, 2)


def test_budget_ignores_a_clock_stepping_back() -> None:
    clock = FakeClock()
    budget = RateBudget(60, 60, now=clock)
    assert sum(budget.try_acquire("mic") for _ in range(60)) == 60
    clock.advance(-100.0)
    assert not budget.try_acquire("mic")
    clock.advance(100.0)  # back where the buckets were last filled: still nothing new
    assert not budget.try_acquire("mic")
    clock.advance(1.0)
    assert budget.try_acquire("mic")


def _max_in_any_window(times: list[float], capacity: float, per_second: float) -> float:
    """The largest excess of grants over ``capacity + elapsed * rate``, over all windows."""
    worst = -math.inf
    starts = sorted(set(times))
    for i, start in enumerate(starts):
        for end in starts[i:]:
            count = sum(start <= t <= end for t in times)
            worst = max(worst, count - (capacity + (end - start) * per_second))
    return worst


@settings(max_examples=150, deadline=None)
@given(
    overall=st.integers(1, 120),
    per_sensor=st.integers(1, 120),
    max_sensors=st.integers(1, 4),
    steps=st.lists(
        st.tuples(
            st.floats(0.0, 5.0, allow_nan=False, allow_infinity=False),
            st.sampled_from(["a", "b", "c", "d", "e"]),
        ),
        max_size=120,
    ),
)
def test_budget_never_grants_more_than_capacity_plus_refill(
    overall: int, per_sensor: int, max_sensors: int, steps: list[tuple[float, str]]
) -> None:
    clock = FakeClock()
    budget = RateBudget(overall, per_sensor, max_sensors=max_sensors, now=clock)
    overall_times: list[float] = []
    for dt, sensor in steps:
        clock.advance(dt)
        if budget.try_acquire(sensor):
            overall_times.append(clock.t)
    assert budget.granted == len(overall_times)
    assert budget.granted + budget.dropped_overall + budget.dropped_sensor == len(steps)
    # The overall bucket is never evicted, so its bound holds whatever max_sensors is.
    assert _max_in_any_window(overall_times, overall, overall / 60) <= 1e-9


@settings(max_examples=150, deadline=None)
@given(
    per_sensor=st.integers(1, 120),
    steps=st.lists(
        st.tuples(
            st.floats(0.0, 5.0, allow_nan=False, allow_infinity=False),
            st.sampled_from(["a", "b", "c"]),
        ),
        max_size=120,
    ),
)
def test_budget_sensor_never_exceeds_its_own_bound_without_eviction(
    per_sensor: int, steps: list[tuple[float, str]]
) -> None:
    clock = FakeClock()
    budget = RateBudget(10_000, per_sensor, max_sensors=3, now=clock)
    sensor_times: dict[str, list[float]] = {}
    for dt, sensor in steps:
        clock.advance(dt)
        if budget.try_acquire(sensor):
            sensor_times.setdefault(sensor, []).append(clock.t)
    for times in sensor_times.values():
        assert _max_in_any_window(times, per_sensor, per_sensor / 60) <= 1e-9


# -- CircuitBreaker -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "reset", "problem"),
    [
        (0, 10.0, "failure_threshold"),
        (2.0, 10.0, "failure_threshold"),
        (True, 10.0, "failure_threshold"),
        (3, 0.0, "reset_after_s"),
        (3, -1.0, "reset_after_s"),
        (3, math.inf, "reset_after_s"),
    ],
)
def test_breaker_rejects_impossible_settings(threshold: int, reset: float, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        CircuitBreaker(threshold, reset, now=FakeClock())


def test_breaker_full_cycle_closed_open_half_open_closed() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(3, 30.0, now=clock)
    assert breaker.state == "closed"
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "closed"
    assert breaker.allow()
    breaker.record_failure()  # third in a row
    assert breaker.state == "open"

    clock.advance(29.999)
    assert not breaker.allow()
    assert breaker.state == "open"
    clock.advance(0.001)
    assert breaker.allow()  # the trial
    assert breaker.state == "half_open"
    assert not breaker.allow()  # only one trial
    assert not breaker.allow()
    clock.advance(1000.0)
    assert not breaker.allow()  # still waiting for the trial, however long it takes
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.allow()
    assert breaker.rejected == 4


def test_breaker_failed_trial_reopens_with_a_fresh_timer() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, now=clock)
    breaker.record_failure()
    assert breaker.state == "open"
    clock.advance(25.0)  # long past the first timer
    assert breaker.allow()
    assert breaker.state == "half_open"
    breaker.record_failure()
    assert breaker.state == "open"
    clock.advance(9.0)  # the new timer counts from the failed trial, not the first opening
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()
    assert not breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.rejected == 2


def test_breaker_counts_only_consecutive_failures() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(3, 10.0, now=clock)
    for _ in range(5):
        breaker.record_failure()
        breaker.record_failure()
        breaker.record_success()  # resets the run
    assert breaker.state == "closed"
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "open"


def test_breaker_reopened_from_half_open_needs_a_full_run_after_closing() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(2, 5.0, now=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.advance(5.0)
    assert breaker.allow()
    breaker.record_success()
    breaker.record_failure()  # one failure after closing is not a run of two
    assert breaker.state == "closed"
    assert breaker.allow()


def test_breaker_late_reports_while_open() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, now=clock)
    breaker.record_failure()
    clock.advance(8.0)
    breaker.record_failure()  # a straggler failure does not restart the timer
    clock.advance(2.0)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    breaker.record_success()  # a straggler success: the backend answered
    assert breaker.state == "closed"
    assert breaker.allow()


def test_breaker_release_gives_the_half_open_trial_back() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, now=clock)
    breaker.record_failure()
    clock.advance(10.0)
    assert breaker.allow()  # the trial...
    breaker.release()  # ...was never made
    assert breaker.state == "open"
    assert breaker.allow()  # so the next call is the trial, without a new wait
    assert breaker.state == "half_open"
    assert not breaker.allow()
    breaker.record_success()
    breaker.release()  # closed: nothing to give back
    assert breaker.state == "closed"
    assert breaker.rejected == 1


# -- backoff_delays -------------------------------------------------------------------------------


def test_backoff_delays_stay_under_their_capped_ceilings() -> None:
    rng = random.Random(1234)
    base, cap = 0.1, 2.0
    ceilings = [min(cap, base * 2**i) for i in range(12)]
    assert ceilings == sorted(ceilings)  # the ceilings never shrink
    assert ceilings[-1] == cap
    for _ in range(200):
        delays = backoff_delays(12, base, cap, rng)
        assert len(delays) == 12
        for delay, ceiling in zip(delays, ceilings, strict=True):
            assert 0.0 <= delay <= ceiling


def test_backoff_delays_are_jittered_over_the_whole_range() -> None:
    rng = random.Random(7)
    samples = [backoff_delays(6, 1.0, 8.0, rng)[5] for _ in range(2000)]  # ceiling 8.0
    assert min(samples) < 0.5
    assert max(samples) > 7.5
    assert 3.5 < sum(samples) / len(samples) < 4.5  # uniform: mean near the half


def test_backoff_delays_are_reproducible_with_a_seed() -> None:
    assert backoff_delays(5, 0.5, 10.0, random.Random(42)) == backoff_delays(
        5, 0.5, 10.0, random.Random(42)
    )


def test_backoff_delays_many_retries_do_not_overflow() -> None:
    delays = backoff_delays(3000, 0.01, 30.0, random.Random(0))
    assert len(delays) == 3000
    assert all(0.0 <= delay <= 30.0 for delay in delays)


def test_backoff_zero_retries() -> None:
    assert backoff_delays(0, 1.0, 2.0, random.Random(0)) == []


@pytest.mark.parametrize(
    ("retries", "base", "cap", "problem"),
    [
        (-1, 1.0, 2.0, "retries"),
        (1.5, 1.0, 2.0, "retries"),
        (3, 0.0, 2.0, "base_s"),
        (3, math.nan, 2.0, "base_s"),
        (3, 1.0, 0.5, "cap_s"),
        (3, 1.0, math.inf, "cap_s"),
    ],
)
def test_backoff_rejects_impossible_settings(
    retries: int, base: float, cap: float, problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        backoff_delays(retries, base, cap, random.Random(0))


# -- merge_scores ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "first", "second", "expected"),
    [
        ("replace", 0.4, 0.9, 0.9),
        ("replace", 0.4, 0.1, 0.1),
        ("max", 0.4, 0.9, 0.9),
        ("max", 0.4, 0.1, 0.4),
        ("mean", 0.4, 0.9, 0.65),
        ("mean", 0.4, 0.1, 0.25),
        ("replace", 0.4, None, 0.4),
        ("max", 0.4, None, 0.4),
        ("mean", 0.4, None, 0.4),
    ],
)
def test_merge_scores(
    policy: MergePolicy, first: float, second: float | None, expected: float
) -> None:
    assert merge_scores(policy, first, second) == pytest.approx(expected)


def test_merge_scores_rejects_unknown_policy() -> None:
    with pytest.raises(ConfigurationError, match="replace, max, mean"):
        merge_scores("min", 0.4, 0.5)  # type: ignore[arg-type]
