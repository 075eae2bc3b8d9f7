"""Classifier service settings (prefix ``SOUNDSENTRY_CLASSIFIER_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ClassifierSettings"]


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
        description="Faust app id: the Kafka consumer group, and the prefix of Faust's own topics.",
    )
    model_dir: Path = Field(
        default=Path("models"),
        description="Directory of model cards (<name>.json beside <name>.onnx); every model "
        "scores the windows of its card's profile.",
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
    data_dir: Path | None = Field(
        default=None,
        description="Directory Faust creates its data directory in; default: the system temp "
        "directory, so the working directory may be read-only.",
    )
    metrics_port: int = Field(
        default=9103, ge=0, le=65535, description="Prometheus /metrics port (0: disabled)."
    )
    metrics_host: str = Field(default="0.0.0.0", description="Address /metrics binds to.")
