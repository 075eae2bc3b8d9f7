"""Exponential backoff with full jitter: the delays of every retry to a remote service
(escalation's second stages, the notifier's destinations)."""

from __future__ import annotations

import math
import random

from soundsentry.exceptions import ConfigurationError

__all__ = ["backoff_delays"]


def _finite(value: object) -> float | None:
    """``value`` as a float when it is a finite real number (not a bool), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def backoff_delays(retries: int, base_s: float, cap_s: float, rng: random.Random) -> list[float]:
    """Delays before each retry: exponential backoff with "full jitter".

    Delay ``i`` is uniform in ``[0, min(cap_s, base_s * 2**i)]``. Drawing the whole interval
    (rather than adding a little jitter to a fixed delay) keeps many clients that failed at
    the same moment from retrying in step.

    Parameters
    ----------
    retries : int
        Number of delays; ``>= 0``.
    base_s : float
        Upper bound of the first delay; finite, ``> 0``.
    cap_s : float
        No delay exceeds this; finite, ``>= base_s``.
    rng : random.Random
        Source of the jitter (seed it for reproducible delays).

    Raises
    ------
    ConfigurationError
        For parameters outside those ranges.
    """
    if not _is_count(retries) or retries < 0:
        raise ConfigurationError(f"backoff: retries={retries!r} must be a whole number >= 0")
    base = _finite(base_s)
    if base is None or base <= 0.0:
        raise ConfigurationError(f"backoff: base_s={base_s!r} must be a finite number > 0")
    cap = _finite(cap_s)
    if cap is None or cap < base:
        raise ConfigurationError(
            f"backoff: cap_s={cap_s!r} must be a finite number >= base_s={base_s!r}"
        )
    delays: list[float] = []
    ceiling = base
    for _ in range(retries):
        delays.append(rng.uniform(0.0, ceiling))
        # Doubling a float is exact, and capping each step keeps 2**i from overflowing.
        ceiling = min(cap, ceiling * 2.0)
    return delays
