"""Prometheus metrics shared by every stream service.

Metrics are built against a registry passed in (``StreamMetrics.create(registry)``), so tests
use a fresh one and nothing is registered at import time. Names follow Prometheus conventions:
``soundsentry_<thing>_<unit>_total`` for counters, seconds for durations.
"""

from __future__ import annotations

import fnmatch
import gc
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

__all__ = [
    "MetricsSettings",
    "SensorFilter",
    "SensorMetrics",
    "StreamMetrics",
    "prepare_worker",
    "set_consumer_lag",
]


class MetricsSettings(Protocol):
    """Where a service serves ``/metrics`` (port 0: not at all)."""

    @property
    def metrics_port(self) -> int: ...
    @property
    def metrics_host(self) -> str: ...


class _Partition(Protocol):
    @property
    def partition(self) -> int: ...


P = TypeVar("P", bound=_Partition)


def set_consumer_lag(
    gauge: Gauge, last_offsets: Mapping[P, int], highwater: Callable[[P], int | None]
) -> None:
    """Set ``gauge`` (labelled by partition) to the records behind each partition's high-water
    mark (None: unknown, left as it is), as of the last offset a batch took from it."""
    for tp, offset in last_offsets.items():
        mark = highwater(tp)
        if mark is not None:
            gauge.labels(str(tp.partition)).set(max(mark - (offset + 1), 0))


def prepare_worker(settings: MetricsSettings, registry: CollectorRegistry) -> Callable[[], None]:
    """Serve ``registry`` on ``/metrics`` (unless the port is 0) and freeze the start-up
    objects out of the garbage collector; returns what stops the server.

    Some 200,000 long-lived objects (modules, models, Faust's services) made every full
    collection a 100-200 ms stop of a stream worker; frozen, those take about 5 ms (measured
    under benchmarks/pipeline.py with 200 sensors).
    """
    server = None
    if settings.metrics_port:
        server, _ = start_http_server(
            settings.metrics_port, settings.metrics_host, registry=registry
        )
    gc.collect()
    gc.freeze()
    return server.shutdown if server is not None else lambda: None


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


class SensorFilter:
    """Which sensors get series of their own: shell patterns, comma-separated (empty: none).

    Per-sensor series are what the per-sensor dashboard needs, and what a city's Prometheus
    pays for (one series per sensor and label): operators choose, e.g. ``site-12/*``.
    """

    def __init__(self, patterns: str) -> None:
        self.patterns = tuple(p.strip() for p in patterns.split(",") if p.strip())
        self._cache: dict[str, bool] = {}

    def __call__(self, sensor_id: str) -> bool:
        known = self._cache.get(sensor_id)
        if known is None:
            if len(self._cache) > 100_000:  # sensor ids come from the wire: bound the cache
                self._cache.clear()
            known = any(fnmatch.fnmatchcase(sensor_id, p) for p in self.patterns)
            self._cache[sensor_id] = known
        return known


class SensorMetrics:
    """Level and score of each selected sensor, for the per-sensor dashboard.

    A score is exported as a peak hold: a value stays until ``hold_s`` has passed or a higher
    one arrives, so a half-second alarm is not lost between two scrapes 15 s apart. Series of
    a sensor unheard for ``stale_s`` are removed, so departed sensors do not linger.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        sensors: SensorFilter,
        *,
        hold_s: float = 20.0,
        stale_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sensors = sensors
        self.hold_s = hold_s
        self.stale_s = stale_s
        self._clock = clock
        self.level = Gauge(
            "soundsentry_sensor_level_dbfs",
            "RMS level of the sensor's latest window, dBFS (only sensors in sensor_metrics).",
            ["sensor"],
            registry=registry,
        )
        self.score = Gauge(
            "soundsentry_sensor_score",
            "Highest score of the last hold_s (20 s) per sensor, model and label (only sensors "
            "in sensor_metrics).",
            ["sensor", "model", "label"],
            registry=registry,
        )
        self._peaks: dict[tuple[str, str, str], tuple[float, float]] = {}
        self._seen: dict[str, float] = {}
        self._next_sweep = 0.0

    def observe(
        self,
        sensor_id: str,
        model: str,
        labels: Sequence[str],
        scores: Sequence[float],
        dbfs: float,
    ) -> None:
        """One scored window."""
        if not self.sensors(sensor_id):
            return
        now = self._clock()
        self._seen[sensor_id] = now
        self.level.labels(sensor_id).set(dbfs)
        for label, value in zip(labels, scores, strict=True):
            key = (sensor_id, model, label)
            peak = self._peaks.get(key)
            if peak is None or value >= peak[0] or now - peak[1] >= self.hold_s:
                self._peaks[key] = (float(value), now)
                self.score.labels(*key).set(float(value))
        if now >= self._next_sweep:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + min(60.0, self.stale_s)
        gone = {sensor for sensor, seen in self._seen.items() if now - seen >= self.stale_s}
        if not gone:
            return
        for sensor in gone:
            del self._seen[sensor]
            self.level.remove(sensor)
        for key in [key for key in self._peaks if key[0] in gone]:
            del self._peaks[key]
            self.score.remove(*key)
