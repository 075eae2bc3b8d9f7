"""Notification settings (prefix ``SOUNDSENTRY_NOTIFY_``) and the notifier they describe, shared
by the alerter service and ``soundsentry serve``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from soundsentry.exceptions import ConfigurationError
from soundsentry.notify.notifier import (
    NotificationMetrics,
    Notifier,
    ParkEvent,
    destinations_from_config,
)

__all__ = ["NotifySettings", "build_notifier"]


class NotifySettings(BaseSettings):
    """Where events are sent and how hard to try. Prefix: ``SOUNDSENTRY_NOTIFY_``.

    The destinations file is a JSON list; secrets stay in environment variables it names::

        [
          {"name": "ops", "type": "webhook", "url": "https://ops.example/hook",
           "secret_env": "OPS_WEBHOOK_SECRET"},
          {"name": "chat", "type": "slack", "url": "https://hooks.slack.com/services/..."},
          {"name": "sns", "type": "sns", "topic_arn": "arn:aws:sns:eu-west-1:123456789012:alarms"}
        ]
    """

    model_config = SettingsConfigDict(env_prefix="SOUNDSENTRY_NOTIFY_", frozen=True, extra="forbid")

    destinations_file: Path | None = Field(
        default=None, description="Destinations (JSON list); none: events are not notified."
    )
    timeout_s: float = Field(default=5.0, gt=0.0, le=120.0, description="Timeout of a request.")
    retries: int = Field(
        default=5, ge=0, le=20, description="Retries of a failed request that may succeed later."
    )
    backoff_base_s: float = Field(
        default=0.5, gt=0.0, description="Ceiling of the first retry's jittered delay (doubles)."
    )
    backoff_cap_s: float = Field(default=30.0, gt=0.0, description="Ceiling of any retry delay.")
    rate_per_minute: float = Field(
        default=120.0, ge=1.0, description="Requests per minute to one destination (bursts too)."
    )
    max_queued: int = Field(
        default=1000,
        ge=1,
        description="Notifications waiting per destination; beyond it they are dead-lettered.",
    )


def build_notifier(
    notify: NotifySettings,
    *,
    dead_letter: ParkEvent,
    registry: CollectorRegistry,
    secrets: Mapping[str, str],
) -> Notifier | None:
    """The notifier of the destinations file, or None without one.

    Raises
    ------
    ConfigurationError
        for a destinations file that cannot be read or describes unusable destinations.
    """
    path = notify.destinations_file
    if path is None:
        return None
    try:
        items = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"{path}: cannot read the destinations: {exc}") from exc
    if not isinstance(items, list) or not items:
        raise ConfigurationError(f"{path}: the destinations must be a non-empty JSON list")
    return Notifier(
        destinations_from_config(items, secrets=secrets, timeout_s=notify.timeout_s),
        dead_letter=dead_letter,
        retries=notify.retries,
        backoff_base_s=notify.backoff_base_s,
        backoff_cap_s=notify.backoff_cap_s,
        rate_per_minute=notify.rate_per_minute,
        max_queued=notify.max_queued,
        metrics=NotificationMetrics.create(registry),
    )
