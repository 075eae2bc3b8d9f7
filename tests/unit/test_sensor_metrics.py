"""Per-sensor series: which sensors get them, peak hold of scores, removal of departed sensors."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from soundsentry.runtime.metrics import SensorFilter, SensorMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_filter_takes_comma_separated_shell_patterns() -> None:
    selected = SensorFilter(" site-12/* , kitchen-1")
    assert selected("site-12/mic-3")
    assert selected("kitchen-1")
    assert not selected("kitchen-10")
    assert not selected("site-1/mic-3")
    assert not SensorFilter("")("anything")
    assert SensorFilter("*")("anything")


def test_scores_are_held_at_their_peak_then_follow_the_signal() -> None:
    registry, clock = CollectorRegistry(), Clock()
    metrics = SensorMetrics(registry, SensorFilter("*"), hold_s=20.0, clock=clock)
    labels = ("smoke_alarm", "siren")
    metrics.observe("s1", "default", labels, [0.9, 0.1], -30.0)
    clock.now = 5.0
    metrics.observe("s1", "default", labels, [0.2, 0.3], -42.5)
    score = "soundsentry_sensor_score"
    # The alarm's peak survives the next scrape; a rising score shows at once.
    assert _value(registry, score, sensor="s1", model="default", label="smoke_alarm") == 0.9
    assert _value(registry, score, sensor="s1", model="default", label="siren") == 0.3
    assert _value(registry, "soundsentry_sensor_level_dbfs", sensor="s1") == -42.5
    clock.now = 21.0
    metrics.observe("s1", "default", labels, [0.2, 0.3], -42.5)
    assert _value(registry, score, sensor="s1", model="default", label="smoke_alarm") == 0.2


def test_unselected_sensors_get_no_series_and_departed_ones_are_removed() -> None:
    registry, clock = CollectorRegistry(), Clock()
    metrics = SensorMetrics(registry, SensorFilter("a*"), stale_s=300.0, clock=clock)
    metrics.observe("a1", "m", ("x",), [0.5], -20.0)
    metrics.observe("b1", "m", ("x",), [0.5], -20.0)
    assert _value(registry, "soundsentry_sensor_level_dbfs", sensor="b1") is None
    clock.now = 200.0
    metrics.observe("a2", "m", ("x",), [0.5], -20.0)
    assert _value(registry, "soundsentry_sensor_level_dbfs", sensor="a1") == -20.0
    clock.now = 400.0  # a1 unheard for 400 s, a2 for 200 s
    metrics.observe("a3", "m", ("x",), [0.5], -20.0)
    assert _value(registry, "soundsentry_sensor_level_dbfs", sensor="a1") is None
    assert _value(registry, "soundsentry_sensor_score", sensor="a1", model="m", label="x") is None
    assert _value(registry, "soundsentry_sensor_level_dbfs", sensor="a2") == -20.0
