"""Alerter service settings (prefix ``SOUNDSENTRY_ALERTER_``).

A rules file (JSON, :class:`~soundsentry.alerting.engine.AlertRules`) changes event rules per label,
for every sensor and per sensor group; it is re-read while running::

    {
      "labels": {"siren": {"on_threshold": 0.7}, "dog_bark": {"enabled": false}},
      "groups": [
        {"name": "factory", "sensors": ["factory-1/*"],
         "labels": {"*": {"min_duration_s": 1.0}}}
      ]
    }
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from soundsentry.alerting.settings import AlertRulesSettings

__all__ = ["AlerterSettings"]


class AlerterSettings(AlertRulesSettings):
    """How the alerter consumes, keeps state and reports. Prefix: ``SOUNDSENTRY_ALERTER_``.

    ``rules_file`` is :class:`~soundsentry.alerting.settings.AlertRulesSettings`' (``soundsentry
    serve`` reads it too)."""

    model_config = SettingsConfigDict(
        env_prefix="SOUNDSENTRY_ALERTER_", frozen=True, extra="forbid"
    )

    app_id: str = Field(
        default="soundsentry-alerter",
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Faust app id: the Kafka consumer group, and the prefix of its state "
        "table's changelog topic.",
    )
    model_dir: Path = Field(
        default=Path("models"),
        description="Directory of model cards (the classifier's): window geometry and event "
        "rules per label. Only the cards are read, not the ONNX files.",
    )
    reload_interval_s: float = Field(
        default=10.0,
        ge=0.0,
        le=3600.0,
        description="How often model cards and the rules file are re-read (0: never); a file "
        "that fails to load is reported and the previous rules keep applying.",
    )
    state_idle_s: float = Field(
        default=600.0,
        gt=0.0,
        le=86_400.0,
        description="A sensor silent this long has its trackers dropped from memory (its state "
        "stays in the table and comes back when it sends again): memory follows the sensors "
        "that stream.",
    )
    recovery_stall_s: float = Field(
        default=60.0,
        ge=0.0,
        le=3600.0,
        description="Crash (for the supervisor to restart the alerter) when the state table's "
        "recovery, which Faust can let wait forever, has gone this long without a changelog "
        "record (counted from its start, which includes asking the broker for offsets) while "
        "it still needs some (0: never).",
    )
    max_batch_scores: int = Field(
        default=256, ge=1, le=10_000, description="Most score records handled together."
    )
    max_batch_ms: int = Field(
        default=20,
        ge=1,
        le=60_000,
        description="How long to wait to fill a batch (ms): the latency batching adds at low load.",
    )
    data_dir: Path | None = Field(
        default=None,
        description="Directory Faust creates its data directory in; default: the system temp "
        "directory.",
    )
    sensor_metrics: str = Field(
        default="",
        description="Comma-separated shell patterns of the sensor ids whose events get "
        "Prometheus series of their own (the per-sensor dashboard); empty (the default): "
        "none, so a city's sensor count does not multiply the series; '*' for a small site.",
    )
    metrics_port: int = Field(
        default=9104, ge=0, le=65535, description="Prometheus /metrics port (0: disabled)."
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address /metrics binds to (it lists sensor ids: loopback unless a "
        "network policy guards the port; the container image sets 0.0.0.0).",
    )
