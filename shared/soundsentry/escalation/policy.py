"""When to send an uncertain window to a bigger model, and how much of that the system can afford.

The classifier scores every window with a small ONNX model. Windows whose score for some label
is neither clearly "no" nor clearly "yes" can be escalated to a bigger, slower, paid model
(Amazon Rekognition Custom Labels, or a second-stage ONNX model). This module holds the policy
of that escalation, as pure synchronous code with an injected clock, so the service wraps it in
I/O and the tests drive it with a fake clock:

* :class:`EscalationPolicy` picks the labels worth a second opinion: those whose first-stage
  score lies in the label's :class:`UncertaintyBand`.
* :class:`RateBudget` protects **cost**: every escalated call is paid for, and a noisy sensor
  (or a fleet of them) must not turn into an unbounded bill. Calls are limited per minute
  overall and per sensor, as token buckets, so short bursts pass and sustained floods do not.
* :class:`CircuitBreaker` protects **latency**: when the cloud model is down or slow, waiting
  for each call to time out would hold back every escalated window. After a run of failures
  the breaker stops calling for a while, then lets a single trial call find out whether the
  backend is back.
* :func:`~soundsentry.backoff.backoff_delays` spreads the retries of a failed call ("full
  jitter"), so many classifiers retrying at once do not hit the backend in lockstep.
* :func:`merge_scores` combines the second-stage answer with the first-stage score.

Escalation never blocks scoring: every check here answers at once (no waiting, no I/O), and a
window that is not escalated (out of budget, breaker open) keeps its first-stage score. The
objects are not thread-safe; use each from one thread or one event loop.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, get_args

from soundsentry.exceptions import BadMessageError, ConfigurationError
from soundsentry.ratelimit import TokenBucket

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "EscalationPolicy",
    "MergePolicy",
    "RateBudget",
    "UncertaintyBand",
    "merge_scores",
]

BreakerState = Literal["closed", "open", "half_open"]
MergePolicy = Literal["replace", "max", "mean"]

_MERGE_POLICIES: tuple[str, ...] = get_args(MergePolicy)


def _number(value: object) -> float | None:
    """``value`` as a float when it is a finite real number (not a bool), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- which labels to escalate -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UncertaintyBand:
    """First-stage scores in ``[low, high)`` are uncertain enough to escalate.

    Below ``low`` the small model is confident the sound is absent, at or above ``high`` that
    it is present; neither is worth paying for a second opinion.

    Raises
    ------
    ConfigurationError
        Unless ``0 <= low < high <= 1``.
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        low, high = _number(self.low), _number(self.high)
        if low is None or not 0.0 <= low <= 1.0:
            raise ConfigurationError(
                f"uncertainty band: low={self.low!r} must be a number in [0, 1]"
            )
        if high is None or not 0.0 <= high <= 1.0:
            raise ConfigurationError(
                f"uncertainty band: high={self.high!r} must be a number in [0, 1]"
            )
        if low >= high:
            raise ConfigurationError(
                f"uncertainty band: low={self.low!r} must be < high={self.high!r} "
                "(an empty band would never escalate anything)"
            )

    def contains(self, score: float) -> bool:
        """Whether ``score`` is uncertain: ``low <= score < high`` (NaN never is)."""
        return self.low <= score < self.high


@dataclass(frozen=True)
class EscalationPolicy:
    """The uncertainty band of each label; labels without a band are never escalated.

    ``bands`` is copied into a read-only mapping, so the policy cannot change under a running
    service.
    """

    bands: Mapping[str, UncertaintyBand] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bands = dict(self.bands)
        # Typed as objects: a mapping built from a settings file may hold anything.
        entries: Iterable[tuple[object, object]] = bands.items()
        for label, band in entries:
            if not isinstance(label, str) or not label:
                raise ConfigurationError(
                    f"escalation policy: label {label!r} must be a non-empty string"
                )
            if not isinstance(band, UncertaintyBand):
                raise ConfigurationError(
                    f"escalation policy: the band of {label!r} is {band!r}, not an UncertaintyBand"
                )
        object.__setattr__(self, "bands", MappingProxyType(bands))

    def uncertain_labels(self, labels: Sequence[str], scores: Sequence[float]) -> list[str]:
        """The labels whose score lies in their band, in the order of ``labels``.

        Parameters
        ----------
        labels : sequence of str
            The first-stage model's labels.
        scores : sequence of float
            The window's score for each label, in the same order.

        Raises
        ------
        BadMessageError
            ``bad_scores`` when ``labels`` and ``scores`` differ in length.
        """
        if len(labels) != len(scores):
            raise BadMessageError("bad_scores", f"{len(scores)} scores for {len(labels)} labels")
        uncertain: list[str] = []
        for label, score in zip(labels, scores, strict=True):
            band = self.bands.get(label)
            if band is not None and band.contains(score):
                uncertain.append(label)
        return uncertain


# -- cost: a budget of calls ----------------------------------------------------------------------


class RateBudget:
    """How many escalated calls per minute may go out, overall and per sensor.

    Both limits are token buckets: a bucket holds up to its per-minute figure of calls (so a
    quiet minute lets the next one burst that much) and refills continuously at
    ``per-minute / 60`` calls a second. A call takes one token from the overall bucket and one
    from its sensor's, and only when both have one, so a refused call costs nothing anywhere.

    Per-sensor buckets are kept for at most ``max_sensors`` sensors, least recently used first
    out, so memory stays bounded however many sensor ids turn up. An evicted sensor that comes
    back starts with a full bucket again: it may then get up to one extra bucketful sooner than
    its limit says. The overall bucket is never evicted, so total spend stays within the overall
    limit regardless.

    Parameters
    ----------
    overall_per_minute : float
        Calls per minute across all sensors (and the overall bucket's capacity); ``>= 1``.
    per_sensor_per_minute : float
        Calls per minute of one sensor (and its bucket's capacity); ``>= 1``.
    max_sensors : int
        Per-sensor buckets kept at most.
    now : callable
        Clock in seconds; only differences matter. Defaults to :func:`time.monotonic`.

    Raises
    ------
    ConfigurationError
        For a rate that is not a finite number ``>= 1`` (a bucket smaller than one call would
        never grant anything) or ``max_sensors < 1``.

    Attributes
    ----------
    granted : int
        Calls allowed.
    dropped_overall : int
        Calls refused because the overall budget was spent (whatever the sensor's budget).
    dropped_sensor : int
        Calls refused because only the sensor's budget was spent.
    """

    __slots__ = (
        "_now",
        "_overall",
        "_sensors",
        "dropped_overall",
        "dropped_sensor",
        "granted",
        "max_sensors",
        "overall_per_minute",
        "per_sensor_per_minute",
    )

    def __init__(
        self,
        overall_per_minute: float,
        per_sensor_per_minute: float,
        *,
        max_sensors: int = 100_000,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (
            ("overall_per_minute", overall_per_minute),
            ("per_sensor_per_minute", per_sensor_per_minute),
        ):
            rate = _number(value)
            if rate is None or rate < 1.0:
                raise ConfigurationError(
                    f"rate budget: {name}={value!r} must be a finite number >= 1 "
                    "(it is also the bucket's capacity, and a bucket smaller than one call "
                    "never grants anything)"
                )
        if not _is_count(max_sensors) or max_sensors < 1:
            raise ConfigurationError(
                f"rate budget: max_sensors={max_sensors!r} must be a whole number >= 1"
            )
        self.overall_per_minute = float(overall_per_minute)
        self.per_sensor_per_minute = float(per_sensor_per_minute)
        self.max_sensors = max_sensors
        self._now = now
        self._overall = TokenBucket(self.overall_per_minute, self.overall_per_minute / 60.0, now())
        # Least recently used first; move_to_end on every use.
        self._sensors: OrderedDict[str, TokenBucket] = OrderedDict()
        self.granted = 0
        self.dropped_overall = 0
        self.dropped_sensor = 0

    @property
    def tracked_sensors(self) -> int:
        """Number of per-sensor buckets currently kept (at most ``max_sensors``)."""
        return len(self._sensors)

    def try_acquire(self, sensor_id: str) -> bool:
        """Take one call from the overall and the sensor's budget if both have one.

        Never waits. Returns False (and counts the drop) when either is spent; then neither
        budget is charged.
        """
        now = self._now()
        self._overall.refill(now)
        bucket = self._sensor_bucket(sensor_id, now)
        bucket.refill(now)
        if self._overall.tokens < 1.0:
            self.dropped_overall += 1
            return False
        if bucket.tokens < 1.0:
            self.dropped_sensor += 1
            return False
        self._overall.tokens -= 1.0
        bucket.tokens -= 1.0
        self.granted += 1
        return True

    def _sensor_bucket(self, sensor_id: str, now: float) -> TokenBucket:
        bucket = self._sensors.get(sensor_id)
        if bucket is not None:
            self._sensors.move_to_end(sensor_id)
            return bucket
        rate = self.per_sensor_per_minute
        bucket = self._sensors[sensor_id] = TokenBucket(rate, rate / 60.0, now)
        if len(self._sensors) > self.max_sensors:
            self._sensors.popitem(last=False)
        return bucket


# -- latency: a circuit breaker -------------------------------------------------------------------


class CircuitBreaker:
    """Stops calling a backend that keeps failing, and probes it now and then.

    * ``closed``: calls are allowed; ``failure_threshold`` failures in a row open the breaker.
    * ``open``: calls are refused until ``reset_after_s`` have passed since it opened; the next
      :meth:`allow` after that moves to ``half_open`` and allows one trial call.
    * ``half_open``: the trial is out and every other call is refused until it reports: a
      success closes the breaker, a failure opens it again with a fresh timer.

    Every allowed call must report, by :meth:`record_success` or :meth:`record_failure` (count a
    timeout as a failure), or be given back by :meth:`release` if it was never made: a trial
    that never reports leaves the breaker half open, refusing everything. A success always
    closes the breaker, even one reported while open (a call that was let through before it
    opened): the backend answered. A failure reported while open changes nothing, since the
    breaker already knows the backend is failing.

    Parameters
    ----------
    failure_threshold : int
        Consecutive failures that open the breaker; ``>= 1``.
    reset_after_s : float
        Seconds the breaker stays open before a trial call; finite, ``> 0``.
    now : callable
        Clock in seconds; only differences matter. Defaults to :func:`time.monotonic`.

    Attributes
    ----------
    rejected : int
        Calls refused by :meth:`allow`.
    """

    __slots__ = (
        "_failures",
        "_now",
        "_opened_at",
        "_state",
        "failure_threshold",
        "rejected",
        "reset_after_s",
    )

    def __init__(
        self,
        failure_threshold: int,
        reset_after_s: float,
        *,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if not _is_count(failure_threshold) or failure_threshold < 1:
            raise ConfigurationError(
                f"circuit breaker: failure_threshold={failure_threshold!r} must be a whole "
                "number >= 1"
            )
        reset = _number(reset_after_s)
        if reset is None or reset <= 0.0:
            raise ConfigurationError(
                f"circuit breaker: reset_after_s={reset_after_s!r} must be a finite number of "
                "seconds > 0"
            )
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset
        self._now = now
        self._state: BreakerState = "closed"
        self._failures = 0  # consecutive, counted while closed
        self._opened_at = 0.0
        self.rejected = 0

    @property
    def state(self) -> BreakerState:
        """``closed``, ``open`` or ``half_open``.

        An open breaker whose timer has run out still reads ``open`` until :meth:`allow` lets
        the trial through.
        """
        return self._state

    def allow(self) -> bool:
        """Whether a call may go out now; never waits. A refusal is counted in ``rejected``."""
        if self._state == "closed":
            return True
        if self._state == "open" and self._now() - self._opened_at >= self.reset_after_s:
            self._state = "half_open"
            return True  # the one trial call
        self.rejected += 1
        return False

    def release(self) -> None:
        """An allowed call that was not made after all (e.g. refused by the budget).

        A half-open breaker gets its trial back: it reads ``open`` again, with its timer
        already run out, so the next :meth:`allow` is the trial. Otherwise nothing changes.
        """
        if self._state == "half_open":
            self._state = "open"

    def record_success(self) -> None:
        """The call succeeded: the breaker closes and the failure count starts again."""
        self._state = "closed"
        self._failures = 0

    def record_failure(self) -> None:
        """The call failed: counts towards opening (closed) or reopens (half_open)."""
        if self._state == "closed":
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open()
        elif self._state == "half_open":
            self._open()

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self._now()
        self._failures = 0


# -- merging ------------------------------------------------------------------------------------


def merge_scores(policy: MergePolicy, first: float, second: float | None) -> float:
    """A label's score once the second stage has answered.

    Parameters
    ----------
    policy : {"replace", "max", "mean"}
        ``replace``: trust the bigger model; ``max``: keep whichever is more confident the
        sound is there (never lowers a score); ``mean``: average the two.
    first : float
        The first-stage score.
    second : float or None
        The second-stage score; None when the second stage gave no answer for the label,
        which keeps ``first``.

    Raises
    ------
    ConfigurationError
        For an unknown policy.
    """
    if policy not in _MERGE_POLICIES:
        raise ConfigurationError(
            f"merge policy {policy!r} must be one of {', '.join(_MERGE_POLICIES)}"
        )
    if second is None:
        return first
    if policy == "replace":
        return second
    if policy == "max":
        return max(first, second)
    return (first + second) / 2.0
