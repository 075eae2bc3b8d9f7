"""Prometheus metrics shared by every stream service.

Metrics are built against a registry passed in (``StreamMetrics.create(registry)``), so tests
use a fresh one and nothing is registered at import time. Names follow Prometheus conventions:
``soundsentry_<thing>_<unit>_total`` for counters, seconds for durations.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

__all__ = ["StreamMetrics"]


@dataclass(frozen=True, slots=True)
class StreamMetrics:
    """Counters every consuming service exposes, labelled by service and source topic."""

    messages_consumed: Counter
    messages_dead_lettered: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> StreamMetrics:
        return cls(
            messages_consumed=Counter(
                "soundsentry_messages_consumed_total",
                "Records read from a source topic.",
                ["service", "topic"],
                registry=registry,
            ),
            messages_dead_lettered=Counter(
                "soundsentry_messages_dead_lettered_total",
                "Records that could never be processed and were parked in a dead-letter topic.",
                ["service", "topic", "reason"],
                registry=registry,
            ),
        )
