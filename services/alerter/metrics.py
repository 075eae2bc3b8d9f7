"""Prometheus metrics of the alerter service."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from soundsentry.alerting.metrics import events_counter
from soundsentry.contracts import Event
from soundsentry.runtime.metrics import SensorFilter, StreamMetrics

__all__ = ["AlerterMetrics"]

# Event logic is a few microseconds a score; a batch waits for Kafka's acks of its events and
# of its state changelog.
_BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# A started event needs the window that crosses the threshold (about window + hop after the
# onset, 1-2 s with the default model); tens of seconds mean a backlog somewhere.
_LATENCY_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10, 20, 60)


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
    detection_latency: Histogram
    sensor_filter: SensorFilter

    @classmethod
    def create(
        cls, registry: CollectorRegistry, sensors: SensorFilter | None = None
    ) -> AlerterMetrics:
        return cls(
            stream=StreamMetrics.create(registry),
            events=events_counter(registry),
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
            detection_latency=Histogram(
                "soundsentry_detection_latency_seconds",
                "From a sound's onset (the sensor's capture clock) to its started event "
                "published, by label: the whole pipeline's delay as people feel it.",
                ["label"],
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            sensor_filter=sensors or SensorFilter("*"),
        )

    def count_event(self, event: Event, kind: str, now_ns: int) -> None:
        """One published event: totals, the sensor's own series, and for a start, how long
        after the sound's onset it went out."""
        self.events.labels(event.label, kind).inc()
        if kind != "started":
            return
        if self.sensor_filter(event.sensor_id):
            self.sensor_events.labels(event.sensor_id, event.label).inc()
        if event.HasField("onset_time"):
            onset_ns = event.onset_time.ToNanoseconds()
            self.detection_latency.labels(event.label).observe(max(0, now_ns - onset_ns) / 1e9)
