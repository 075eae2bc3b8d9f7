"""Classifier service settings (prefix ``SOUNDSENTRY_CLASSIFIER_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ClassifierSettings", "EscalationSettings"]


class ClassifierSettings(BaseSettings):
    """How the classifier consumes, batches and reports. Prefix: ``SOUNDSENTRY_CLASSIFIER_``."""

    model_config = SettingsConfigDict(
        env_prefix="SOUNDSENTRY_CLASSIFIER_", frozen=True, extra="forbid"
    )

    app_id: str = Field(
        default="soundsentry-classifier",
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="The Kafka consumer group of the classifier workers.",
    )
    model_dir: Path = Field(
        default=Path("models"),
        description="Directory of model cards (<name>.json and the ONNX file it names); every "
        "model scores the windows of its card's profile.",
    )
    max_batch_windows: int = Field(
        default=256,
        ge=1,
        le=10_000,
        description="Most windows (from any sensors) scored together in one batch.",
    )
    max_batch_ms: int = Field(
        default=20,
        ge=1,
        le=60_000,
        description="How long to wait to fill a batch before scoring what has arrived (ms): "
        "the latency the batching adds at low load.",
    )
    reload_interval_s: float = Field(
        default=10.0,
        ge=0.0,
        le=3600.0,
        description="How often the model directory is re-read for new, changed or removed "
        "cards (hot reload; a card that fails to load is reported and its previous version "
        "keeps serving); 0 disables.",
    )
    inference_threads: int = Field(
        default=1, ge=1, le=64, description="ONNX Runtime intra-op threads per model."
    )
    sensor_metrics: str = Field(
        default="",
        description="Comma-separated shell patterns of the sensor ids whose level and scores "
        "get Prometheus series of their own (the per-sensor dashboard); empty: none. Each "
        "sensor costs 1 + models x labels series, so none by default (a city's Prometheus); "
        "'*' for a small site.",
    )
    metrics_port: int = Field(
        default=9103, ge=0, le=65535, description="Prometheus /metrics port (0: disabled)."
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address /metrics binds to (it lists sensor ids: loopback unless a "
        "network policy guards the port; the container image sets 0.0.0.0).",
    )


class EscalationSettings(BaseSettings):
    """Sending uncertain windows to a bigger model. Prefix: ``SOUNDSENTRY_ESCALATION_``."""

    model_config = SettingsConfigDict(
        env_prefix="SOUNDSENTRY_ESCALATION_", frozen=True, extra="forbid"
    )

    backend: Literal["none", "rekognition", "onnx"] = Field(
        default="none",
        description="Second stage: none, rekognition (Amazon Rekognition Custom Labels) or "
        "onnx (a larger ONNX model, see ONNX_CARD).",
    )
    bands: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description='Uncertainty band per label as JSON, e.g. {"smoke_alarm": [0.3, 0.7]}: '
        "first-stage scores in [low, high) are escalated; labels without a band never are.",
    )
    merge: Literal["replace", "max", "mean"] = Field(
        default="replace",
        description="How the answer combines with the first-stage score of an uncertain label.",
    )
    calls_per_minute: float = Field(
        default=60.0, ge=1.0, description="Budget: escalated windows per minute, all sensors."
    )
    calls_per_sensor_per_minute: float = Field(
        default=6.0, ge=1.0, description="Budget: escalated windows per minute of one sensor."
    )
    max_concurrency: int = Field(default=4, ge=1, le=256, description="Calls in flight at once.")
    max_pending: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="Escalations waiting or in flight; beyond it windows keep their first-stage "
        "scores (counted as queue_full).",
    )
    timeout_s: float = Field(default=5.0, gt=0.0, le=300.0, description="Timeout of one call.")
    retries: int = Field(
        default=2, ge=0, le=10, description="Retries of a call that failed in a retryable way."
    )
    backoff_base_s: float = Field(
        default=0.2, gt=0.0, description="Ceiling of the first retry's jittered delay (doubles)."
    )
    backoff_cap_s: float = Field(default=5.0, gt=0.0, description="Ceiling of any retry delay.")
    breaker_failures: int = Field(
        default=5,
        ge=1,
        description="Windows failed in a row (after retries) that open the breaker.",
    )
    breaker_reset_s: float = Field(
        default=30.0, gt=0.0, description="Seconds the breaker stays open before a trial call."
    )
    rekognition_project_version_arn: str = Field(
        default="", description="Custom Labels project version ARN (backend rekognition)."
    )
    rekognition_min_confidence: float = Field(
        default=50.0, ge=0.0, le=100.0, description="DetectCustomLabels' MinConfidence (0..100)."
    )
    rekognition_region: str | None = Field(
        default=None, description="AWS region; default: the ARN's. Credentials: boto3's chain."
    )
    rekognition_endpoint_url: str | None = Field(
        default=None, description="Rekognition endpoint (VPC endpoints, tests); default: AWS's."
    )
    rekognition_label_map: dict[str, str] = Field(
        default_factory=dict,
        description='Rekognition label name -> our label, as JSON, e.g. {"Smoke": '
        '"smoke_alarm"}; default: the same names.',
    )
    onnx_card: Path | None = Field(
        default=None, description="Model card of the larger ONNX model (backend onnx)."
    )

    @model_validator(mode="after")
    def _backend_is_configured(self) -> EscalationSettings:
        if self.backend == "rekognition" and not self.rekognition_project_version_arn:
            raise ValueError("backend rekognition needs REKOGNITION_PROJECT_VERSION_ARN")
        if self.backend == "onnx" and self.onnx_card is None:
            raise ValueError("backend onnx needs ONNX_CARD")
        if self.backend != "none" and not self.bands:
            raise ValueError(f"backend {self.backend} needs BANDS: no label would be escalated")
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("backoff_cap_s must be >= backoff_base_s")
        if self.max_pending < self.max_concurrency:
            raise ValueError("max_pending must be >= max_concurrency")
        return self
