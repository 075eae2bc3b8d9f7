"""Prometheus metrics of the alerter service."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from soundsentry.metrics import SensorFilter, StreamMetrics

__all__ = ["AlerterMetrics"]

# Event logic is a few microseconds a score; a batch waits for Kafka's acks of its events and
# of its state changelog.
_BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True, slots=True)
class AlerterMetrics:
    """The alerter's own metrics plus the counters every stream service has."""

    stream: StreamMetrics
    events: Counter
    scores_skipped: Counter
    batch_seconds: Histogram
    sensors: Gauge
    consumer_lag: Gauge
    reloads: Counter
    notifications_suppressed: Counter
    sensor_events: Counter
    sensor_filter: SensorFilter

    @classmethod
    def create(
        cls, registry: CollectorRegistry, sensors: SensorFilter | None = None
    ) -> AlerterMetrics:
        return cls(
            stream=StreamMetrics.create(registry),
            events=Counter(
                "soundsentry_alerter_events_total",
                "Events published, by label and kind (started, ended).",
                ["label", "kind"],
                registry=registry,
            ),
            scores_skipped=Counter(
                "soundsentry_alerter_scores_skipped_total",
                "Score records that moved no tracker, by reason (revision, unknown_model, "
                "stale_window: a replayed or late window).",
                ["reason"],
                registry=registry,
            ),
            batch_seconds=Histogram(
                "soundsentry_alerter_batch_seconds",
                "Wall-clock seconds per batch, including Kafka's acks of events and state.",
                buckets=_BATCH_SECONDS_BUCKETS,
                registry=registry,
            ),
            sensors=Gauge(
                "soundsentry_alerter_sensors",
                "Sensors whose trackers this worker holds in memory.",
                registry=registry,
            ),
            consumer_lag=Gauge(
                "soundsentry_alerter_consumer_lag",
                "Records of the scores topic behind its high-water mark, by partition "
                "(as of the last batch from that partition).",
                ["partition"],
                registry=registry,
            ),
            reloads=Counter(
                "soundsentry_alerter_reloads_total",
                "Re-reads of the model cards and rules file that changed something, by result "
                "(applied, failed: the previous rules keep applying).",
                ["result"],
                registry=registry,
            ),
            notifications_suppressed=Counter(
                "soundsentry_notifications_suppressed_total",
                "Events not notified, by reason (cooldown, quiet_hours, suppressed_start: the "
                "end of an event whose start was not notified).",
                ["reason"],
                registry=registry,
            ),
            sensor_events=Counter(
                "soundsentry_sensor_events_total",
                "Events started per sensor and label (only sensors in sensor_metrics).",
                ["sensor", "label"],
                registry=registry,
            ),
            sensor_filter=sensors or SensorFilter("*"),
        )

    def count_event(self, sensor_id: str, label: str, kind: str) -> None:
        """One published event, in the totals and, for a selected sensor, in its own series."""
        self.events.labels(label, kind).inc()
        if kind == "started" and self.sensor_filter(sensor_id):
            self.sensor_events.labels(sensor_id, label).inc()
