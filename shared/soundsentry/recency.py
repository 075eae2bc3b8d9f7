"""When each sensor was last heard, for the services that release what silent sensors hold."""

from __future__ import annotations

__all__ = ["LastHeard"]


class LastHeard:
    """Keys with the time each was last heard, kept oldest first, so the silent ones are found
    from the front without scanning every key (the featurizer and the alerter, per sensor)."""

    def __init__(self) -> None:
        self._at: dict[str, float] = {}  # insertion order is the order of last hearing

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, key: object) -> bool:
        return key in self._at

    def heard(self, key: str, now: float) -> None:
        self._at.pop(key, None)  # re-inserted last: the dict stays in order
        self._at[key] = now

    def forget(self, key: str) -> None:
        self._at.pop(key, None)

    def pop_silent(self, now: float, limit_s: float) -> list[str]:
        """Remove and return the keys not heard for ``limit_s`` seconds or more."""
        silent = []
        for key, at in self._at.items():
            if now - at < limit_s:
                break  # the rest were heard later
            silent.append(key)
        for key in silent:
            del self._at[key]
        return silent
