"""Settings, read from the environment only at the edge (entry points) and frozen afterwards.

Every field's environment variable is its name upper-cased with the class's prefix, e.g.
``KafkaSettings.bootstrap_servers`` is ``SOUNDSENTRY_KAFKA_BOOTSTRAP_SERVERS``. Unknown keys
are rejected and secrets are masked when printed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["KafkaSettings", "TopicSettings"]


# Kafka's default message size limit; chunks and windows stay below it.
MAX_MESSAGE_BYTES = 1_048_576
# Per-partition producer batch: many chunks or windows per request (see producer_kwargs).
PRODUCER_BATCH_BYTES = 512 * 1024


class KafkaSettings(BaseSettings):
    """How every service reaches the Kafka cluster. Prefix: ``SOUNDSENTRY_KAFKA_``."""

    model_config = SettingsConfigDict(env_prefix="SOUNDSENTRY_KAFKA_", frozen=True, extra="forbid")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        description="Comma-separated host:port list of brokers to bootstrap from.",
    )
    client_id: str = Field(default="soundsentry", description="Client id sent to the brokers.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Protocol used to talk to the brokers."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism when security_protocol is SASL_*."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    ssl_cafile: str | None = Field(
        default=None, description="CA bundle that signed the brokers' certificates (SSL, SASL_SSL)."
    )
    session_timeout_s: float = Field(
        default=30.0,
        ge=6.0,
        le=300.0,
        description="Consumer group session timeout: how long a crashed worker's partitions "
        "wait before another worker (or its restart) takes them over.",
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _non_empty_hosts(cls, value: str) -> str:
        hosts = [h.strip() for h in value.split(",") if h.strip()]
        if not hosts or any(":" not in h for h in hosts):
            raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return ",".join(hosts)

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Connection keyword arguments shared by aiokafka producers, consumers and admins."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context  # noqa: PLC0415 - only with TLS

            kwargs["ssl_context"] = create_ssl_context(cafile=self.ssl_cafile)
        if self.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return kwargs

    def producer_kwargs(self, *, linger_ms: int = 5) -> dict[str, Any]:
        """An aiokafka producer that loses nothing and batches: idempotent, acknowledged by
        every in-sync replica, batches of up to 512 KiB per partition lingering ``linger_ms``.

        aiokafka's default batch (16 KiB) holds four 100 ms chunks or one window, and an
        idempotent producer has one request in flight: throughput would be a few batches per
        round trip (benchmarks/pipeline.py)."""
        return {
            **self.aiokafka_kwargs(),
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": linger_ms,
            "max_batch_size": PRODUCER_BATCH_BYTES,
            "max_request_size": MAX_MESSAGE_BYTES,
        }

    def faust_credentials(self) -> Any:
        """Faust's ``broker_credentials`` for this protocol (None for PLAINTEXT): the stream
        services connect with the same TLS and SASL settings as ingest and the admin client."""
        if self.security_protocol == "PLAINTEXT":
            return None
        from faust.auth import SASLCredentials, SSLCredentials  # noqa: PLC0415

        kwargs = self.aiokafka_kwargs()
        context = kwargs.get("ssl_context")
        if self.security_protocol.startswith("SASL"):
            return SASLCredentials(
                username=kwargs["sasl_plain_username"],
                password=kwargs["sasl_plain_password"],
                ssl_context=context,
                mechanism=kwargs["sasl_mechanism"],
            )
        return SSLCredentials(context)

    def faust_broker_url(self) -> str:
        """The broker URL for Faust, ``soundsentry://host:port;host:port``: Faust's aiokafka
        transport with the commit fix of :mod:`soundsentry.runtime.faust_transport`."""
        return "soundsentry://" + ";".join(self.bootstrap_servers.split(","))


class TopicSettings(BaseSettings):
    """Physical topic layout of one deployment. Prefix: ``SOUNDSENTRY_TOPICS_``."""

    model_config = SettingsConfigDict(env_prefix="SOUNDSENTRY_TOPICS_", frozen=True, extra="forbid")

    prefix: str = Field(
        default="",
        description="Prepended to every topic name, to run several deployments on one cluster.",
        pattern=r"^[A-Za-z0-9._-]*$",
        max_length=100,
    )
    partitions: int = Field(
        default=12,
        ge=1,
        le=10_000,
        description="Partitions of each main topic; the upper bound on parallel workers per stage.",
    )
    replication_factor: int = Field(
        default=1, ge=1, le=7, description="Replicas of each topic (3 in production)."
    )
    retention_hours: dict[str, float] = Field(
        default_factory=dict,
        description='Retention of main topics in hours as JSON, e.g. {"audio.pcm": 2, '
        '"audio.windows": 1}; others keep theirs (audio.pcm 24, audio.windows 6, audio.scores '
        "24, audio.events 720). Applied when `topics create` makes a topic.",
    )

    @field_validator("retention_hours")
    @classmethod
    def _positive_hours(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {name: hours for name, hours in value.items() if not hours > 0}
        if bad:
            raise ValueError(f"retention must be a positive number of hours, got {bad}")
        return value
