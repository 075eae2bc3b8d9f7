"""Prometheus metrics of the featurizer service."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from soundsentry.runtime.metrics import StreamMetrics

__all__ = ["FeaturizerMetrics"]

# One Featurizer.process call blocks the event loop: a few ms is normal, 100 ms is a busy
# worker, seconds mean it cannot keep up (or max_batch_chunks is too large).
_BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
# Chunks per batch, up to max_batch_chunks (default 1000): small batches mean a light load
# (the batch timed out), batches at the maximum mean the worker is catching up.
_BATCH_CHUNKS_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000)


@dataclass(frozen=True, slots=True)
class FeaturizerMetrics:
    """The featurizer's own metrics plus the counters every stream service has."""

    stream: StreamMetrics
    windows: Counter
    batch_seconds: Histogram
    batch_chunks: Histogram
    sequence_events: Counter
    sensors: Gauge
    consumer_lag: Gauge
    held_records: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> FeaturizerMetrics:
        return cls(
            stream=StreamMetrics.create(registry),
            windows=Counter(
                "soundsentry_featurizer_windows_total",
                "Feature windows produced, by profile.",
                ["profile"],
                registry=registry,
            ),
            batch_seconds=Histogram(
                "soundsentry_featurizer_batch_seconds",
                "Wall-clock seconds per Featurizer.process call (CPU-bound; blocks the loop).",
                buckets=_BATCH_SECONDS_BUCKETS,
                registry=registry,
            ),
            batch_chunks=Histogram(
                "soundsentry_featurizer_batch_chunks",
                "Records per batch handed to the featurizer (including ones that were parked).",
                buckets=_BATCH_CHUNKS_BUCKETS,
                registry=registry,
            ),
            sequence_events=Counter(
                "soundsentry_featurizer_sequence_events_total",
                "Sequence events by reason: gap, stale_sequence, stream_restart, sequence_restart, "
                "sample_discontinuity, format_change.",
                ["reason"],
                registry=registry,
            ),
            sensors=Gauge(
                "soundsentry_featurizer_sensors",
                "Sensors whose streaming state this worker holds.",
                registry=registry,
            ),
            consumer_lag=Gauge(
                "soundsentry_featurizer_consumer_lag",
                "Records of the audio topic behind its high-water mark, by partition "
                "(as of the last batch from that partition).",
                ["partition"],
                registry=registry,
            ),
            held_records=Gauge(
                "soundsentry_featurizer_held_records",
                "Audio records kept uncommitted because windows still to come need their "
                "audio (read again after a crash).",
                registry=registry,
            ),
        )
