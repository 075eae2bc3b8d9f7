"""A label's event rule as configuration holds it, checked once when it is read.

A model card's ``event_rules`` entry for a label is a :class:`RuleSpec` (the whole rule but the
label, which is the entry's key); an alerter override (``AlertRules``) is a :class:`RuleOverrides`
(any part of a rule). Both have the fields of :class:`~soundsentry.events.tracker.EventRule`
(:data:`RULE_FIELDS`) with the same bounds, so a value that no rule can take is refused with the
field's name where it is written (``event_rules.siren.on_threshold``), not when a tracker is made.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from soundsentry.events.tracker import MAX_LOOKBACK_WINDOWS, EventRule

__all__ = ["RULE_FIELDS", "RuleOverrides", "RuleSpec"]

OnThreshold = Annotated[float, Field(gt=0.0, le=1.0)]
OffThreshold = Annotated[float, Field(ge=0.0, le=1.0)]
SmoothingWindows = Annotated[int, Field(ge=1)]
Seconds = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
LookbackWindows = Annotated[int, Field(ge=0, le=MAX_LOOKBACK_WINDOWS)]
OnsetRatio = Annotated[float, Field(gt=0.0, le=1.0)]


class RuleSpec(BaseModel):
    """One label's :class:`EventRule` without its label, as a model card stores it.

    Unknown keys are errors; ``on_threshold`` and ``off_threshold`` are required, the others
    default as in :class:`EventRule`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    on_threshold: OnThreshold
    off_threshold: OffThreshold
    smoothing_windows: SmoothingWindows = 1
    min_duration_s: Seconds = 0.0
    merge_gap_s: Seconds = 0.0
    onset_lookback_windows: LookbackWindows = 0
    onset_ratio: OnsetRatio = 1.0

    @model_validator(mode="after")
    def _hysteresis(self) -> RuleSpec:
        if self.off_threshold > self.on_threshold:
            raise ValueError(
                f"off_threshold={self.off_threshold} must be <= on_threshold={self.on_threshold} "
                "(hysteresis: enter at on, leave below off)"
            )
        return self

    def rule(self, label: str) -> EventRule:
        """The rule for ``label`` (ConfigurationError for a label no rule can have)."""
        return EventRule(label, **self._values())

    @classmethod
    def of(cls, rule: EventRule) -> RuleSpec:
        """What a card stores for ``rule``."""
        return cls(**{name: getattr(rule, name) for name in RULE_FIELDS})

    def _values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in RULE_FIELDS}


class RuleOverrides(BaseModel):
    """Changes to a label's rule; unset fields keep the rule's value. Bounds as in
    :class:`RuleSpec`, and at most 100 windows of smoothing and an hour of duration or gap."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    on_threshold: OnThreshold | None = None
    off_threshold: OffThreshold | None = None
    smoothing_windows: Annotated[SmoothingWindows, Field(le=100)] | None = None
    min_duration_s: Annotated[Seconds, Field(le=3600.0)] | None = None
    merge_gap_s: Annotated[Seconds, Field(le=3600.0)] | None = None
    onset_lookback_windows: LookbackWindows | None = None
    onset_ratio: OnsetRatio | None = None

    def apply(self, rule: EventRule) -> EventRule:
        """``rule`` with these changes. When only the on threshold moves, the off threshold
        keeps the rule's hysteresis ratio, and the onset threshold moves with it too
        (``onset_ratio`` is a share of the on threshold).

        Raises
        ------
        ConfigurationError
            when the changed rule cannot work (e.g. off above on).
        """
        changes = {
            name: value for name in RULE_FIELDS if (value := getattr(self, name)) is not None
        }
        if "on_threshold" in changes and "off_threshold" not in changes:
            ratio = rule.off_threshold / rule.on_threshold
            changes["off_threshold"] = changes["on_threshold"] * ratio
        return replace(rule, **changes) if changes else rule


# The settings of a rule besides its label, in EventRule's order.
RULE_FIELDS: tuple[str, ...] = tuple(RuleSpec.model_fields)
