"""Row numbers in per-key slab arrays (one preallocated array, one row per key).

Compiled loops reach many keys' state through one array indexed by row instead of one object per
key. :class:`SlotTable` hands out the rows: a released row is reused (lowest first, so live rows
stay packed at the bottom), the table doubles when full, and halves when at most a quarter of it
is in use, moving the live rows above the new size down. The caller owns the arrays and applies
the resizes and moves it is told about.
"""

from __future__ import annotations

import heapq

__all__ = ["SlotTable"]


class SlotTable:
    """Free and used rows of slab arrays of ``capacity`` rows (never below ``min_capacity``)."""

    def __init__(self, *, min_capacity: int = 64) -> None:
        if min_capacity < 1:
            raise ValueError(f"min_capacity must be >= 1, got {min_capacity}")
        self.min_capacity = min_capacity
        self.capacity = min_capacity
        self._free = list(range(min_capacity))  # a heap: lowest row first
        self._used: set[int] = set()

    @property
    def used(self) -> int:
        return len(self._used)

    def acquire(self) -> int:
        """A free row; when none is left, ``capacity`` doubles first (grow the arrays to it)."""
        if not self._free:
            grown = 2 * self.capacity
            self._free = list(range(self.capacity, grown))  # already a heap: ascending
            self.capacity = grown
        row = heapq.heappop(self._free)
        self._used.add(row)
        return row

    def release(self, row: int) -> list[tuple[int, int]]:
        """Free ``row``. If that leaves at most a quarter of the table in use, ``capacity``
        halves: returns the ``(from_row, to_row)`` moves that bring the used rows under it
        (copy those rows, then cut the arrays to ``capacity``); otherwise no moves.

        Raises
        ------
        KeyError
            if ``row`` is not in use.
        """
        self._used.remove(row)
        heapq.heappush(self._free, row)
        if self.capacity <= self.min_capacity or 4 * len(self._used) > self.capacity:
            return []
        size = max(self.min_capacity, self.capacity // 2)
        movers = sorted(r for r in self._used if r >= size)
        targets = sorted(r for r in range(size) if r not in self._used)[: len(movers)]
        moves = list(zip(movers, targets, strict=True))
        self._used.difference_update(movers)
        self._used.update(targets)
        self._free = sorted(set(range(size)) - self._used)
        self.capacity = size
        return moves
