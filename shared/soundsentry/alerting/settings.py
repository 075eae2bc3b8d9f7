"""Where the alert rules are (prefix ``SOUNDSENTRY_ALERTER_``): read by the alerter service, whose
settings extend these, and by ``soundsentry serve``, which applies the same rules."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from soundsentry.alerting.engine import AlertRules

__all__ = ["AlertRulesSettings"]


class AlertRulesSettings(BaseSettings):
    """The alert rules file. Prefix: ``SOUNDSENTRY_ALERTER_``."""

    model_config = SettingsConfigDict(
        env_prefix="SOUNDSENTRY_ALERTER_", frozen=True, extra="ignore"
    )

    rules_file: Path | None = Field(
        default=None, description="Alert rules (JSON): per-label and per-sensor-group overrides."
    )

    def alert_rules(self) -> AlertRules:
        """The rules of ``rules_file``; without one, the cards' rules as they are.

        Raises
        ------
        ConfigurationError
            naming the file and the problem.
        """
        if self.rules_file is None:
            return AlertRules()
        return AlertRules.from_file(self.rules_file)
