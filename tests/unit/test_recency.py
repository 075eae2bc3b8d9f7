from __future__ import annotations

from soundsentry.recency import LastHeard


def test_the_silent_keys_are_popped_in_order_of_last_hearing() -> None:
    seen = LastHeard()
    seen.heard("a", 0.0)
    seen.heard("b", 1.0)
    seen.heard("c", 2.0)
    seen.heard("a", 3.0)  # heard again: now the most recent
    assert seen.pop_silent(now=11.5, limit_s=10.0) == ["b"]
    assert "b" not in seen
    assert len(seen) == 2
    seen.forget("c")
    assert seen.pop_silent(now=100.0, limit_s=10.0) == ["a"]
    assert len(seen) == 0
