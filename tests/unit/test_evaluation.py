"""soundsentry.evaluation.sed_metrics: hand-computed cases, and equality with sed_eval on random
event lists.

sed_eval (with dcase_util) is a dev dependency: these tests fail, never skip, without it.
"""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from soundsentry.evaluation.sed_metrics import (
    ClassMetrics,
    EvalEvent,
    EvaluationInputError,
    EventBasedSettings,
    OverallMetrics,
    PlottingUnavailableError,
    SedMetrics,
    SegmentBasedSettings,
    ThresholdPoint,
    evaluation_settings_from_mapping,
    event_based_metrics,
    plot_precision_recall_curve,
    segment_based_metrics,
    sweep_thresholds,
)
from soundsentry.exceptions import ConfigurationError


def _import_sed_eval() -> tuple[Any, Any]:
    """Import sed_eval and dcase_util, working around dcase_util 0.2.20's import-time
    ``import pkg_resources``: setuptools 82 removed that module. dcase_util only calls it from
    helpers these tests never use, so when it is missing a placeholder stands in during the import
    and is taken out of ``sys.modules`` again (dcase_util keeps its own reference)."""
    try:
        import pkg_resources  # noqa: F401, PLC0415
    except ImportError:
        pass
    else:
        import dcase_util  # noqa: PLC0415
        import sed_eval  # noqa: PLC0415

        return dcase_util, sed_eval

    def unavailable(name: str) -> Any:
        raise AttributeError(
            f"pkg_resources.{name}: placeholder, setuptools>=82 has no pkg_resources"
        )

    placeholder = types.ModuleType("pkg_resources")
    placeholder.__getattr__ = unavailable  # type: ignore[method-assign]
    sys.modules["pkg_resources"] = placeholder
    try:
        import dcase_util  # noqa: PLC0415
        import sed_eval  # noqa: PLC0415
    finally:
        if sys.modules.get("pkg_resources") is placeholder:
            del sys.modules["pkg_resources"]
    return dcase_util, sed_eval


# A failed import fails this module: sed_eval is a dev dependency, not an optional one.
dcase_util, sed_eval = _import_sed_eval()

EPS = float(np.spacing(1))
TOLERANCE = 1e-9


def ev(label: str, onset_s: float, offset_s: float, file_id: str = "a.wav") -> EvalEvent:
    return EvalEvent(file_id=file_id, label=label, onset_s=onset_s, offset_s=offset_s)


def close(ours: float, theirs: float) -> bool:
    if math.isnan(theirs):
        return math.isnan(ours)
    return math.isclose(ours, theirs, rel_tol=TOLERANCE, abs_tol=TOLERANCE)


# -- Hand-computed: event-based -------------------------------------------------------------------


def test_exact_match_is_one_true_positive() -> None:
    result = event_based_metrics(reference=[ev("dog", 1.0, 2.0)], system=[ev("dog", 1.0, 2.0)])
    overall = result.overall
    assert (overall.n_ref, overall.n_sys, overall.true_positives) == (1, 1, 1)
    assert (overall.false_positives, overall.false_negatives) == (0, 0)
    assert (overall.substitutions, overall.deletions, overall.insertions) == (0, 0, 0)
    assert (overall.precision, overall.recall, overall.f1, overall.error_rate) == (1, 1, 1, 0)
    assert result.class_wise["dog"].f1 == 1.0
    assert result.class_wise_average.f1 == 1.0
    assert result.class_wise_average.error_rate == 0.0


@pytest.mark.parametrize(
    ("system_onset_s", "matched"),
    [(1.15, True), (0.85, True), (1.25, False), (0.75, False)],
)
def test_onset_must_be_within_the_collar(system_onset_s: float, matched: bool) -> None:
    overall = event_based_metrics(
        reference=[ev("dog", 1.0, 3.0)], system=[ev("dog", system_onset_s, 3.0)]
    ).overall
    if matched:
        assert (overall.true_positives, overall.error_rate) == (1, 0.0)
    else:
        # Outside the collar the times do not fit, so not even a substitution: D + I.
        assert (overall.true_positives, overall.substitutions) == (0, 0)
        assert (overall.deletions, overall.insertions) == (1, 1)
        assert overall.error_rate == pytest.approx(2.0)
        assert (overall.precision, overall.recall, overall.f1) == (0.0, 0.0, 0.0)


def test_a_wider_collar_accepts_the_onset() -> None:
    overall = event_based_metrics(
        reference=[ev("dog", 1.0, 3.0)], system=[ev("dog", 1.25, 3.0)], t_collar_s=0.3
    ).overall
    assert overall.true_positives == 1


@pytest.mark.parametrize(
    ("reference", "system_offset_s", "matched"),
    [
        # 10 s event: offset tolerance max(0.2, 0.5 * 10) = 5 s
        ((0.0, 10.0), 14.0, True),
        ((0.0, 10.0), 5.5, True),
        ((0.0, 10.0), 15.5, False),
        # 0.2 s event: the collar (0.2 s) beats 50 % of the length (0.1 s)
        ((0.0, 0.2), 0.35, True),
        ((0.0, 0.2), 0.5, False),
    ],
)
def test_offset_tolerance_is_the_collar_or_half_the_reference_length(
    reference: tuple[float, float], system_offset_s: float, matched: bool
) -> None:
    onset_s, offset_s = reference
    overall = event_based_metrics(
        reference=[ev("siren", onset_s, offset_s)],
        system=[ev("siren", onset_s + 0.1, system_offset_s)],
    ).overall
    assert overall.true_positives == int(matched)


def test_offset_is_ignored_when_not_evaluated() -> None:
    reference = [ev("siren", 0.0, 10.0)]
    system = [ev("siren", 0.1, 30.0)]
    assert event_based_metrics(reference=reference, system=system).overall.true_positives == 0
    onset_only = event_based_metrics(reference=reference, system=system, evaluate_offset=False)
    assert onset_only.overall.true_positives == 1
    offset_only = event_based_metrics(
        reference=[ev("siren", 0.0, 10.0)], system=[ev("siren", 4.0, 10.3)], evaluate_onset=False
    )
    assert offset_only.overall.true_positives == 1


def test_same_times_wrong_label_is_one_substitution() -> None:
    result = event_based_metrics(reference=[ev("dog", 1.0, 2.0)], system=[ev("cat", 1.0, 2.0)])
    overall = result.overall
    assert (overall.true_positives, overall.substitutions) == (0, 1)
    assert (overall.deletions, overall.insertions) == (0, 0)
    assert (overall.false_positives, overall.false_negatives) == (1, 1)
    assert overall.error_rate == pytest.approx(1.0)
    assert (overall.precision, overall.recall, overall.f1) == (0.0, 0.0, 0.0)
    # Class-wise there are no substitutions: dog misses one, cat inserts one.
    dog, cat = result.class_wise["dog"], result.class_wise["cat"]
    assert (dog.false_negatives, dog.false_positives, dog.error_rate) == (1, 0, pytest.approx(1))
    assert (cat.n_ref, cat.false_positives) == (0, 1)
    # sed_eval divides by Nref + eps: one insertion with no reference is ER = 1 / eps.
    assert cat.error_rate == 1.0 / EPS
    assert math.isnan(cat.recall)
    assert math.isnan(dog.precision)
    # Both class F1 are NaN (no reference cat, no system dog); the means leave NaN out.
    assert math.isnan(result.class_wise_average.f1)
    assert (result.class_wise_average.precision, result.class_wise_average.recall) == (0.0, 0.0)
    assert result.class_wise_average.error_rate == pytest.approx((1.0 + 1.0 / EPS) / 2)


def test_insertions_and_deletions() -> None:
    reference = [ev("dog", 1.0, 2.0), ev("dog", 5.0, 6.0)]
    system = [ev("dog", 1.0, 2.0), ev("dog", 8.0, 9.0), ev("cat", 12.0, 13.0)]
    overall = event_based_metrics(reference=reference, system=system).overall
    assert (overall.true_positives, overall.substitutions) == (1, 0)
    assert (overall.deletions, overall.insertions) == (1, 2)
    assert overall.error_rate == pytest.approx(1.5)
    assert overall.precision == pytest.approx(1 / 3)
    assert overall.recall == pytest.approx(1 / 2)
    assert overall.f1 == pytest.approx(0.4)


def test_substitution_pairs_leftovers_in_reference_order() -> None:
    # Two unmatched references fit the one unmatched system event: only the first is substituted.
    reference = [ev("dog", 1.0, 2.0), ev("bird", 1.05, 2.0)]
    system = [ev("cat", 1.0, 2.0)]
    overall = event_based_metrics(reference=reference, system=system).overall
    assert (overall.substitutions, overall.deletions, overall.insertions) == (1, 1, 0)


def test_events_of_different_files_never_match() -> None:
    overall = event_based_metrics(
        reference=[ev("dog", 1.0, 2.0, file_id="a.wav")],
        system=[ev("dog", 1.0, 2.0, file_id="b.wav")],
    ).overall
    assert (overall.true_positives, overall.deletions, overall.insertions) == (0, 1, 1)


def test_optimal_matching_beats_greedy_on_an_unlucky_order() -> None:
    # Reference 0 fits both system events, reference 1 only the first: greedy gives the first to
    # reference 0 and leaves reference 1 unmatched; the optimal matching matches both.
    reference = [ev("dog", 0.15, 1.0), ev("dog", 0.0, 1.0)]
    system = [ev("dog", 0.1, 1.0), ev("dog", 0.3, 1.0)]
    optimal = event_based_metrics(reference=reference, system=system)
    greedy = event_based_metrics(reference=reference, system=system, matching="greedy")
    assert optimal.overall.true_positives == 2
    assert greedy.overall.true_positives == 1
    assert greedy.class_wise["dog"].true_positives == 1


def test_empty_reference() -> None:
    result = event_based_metrics(reference=[], system=[ev("dog", 1.0, 2.0), ev("dog", 3.0, 4.0)])
    overall = result.overall
    assert (overall.n_ref, overall.n_sys, overall.insertions) == (0, 2, 2)
    assert overall.precision == 0.0
    assert math.isnan(overall.recall)
    assert math.isnan(overall.f1)
    assert overall.error_rate == 2.0 / EPS  # sed_eval's Nref + eps


def test_empty_system() -> None:
    overall = event_based_metrics(reference=[ev("dog", 1.0, 2.0)], system=[]).overall
    assert (overall.n_ref, overall.n_sys, overall.deletions) == (1, 0, 1)
    assert math.isnan(overall.precision)
    assert overall.recall == 0.0
    assert math.isnan(overall.f1)
    assert overall.error_rate == pytest.approx(1.0)


def test_both_empty() -> None:
    result = event_based_metrics(reference=[], system=[])
    assert result.labels == ()
    assert result.overall.error_rate == 0.0
    assert math.isnan(result.overall.f1)
    assert math.isnan(result.class_wise_average.f1)


def test_labels_without_events_are_reported() -> None:
    result = event_based_metrics(
        reference=[ev("dog", 1.0, 2.0)], system=[ev("dog", 1.0, 2.0)], labels=["dog", "siren"]
    )
    siren = result.class_wise["siren"]
    assert (siren.n_ref, siren.n_sys, siren.error_rate) == (0, 0, 0.0)
    assert math.isnan(siren.f1)
    assert result.class_wise_average.f1 == 1.0
    assert result.class_wise_average.error_rate == 0.0


# -- Hand-computed: segment-based -----------------------------------------------------------------


def test_segment_based_counts_active_segments() -> None:
    # 1 s segments. dog: reference in segments 0-1, system in segment 1 -> TP 1, FN 1.
    # cat: system only in segment 3 -> FP 1. Segment 0: D. Segment 3: I. Nothing substituted.
    result = segment_based_metrics(
        reference=[ev("dog", 0.5, 1.5)],
        system=[ev("dog", 1.2, 1.8), ev("cat", 3.0, 3.5)],
    )
    overall = result.overall
    assert (overall.n_ref, overall.n_sys, overall.true_positives) == (2, 2, 1)
    assert (overall.substitutions, overall.deletions, overall.insertions) == (0, 1, 1)
    assert overall.error_rate == pytest.approx(1.0)
    assert overall.f1 == pytest.approx(0.5)
    dog = result.class_wise["dog"]
    assert (dog.true_positives, dog.false_negatives, dog.false_positives) == (1, 1, 0)


def test_segment_based_substitution_is_a_wrong_label_in_the_same_segment() -> None:
    result = segment_based_metrics(
        reference=[ev("dog", 0.0, 2.0)], system=[ev("cat", 0.0, 1.0)], segment_length_s=1.0
    )
    overall = result.overall
    assert (overall.substitutions, overall.deletions, overall.insertions) == (1, 1, 0)
    assert overall.error_rate == pytest.approx(1.0)


def test_segment_based_file_duration_cuts_and_pads() -> None:
    reference = [ev("dog", 0.0, 4.0)]
    cut = segment_based_metrics(reference=reference, system=[], file_durations_s={"a.wav": 2.0})
    assert cut.overall.n_ref == 2
    padded = segment_based_metrics(
        reference=reference, system=[], file_durations_s={"a.wav": 4.0, "silent.wav": 60.0}
    )
    assert padded.overall.n_ref == 4


def test_segment_based_rejects_missing_or_negative_durations() -> None:
    with pytest.raises(EvaluationInputError, match="no duration for files"):
        segment_based_metrics(reference=[ev("dog", 0.0, 1.0)], system=[], file_durations_s={})
    with pytest.raises(EvaluationInputError, match="finite and >= 0"):
        segment_based_metrics(
            reference=[ev("dog", 0.0, 1.0)], system=[], file_durations_s={"a.wav": -1.0}
        )


# -- Validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("onset_s", "offset_s", "message"),
    [
        (2.0, 1.0, "is before onset_s"),
        (-0.5, 1.0, "negative"),
        (math.nan, 1.0, "finite"),
        (0.0, math.inf, "finite"),
    ],
)
def test_invalid_events_are_rejected(onset_s: float, offset_s: float, message: str) -> None:
    with pytest.raises(EvaluationInputError, match=message):
        ev("dog", onset_s, offset_s)


def test_invalid_event_names_are_rejected() -> None:
    with pytest.raises(EvaluationInputError, match="label"):
        EvalEvent(file_id="a.wav", label="", onset_s=0.0, offset_s=1.0)
    with pytest.raises(EvaluationInputError, match="file_id"):
        EvalEvent(file_id="", label="dog", onset_s=0.0, offset_s=1.0)


def test_errors_are_configuration_and_value_errors() -> None:
    assert issubclass(EvaluationInputError, ConfigurationError)
    assert issubclass(EvaluationInputError, ValueError)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"t_collar_s": 0.0}, "t_collar_s"),
        ({"t_collar_s": -0.1}, "t_collar_s"),
        ({"percentage_of_length": 1.5}, "percentage_of_length"),
        ({"evaluate_onset": False, "evaluate_offset": False}, "cannot both be False"),
        ({"matching": "hungarian"}, "matching"),
    ],
)
def test_invalid_event_settings_are_rejected(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(EvaluationInputError, match=message):
        EventBasedSettings(**settings)


def test_invalid_segment_length_is_rejected() -> None:
    with pytest.raises(EvaluationInputError, match="segment_length_s"):
        SegmentBasedSettings(segment_length_s=0.0)


def test_settings_from_mapping() -> None:
    assert evaluation_settings_from_mapping({"kind": "event", "t_collar_s": 0.25}) == (
        EventBasedSettings(t_collar_s=0.25)
    )
    assert evaluation_settings_from_mapping({"kind": "segment"}) == SegmentBasedSettings()
    with pytest.raises(EvaluationInputError, match=r"unknown event-based evaluation settings"):
        evaluation_settings_from_mapping({"kind": "event", "t_colar_s": 0.25})
    with pytest.raises(EvaluationInputError, match="unknown evaluation kind"):
        evaluation_settings_from_mapping({"kind": "frame"})
    with pytest.raises(EvaluationInputError, match="segment_length_s"):
        evaluation_settings_from_mapping({"kind": "segment", "segment_length_s": "1s"})


def test_labels_must_cover_every_event() -> None:
    with pytest.raises(EvaluationInputError, match=r"\['cat'\] that are not in labels"):
        event_based_metrics(
            reference=[ev("dog", 0.0, 1.0)], system=[ev("cat", 0.0, 1.0)], labels=["dog"]
        )
    with pytest.raises(EvaluationInputError, match="duplicates"):
        event_based_metrics(reference=[], system=[], labels=["dog", "dog"])


# -- Threshold sweep and plot ---------------------------------------------------------------------


def windows_to_events(scores: Mapping[str, np.ndarray], threshold: float) -> list[EvalEvent]:
    """0.5 s windows of one label ('dog'): runs of windows scoring >= threshold become events."""
    events = []
    for file_id, file_scores in scores.items():
        active = np.concatenate([[False], file_scores >= threshold, [False]])
        edges = np.flatnonzero(np.diff(active.astype(np.int8)))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            events.append(
                EvalEvent(file_id=file_id, label="dog", onset_s=start * 0.5, offset_s=stop * 0.5)
            )
    return events


SCORES = {"a.wav": np.array([0.1, 0.9, 0.8, 0.2, 0.1, 0.6, 0.1, 0.1])}
REFERENCE = [ev("dog", 0.5, 1.5)]


def test_sweep_thresholds_evaluates_each_threshold() -> None:
    points = sweep_thresholds(
        reference=REFERENCE, scores=SCORES, thresholds=[0.5, 0.7, 0.95], to_events=windows_to_events
    )
    assert [point.threshold for point in points] == [0.5, 0.7, 0.95]
    low, mid, high = points
    # 0.5: events 0.5-1.5 (match) and 2.5-3.0 (insertion)
    assert (low.precision, low.recall, low.error_rate) == (0.5, 1.0, pytest.approx(1.0))
    assert (mid.precision, mid.recall, mid.f1, mid.error_rate) == (1.0, 1.0, 1.0, 0.0)
    assert math.isnan(high.precision)
    assert (high.recall, high.error_rate) == (0.0, pytest.approx(1.0))


def test_sweep_thresholds_segment_based() -> None:
    (point,) = sweep_thresholds(
        reference=REFERENCE,
        scores=SCORES,
        thresholds=[0.5],
        to_events=windows_to_events,
        settings=SegmentBasedSettings(segment_length_s=0.5),
        file_durations_s={"a.wav": 4.0},
    )
    overall = point.metrics.overall
    assert (overall.true_positives, overall.insertions, overall.n_ref) == (2, 1, 2)


def test_sweep_thresholds_rejects_bad_input() -> None:
    with pytest.raises(EvaluationInputError, match="empty"):
        sweep_thresholds(
            reference=REFERENCE, scores=SCORES, thresholds=[], to_events=windows_to_events
        )
    with pytest.raises(EvaluationInputError, match="finite"):
        sweep_thresholds(
            reference=REFERENCE, scores=SCORES, thresholds=[math.nan], to_events=windows_to_events
        )
    with pytest.raises(EvaluationInputError, match="segment-based"):
        sweep_thresholds(
            reference=REFERENCE,
            scores=SCORES,
            thresholds=[0.5],
            to_events=windows_to_events,
            file_durations_s={"a.wav": 4.0},
        )


def sweep_points() -> tuple[ThresholdPoint, ...]:
    return sweep_thresholds(
        reference=REFERENCE,
        scores=SCORES,
        thresholds=np.linspace(0.0, 1.0, 11).tolist(),
        to_events=windows_to_events,
    )


def test_plot_precision_recall_curve_writes_a_png(tmp_path: Path) -> None:
    target = plot_precision_recall_curve(points=sweep_points(), path=tmp_path / "pr.png")
    assert target == tmp_path / "pr.png"
    assert target.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_plot_without_matplotlib_names_the_missing_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in sys.modules if name.startswith("matplotlib")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(PlottingUnavailableError, match="needs matplotlib"):
        plot_precision_recall_curve(points=sweep_points(), path=tmp_path / "pr.png")


# -- Equality with sed_eval on random event lists -------------------------------------------------

LABEL_POOL = ("alarm", "dog_bark", "glass_break", "siren", "speech")
N_RANDOM_CASES = 60
N_CROWDED_CASES = 40
# sed_eval's class-wise averages take numpy.nanmean of all-NaN lists (e.g. no system events).
SED_EVAL_WARNINGS = pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")


def random_case(seed: int) -> tuple[list[EvalEvent], list[EvalEvent], list[str]]:
    """Reference events over 1-4 files and 3-5 labels, and a system output made from them by
    jitter, label swaps, drops, duplicates and insertions, in shuffled order. Even seeds put
    every time on a 50 ms grid, so differences land exactly on collars and segment edges."""
    rng = np.random.default_rng(seed)
    labels = sorted(rng.choice(LABEL_POOL, size=int(rng.integers(3, 6)), replace=False).tolist())
    grid_s = 0.05 if seed % 2 == 0 else None

    def snap(value: float) -> float:
        return max(0.0, round(value / grid_s) * grid_s if grid_s else value)

    def event(file_id: str, label: str, onset_s: float, offset_s: float) -> EvalEvent:
        onset_s = snap(onset_s)
        return EvalEvent(
            file_id=file_id, label=label, onset_s=onset_s, offset_s=max(onset_s, snap(offset_s))
        )

    reference: list[EvalEvent] = []
    system: list[EvalEvent] = []
    for file_index in range(int(rng.integers(1, 5))):
        file_id = f"file_{file_index}.wav"
        for _ in range(int(rng.integers(0, 9))):
            onset_s = float(rng.uniform(0.0, 20.0))
            kind = rng.random()
            duration_s = 0.0 if kind < 0.05 else rng.uniform(0.05, 0.6 if kind < 0.5 else 6.0)
            label = str(rng.choice(labels))
            reference.append(event(file_id, label, onset_s, onset_s + duration_s))
            if rng.random() < 0.15:
                continue  # missed
            for _copy in range(2 if rng.random() < 0.15 else 1):
                system_label = str(rng.choice(labels)) if rng.random() < 0.2 else label
                system_onset_s = onset_s + rng.normal(0.0, 0.15)
                system_offset_s = onset_s + duration_s + rng.normal(0.0, 0.4)
                system.append(event(file_id, system_label, system_onset_s, system_offset_s))
        for _ in range(int(rng.integers(0, 4))):
            onset_s = float(rng.uniform(0.0, 22.0))
            system.append(
                event(file_id, str(rng.choice(labels)), onset_s, onset_s + rng.uniform(0.05, 3.0))
            )
    order_ref, order_sys = rng.permutation(len(reference)), rng.permutation(len(system))
    return [reference[i] for i in order_ref], [system[i] for i in order_sys], labels


def crowded_case(seed: int) -> tuple[list[EvalEvent], list[EvalEvent], list[str]]:
    """Per file, reference and system events crowd around three moments with three labels, so
    that most events could match several others: which maximum matching is taken then decides
    which events are left over, and so the substitutions."""
    rng = np.random.default_rng(50_000 + seed)
    labels = ["alarm", "dog_bark", "siren"]
    reference: list[EvalEvent] = []
    system: list[EvalEvent] = []
    for file_index in range(int(rng.integers(1, 3))):
        file_id = f"file_{file_index}.wav"
        anchors_s = rng.uniform(0.3, 5.0, size=3)
        for events in (reference, system):
            for _ in range(int(rng.integers(3, 12))):
                onset_s = float(anchors_s[rng.integers(3)] + rng.uniform(-0.25, 0.25))
                offset_s = onset_s + 1.0 + float(rng.uniform(-0.3, 0.3))
                label = str(rng.choice(labels))
                events.append(
                    EvalEvent(file_id=file_id, label=label, onset_s=onset_s, offset_s=offset_s)
                )
    return reference, system, labels


def to_container(events: Iterable[EvalEvent]) -> Any:
    return dcase_util.containers.MetaDataContainer(
        [
            {
                "file": event.file_id,
                "event_label": event.label,
                "event_onset": event.onset_s,
                "event_offset": event.offset_s,
            }
            for event in events
        ]
    )


def run_sed_eval(
    metrics: Any,
    reference: Sequence[EvalEvent],
    system: Sequence[EvalEvent],
    file_durations_s: Mapping[str, float] | None = None,
) -> Any:
    """sed_eval's documented loop: evaluate file by file, here over every file with events."""
    reference_container, system_container = to_container(reference), to_container(system)
    files = {event.file_id for event in (*reference, *system)} | set(file_durations_s or {})
    for file_id in sorted(files):
        kwargs = (
            {}
            if file_durations_s is None
            else {"evaluated_length_seconds": file_durations_s[file_id]}
        )
        metrics.evaluate(
            reference_event_list=reference_container.filter(filename=file_id),
            estimated_event_list=system_container.filter(filename=file_id),
            **kwargs,
        )
    return metrics


def assert_equal_to_sed_eval(ours: SedMetrics, theirs: Any, *, event_based: bool) -> None:
    results = theirs.results()
    overall: OverallMetrics = ours.overall
    # sed_eval's event-based 'Nfp'/'Nfn' are insertions/deletions; segment-based they are FP/FN.
    counts = {
        "Nref": overall.n_ref,
        "Nsys": overall.n_sys,
        "Ntp": overall.true_positives,
        "Nfp": overall.insertions if event_based else overall.false_positives,
        "Nfn": overall.deletions if event_based else overall.false_negatives,
    }
    if event_based:
        counts["Nsubs"] = overall.substitutions
    else:
        counts |= {"S": overall.substitutions, "D": overall.deletions, "I": overall.insertions}
    assert counts == {key: theirs.overall[key] for key in counts}
    f_measure, error_rate = results["overall"]["f_measure"], results["overall"]["error_rate"]
    pairs = {
        "f1": (overall.f1, f_measure["f_measure"]),
        "precision": (overall.precision, f_measure["precision"]),
        "recall": (overall.recall, f_measure["recall"]),
        "error_rate": (overall.error_rate, error_rate["error_rate"]),
        "substitution_rate": (overall.substitution_rate, error_rate["substitution_rate"]),
        "deletion_rate": (overall.deletion_rate, error_rate["deletion_rate"]),
        "insertion_rate": (overall.insertion_rate, error_rate["insertion_rate"]),
    }
    assert all(close(a, b) for a, b in pairs.values()), pairs

    assert list(ours.class_wise) == list(results["class_wise"])
    for label, their_class in results["class_wise"].items():
        mine: ClassMetrics = ours.class_wise[label]
        their_counts = theirs.class_wise[label]
        assert (mine.n_ref, mine.n_sys, mine.true_positives) == (
            their_counts["Nref"],
            their_counts["Nsys"],
            their_counts["Ntp"],
        ), label
        assert (mine.false_positives, mine.false_negatives) == (
            their_counts["Nfp"],
            their_counts["Nfn"],
        ), label
        pairs = {
            "f1": (mine.f1, their_class["f_measure"]["f_measure"]),
            "precision": (mine.precision, their_class["f_measure"]["precision"]),
            "recall": (mine.recall, their_class["f_measure"]["recall"]),
            "error_rate": (mine.error_rate, their_class["error_rate"]["error_rate"]),
            "deletion_rate": (mine.deletion_rate, their_class["error_rate"]["deletion_rate"]),
            "insertion_rate": (mine.insertion_rate, their_class["error_rate"]["insertion_rate"]),
        }
        assert all(close(a, b) for a, b in pairs.values()), (label, pairs)

    average = results["class_wise_average"]
    pairs = {
        "f1": (ours.class_wise_average.f1, average["f_measure"]["f_measure"]),
        "precision": (ours.class_wise_average.precision, average["f_measure"]["precision"]),
        "recall": (ours.class_wise_average.recall, average["f_measure"]["recall"]),
        "error_rate": (ours.class_wise_average.error_rate, average["error_rate"]["error_rate"]),
        "deletion_rate": (
            ours.class_wise_average.deletion_rate,
            average["error_rate"]["deletion_rate"],
        ),
        "insertion_rate": (
            ours.class_wise_average.insertion_rate,
            average["error_rate"]["insertion_rate"],
        ),
    }
    assert all(close(a, b) for a, b in pairs.values()), pairs


EVENT_SETTINGS = [
    EventBasedSettings(),
    EventBasedSettings(matching="greedy"),
    EventBasedSettings(t_collar_s=0.25, percentage_of_length=0.2),
    EventBasedSettings(evaluate_offset=False),
    EventBasedSettings(evaluate_onset=False, t_collar_s=0.5),
    EventBasedSettings(t_collar_s=0.1, percentage_of_length=0.0, matching="greedy"),
]


def assert_event_based_equals_sed_eval(
    reference: list[EvalEvent], system: list[EvalEvent], labels: list[str]
) -> None:
    for settings in EVENT_SETTINGS:
        ours = settings.evaluate(reference=reference, system=system, labels=labels)
        theirs = run_sed_eval(
            sed_eval.sound_event.EventBasedMetrics(
                event_label_list=labels,
                t_collar=settings.t_collar_s,
                percentage_of_length=settings.percentage_of_length,
                evaluate_onset=settings.evaluate_onset,
                evaluate_offset=settings.evaluate_offset,
                event_matching_type=settings.matching,
            ),
            reference,
            system,
        )
        assert_equal_to_sed_eval(ours, theirs, event_based=True)


@SED_EVAL_WARNINGS
@pytest.mark.parametrize("seed", range(N_RANDOM_CASES))
def test_event_based_equals_sed_eval(seed: int) -> None:
    reference, system, labels = random_case(seed)
    # Every other case also reports a label that has no events at all.
    if seed % 2:
        labels = [*labels, "unused"]
    assert_event_based_equals_sed_eval(reference, system, labels)


@SED_EVAL_WARNINGS
@pytest.mark.parametrize("seed", range(N_CROWDED_CASES))
def test_event_based_equals_sed_eval_on_crowded_files(seed: int) -> None:
    assert_event_based_equals_sed_eval(*crowded_case(seed))


@SED_EVAL_WARNINGS
@pytest.mark.parametrize("seed", range(N_RANDOM_CASES))
def test_segment_based_equals_sed_eval(seed: int) -> None:
    reference, system, labels = random_case(seed)
    rng = np.random.default_rng(10_000 + seed)
    durations_s = None
    if seed % 3 == 0:
        # Cut some files short and pad others; add a file without events.
        last_offsets: dict[str, float] = {}
        for event in (*reference, *system):
            last_offsets[event.file_id] = max(last_offsets.get(event.file_id, 0.0), event.offset_s)
        durations_s = {
            file_id: float(max(0.0, offset_s + rng.uniform(-3.0, 3.0)))
            for file_id, offset_s in last_offsets.items()
        } | {"silent.wav": 30.0}
    for segment_length_s in (1.0, 0.25, 0.1):
        ours = segment_based_metrics(
            reference=reference,
            system=system,
            labels=labels,
            segment_length_s=segment_length_s,
            file_durations_s=durations_s,
        )
        theirs = run_sed_eval(
            sed_eval.sound_event.SegmentBasedMetrics(
                event_label_list=labels, time_resolution=segment_length_s
            ),
            reference,
            system,
            durations_s,
        )
        assert_equal_to_sed_eval(ours, theirs, event_based=False)


def test_random_cases_exercise_every_kind_of_error() -> None:
    """The random cases are not vacuous: they contain hits, substitutions, deletions and
    insertions, and greedy and optimal matching disagree somewhere."""
    totals = {"tp": 0, "s": 0, "d": 0, "i": 0, "greedy_differs": 0}
    for seed in range(N_RANDOM_CASES):
        reference, system, _ = random_case(seed)
        optimal = event_based_metrics(reference=reference, system=system).overall
        greedy = event_based_metrics(reference=reference, system=system, matching="greedy").overall
        totals["tp"] += optimal.true_positives
        totals["s"] += optimal.substitutions
        totals["d"] += optimal.deletions
        totals["i"] += optimal.insertions
        totals["greedy_differs"] += optimal != greedy
    assert all(value > 0 for value in totals.values()), totals
