"""Prometheus metrics of the classifier service."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from soundsentry.runtime.metrics import SensorFilter, SensorMetrics, StreamMetrics

__all__ = ["ClassifierMetrics"]

# One batch of ONNX inference blocks the event loop: about 0.5 ms a window on one core.
_INFERENCE_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
# Windows per batch, up to max_batch_windows (default 256): small batches mean a light load.
_BATCH_WINDOWS_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000)


@dataclass(frozen=True, slots=True)
class ClassifierMetrics:
    """The classifier's own metrics plus the counters every stream service has."""

    stream: StreamMetrics
    batch_windows: Histogram
    inference_seconds: Histogram
    windows_scored: Counter
    windows_gated: Counter
    windows_unmatched: Counter
    consumer_lag: Gauge
    model_reloads: Counter
    models_loaded: Gauge
    sensors: SensorMetrics

    @classmethod
    def create(
        cls, registry: CollectorRegistry, sensors: SensorFilter | None = None
    ) -> ClassifierMetrics:
        return cls(
            stream=StreamMetrics.create(registry),
            batch_windows=Histogram(
                "soundsentry_classifier_batch_windows",
                "Windows per scoring batch (including records that were parked).",
                buckets=_BATCH_WINDOWS_BUCKETS,
                registry=registry,
            ),
            inference_seconds=Histogram(
                "soundsentry_classifier_inference_seconds",
                "Wall-clock seconds of inference per batch (all models; blocks the loop).",
                buckets=_INFERENCE_SECONDS_BUCKETS,
                registry=registry,
            ),
            windows_scored=Counter(
                "soundsentry_classifier_windows_scored_total",
                "Windows run through a model, by model.",
                ["model"],
                registry=registry,
            ),
            windows_gated=Counter(
                "soundsentry_classifier_windows_gated_total",
                "Windows below a model's silence gate (not run, scored 0), by model.",
                ["model"],
                registry=registry,
            ),
            windows_unmatched=Counter(
                "soundsentry_classifier_windows_unmatched_total",
                "Windows of a profile no loaded model takes, by profile.",
                ["profile"],
                registry=registry,
            ),
            consumer_lag=Gauge(
                "soundsentry_classifier_consumer_lag",
                "Records of the windows topic behind its high-water mark, by partition "
                "(as of the last batch from that partition).",
                ["partition"],
                registry=registry,
            ),
            model_reloads=Counter(
                "soundsentry_classifier_model_reloads_total",
                "Model directory changes seen by hot reload, by card file and result "
                "(loaded, removed, failed: the previous version keeps serving).",
                ["card", "result"],
                registry=registry,
            ),
            models_loaded=Gauge(
                "soundsentry_classifier_models_loaded",
                "Models serving now.",
                registry=registry,
            ),
            sensors=SensorMetrics(registry, sensors or SensorFilter("*")),
        )
