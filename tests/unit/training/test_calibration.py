"""soundsentry.training.calibration: per-label event rules chosen for event F1 on scored data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from soundsentry.evaluation.sed_metrics import EvalEvent
from soundsentry.events.tracker import EventRule
from soundsentry.exceptions import BadMessageError, ConfigurationError
from soundsentry.features.featurizer import FeatureProfile
from soundsentry.training.calibration import (
    MAX_MARGIN,
    ScoredExample,
    calibrate_card,
    event_metrics,
    lowered_threshold,
    rule_document,
    tune_event_rule,
    tune_event_rules,
)

PROFILE = FeatureProfile("full-16k")  # 1 s windows every 0.5 s
HOP = 8000


def _copy_of(card_path: Path, tmp_path: Path) -> Path:
    """The card's folder copied, so calibrating it leaves the session's model alone."""
    folder = tmp_path / "model"
    shutil.copytree(card_path.parent, folder)
    return folder / card_path.name


def example(
    key: str,
    scores: list[float],
    events: list[tuple[float, float]],
    frame_scores: np.ndarray | None = None,
) -> ScoredExample:
    return ScoredExample(
        key=key,
        duration_s=0.5 * (len(scores) + 1),
        start_samples=np.arange(len(scores), dtype=np.int64) * HOP,
        scores=np.array(scores, dtype=np.float32)[:, None],
        frame_scores=frame_scores,
        events=tuple(EvalEvent(key, "siren", on, off) for on, off in events),
    )


def test_a_fragmented_sound_gets_a_merge_gap_and_a_spike_a_minimum_duration() -> None:
    # A siren from 0 s to 4.75 s whose score dips for two windows (one event, if merged), and
    # clips where one window spikes without a siren (false alarms, unless a minimum duration).
    examples = [
        example(f"s{i}", [0.9, 0.9, 0.9, 0.05, 0.05, 0.9, 0.9, 0.9, 0.9, 0.05], [(0.0, 4.75)])
        for i in range(4)
    ] + [example(f"q{i}", [0.05, 0.05, 0.95, 0.05, 0.05, 0.05], []) for i in range(4)]
    tuned = tune_event_rule("siren", 0, examples, PROFILE)
    assert tuned.f1 == 1.0
    assert tuned.error_rate == 0.0
    assert tuned.rule.merge_gap_s > 1.0  # the 1 s dip is bridged
    assert tuned.rule.min_duration_s >= 0.5  # the single-window spikes are dropped
    metrics = event_metrics(examples, ["siren"], {"siren": tuned.rule}, PROFILE)
    assert metrics["event_based"]["f1"] == 1.0
    assert metrics["event_based"]["class_wise"]["siren"]["n_sys"] == 4


def test_the_simplest_of_equally_good_rules_is_kept() -> None:
    # Clean scores: every candidate without smoothing finds the events; the first (lowest on
    # threshold, no merging, no minimum duration) wins.
    examples = [example(f"c{i}", [0.0, 0.0, 1.0, 1.0, 0.0, 0.0], [(1.25, 2.25)]) for i in range(3)]
    tuned = tune_event_rule("siren", 0, examples, PROFILE)
    assert tuned.f1 == 1.0
    assert rule_document(tuned.rule) == rule_document(
        EventRule("siren", on_threshold=0.1, off_threshold=0.075)
    )


def frames_like(scores: list[float]) -> np.ndarray:
    """Frame scores equal to each window's score [windows, 1 label, frames]."""
    return np.repeat(np.array(scores, np.float32)[:, None, None], PROFILE.window_frames, axis=2)


def test_a_sound_whose_first_window_scores_low_gets_an_onset_look_back() -> None:
    # Each siren starts at 1.25 s, the start of window 2's segment. Window 2 holds it only in
    # its second half: it scores 0.4, but its frames there score 0.9. A threshold low enough to
    # take window 2 also takes the background clips' 0.4 windows; a higher one without look-back
    # puts the onset at 1.75 s, outside the collar. Looking back one window gets both right.
    siren_scores = [0.0, 0.0, 0.4, 0.9, 0.9, 0.9, 0.0, 0.0]
    siren_frames = frames_like(siren_scores)
    siren_frames[2, 0, 13:] = 0.9  # frames from 1.26 s (16000 + 13 x 320 samples)
    sirens = [example(f"s{i}", siren_scores, [(1.25, 3.25)], siren_frames) for i in range(4)]
    quiet_scores = [0.0, 0.4, 0.4, 0.4, 0.0, 0.0]
    quiet = [example(f"q{i}", quiet_scores, [], frames_like(quiet_scores)) for i in range(4)]
    tuned = tune_event_rule("siren", 0, sirens + quiet, PROFILE)
    assert tuned.f1 == 1.0
    assert tuned.rule.onset_lookback_windows == 1
    assert tuned.rule.on_threshold > 0.4
    assert rule_document(tuned.rule)["onset_lookback_windows"] == 1


def test_a_high_threshold_gets_its_onset_from_a_lower_onset_ratio() -> None:
    # Sirens start at 1.1 s: window 2 (segment from 1.25 s) scores 0.9, the windows after it
    # 0.99. The background scores 0.93, so the budget puts the on threshold above it, and with
    # the look-back at that threshold the onset stays at window 3 (1.75 s, outside the 0.5 s
    # collar). Looking back from a share of the threshold takes window 2: every onset is found.
    sirens = [
        example(f"s{i}", [0.0, 0.0, 0.9, 0.99, 0.99, 0.99, 0.0, 0.0], [(1.1, 3.25)])
        for i in range(4)
    ]
    background = [example("b0", [0.0, 0.93, 0.93, 0.93, 0.0, 0.0], [])]
    tuned = tune_event_rule("siren", 0, sirens + background, PROFILE, false_alarms_per_hour=0)
    assert tuned.false_alarms == 0
    assert tuned.f1 == 1.0
    assert tuned.rule.on_threshold > 0.93
    assert tuned.rule.onset_lookback_windows >= 1
    assert tuned.rule.on_threshold * tuned.rule.onset_ratio <= 0.9
    assert rule_document(tuned.rule)["onset_ratio"] == tuned.rule.onset_ratio


def test_a_false_alarm_budget_raises_the_threshold_above_the_background() -> None:
    # Four sirens score 0.97, four only 0.9; a background clip spikes to 0.92. For F1 alone a
    # threshold that finds all eight is best (one false alarm); with a budget of 0 per hour the
    # rule must sit above the background's peak and give up the quiet sirens.
    loud = [example(f"l{i}", [0.05, 0.97, 0.97, 0.05], [(0.75, 1.75)]) for i in range(4)]
    quiet = [example(f"q{i}", [0.05, 0.9, 0.9, 0.05], [(0.75, 1.75)]) for i in range(4)]
    background = [example("b0", [0.05, 0.92, 0.92, 0.05], [])]
    examples = [*loud, *quiet, *background]
    free = tune_event_rule("siren", 0, examples, PROFILE)
    assert free.rule.on_threshold <= 0.9
    assert free.f1 > 0.9
    budgeted = tune_event_rule("siren", 0, examples, PROFILE, false_alarms_per_hour=0.0)
    assert budgeted.rule.on_threshold > 0.92
    assert budgeted.false_alarms == 0
    assert budgeted.f1 == pytest.approx(2 / 3)
    assert budgeted.background_hours == background[0].duration_s / 3600.0


def test_when_no_rule_meets_the_budget_the_fewest_false_alarms_win() -> None:
    # The background scores as high as the sirens: every rule that finds a siren also fires
    # there, so the rule with the fewest false alarms (finding nothing) is chosen.
    sirens = [example(f"s{i}", [0.05, 0.96, 0.96, 0.05], [(0.75, 1.75)]) for i in range(3)]
    background = [example(f"b{i}", [0.05, 0.96, 0.96, 0.05], []) for i in range(3)]
    tuned = tune_event_rule("siren", 0, [*sirens, *background], PROFILE, false_alarms_per_hour=0)
    assert tuned.false_alarms == 0
    assert tuned.f1 == 0.0


def test_a_budget_allows_only_whole_false_alarms_within_it() -> None:
    # A background clip as loud as the quiet sirens: a budget worth one false alarm on its
    # length allows it (all eight sirens are found); worth 0.9 of one, it allows none.
    loud = [example(f"l{i}", [0.05, 0.97, 0.97, 0.05], [(0.75, 1.75)]) for i in range(4)]
    quiet = [example(f"q{i}", [0.05, 0.9, 0.9, 0.05], [(0.75, 1.75)]) for i in range(4)]
    background = example("b0", [0.05, 0.92, 0.92, 0.05], [])
    hours = background.duration_s / 3600.0
    examples = [*loud, *quiet, background]
    one = tune_event_rule("siren", 0, examples, PROFILE, false_alarms_per_hour=1.0 / hours)
    assert one.rule.on_threshold <= 0.9
    assert one.f1 > 0.9
    assert one.false_alarms == 1
    none = tune_event_rule("siren", 0, examples, PROFILE, false_alarms_per_hour=0.9 / hours)
    assert none.rule.on_threshold > 0.92
    assert none.false_alarms == 0


def test_rules_are_tuned_for_onsets_within_half_a_second() -> None:
    # Sirens of 2.75 s whose scores drop out after their first second: with the offsets far
    # off, the events still count as found (DCASE 2017 task 2 scoring), so the simplest rule
    # that finds each onset wins and no merging is needed to stretch the offsets.
    examples = [
        example(f"s{i}", [0.0, 0.0, 0.9, 0.9, 0.0, 0.0, 0.0, 0.0], [(1.25, 4.0)]) for i in range(3)
    ]
    tuned = tune_event_rule("siren", 0, examples, PROFILE)
    assert tuned.f1 == 1.0
    assert tuned.rule.merge_gap_s == 0.0


def test_calibrate_card_holds_the_rules_to_a_budget_given_on_the_command_line(
    card_path: Path, dataset_dir: Path, tmp_path: Path
) -> None:
    card = _copy_of(card_path, tmp_path)
    tuned = calibrate_card(card, dataset_dir, false_alarms_per_hour=0.0)
    document = json.loads(card.read_text(encoding="utf-8"))
    assert document["false_alarm_budget_per_hour"] == 0.0
    assert set(document["event_rules"]) == set(tuned)
    assert all(t.false_alarms == 0 or t.f1 == 0.0 for t in tuned.values())
    with pytest.raises(ConfigurationError, match="false_alarms_per_hour=-1"):
        calibrate_card(card, dataset_dir, false_alarms_per_hour=-1.0)


def test_a_margin_keeps_the_threshold_clear_of_the_backgrounds_scores() -> None:
    # Sirens score 0.97 or 0.85; the background peaks at 0.75. Without a margin the budget
    # lets the rule sit just above the background (0.8) and find all eight; a margin of 1
    # log-odds needs the budget kept 1 lower too, so the threshold must exceed
    # sigmoid(logit(0.75) + 1) = 0.89, and only the loud sirens are found.
    loud = [example(f"l{i}", [0.05, 0.97, 0.97, 0.05], [(0.75, 1.75)]) for i in range(4)]
    quiet = [example(f"q{i}", [0.05, 0.85, 0.85, 0.05], [(0.75, 1.75)]) for i in range(4)]
    background = [example("b0", [0.05, 0.75, 0.75, 0.05], [])]
    examples = [*loud, *quiet, *background]
    plain = tune_event_rule("siren", 0, examples, PROFILE, false_alarms_per_hour=0.0)
    assert 0.75 < plain.rule.on_threshold <= 0.85
    assert plain.f1 == 1.0
    assert plain.false_alarms == plain.margin_false_alarms == 0
    kept = tune_event_rule(
        "siren", 0, examples, PROFILE, false_alarms_per_hour=0.0, false_alarm_margin=1.0
    )
    assert lowered_threshold(kept.rule.on_threshold, 1.0) > 0.75
    assert kept.rule.on_threshold > 0.89
    assert kept.f1 == pytest.approx(2 / 3)
    assert kept.false_alarms == kept.margin_false_alarms == 0
    # The rule without the margin would have fired 1 log-odds below its threshold.
    assert lowered_threshold(plain.rule.on_threshold, 1.0) <= 0.75


@pytest.mark.parametrize(
    ("threshold", "margin", "lowered"),
    [(0.98, 1.0, 0.947441), (0.5, 1.0, 0.268941), (0.4, 1.0, 0.19695), (0.7, 0.0, 0.7)],
)
def test_a_margin_is_taken_in_log_odds(threshold: float, margin: float, lowered: float) -> None:
    assert lowered_threshold(threshold, margin) == pytest.approx(lowered, abs=1e-6)


@given(
    threshold=st.floats(min_value=0.0, max_value=1.0),
    margins=st.lists(st.floats(min_value=0.0, max_value=MAX_MARGIN), min_size=2, max_size=2),
)
def test_a_lowered_threshold_falls_with_the_margin_and_stays_a_probability(
    threshold: float, margins: list[float]
) -> None:
    small, large = sorted(margins)
    lowered = lowered_threshold(threshold, small)
    assert 0.0 <= lowered <= threshold
    assert lowered_threshold(threshold, large) <= lowered
    assert lowered_threshold(threshold, 0.0) == threshold


def test_where_no_rule_keeps_the_margin_the_budget_still_holds() -> None:
    # Sirens score 0.99, the background 0.96 for long enough that smoothing cannot lower it.
    # Only 0.98 keeps the plain budget, and no rule keeps the margin (0.98 at 1 log-odds is
    # 0.947): the rule within the plain budget, which finds every siren, wins over the lower
    # ones that find them with a false alarm.
    sirens = [example(f"s{i}", [0.05, *[0.99] * 6, 0.05], [(0.75, 3.75)]) for i in range(4)]
    background = [example("b0", [0.05, *[0.96] * 8, 0.05], [])]
    tuned = tune_event_rule(
        "siren",
        0,
        [*sirens, *background],
        PROFILE,
        false_alarms_per_hour=0.0,
        false_alarm_margin=1.0,
    )
    assert tuned.rule.on_threshold == 0.98
    assert tuned.f1 == 1.0
    assert tuned.false_alarms == 0
    assert tuned.margin_false_alarms == 1


@pytest.mark.parametrize("margin", [-0.5, MAX_MARGIN + 0.5, float("nan"), float("inf"), True])
def test_a_margin_outside_its_range_is_refused(margin: float) -> None:
    examples = [example("s0", [0.05, 0.97, 0.97, 0.05], [(0.75, 1.75)])]
    with pytest.raises(ConfigurationError, match="false_alarm_margin"):
        tune_event_rule(
            "siren", 0, examples, PROFILE, false_alarms_per_hour=0.0, false_alarm_margin=margin
        )


def test_a_margin_without_a_budget_is_refused() -> None:
    examples = [example("s0", [0.05, 0.97, 0.97, 0.05], [(0.75, 1.75)])]
    with pytest.raises(ConfigurationError, match="needs a false-alarm budget"):
        tune_event_rule("siren", 0, examples, PROFILE, false_alarm_margin=1.0)


def test_calibrate_card_records_the_margin_it_kept(
    card_path: Path, dataset_dir: Path, tmp_path: Path
) -> None:
    card = _copy_of(card_path, tmp_path)

    def rules() -> dict[str, object]:
        document = json.loads(card.read_text(encoding="utf-8"))
        return dict(document["event_rules"])

    calibrate_card(card, dataset_dir, false_alarms_per_hour=0.0, false_alarm_margin=1.5)
    document = json.loads(card.read_text(encoding="utf-8"))
    assert document["metrics"]["false_alarm_margin_logit"] == 1.5
    kept = rules()
    # Calibrated again without one, the card's margin is kept (as quantize re-tunes): the same
    # rules; with a margin of 0 other rules, and the card no longer claims a margin.
    calibrate_card(card, dataset_dir)
    document = json.loads(card.read_text(encoding="utf-8"))
    assert document["metrics"]["false_alarm_margin_logit"] == 1.5
    assert rules() == kept
    calibrate_card(card, dataset_dir, false_alarm_margin=0.0)
    document = json.loads(card.read_text(encoding="utf-8"))
    assert "false_alarm_margin_logit" not in document["metrics"]
    assert rules() != kept
    with pytest.raises(ConfigurationError, match="false_alarm_margin"):
        calibrate_card(card, dataset_dir, false_alarm_margin=-1.0)
    # A card with the retired margin (a share of the thresholds) is not re-tuned without one.
    document["metrics"]["false_alarm_margin"] = 0.8
    card.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="retired margin"):
        calibrate_card(card, dataset_dir)
    # ... until a margin is given, which replaces it.
    calibrate_card(card, dataset_dir, false_alarm_margin=1.5)
    metrics = json.loads(card.read_text(encoding="utf-8"))["metrics"]
    assert "false_alarm_margin" not in metrics
    assert metrics["false_alarm_margin_logit"] == 1.5
    assert all(
        m["at_margin"] >= m["false_alarms"] for m in metrics["false_alarms_per_hour"].values()
    )


def test_the_calibrate_command_passes_the_margin(
    card_path: Path, dataset_dir: Path, tmp_path: Path
) -> None:
    from soundsentry.cli import main  # noqa: PLC0415 - the CLI only for this test

    card = _copy_of(card_path, tmp_path)
    argv = ["calibrate", str(card), str(dataset_dir), "--false-alarms-per-hour", "0"]
    assert main([*argv, "--false-alarm-margin", "0.7"]) == 0
    document = json.loads(card.read_text(encoding="utf-8"))
    assert document["metrics"]["false_alarm_margin_logit"] == 0.7
    assert main([*argv, "--false-alarm-margin", "-2"]) == 2


def test_labels_tuned_in_worker_processes_get_the_same_rules() -> None:
    # Two labels with their own scores: sirens in column 0, a background spike in column 1.
    def two(key: str, siren: list[float], other: list[float], events: list[tuple[float, float]]):
        single = example(key, siren, events)
        return ScoredExample(
            key=key,
            duration_s=single.duration_s,
            start_samples=single.start_samples,
            scores=np.array([siren, other], dtype=np.float32).T,
            frame_scores=None,
            events=single.events,
        )

    examples = [
        two(f"s{i}", [0.05, 0.9, 0.9, 0.05], [0.05, 0.1, 0.05, 0.05], [(0.75, 1.75)])
        for i in range(4)
    ] + [two("b0", [0.05, 0.6, 0.05, 0.05], [0.05, 0.05, 0.7, 0.05], [])]
    labels = ["siren", "dog_bark"]
    serial = tune_event_rules(examples, labels, PROFILE, false_alarms_per_hour=0.0, jobs=1)
    parallel = tune_event_rules(examples, labels, PROFILE, false_alarms_per_hour=0.0, jobs=2)
    assert parallel == serial
    assert serial["siren"].f1 == 1.0
    assert serial["siren"].false_alarms == 0  # the background spike is not a siren
    with pytest.raises(ConfigurationError, match="jobs=0"):
        tune_event_rules(examples, labels, PROFILE, jobs=0)


def test_a_bad_score_in_a_worker_reaches_the_caller_as_itself() -> None:
    # The error crosses the process boundary whole (BadMessageError pickles both arguments).
    bad = example("s0", [0.05, float("nan"), 0.05, 0.05], [(0.75, 1.75)])
    other = example("s1", [0.05, 0.9, 0.9, 0.05], [(0.75, 1.75)])
    with pytest.raises(BadMessageError, match="nan"):
        tune_event_rules([bad, other], ["siren"], PROFILE, jobs=1)
    two_labels = [
        ScoredExample(e.key, e.duration_s, e.start_samples, np.hstack([e.scores, e.scores]),
                      None, e.events)
        for e in (bad, other)
    ]  # fmt: skip
    with pytest.raises(BadMessageError, match="nan"):
        tune_event_rules(two_labels, ["siren", "dog_bark"], PROFILE, jobs=2)
