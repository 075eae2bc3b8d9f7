"""Ingest service settings. Prefix: ``SOUNDSENTRY_INGEST_``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["IngestSettings"]


class IngestSettings(BaseSettings):
    """How ingest listens, authenticates and publishes. Prefix: ``SOUNDSENTRY_INGEST_``."""

    model_config = SettingsConfigDict(env_prefix="SOUNDSENTRY_INGEST_", frozen=True, extra="forbid")

    host: str = Field(
        default="127.0.0.1",
        description="Address the gRPC server binds to (loopback unless told; the container "
        "image sets 0.0.0.0).",
    )
    port: int = Field(default=50051, ge=0, le=65535, description="gRPC port (0: any free port).")
    tokens_file: Path | None = Field(
        default=None,
        description='JSON object {"<sensor id or glob>": "<token>" or "sha256:<hex>"}.',
    )
    allow_anonymous: bool = Field(
        default=False,
        description="Accept chunks without a token when no tokens_file is set (development only).",
    )
    tls_cert_file: Path | None = Field(default=None, description="Server certificate (PEM).")
    tls_key_file: Path | None = Field(default=None, description="Server private key (PEM).")
    tls_client_ca_file: Path | None = Field(
        default=None, description="CA that signs client certificates; set it to require mTLS."
    )
    max_in_flight: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Chunks per stream published but not yet acknowledged by Kafka; more waits.",
    )
    max_streams: int = Field(
        default=20_000,
        ge=1,
        description="Concurrent streams (all connections); more are refused (RESOURCE_EXHAUSTED).",
    )
    auth_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A stream with no authenticated chunk after this long is closed "
        "(UNAUTHENTICATED), so it cannot hold a stream slot.",
    )
    idle_timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=86_400,
        description="A stream that sends no chunk for this long is closed (DEADLINE_EXCEEDED); "
        "sensors reconnect.",
    )
    max_audio_rate: float = Field(
        default=10.0,
        ge=0.0,
        le=10_000.0,
        description="Audio one sensor may send, in times real time (0: no limit); beyond it "
        "(after bursts of AUDIO_BURST_S) its stream is slowed down, not refused.",
    )
    audio_burst_s: float = Field(
        default=300.0,
        gt=0.0,
        le=86_400.0,
        description="Seconds of audio a sensor may send at once beyond the rate (a backlog).",
    )
    linger_ms: int = Field(
        default=5, ge=0, le=1000, description="Producer linger: batches chunks from many sensors."
    )
    metrics_port: int = Field(
        default=9101, ge=0, le=65535, description="Prometheus /metrics port (0: disabled)."
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address /metrics binds to (it lists sensor ids: loopback unless a "
        "network policy guards the port; the container image sets 0.0.0.0).",
    )

    @model_validator(mode="after")
    def _auth_is_configured(self) -> IngestSettings:
        if self.tokens_file is None and not self.allow_anonymous:
            raise ValueError(
                "set SOUNDSENTRY_INGEST_TOKENS_FILE, or SOUNDSENTRY_INGEST_ALLOW_ANONYMOUS=true "
                "to accept unauthenticated sensors"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS needs both tls_cert_file and tls_key_file")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("mTLS (tls_client_ca_file) needs tls_cert_file and tls_key_file")
        return self
