"""Window scores to timed events for many sensors: the alerter's logic, without Kafka.

For each score message (one model's scores of one window), :class:`AlertEngine` feeds every
label's score to that (sensor, model, label)'s :class:`~soundsentry.events.tracker.EventTracker` and
turns the updates into ``Event`` messages (``started`` / ``ended``, deterministic ids). Each
sensor's trackers are kept as one JSON-able snapshot (:meth:`AlertEngine.state_of`), which the
alerter service stores in a changelog-backed table, so a restarted alerter continues every
event where it was.

Rules: a label's :class:`~soundsentry.events.tracker.EventRule` is its model card's (tuned
``event_rules``, else the threshold rule that ``soundsentry detect`` uses), with
:class:`AlertRules` overrides on top: for every sensor, then for the first sensor group whose
patterns match the sensor id. A label can be disabled there; rules can change while running
(:meth:`AlertEngine.use_rules`): trackers keep their state under the new rule, and a label
that is disabled ends its open event. A label that another card ``takes_over``
(:func:`~soundsentry.models.model_set.reported_labels`) makes no events from this model's scores.

Revisions (scores with ``escalated_to``) are not applied: a tracker has moved past their window
by the time they arrive, and events never change after the fact. They are counted.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from soundsentry.contracts import (
    EVENT_KINDS,
    WINDOW_REWIND_LIMIT_S,
    Event,
    EventKind,
    WindowScores,
)
from soundsentry.events.rules import RuleOverrides
from soundsentry.events.tracker import (
    EventRule,
    EventTracker,
    EventUpdate,
    unpacked,
)
from soundsentry.exceptions import BadMessageError, ConfigurationError
from soundsentry.models.model_set import ModelCard, reported_labels
from soundsentry.models.trackers import event_rule_for, new_event_tracker

__all__ = [
    "AlertEngine",
    "AlertOutcome",
    "AlertRules",
    "LabelOverrides",
    "NotificationPolicy",
    "SensorGroup",
    "decode_state",
    "event_to_proto",
]

logger = logging.getLogger(__name__)

_STATE_VERSION = 1
# AlertEngine.encoded_state: [version, stream id, anchor, [[model, label, *packed tracker]...]].
_PACKED_STATE_VERSION = 2
_compact_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def decode_state(data: bytes) -> dict[str, Any]:
    """The :meth:`AlertEngine.state_of` form of stored bytes: :meth:`AlertEngine.encoded_state`
    or the JSON of ``state_of`` itself (what alerters before the compact form stored).

    Raises
    ------
    BadMessageError
        ``bad_tracker_state`` for bytes that are neither.
    """
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadMessageError("bad_tracker_state", f"stored state is not JSON: {exc}") from exc
    if isinstance(value, dict):
        return value
    if not (isinstance(value, list) and len(value) == 4 and value[0] == _PACKED_STATE_VERSION):
        raise BadMessageError("bad_tracker_state", f"not a packed alerter state: {value!r:.80}")
    _, stream_id, anchor_ns, trackers = value
    try:
        items = [
            {"model": model, "label": label, "state": unpacked(values)}
            for model, label, *values in trackers
        ]
    except (TypeError, ValueError) as exc:
        raise BadMessageError("bad_tracker_state", f"not a packed alerter state: {exc}") from exc
    return {
        "version": _STATE_VERSION,
        "stream_id": stream_id,
        "anchor_ns": anchor_ns,
        "trackers": items,
    }


class LabelOverrides(RuleOverrides):
    """Changes to a label's rule (the :class:`RuleOverrides` fields; unset fields keep the
    card's value), whether it makes events, and how its events are notified."""

    enabled: bool | None = Field(default=None, description="false: no events for this label")
    cooldown_s: float | None = Field(
        default=None,
        ge=0.0,
        le=7 * 86_400.0,
        description="after a notified event, the same sensor and label are not notified again "
        "for events starting within this many seconds (events are still published)",
    )
    quiet_hours: str | None = Field(
        default=None,
        pattern=r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$",
        description='"HH:MM-HH:MM" in the rules\' timezone: events starting then are not '
        'notified (may wrap midnight, e.g. "22:00-07:00")',
    )


class SensorGroup(BaseModel):
    """Overrides for the sensors whose ids match one of ``sensors`` (shell-style patterns)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    sensors: list[str] = Field(min_length=1, description='patterns, e.g. "factory-1/*"')
    labels: dict[str, LabelOverrides] = Field(default_factory=dict)

    def matches(self, sensor_id: str) -> bool:
        return any(fnmatch.fnmatchcase(sensor_id, pattern) for pattern in self.sensors)


class AlertRules(BaseModel):
    """Per-label overrides for every sensor (``labels``, ``"*"`` for every label), then for the
    first matching sensor group. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: dict[str, LabelOverrides] = Field(default_factory=dict)
    groups: list[SensorGroup] = Field(default_factory=list)
    timezone: str = Field(default="UTC", description="IANA time zone of quiet hours")

    @classmethod
    def from_file(cls, path: str | Path) -> AlertRules:
        """Read a rules file (JSON).

        Raises
        ------
        ConfigurationError
            naming the file and the problem.
        """
        source = Path(path)
        try:
            rules = cls.model_validate(json.loads(source.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigurationError(f"{source}: cannot read the alert rules: {exc}") from exc
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'rules'}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigurationError(f"{source}: invalid alert rules: {problems}") from exc
        rules.check()
        return rules

    def check(self) -> None:
        """Raise ConfigurationError for overrides that make an impossible rule, or an unknown
        time zone."""
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigurationError(f"alert rules: unknown time zone {self.timezone!r}") from exc
        probe = EventRule("probe", on_threshold=0.5, off_threshold=0.25)
        for where, overrides in self._all_overrides():
            try:
                overrides.apply(probe)
            except ConfigurationError as exc:
                raise ConfigurationError(f"alert rules, {where}: {exc}") from exc

    def _all_overrides(self) -> Iterable[tuple[str, LabelOverrides]]:
        for label, overrides in self.labels.items():
            yield f"labels.{label}", overrides
        for group in self.groups:
            for label, overrides in group.labels.items():
                yield f"group {group.name}, labels.{label}", overrides

    def _layers(self, label: str, sensor_id: str) -> list[LabelOverrides | None]:
        layers = [self.labels.get("*"), self.labels.get(label)]
        group = next((g for g in self.groups if g.matches(sensor_id)), None)
        if group is not None:
            layers += [group.labels.get("*"), group.labels.get(label)]
        return layers

    def notification_settings(self, label: str, sensor_id: str) -> tuple[float, str | None]:
        """The cooldown (seconds, 0 for none) and quiet hours of a label at a sensor."""
        cooldown, quiet = 0.0, None
        for overrides in self._layers(label, sensor_id):
            if overrides is None:
                continue
            if overrides.cooldown_s is not None:
                cooldown = overrides.cooldown_s
            if overrides.quiet_hours is not None:
                quiet = overrides.quiet_hours
        return cooldown, quiet

    def resolve(self, rule: EventRule, sensor_id: str) -> EventRule | None:
        """``rule`` with the overrides for its label and ``sensor_id``; None when disabled."""
        layers = self._layers(rule.label, sensor_id)
        enabled = True
        for overrides in layers:
            if overrides is None:
                continue
            rule = overrides.apply(rule)
            if overrides.enabled is not None:
                enabled = overrides.enabled
        return rule if enabled else None


def event_to_proto(
    update: EventUpdate,
    *,
    sensor_id: str,
    stream_id: str,
    model: str,
    model_version: str,
    anchor_ns: int,
) -> Event:
    """The wire form of an update; times from ``anchor_ns`` (capture time of sample 0, 0 if
    unknown)."""
    found = update.event
    message = Event(
        event_id=update.event_id,
        kind=EVENT_KINDS[update.kind],
        sensor_id=sensor_id,
        stream_id=stream_id,
        label=found.label,
        sample_rate_hz=found.sample_rate_hz,
        onset_sample=found.onset_sample,
        peak_score=found.peak_score,
        model=model,
        model_version=model_version,
    )
    rate = found.sample_rate_hz
    if anchor_ns:
        message.onset_time.FromNanoseconds(anchor_ns + round(found.onset_sample * 1e9 / rate))
    if update.kind == "ended":
        message.offset_sample = found.offset_sample
        if anchor_ns:
            message.offset_time.FromNanoseconds(anchor_ns + round(found.offset_sample * 1e9 / rate))
    return message


@dataclass(slots=True)
class _Sensor:
    stream_id: str
    anchor_ns: int = 0
    # (model, label) -> tracker
    trackers: dict[tuple[str, str], EventTracker] = field(default_factory=dict)


def _rewound(sensor: _Sensor, message: WindowScores) -> bool:
    """Whether ``message`` lies so far before the sensor's last window (more than
    ``WINDOW_REWIND_LIMIT_S`` of audio) that it cannot be a replay: the sensor started over."""
    if not message.sample_rate_hz or not sensor.trackers:
        return False
    limit = WINDOW_REWIND_LIMIT_S * message.sample_rate_hz
    return any(
        tracker.last_start is not None and tracker.last_start - message.start_sample > limit
        for tracker in sensor.trackers.values()
    )


@dataclass(slots=True)
class AlertOutcome:
    """What one score message did: the events it caused, or why it was skipped."""

    events: list[Event] = field(default_factory=list)
    skipped: str | None = None  # "revision", "unknown_model", "stale_window"


class AlertEngine:
    """Event trackers for every (sensor, model, label), fed one score message at a time.

    Parameters
    ----------
    cards : mapping of model name to ModelCard
        The models whose scores arrive (window geometry and event rules).
    rules : AlertRules
    """

    def __init__(self, cards: Mapping[str, ModelCard], rules: AlertRules | None = None) -> None:
        self._cards = dict(cards)
        self._reported = reported_labels(self._cards.values())
        self._rules = rules or AlertRules()
        self._sensors: dict[str, _Sensor] = {}
        # Resolving a rule (card defaults, then label and sensor-group overrides) for every
        # score was a tenth of the alerter's time; rules change only in use_rules.
        self._resolved: dict[tuple[str, str, str], EventRule | None] = {}

    @property
    def sensors(self) -> int:
        return len(self._sensors)

    def forget(self, sensor_ids: Iterable[str] | None = None) -> None:
        """Drop cached trackers (all with None), e.g. when partitions are revoked; they come
        back from the stored state on the next message."""
        self._resolved.clear()
        if sensor_ids is None:
            self._sensors.clear()
        else:
            for sensor_id in sensor_ids:
                self._sensors.pop(sensor_id, None)

    def end(self, sensor_id: str) -> list[Event]:
        """End a sensor's stream (e.g. a file read to its end): its open events end, and its
        trackers are dropped."""
        sensor = self._sensors.pop(sensor_id, None)
        if sensor is None:
            return []
        return [
            self._proto(update, sensor_id, sensor, model)
            for (model, _), tracker in sensor.trackers.items()
            for update in tracker.flush()
        ]

    def use_rules(
        self, rules: AlertRules | None = None, cards: Mapping[str, ModelCard] | None = None
    ) -> list[tuple[str, Event]]:
        """New rules or cards, effective from the next message.

        Returns the ``ended`` events of open events whose label is now disabled, taken over
        by another model, or whose model is gone, as ``(sensor_id, event)``.

        Raises
        ------
        ConfigurationError
            when two of ``cards`` take over the same label (nothing changes).
        """
        if cards is not None:
            self._reported = reported_labels(cards.values())
            self._cards = dict(cards)
        if rules is not None:
            self._rules = rules
        self._resolved.clear()
        ended: list[tuple[str, Event]] = []
        for sensor_id, sensor in self._sensors.items():
            for key in list(sensor.trackers):
                model, label = key
                card = self._cards.get(model)
                rule = self._rule(card, label, sensor_id) if card is not None else None
                tracker = sensor.trackers[key]
                if rule is None:
                    ended += [
                        (sensor_id, self._proto(u, sensor_id, sensor, model))
                        for u in tracker.flush()
                    ]
                    del sensor.trackers[key]
                elif rule != tracker.rule and card is not None:
                    sensor.trackers[key] = self._rebuilt(card, rule, tracker, sensor_id, sensor)
        return ended

    def process(
        self, message: WindowScores, stored: Callable[[str], Mapping[str, Any] | None]
    ) -> AlertOutcome:
        """Feed one score message; ``stored(sensor_id)`` gives the sensor's stored state.

        Raises
        ------
        BadMessageError
            ``bad_score`` and the like (a score outside [0, 1], a window off the hop grid);
            no tracker has changed.
        """
        if message.escalated_to:
            return AlertOutcome(skipped="revision")
        card = self._cards.get(message.model)
        if card is None:
            return AlertOutcome(skipped="unknown_model")
        frame_scores = _checked_frames(message)
        outcome = AlertOutcome()
        sensor, ended = self._sensor(message.sensor_id, stored)
        outcome.events += ended
        if sensor.stream_id != message.stream_id or _rewound(sensor, message):
            # A restarted sensor (a new stream id, or the old one from the start again): its
            # old stream is over.
            for (model, _), old in sensor.trackers.items():
                outcome.events += [
                    self._proto(u, message.sensor_id, sensor, model) for u in old.flush()
                ]
            sensor = self._sensors[message.sensor_id] = _Sensor(message.stream_id)
        if message.HasField("start_time") and message.sample_rate_hz:
            sensor.anchor_ns = message.start_time.ToNanoseconds() - round(
                message.start_sample * 1e9 / message.sample_rate_hz
            )
        stale = True
        for entry, frames in zip(message.scores, frame_scores, strict=True):
            tracker = self._tracker(card, entry.label, message, sensor)
            if tracker is None:
                continue
            before = tracker.stale_windows
            # _checked_frames has checked every score and frame of the message.
            updates = tracker.push_checked(message.start_sample, entry.score, frames)
            stale = stale and tracker.stale_windows > before
            outcome.events += [
                self._proto(u, message.sensor_id, sensor, message.model) for u in updates
            ]
        if stale and message.scores:
            outcome.skipped = "stale_window"
        return outcome

    def state_of(self, sensor_id: str) -> dict[str, Any] | None:
        """The sensor's trackers as JSON values (what :meth:`process` reads back through
        ``stored``), or None for a sensor not seen."""
        sensor = self._sensors.get(sensor_id)
        if sensor is None:
            return None
        return {
            "version": _STATE_VERSION,
            "stream_id": sensor.stream_id,
            "anchor_ns": sensor.anchor_ns,
            "trackers": [
                {"model": model, "label": label, "state": tracker.snapshot()}
                for (model, label), tracker in sensor.trackers.items()
            ],
        }

    def encoded_state(self, sensor_id: str) -> bytes | None:
        """:meth:`state_of` as compact JSON bytes (what the alerter's table stores), or None for
        a sensor not seen: positional lists, less than half its JSON (benchmarks/alerter.py).
        :func:`decode_state` reads it back."""
        sensor = self._sensors.get(sensor_id)
        if sensor is None:
            return None
        trackers = [
            [model, label, *tracker.packed()] for (model, label), tracker in sensor.trackers.items()
        ]
        packed = [_PACKED_STATE_VERSION, sensor.stream_id, sensor.anchor_ns, trackers]
        return _compact_json(packed).encode()

    # -- internals ---------------------------------------------------------------------------

    def _rule(self, card: ModelCard, label: str, sensor_id: str) -> EventRule | None:
        key = (card.name, label, sensor_id)
        if key not in self._resolved:
            if label in self._reported.get(card.name, ()):
                rule = self._rules.resolve(event_rule_for(card, label), sensor_id)
            else:  # another model of the directory takes the label over
                rule = None
            self._resolved[key] = rule
        return self._resolved[key]

    def _sensor(
        self, sensor_id: str, stored: Callable[[str], Mapping[str, Any] | None]
    ) -> tuple[_Sensor, list[Event]]:
        """The sensor's trackers, from memory or its stored state, and the ``ended`` events
        of stored open events whose label is no longer tracked (disabled or taken over since
        the state was stored: they would otherwise never end).

        A stored state that cannot be read or restored is logged and the sensor starts afresh
        (an open event in it never gets its ``ended``): its scores are not at fault, and
        parking them, or crashing on them, would lose the sensor for good.
        """
        sensor = self._sensors.get(sensor_id)
        if sensor is not None:
            return sensor, []
        try:
            sensor, ended = self._restored(sensor_id, stored(sensor_id))
        except (
            BadMessageError,
            AttributeError,
            KeyError,
            TypeError,
            ValueError,
            OverflowError,
            RecursionError,
        ) as exc:
            logger.warning(
                "stored state of sensor %s is unreadable, starting afresh: %r", sensor_id, exc
            )
            sensor, ended = _Sensor(""), []
        self._sensors[sensor_id] = sensor
        return sensor, ended

    def _restored(
        self, sensor_id: str, state: Mapping[str, Any] | None
    ) -> tuple[_Sensor, list[Event]]:
        sensor = _Sensor("")
        ended: list[Event] = []
        if not state or state.get("version") != _STATE_VERSION:
            return sensor, ended
        sensor.stream_id = str(state.get("stream_id", ""))
        sensor.anchor_ns = int(state.get("anchor_ns", 0))
        for item in state.get("trackers", []):
            model, label = str(item["model"]), str(item["label"])
            card = self._cards.get(model)
            if card is None:
                continue
            rule = self._rule(card, label, sensor_id)
            tracker = new_event_tracker(
                card,
                rule or event_rule_for(card, label),
                sensor_id=sensor_id,
                stream_id=sensor.stream_id,
            )
            tracker.restore(item["state"])
            if rule is None:
                ended += [self._proto(u, sensor_id, sensor, card.name) for u in tracker.flush()]
                continue
            sensor.trackers[model, label] = tracker
        return sensor, ended

    def _tracker(
        self, card: ModelCard, label: str, message: WindowScores, sensor: _Sensor
    ) -> EventTracker | None:
        key = (card.name, label)
        rule = self._rule(card, label, message.sensor_id)
        if rule is None:
            return None
        tracker = sensor.trackers.get(key)
        if tracker is None:
            tracker = sensor.trackers[key] = new_event_tracker(
                card, rule, sensor_id=message.sensor_id, stream_id=message.stream_id
            )
        return tracker

    @staticmethod
    def _rebuilt(
        card: ModelCard, rule: EventRule, tracker: EventTracker, sensor_id: str, sensor: _Sensor
    ) -> EventTracker:
        rebuilt = new_event_tracker(card, rule, sensor_id=sensor_id, stream_id=sensor.stream_id)
        rebuilt.restore(tracker.snapshot())
        return rebuilt

    def _proto(self, update: EventUpdate, sensor_id: str, sensor: _Sensor, model: str) -> Event:
        card = self._cards.get(model)
        return event_to_proto(
            update,
            sensor_id=sensor_id,
            stream_id=sensor.stream_id,
            model=model,
            model_version=card.version if card else "",
            anchor_ns=sensor.anchor_ns,
        )


def _checked_frames(message: WindowScores) -> list[npt.NDArray[np.float64] | None]:
    """Each label's frame scores as an array (None without), after checking every score of
    the message, so that a bad one changes no tracker."""
    entries = message.scores
    for entry in entries:
        if not (math.isfinite(entry.score) and 0.0 <= entry.score <= 1.0):
            raise BadMessageError(
                "bad_score", f"score {entry.score!r} of {entry.label!r} is not in [0, 1]"
            )
    sizes = {len(entry.frame_scores) for entry in entries}
    if len(sizes) == 1 and 0 not in sizes:
        # One model's labels share a frame count: one conversion and one check for all
        # (a third of the per-label cost; this was a sixth of the alerter's time).
        block = np.array([entry.frame_scores for entry in entries], dtype=np.float64)
        if not _probabilities(block):
            raise BadMessageError("bad_frame_scores", "a frame score is not in [0, 1]")
        return list(block)
    out: list[npt.NDArray[np.float64] | None] = []
    for entry in entries:
        if not entry.frame_scores:
            out.append(None)
            continue
        frames = np.asarray(entry.frame_scores, dtype=np.float64)
        if not _probabilities(frames):
            raise BadMessageError(
                "bad_frame_scores", f"a frame score of {entry.label!r} is not in [0, 1]"
            )
        out.append(frames)
    return out


def _probabilities(values: npt.NDArray[np.float64]) -> bool:
    # NaN makes min() or max() NaN, which fails the comparison.
    return bool(values.min() >= 0.0 and values.max() <= 1.0)


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


class NotificationPolicy:
    """Which events to notify: cooldowns and quiet hours of :class:`AlertRules`.

    Decisions use the events' capture times (onset), not the clock, so a replay decides the
    same. An ``ended`` is notified exactly when its ``started`` was. The memory of recent
    notifications is per process: after a restart a cooldown starts afresh. Events without a
    capture time are always notified.
    """

    def __init__(self, rules: AlertRules, *, remember: int = 100_000) -> None:
        self.rules = rules
        self._zone = ZoneInfo(rules.timezone)
        self._remember = remember
        # (sensor, label) -> onset (ns) of the last notified start
        self._last: OrderedDict[tuple[str, str], int] = OrderedDict()
        # event id -> None if notified, else why not
        self._decided: OrderedDict[str, str | None] = OrderedDict()

    def use_rules(self, rules: AlertRules) -> None:
        self.rules = rules
        self._zone = ZoneInfo(rules.timezone)

    def decide(self, event: Event) -> str | None:
        """None to notify ``event``, else why not (``cooldown``, ``quiet_hours``, or
        ``suppressed_start`` for the end of an event whose start was not notified)."""
        if event.event_id in self._decided:  # a replay, or the end of a decided start
            earlier = self._decided[event.event_id]
            if event.kind == EventKind.EVENT_KIND_ENDED and earlier is not None:
                return "suppressed_start"
            return earlier
        onset_ns = event.onset_time.ToNanoseconds() if event.HasField("onset_time") else 0
        cooldown_s, quiet = self.rules.notification_settings(event.label, event.sensor_id)
        key = (event.sensor_id, event.label)
        last = self._last.get(key)
        reason = None
        if onset_ns and quiet is not None and self._in_quiet_hours(onset_ns, quiet):
            reason = "quiet_hours"
        elif onset_ns and last is not None and 0 <= onset_ns - last < cooldown_s * 1e9:
            reason = "cooldown"
        self._decided[event.event_id] = reason
        if len(self._decided) > self._remember:
            self._decided.popitem(last=False)
        if reason is None and onset_ns and (last is None or onset_ns > last):
            self._last[key] = onset_ns
            self._last.move_to_end(key)
            if len(self._last) > self._remember:
                self._last.popitem(last=False)
        return reason

    def _in_quiet_hours(self, onset_ns: int, quiet: str) -> bool:
        local = datetime.fromtimestamp(onset_ns / 1e9, tz=self._zone)
        minute = local.hour * 60 + local.minute
        start, end = (_minutes(part) for part in quiet.split("-"))
        if start <= end:
            return start <= minute < end
        return minute >= start or minute < end  # wraps midnight
