"""Operating points: what a label's detections cost in false alarms as its threshold moves.

A detector is chosen by the curve of recall against **false alarms per hour**: how many true
events it finds for how many alarms an operator must dismiss. For each label, the window scores
of every recording (:class:`ScoreTrack`, as ``soundsentry detect`` traced them) are turned into
events by the label's event rule with its on-threshold moved over ``thresholds`` (the
off-threshold keeps the rule's ratio to it), through
:func:`~soundsentry.events.tracker.detect_events`, the function the alerter's trackers run;
:func:`~soundsentry.evaluation.sed_metrics.sweep_thresholds` scores each threshold against the
reference.

A **false alarm** is a detected event that matches no reference event of its label (an
insertion, event-based, onset collar ``t_collar_s``, offsets not evaluated); false alarms per
hour divide them by the hours of all the recordings evaluated. On background-only audio every
detection is a false alarm.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from soundsentry.evaluation.sed_metrics import (
    EvalEvent,
    EvaluationInputError,
    EventBasedSettings,
    PlottingUnavailableError,
    sweep_thresholds,
)
from soundsentry.events.tracker import EventRule, detect_events

__all__ = [
    "DEFAULT_THRESHOLDS",
    "OperatingPoint",
    "ScoreTrack",
    "operating_points",
    "plot_operating_points",
]

DEFAULT_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


@dataclass(frozen=True, slots=True)
class ScoreTrack:
    """One label's window scores over one recording, with the rule and window geometry.

    ``start_samples`` [shape=(n,)], int64, strictly increasing; ``scores`` [shape=(n,)], float.
    """

    file_id: str
    rule: EventRule
    start_samples: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float64]
    sample_rate_hz: int
    window_samples: int
    hop_samples: int

    @property
    def label(self) -> str:
        return self.rule.label

    def events(self, on_threshold: float) -> list[EvalEvent]:
        """The track's events with the rule's on-threshold moved to ``on_threshold``."""
        rule = self.rule
        ratio = rule.off_threshold / rule.on_threshold if rule.on_threshold > 0 else 1.0
        moved = replace(rule, on_threshold=on_threshold, off_threshold=on_threshold * ratio)
        found = detect_events(
            self.start_samples,
            self.scores,
            moved,
            sample_rate_hz=self.sample_rate_hz,
            window_samples=self.window_samples,
            hop_samples=self.hop_samples,
        )
        return [EvalEvent(self.file_id, rule.label, e.onset_s, e.offset_s) for e in found]


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    label: str
    on_threshold: float
    recall: float
    precision: float
    false_alarms: int
    false_alarms_per_hour: float


def operating_points(
    tracks: Iterable[ScoreTrack],
    reference: Iterable[EvalEvent],
    *,
    hours: float,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    t_collar_s: float = 0.5,
) -> dict[str, list[OperatingPoint]]:
    """Per label (sorted), one point per threshold (module docstring).

    ``hours`` is the length of every recording the tracks cover, and the reference must hold
    every event of them.

    Raises
    ------
    EvaluationInputError
        for ``hours`` that is not a positive number, or an empty ``thresholds``.
    """
    if not (math.isfinite(hours) and hours > 0):
        raise EvaluationInputError(f"hours must be a positive number, got {hours!r}")
    by_label: dict[str, list[ScoreTrack]] = {}
    for track in tracks:
        by_label.setdefault(track.label, []).append(track)
    ref = list(reference)
    settings = EventBasedSettings(t_collar_s=t_collar_s, evaluate_offset=False)
    curves: dict[str, list[OperatingPoint]] = {}
    for label in sorted(by_label):

        def events_at(group: Sequence[ScoreTrack], threshold: float) -> list[EvalEvent]:
            return [event for track in group for event in track.events(threshold)]

        points = sweep_thresholds(
            reference=[e for e in ref if e.label == label],
            scores=by_label[label],
            thresholds=thresholds,
            to_events=events_at,
            settings=settings,
            labels=[label],
        )
        curves[label] = [
            OperatingPoint(
                label=label,
                on_threshold=point.threshold,
                recall=point.recall,
                precision=point.precision,
                false_alarms=point.metrics.overall.false_positives,
                false_alarms_per_hour=point.metrics.overall.false_positives / hours,
            )
            for point in points
        ]
    return curves


def plot_operating_points(
    curves: Mapping[str, Sequence[OperatingPoint]],
    path: str | Path,
    *,
    title: str = "Operating points",
    chosen: Mapping[str, float] | None = None,
) -> Path:
    """Two panels to a PNG: recall against false alarms per hour (log scale; a point with none
    is drawn at the axis floor), and precision against recall. ``chosen`` marks each label's
    threshold in use (e.g. its rule's on-threshold).

    Raises
    ------
    PlottingUnavailableError
        if matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise PlottingUnavailableError(
            "plotting operating points needs matplotlib (pip install 'soundsentry[plot]')"
        ) from exc
    figure = Figure(figsize=(12.0, 5.0), dpi=100)
    left, right = figure.subplots(1, 2)
    rates = [p.false_alarms_per_hour for ps in curves.values() for p in ps]
    floor = min([r for r in rates if r > 0] or [1.0]) / 2.0
    for label, points in curves.items():
        ordered = sorted(points, key=lambda p: p.on_threshold)
        x = [max(p.false_alarms_per_hour, floor) for p in ordered]
        (line,) = left.plot(x, [p.recall for p in ordered], marker="o", markersize=3, label=label)
        drawable = [p for p in ordered if math.isfinite(p.precision) and math.isfinite(p.recall)]
        right.plot(
            [p.recall for p in drawable],
            [p.precision for p in drawable],
            marker="o",
            markersize=3,
            color=line.get_color(),
            label=label,
        )
        if chosen and label in chosen:
            at = min(ordered, key=lambda p: abs(p.on_threshold - chosen[label]))
            left.plot(
                [max(at.false_alarms_per_hour, floor)],
                [at.recall],
                marker="*",
                markersize=12,
                color=line.get_color(),
                linestyle="none",
            )
    left.set_xscale("log")
    left.set_xlabel(f"False alarms per hour (none drawn at {floor:.2g})")
    left.set_ylabel("Recall")
    left.set_ylim(0.0, 1.02)
    left.set_title(title)
    left.grid(visible=True, alpha=0.3, which="both")
    left.legend(fontsize="small")
    right.set_xlim(0.0, 1.02)
    right.set_ylim(0.0, 1.02)
    right.set_xlabel("Recall")
    right.set_ylabel("Precision")
    right.set_title("Precision-recall")
    right.grid(visible=True, alpha=0.3)
    target = Path(path)
    figure.savefig(target, format="png")
    return target
