"""The alerter's logic: score messages in, the events of ``soundsentry detect`` out, across
restarts (state through JSON), rule overrides, sensor groups and disabled labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from soundsentry.alerting.engine import (
    AlertEngine,
    AlertRules,
    LabelOverrides,
    NotificationPolicy,
    SensorGroup,
    decode_state,
)
from soundsentry.contracts import WINDOW_REWIND_LIMIT_S, Event, EventKind, WindowScores
from soundsentry.events.tracker import EventRule
from soundsentry.exceptions import BadMessageError, ConfigurationError
from soundsentry.models.model_set import ModelCard
from soundsentry.models.trackers import event_rule_for, new_event_tracker
from tests.model_fixtures import LABELS, patterned_scores


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelCard, list[WindowScores]]:
    return patterned_scores(tmp_path_factory.mktemp("models"))


def offline(card: ModelCard, messages: list[WindowScores], rules: AlertRules) -> list[Any]:
    """What detect's trackers report for the same scores, as (kind, id, label, onset, offset)."""
    out = []
    trackers = {}
    for label in LABELS:
        rule = rules.resolve(event_rule_for(card, label), messages[0].sensor_id)
        if rule is not None:
            trackers[label] = new_event_tracker(
                card, rule, sensor_id=messages[0].sensor_id, stream_id=messages[0].stream_id
            )
    for message in messages:
        for entry in message.scores:
            if entry.label in trackers:
                updates = trackers[entry.label].push(
                    message.start_sample, entry.score, list(entry.frame_scores)
                )
                out += [(u.kind, u.event_id, u.event.label, u.event.onset_sample) for u in updates]
    return out


def as_tuples(events: list[Any]) -> list[Any]:
    kinds = {EventKind.EVENT_KIND_STARTED: "started", EventKind.EVENT_KIND_ENDED: "ended"}
    return [(kinds[e.kind], e.event_id, e.label, e.onset_sample) for e in events]


def stored_bytes(engine: AlertEngine, sensor_id: str) -> dict[str, Any] | None:
    """What the alerter's table gives back: the encoded state, decoded."""
    data = engine.encoded_state(sensor_id)
    assert data is not None
    return decode_state(data)


def stored_json(engine: AlertEngine, sensor_id: str) -> dict[str, Any] | None:
    """What alerters stored before the compact form: the JSON of state_of."""
    return decode_state(json.dumps(engine.state_of(sensor_id)).encode())


def run(
    engine: AlertEngine,
    messages: list[WindowScores],
    store: dict[str, Any],
    stored: Any = stored_bytes,
) -> list[Any]:
    events = []
    for message in messages:
        events += engine.process(message, store.get).events
        store[message.sensor_id] = stored(engine, message.sensor_id)
    return events


def until_started(
    engine: AlertEngine, messages: list[WindowScores], store: dict[str, Any]
) -> tuple[list[Any], int]:
    """Feed messages up to the first that starts an event: the events, and how many were fed."""
    events: list[Any] = []
    index = 0
    while not (events and events[-1].kind == EventKind.EVENT_KIND_STARTED):
        events += engine.process(messages[index], store.get).events
        index += 1
    return events, index


def test_the_engine_reports_what_detection_reports(
    scored: tuple[ModelCard, list[WindowScores]],
) -> None:
    card, messages = scored
    events = run(AlertEngine({"general": card}), messages, {})
    expected = offline(card, messages, AlertRules())
    assert as_tuples(events) == expected
    assert {"started", "ended"} <= {kind for kind, *_ in expected}
    for event in events:
        assert event.model == "general"
        assert event.model_version == "0.0.1"
        assert event.sensor_id == messages[0].sensor_id
        if event.kind == EventKind.EVENT_KIND_ENDED:
            assert event.offset_sample > event.onset_sample
            assert event.offset_time.ToNanoseconds() > event.onset_time.ToNanoseconds() > 0


@pytest.mark.parametrize("stored", [stored_bytes, stored_json])
@pytest.mark.parametrize("cut", [1, 7, 20, 33])
def test_a_restarted_engine_continues_from_the_stored_state(
    scored: tuple[ModelCard, list[WindowScores]], cut: int, stored: Any
) -> None:
    card, messages = scored
    store: dict[str, Any] = {}
    events = run(AlertEngine({"general": card}), messages[:cut], store, stored)
    # A new process: nothing cached, the state comes back from the store.
    events += run(AlertEngine({"general": card}), messages[cut:], store, stored)
    assert as_tuples(events) == offline(card, messages, AlertRules())


def test_the_encoded_state_is_compact_and_restores_the_same_trackers(
    scored: tuple[ModelCard, list[WindowScores]],
) -> None:
    card, messages = scored
    engine = AlertEngine({"general": card})
    run(engine, messages[:20], {})
    sensor_id = messages[0].sensor_id
    encoded = engine.encoded_state(sensor_id)
    assert encoded is not None
    assert len(encoded) * 2 < len(json.dumps(engine.state_of(sensor_id)))
    restored = AlertEngine({"general": card})
    restored.process(messages[20], {sensor_id: decode_state(encoded)}.get)
    engine.process(messages[20], {}.get)
    assert restored.encoded_state(sensor_id) == engine.encoded_state(sensor_id)
    assert restored.state_of(sensor_id) == engine.state_of(sensor_id)
    assert AlertEngine({"general": card}).encoded_state(sensor_id) is None


def _state_with(engine: AlertEngine, sensor_id: str, **change: Any) -> dict[str, Any]:
    state = json.loads(json.dumps(engine.state_of(sensor_id)))
    state["trackers"][0]["state"].update(change)
    return state


@pytest.mark.parametrize(
    "spoil",
    [
        lambda engine, sensor: decode_state(b"not json"),
        lambda engine, sensor: decode_state(b"[" * 100_000 + b"]" * 100_000),
        lambda engine, sensor: {"version": 1, "anchor_ns": None, "trackers": []},
        lambda engine, sensor: {"version": 1, "trackers": [1]},
        lambda engine, sensor: {"version": 1, "trackers": [{"label": "siren"}]},
        lambda engine, sensor: _state_with(engine, sensor, peak=float("nan")),
        lambda engine, sensor: _state_with(engine, sensor, offset=float("inf")),
        lambda engine, sensor: _state_with(engine, sensor, recent="ab"),
    ],
)
def test_an_unreadable_stored_state_starts_the_sensor_afresh(
    scored: tuple[ModelCard, list[WindowScores]], spoil: Any
) -> None:
    """Neither a crash nor parked scores: the sensor's scores are not at fault."""
    card, messages = scored
    before = AlertEngine({"general": card})
    run(before, messages[:10], {})
    sensor_id = messages[0].sensor_id

    def stored(sensor: str) -> Any:
        return spoil(before, sensor)

    engine = AlertEngine({"general": card})
    events = [e for m in messages[10:] for e in engine.process(m, stored).events]
    fresh = AlertEngine({"general": card})
    assert as_tuples(events) == as_tuples(
        [e for m in messages[10:] for e in fresh.process(m, {}.get).events]
    )
    assert engine.encoded_state(sensor_id) == fresh.encoded_state(sensor_id)


def test_the_stored_form_is_pinned() -> None:
    """What alerters have stored must stay readable: changing it needs a new version number
    and a decoder for this one."""
    data = (
        b'[2,"st",5,[["general","siren",'
        b"[0.5,0.25],1,16000,false,null,0,0.0,false,false,0,[[16000,null]]]]]"
    )
    assert decode_state(data) == {
        "version": 1,
        "stream_id": "st",
        "anchor_ns": 5,
        "trackers": [
            {
                "model": "general",
                "label": "siren",
                "state": {
                    "version": 1,
                    "recent": [0.5, 0.25],
                    "ring_pos": 1,
                    "last_start": 16000,
                    "fresh": False,
                    "onset": None,
                    "offset": 0,
                    "peak": 0.0,
                    "started": False,
                    "pending": False,
                    "stale_windows": 0,
                    "runs": [[16000, None]],
                },
            }
        ],
    }


@pytest.mark.parametrize(
    "data",
    [b"\xff", b"not json", b"[1, 2]", b'[2, "s", 0, [["general", "siren", 1]]]', b"7"],
)
def test_stored_state_that_is_not_one_is_refused(data: bytes) -> None:
    with pytest.raises(BadMessageError) as raised:
        decode_state(data)
    assert raised.value.reason == "bad_tracker_state"


def test_replayed_messages_cause_no_events(scored: tuple[ModelCard, list[WindowScores]]) -> None:
    card, messages = scored
    engine = AlertEngine({"general": card})
    store: dict[str, Any] = {}
    first = run(engine, messages, store)
    outcomes = [engine.process(m, store.get) for m in messages[-5:]]
    assert first
    assert all(o.events == [] and o.skipped == "stale_window" for o in outcomes)


def test_overrides_apply_per_label_then_per_group() -> None:
    rule = EventRule("siren", on_threshold=0.6, off_threshold=0.3)
    rules = AlertRules(
        labels={"siren": LabelOverrides(on_threshold=0.8)},
        groups=[
            SensorGroup(
                name="factory",
                sensors=["factory-*"],
                labels={"*": LabelOverrides(min_duration_s=2.0, onset_lookback_windows=2)},
            ),
            SensorGroup(
                name="quiet",
                sensors=["lab-1", "lab-2"],
                labels={"siren": LabelOverrides(enabled=False)},
            ),
        ],
    )
    everywhere = rules.resolve(rule, "street-9")
    assert everywhere == EventRule("siren", on_threshold=0.8, off_threshold=0.4)  # ratio kept
    factory = rules.resolve(rule, "factory-3")
    assert factory is not None
    assert factory.min_duration_s == 2.0
    assert factory.onset_lookback_windows == 2
    assert factory.on_threshold == 0.8
    assert rules.resolve(rule, "lab-2") is None


def test_disabling_a_label_at_runtime_ends_its_open_event(
    scored: tuple[ModelCard, list[WindowScores]],
) -> None:
    card, messages = scored
    engine = AlertEngine({"general": card})
    store: dict[str, Any] = {}
    events, index = until_started(engine, messages, store)
    label = events[-1].label
    message = messages[index - 1]
    ended = engine.use_rules(AlertRules(labels={label: LabelOverrides(enabled=False)}))
    assert [(s, e.kind, e.event_id) for s, e in ended] == [
        (message.sensor_id, EventKind.EVENT_KIND_ENDED, events[-1].event_id)
    ]
    later = run(engine, messages[index:], store)
    assert all(e.label != label for e in later)


def test_a_label_taken_over_by_another_card_ends_and_makes_no_more_events(
    scored: tuple[ModelCard, list[WindowScores]],
) -> None:
    card, messages = scored
    engine = AlertEngine({"general": card})
    store: dict[str, Any] = {}
    events, index = until_started(engine, messages, store)
    label = events[-1].label
    specialist = ModelCard(
        name="specialist",
        version="1.0.0",
        onnx="specialist.onnx",
        labels=[label],
        profile=card.profile,
        takes_over=[label],
    )
    ended = engine.use_rules(cards={"general": card, "specialist": specialist})
    assert [(e.kind, e.event_id) for _, e in ended] == [
        (EventKind.EVENT_KIND_ENDED, events[-1].event_id)
    ]
    later = run(engine, messages[index:], store)
    assert later
    assert all(e.label != label for e in later)
    # From the start, too: the general model's scores for the label make nothing.
    fresh = run(AlertEngine({"general": card, "specialist": specialist}), messages, {})
    assert fresh
    assert all(e.label != label for e in fresh)
    # A restarted engine whose stored state has the open event ends it with the next message.
    store = {}
    opened = run(AlertEngine({"general": card}), messages[:index], store)
    assert opened[-1].kind == EventKind.EVENT_KIND_STARTED
    restarted = AlertEngine({"general": card, "specialist": specialist})
    outcome = restarted.process(messages[index], store.get)
    assert (outcome.events[0].kind, outcome.events[0].event_id) == (
        EventKind.EVENT_KIND_ENDED,
        opened[-1].event_id,
    )
    twice = specialist.model_copy(update={"name": "again"})
    with pytest.raises(ConfigurationError, match="both take over"):
        engine.use_rules(cards={"specialist": specialist, "again": twice})


def test_a_new_stream_ends_the_events_of_the_old_one(
    scored: tuple[ModelCard, list[WindowScores]],
) -> None:
    card, messages = scored
    engine = AlertEngine({"general": card})
    store: dict[str, Any] = {}
    events, _ = until_started(engine, messages, store)
    restarted = WindowScores()
    restarted.CopyFrom(messages[0])
    restarted.stream_id = "after-reboot"
    outcome = engine.process(restarted, store.get)
    assert outcome.events[0].kind == EventKind.EVENT_KIND_ENDED
    assert outcome.events[0].event_id == events[-1].event_id
    assert outcome.events[0].stream_id == messages[0].stream_id


def test_revisions_and_unknown_models_are_skipped(
    scored: tuple[ModelCard, list[WindowScores]],
) -> None:
    card, messages = scored
    engine = AlertEngine({"general": card})
    revision = WindowScores()
    revision.CopyFrom(messages[0])
    revision.escalated_to = "rekognition"
    assert engine.process(revision, {}.get).skipped == "revision"
    other = WindowScores()
    other.CopyFrom(messages[0])
    other.model = "not-loaded"
    assert engine.process(other, {}.get).skipped == "unknown_model"
    assert engine.sensors == 0


@pytest.mark.parametrize("score", [float("nan"), 1.5, -0.1])
def test_a_bad_score_is_refused_before_any_tracker_moves(
    scored: tuple[ModelCard, list[WindowScores]], score: float
) -> None:
    card, messages = scored
    engine = AlertEngine({"general": card})
    store: dict[str, Any] = {}
    engine.process(messages[0], store.get)
    before = engine.state_of(messages[0].sensor_id)
    bad = WindowScores()
    bad.CopyFrom(messages[1])
    bad.scores[1].score = score
    with pytest.raises(BadMessageError, match="not in"):
        engine.process(bad, store.get)
    assert engine.state_of(messages[0].sensor_id) == before


def test_rules_files_are_checked(tmp_path: Path) -> None:
    good = tmp_path / "rules.json"
    good.write_text(json.dumps({"labels": {"siren": {"on_threshold": 0.7}}}))
    assert AlertRules.from_file(good).labels["siren"].on_threshold == 0.7
    for content, problem in [
        ("{not json", "cannot read"),
        (json.dumps({"labels": {"siren": {"on": 0.7}}}), "invalid alert rules"),
        (json.dumps({"labels": {"siren": {"on_threshold": 0.3, "off_threshold": 0.5}}}), "off"),
    ]:
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        with pytest.raises(ConfigurationError, match=problem):
            AlertRules.from_file(bad)


MIDNIGHT_UTC = 1_799_971_200  # 2027-01-15 00:00:00 UTC
STARTED, ENDED = EventKind.EVENT_KIND_STARTED, EventKind.EVENT_KIND_ENDED


def notice(kind: int, event_id: str, onset_s: float, *, label: str = "siren") -> Event:
    message = Event(event_id=event_id, kind=kind, sensor_id="mic-1", label=label)
    message.onset_time.FromNanoseconds(round((MIDNIGHT_UTC + onset_s) * 1e9))
    return message


def test_a_cooldown_suppresses_the_next_events_of_a_label_with_their_ends() -> None:
    policy = NotificationPolicy(AlertRules(labels={"siren": LabelOverrides(cooldown_s=60.0)}))
    assert policy.decide(notice(STARTED, "a", 0.0)) is None
    assert policy.decide(notice(ENDED, "a", 0.0)) is None
    assert policy.decide(notice(STARTED, "b", 30.0)) == "cooldown"
    assert policy.decide(notice(ENDED, "b", 30.0)) == "suppressed_start"
    assert policy.decide(notice(STARTED, "c", 30.0, label="dog_bark")) is None  # other label
    assert policy.decide(notice(STARTED, "d", 61.0)) is None  # measured from "a", not "b"
    assert policy.decide(notice(STARTED, "d", 61.0)) is None  # a replay decides the same


def test_quiet_hours_wrap_midnight_in_the_rules_time_zone() -> None:
    rules = AlertRules(
        labels={"*": LabelOverrides(quiet_hours="22:00-07:00")}, timezone="Europe/Berlin"
    )
    policy = NotificationPolicy(rules)
    # Berlin is UTC+1 in January: 00:00 UTC is 01:00 there (quiet), 06:30 UTC is 07:30 (not).
    assert policy.decide(notice(STARTED, "a", 0.0)) == "quiet_hours"
    assert policy.decide(notice(STARTED, "b", 6.5 * 3600)) is None
    assert policy.decide(notice(STARTED, "c", 20.5 * 3600)) is None  # 21:30 there
    assert policy.decide(notice(STARTED, "d", 21.0 * 3600)) == "quiet_hours"  # 22:00 there


def test_group_settings_override_the_label_settings() -> None:
    rules = AlertRules(
        labels={"siren": LabelOverrides(cooldown_s=600.0)},
        groups=[
            SensorGroup(
                name="lab", sensors=["mic-*"], labels={"siren": LabelOverrides(cooldown_s=0)}
            )
        ],
    )
    assert rules.notification_settings("siren", "mic-1") == (0.0, None)
    assert rules.notification_settings("siren", "street-1") == (600.0, None)
    with pytest.raises(ConfigurationError, match="time zone"):
        AlertRules(timezone="Mars/Olympus").check()


def test_a_sensor_that_starts_over_with_the_same_stream_id_is_heard_again(
    scored: tuple[ModelCard, list[WindowScores]],
) -> None:
    # Windows far behind the last one (more than WINDOW_REWIND_LIMIT_S of audio) are not a
    # replay: the stream restarts instead of every later window being stale.
    card, messages = scored
    engine = AlertEngine({"general": card})
    store: dict[str, Any] = {}
    late = []
    shift = int((WINDOW_REWIND_LIMIT_S + 60) * messages[0].sample_rate_hz)
    for message in messages:
        moved = WindowScores()
        moved.CopyFrom(message)
        moved.start_sample += shift
        late.append(moved)
    run(engine, late, store)
    again = [engine.process(m, store.get) for m in messages]
    assert not any(o.skipped == "stale_window" for o in again)
    fresh = AlertEngine({"general": card})
    expected = as_tuples(run(fresh, messages, {}))
    got = as_tuples([e for o in again for e in o.events])
    assert [e for e in got if e in expected] == expected  # and the old stream's events ended
