"""The token bucket behind every rate limit: notifications per destination, escalated calls
overall and per sensor, and the audio a sensor may send to ingest."""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """Holds up to ``capacity`` tokens, refilled at ``rate`` tokens a second; a new bucket
    starts full. Callers either take tokens only when they are there (:meth:`refill`, then
    look at ``tokens``) or reserve them ahead (:meth:`reserve`) and wait."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        # A clock that steps back (it should not) must neither mint nor burn tokens.
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def reserve(self, amount: float, now: float) -> float:
        """Take ``amount`` tokens, possibly some not there yet; the seconds to wait before
        using them (0.0 when they were there)."""
        self.refill(now)
        self.tokens -= amount
        return 0.0 if self.tokens >= 0.0 else -self.tokens / self.rate
