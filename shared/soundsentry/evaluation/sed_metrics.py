"""Sound event detection evaluation, as DCASE defines it: event-based and segment-based metrics.

The definitions follow Mesaros, Heittola and Virtanen, "Metrics for polyphonic sound event
detection", Applied Sciences 6(6):162, 2016, and reproduce the reference implementation,
``sed_eval`` 0.2.1 (``sed_eval.sound_event.EventBasedMetrics`` and ``SegmentBasedMetrics``),
count for count; ``tests/unit/test_evaluation.py`` checks that on random event lists.

Event-based
    Events are matched per file. A system event can match a reference event when the labels are
    equal, the onsets differ by at most ``t_collar_s`` and the offsets by at most
    ``max(t_collar_s, percentage_of_length * reference_length)`` (either condition can be turned
    off). ``matching="optimal"`` (sed_eval's default) takes the maximum-cardinality matching found
    by the Hopcroft-Karp search sed_eval uses; ``matching="greedy"`` (sed_eval's older behaviour)
    walks the reference events in order and gives each the first free system event that fits.
    Among what is left, a reference event and a system event whose times fit (labels are not
    looked at) are paired, reference by reference in order, as one substitution. The rest are
    deletions (reference) and insertions (system). Class-wise counts come from matching each
    label on its own and have no substitutions.

Segment-based
    Each file is cut into segments of ``segment_length_s``; a label is active in a segment when an
    event of that label overlaps it (an event covers segments ``floor(onset / length)`` up to
    ``ceil(offset / length)``, exclusive). A file is evaluated up to its given duration, else up to
    the last offset of its reference and system events. Per segment, with ``Nref``, ``Nsys``
    active labels and ``TP`` labels active in both: ``S = min(Nref, Nsys) - TP``,
    ``D = max(0, Nref - Nsys)``, ``I = max(0, Nsys - Nref)``.

Scores, both kinds (sed_eval's conventions, mirrored on purpose)
    ``precision = TP / Nsys`` and ``recall = TP / Nref`` are NaN when their denominator is 0;
    ``F1 = 2PR / (P + R)`` is 0 when P = R = 0 and NaN when either is NaN. Rates divide by
    ``Nref + eps`` (``eps = np.spacing(1)``), so with no reference events ``ER = I / eps``: a huge
    number, not infinity. ``ER = S/(Nref+eps) + D/(Nref+eps) + I/(Nref+eps)`` overall; class-wise,
    ``ER = D/(Nref+eps) + I/(Nref+eps)`` with ``D = FN``, ``I = FP``. Class-wise averages
    (macro) are NaN-ignoring means of the class-wise values over the evaluated labels.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import Final, Generic, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from soundsentry.exceptions import ConfigurationError

__all__ = [
    "DEFAULT_PERCENTAGE_OF_LENGTH",
    "DEFAULT_SEGMENT_LENGTH_S",
    "DEFAULT_T_COLLAR_S",
    "ClassMetrics",
    "ClassWiseAverage",
    "EvalEvent",
    "EvaluationInputError",
    "EvaluationSettings",
    "EventBasedSettings",
    "Matching",
    "OverallMetrics",
    "PlottingUnavailableError",
    "SedMetrics",
    "SegmentBasedSettings",
    "ThresholdPoint",
    "evaluation_settings_from_mapping",
    "event_based_metrics",
    "match_files",
    "plot_precision_recall_curve",
    "segment_based_metrics",
    "sweep_thresholds",
]

DEFAULT_T_COLLAR_S: Final = 0.200
DEFAULT_PERCENTAGE_OF_LENGTH: Final = 0.5
DEFAULT_SEGMENT_LENGTH_S: Final = 1.0

# sed_eval divides every rate by Nref + eps (metric.py), never by zero.
_EPS: Final = float(np.spacing(1))

Matching = Literal["optimal", "greedy"]
_MATCHINGS: Final = ("optimal", "greedy")

BoolMatrix = npt.NDArray[np.bool_]
ScoresT = TypeVar("ScoresT")


class EvaluationInputError(ConfigurationError, ValueError):
    """Events, labels or evaluation settings that cannot be evaluated."""


class PlottingUnavailableError(ConfigurationError):
    """Drawing was asked for but matplotlib is not installed."""


def _number(value: object) -> float:
    """A real number as float; NaN (which fails every range check) for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _is_text(value: object) -> bool:
    """Whether a label or file id is a non-empty string (checked at run time, whatever the type
    hints say)."""
    return isinstance(value, str) and bool(value)


# -- Events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EvalEvent:
    """One sound event, from a reference annotation or from a system's output.

    ``file_id`` names the recording (or stream sequence) the event belongs to: events are only
    ever compared with events of the same ``file_id``. Times are seconds from its start.
    """

    file_id: str
    label: str
    onset_s: float
    offset_s: float

    def __post_init__(self) -> None:
        problems = []
        if not _is_text(self.file_id):
            problems.append(f"file_id={self.file_id!r} must be a non-empty string")
        if not _is_text(self.label):
            problems.append(f"label={self.label!r} must be a non-empty string")
        if not (math.isfinite(_number(self.onset_s)) and math.isfinite(_number(self.offset_s))):
            problems.append(f"onset_s={self.onset_s} and offset_s={self.offset_s} must be finite")
        elif self.onset_s < 0:
            problems.append(f"onset_s={self.onset_s} is negative")
        elif self.offset_s < self.onset_s:
            problems.append(
                f"offset_s={self.offset_s} is before onset_s={self.onset_s} "
                f"(duration {self.offset_s - self.onset_s} s is negative)"
            )
        if problems:
            raise EvaluationInputError("invalid event: " + "; ".join(problems))

    @property
    def duration_s(self) -> float:
        return self.offset_s - self.onset_s


# -- Results --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OverallMetrics:
    """Micro-averaged metrics: counts pooled over every file and label.

    ``false_positives = n_sys - true_positives`` and ``false_negatives = n_ref - true_positives``;
    ``insertions = false_positives - substitutions``, ``deletions = false_negatives -
    substitutions``. (sed_eval's event-based ``overall['Nfp']``/``['Nfn']`` hold the insertions
    and deletions.)
    """

    n_ref: int
    n_sys: int
    true_positives: int
    false_positives: int
    false_negatives: int
    substitutions: int
    deletions: int
    insertions: int
    precision: float
    recall: float
    f1: float
    error_rate: float
    substitution_rate: float
    deletion_rate: float
    insertion_rate: float


@dataclass(frozen=True, slots=True)
class ClassMetrics:
    """Metrics of one label; its deletions are its false negatives, its insertions its false
    positives (no substitutions within one label)."""

    label: str
    n_ref: int
    n_sys: int
    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float
    recall: float
    f1: float
    error_rate: float
    deletion_rate: float
    insertion_rate: float


@dataclass(frozen=True, slots=True)
class ClassWiseAverage:
    """Macro averages: NaN-ignoring means of the class-wise values (``f1`` is the mean of the
    class F1 scores, not the F1 of the mean precision and recall)."""

    precision: float
    recall: float
    f1: float
    error_rate: float
    deletion_rate: float
    insertion_rate: float


@dataclass(frozen=True, slots=True)
class SedMetrics:
    """Everything one evaluation reports; ``class_wise`` is keyed by label, in ``labels`` order."""

    overall: OverallMetrics
    class_wise: Mapping[str, ClassMetrics]
    class_wise_average: ClassWiseAverage

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.class_wise)


# -- Settings -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventBasedSettings:
    """Parameters of event-based evaluation (sed_eval ``EventBasedMetrics``' defaults).

    ``t_collar_s`` (> 0) bounds the onset difference and is the floor of the offset tolerance
    ``max(t_collar_s, percentage_of_length * reference_length_s)``; ``percentage_of_length`` is in
    [0, 1]. ``matching`` is ``"optimal"`` or ``"greedy"``.
    """

    t_collar_s: float = DEFAULT_T_COLLAR_S
    percentage_of_length: float = DEFAULT_PERCENTAGE_OF_LENGTH
    evaluate_onset: bool = True
    evaluate_offset: bool = True
    matching: Matching = "optimal"

    def __post_init__(self) -> None:
        problems = []
        t_collar_s = _number(self.t_collar_s)
        if not (math.isfinite(t_collar_s) and t_collar_s > 0):
            problems.append(f"t_collar_s={self.t_collar_s!r} must be a finite number > 0")
        if not 0.0 <= _number(self.percentage_of_length) <= 1.0:
            problems.append(f"percentage_of_length={self.percentage_of_length!r} must be in [0, 1]")
        flags: tuple[object, object] = (self.evaluate_onset, self.evaluate_offset)
        if not all(isinstance(flag, bool) for flag in flags):
            problems.append("evaluate_onset and evaluate_offset must be booleans")
        elif not any(flags):
            problems.append("evaluate_onset and evaluate_offset cannot both be False")
        if self.matching not in _MATCHINGS:
            problems.append(f"matching={self.matching!r} is unknown; use one of {_MATCHINGS}")
        if problems:
            raise EvaluationInputError("invalid event-based settings: " + "; ".join(problems))
        object.__setattr__(self, "t_collar_s", t_collar_s)
        object.__setattr__(self, "percentage_of_length", float(self.percentage_of_length))

    def evaluate(
        self,
        *,
        reference: Iterable[EvalEvent],
        system: Iterable[EvalEvent],
        labels: Sequence[str] | None = None,
    ) -> SedMetrics:
        """Event-based metrics of ``system`` against ``reference``; see
        :func:`event_based_metrics`."""
        ref, est = list(reference), list(system)
        label_list = _label_list(labels, ref, est)
        return _event_based(ref, est, label_list, self)


@dataclass(frozen=True, slots=True)
class SegmentBasedSettings:
    """Parameters of segment-based evaluation: ``segment_length_s`` > 0 (sed_eval's
    ``time_resolution``, default 1 s)."""

    segment_length_s: float = DEFAULT_SEGMENT_LENGTH_S

    def __post_init__(self) -> None:
        segment_length_s = _number(self.segment_length_s)
        if not (math.isfinite(segment_length_s) and segment_length_s > 0):
            raise EvaluationInputError(
                f"invalid segment-based settings: segment_length_s={self.segment_length_s!r} "
                "must be a finite number > 0"
            )
        object.__setattr__(self, "segment_length_s", segment_length_s)

    def evaluate(
        self,
        *,
        reference: Iterable[EvalEvent],
        system: Iterable[EvalEvent],
        labels: Sequence[str] | None = None,
        file_durations_s: Mapping[str, float] | None = None,
    ) -> SedMetrics:
        """Segment-based metrics of ``system`` against ``reference``; see
        :func:`segment_based_metrics`."""
        ref, est = list(reference), list(system)
        label_list = _label_list(labels, ref, est)
        return _segment_based(ref, est, label_list, self.segment_length_s, file_durations_s)


EvaluationSettings = EventBasedSettings | SegmentBasedSettings


def evaluation_settings_from_mapping(settings: Mapping[str, object]) -> EvaluationSettings:
    """Settings from configuration: ``{"kind": "event" | "segment", <field>: value, ...}``.

    The fields are those of :class:`EventBasedSettings` or :class:`SegmentBasedSettings`; a
    missing field takes its default.

    Raises
    ------
    EvaluationInputError
        for an unknown ``kind``, an unknown key, or an invalid value.
    """
    kinds: dict[object, type[EventBasedSettings] | type[SegmentBasedSettings]] = {
        "event": EventBasedSettings,
        "segment": SegmentBasedSettings,
    }
    kind = settings.get("kind")
    settings_type = kinds.get(kind)
    if settings_type is None:
        raise EvaluationInputError(
            f"unknown evaluation kind {kind!r}; set 'kind' to 'event' or 'segment'"
        )
    allowed = {field.name for field in fields(settings_type)}
    unknown = sorted(set(settings) - allowed - {"kind"})
    if unknown:
        raise EvaluationInputError(
            f"unknown {kind}-based evaluation settings {unknown}; known: {sorted(allowed)}"
        )
    values = {key: value for key, value in settings.items() if key != "kind"}
    return settings_type(**values)  # type: ignore[arg-type]  # values are checked on creation


# -- Public entry points --------------------------------------------------------------------------


def event_based_metrics(
    *,
    reference: Iterable[EvalEvent],
    system: Iterable[EvalEvent],
    labels: Sequence[str] | None = None,
    t_collar_s: float = DEFAULT_T_COLLAR_S,
    percentage_of_length: float = DEFAULT_PERCENTAGE_OF_LENGTH,
    evaluate_onset: bool = True,
    evaluate_offset: bool = True,
    matching: Matching = "optimal",
) -> SedMetrics:
    """Event-based metrics (sed_eval ``EventBasedMetrics``), pooled over every file.

    Parameters
    ----------
    reference, system : iterables of EvalEvent
        Annotated and detected events of any number of files; the order of events within a file
        decides ties in matching, as in sed_eval.
    labels : sequence of str, optional
        The labels reported class-wise and averaged; default: every label seen, sorted. Every
        event's label must be among them.
    t_collar_s, percentage_of_length, evaluate_onset, evaluate_offset, matching
        See :class:`EventBasedSettings`.

    Raises
    ------
    EvaluationInputError
        for invalid settings or an event whose label is not in ``labels``.
    """
    settings = EventBasedSettings(
        t_collar_s=t_collar_s,
        percentage_of_length=percentage_of_length,
        evaluate_onset=evaluate_onset,
        evaluate_offset=evaluate_offset,
        matching=matching,
    )
    return settings.evaluate(reference=reference, system=system, labels=labels)


def segment_based_metrics(
    *,
    reference: Iterable[EvalEvent],
    system: Iterable[EvalEvent],
    labels: Sequence[str] | None = None,
    segment_length_s: float = DEFAULT_SEGMENT_LENGTH_S,
    file_durations_s: Mapping[str, float] | None = None,
) -> SedMetrics:
    """Segment-based metrics (sed_eval ``SegmentBasedMetrics``), pooled over every file.

    Parameters
    ----------
    reference, system : iterables of EvalEvent
        Annotated and detected events of any number of files.
    labels : sequence of str, optional
        As in :func:`event_based_metrics`.
    segment_length_s : float > 0
        Segment length.
    file_durations_s : mapping file_id -> seconds, optional
        Evaluated length of each file (sed_eval's ``evaluated_length_seconds``): activity after it
        is cut off, silence up to it counts. When given, it must name every file that has events;
        files it names without events are evaluated as silent. Default: each file is evaluated up
        to the last offset among its reference and system events.

    Raises
    ------
    EvaluationInputError
        for invalid settings, a negative or missing file duration, or an event whose label is not
        in ``labels``.
    """
    settings = SegmentBasedSettings(segment_length_s=segment_length_s)
    return settings.evaluate(
        reference=reference, system=system, labels=labels, file_durations_s=file_durations_s
    )


# -- Threshold sweep ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThresholdPoint:
    """The metrics of the events a system produces at one decision threshold."""

    threshold: float
    metrics: SedMetrics

    @property
    def precision(self) -> float:
        return self.metrics.overall.precision

    @property
    def recall(self) -> float:
        return self.metrics.overall.recall

    @property
    def f1(self) -> float:
        return self.metrics.overall.f1

    @property
    def error_rate(self) -> float:
        return self.metrics.overall.error_rate


@dataclass(frozen=True, slots=True)
class _Sweep(Generic[ScoresT]):
    reference: tuple[EvalEvent, ...]
    scores: ScoresT
    to_events: Callable[[ScoresT, float], Iterable[EvalEvent]]
    settings: EvaluationSettings
    labels: Sequence[str] | None
    file_durations_s: Mapping[str, float] | None

    def at(self, threshold: float) -> ThresholdPoint:
        system = list(self.to_events(self.scores, threshold))
        if isinstance(self.settings, SegmentBasedSettings):
            metrics = self.settings.evaluate(
                reference=self.reference,
                system=system,
                labels=self.labels,
                file_durations_s=self.file_durations_s,
            )
        else:
            metrics = self.settings.evaluate(
                reference=self.reference, system=system, labels=self.labels
            )
        return ThresholdPoint(threshold=threshold, metrics=metrics)


def sweep_thresholds(
    *,
    reference: Iterable[EvalEvent],
    scores: ScoresT,
    thresholds: Iterable[float],
    to_events: Callable[[ScoresT, float], Iterable[EvalEvent]],
    settings: EvaluationSettings | None = None,
    labels: Sequence[str] | None = None,
    file_durations_s: Mapping[str, float] | None = None,
) -> tuple[ThresholdPoint, ...]:
    """Evaluate a system at each decision threshold.

    Parameters
    ----------
    reference : iterable of EvalEvent
        The annotation, evaluated against at every threshold.
    scores : any
        Per-window scores in whatever form ``to_events`` reads (e.g. a mapping file_id ->
        ``np.ndarray [shape=(n_windows, n_labels)]``); passed through untouched.
    thresholds : iterable of float
        Finite thresholds, evaluated in the given order.
    to_events : callable (scores, threshold) -> iterable of EvalEvent
        Turns the scores into system events at one threshold (e.g. thresholding, then merging
        consecutive active windows).
    settings : EventBasedSettings or SegmentBasedSettings, optional
        What to compute; default: event-based with sed_eval's defaults.
    labels : sequence of str, optional
        As in :func:`event_based_metrics`; default: the labels seen at each threshold.
    file_durations_s : mapping, optional
        Segment-based only, as in :func:`segment_based_metrics`.

    Returns
    -------
    tuple of ThresholdPoint, one per threshold, in order.
    """
    chosen = EventBasedSettings() if settings is None else settings
    if file_durations_s is not None and not isinstance(chosen, SegmentBasedSettings):
        raise EvaluationInputError("file_durations_s only applies to segment-based settings")
    values = [float(threshold) for threshold in thresholds]
    if not values:
        raise EvaluationInputError("thresholds is empty: give at least one threshold")
    bad = [value for value in values if not math.isfinite(value)]
    if bad:
        raise EvaluationInputError(f"thresholds must be finite, got {bad}")
    sweep = _Sweep(
        reference=tuple(reference),
        scores=scores,
        to_events=to_events,
        settings=chosen,
        labels=labels,
        file_durations_s=file_durations_s,
    )
    return tuple(sweep.at(value) for value in values)


def plot_precision_recall_curve(
    *,
    points: Sequence[ThresholdPoint],
    path: str | os.PathLike[str],
    title: str = "Precision-recall",
    width_in: float = 6.0,
    height_in: float = 5.0,
    dpi: int = 100,
) -> Path:
    """Draw recall (x) against precision (y) of a threshold sweep to a PNG file.

    Points whose precision or recall is NaN (no system output or no reference) are left out; the
    point with the best F1 is marked with its threshold. Uses matplotlib's object API (no
    ``pyplot``, no global backend state).

    Raises
    ------
    PlottingUnavailableError
        if matplotlib is not installed.
    EvaluationInputError
        if ``points`` is empty.
    """
    try:
        from matplotlib.figure import Figure  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise PlottingUnavailableError(
            "plot_precision_recall_curve needs matplotlib, which is not installed "
            "(pip install matplotlib)"
        ) from exc
    if not points:
        raise EvaluationInputError("points is empty: nothing to draw")

    ordered = sorted(points, key=lambda point: point.threshold)
    recall = np.array([point.recall for point in ordered], dtype=np.float64)
    precision = np.array([point.precision for point in ordered], dtype=np.float64)
    drawable = np.isfinite(recall) & np.isfinite(precision)

    figure = Figure(figsize=(width_in, height_in), dpi=dpi)
    axes = figure.add_subplot()
    axes.plot(recall[drawable], precision[drawable], marker="o", markersize=3)
    f1 = np.array([point.f1 for point in ordered], dtype=np.float64)
    if np.isfinite(f1).any():
        best = int(np.nanargmax(f1))
        axes.plot([recall[best]], [precision[best]], marker="*", markersize=12, linestyle="none")
        axes.annotate(
            f"best F1 {f1[best]:.3f} @ {ordered[best].threshold:g}",
            xy=(float(recall[best]), float(precision[best])),
            xytext=(8, -12),
            textcoords="offset points",
        )
    axes.set_xlim(0.0, 1.02)
    axes.set_ylim(0.0, 1.02)
    axes.set_xlabel("Recall")
    axes.set_ylabel("Precision")
    axes.set_title(title)
    axes.grid(visible=True, alpha=0.3)
    target = Path(path)
    figure.savefig(target, format="png")
    return target


# -- Shared helpers -------------------------------------------------------------------------------


def _label_list(
    labels: Sequence[str] | None, reference: Sequence[EvalEvent], system: Sequence[EvalEvent]
) -> tuple[str, ...]:
    seen = {event.label for event in reference} | {event.label for event in system}
    if labels is None:
        return tuple(sorted(seen))
    if isinstance(labels, str):
        raise EvaluationInputError(
            f"labels must be a sequence of labels, not the string {labels!r}"
        )
    label_list = tuple(labels)
    if len(set(label_list)) != len(label_list):
        raise EvaluationInputError(f"labels {list(label_list)} contain duplicates")
    unknown = sorted(seen - set(label_list))
    if unknown:
        raise EvaluationInputError(f"events have labels {unknown} that are not in labels")
    return label_list


def _by_file(events: Iterable[EvalEvent]) -> dict[str, list[EvalEvent]]:
    """Events grouped by file, keeping their order within each file."""
    grouped: dict[str, list[EvalEvent]] = {}
    for event in events:
        if not isinstance(event, EvalEvent):
            raise EvaluationInputError(f"expected EvalEvent, got {type(event).__name__}")
        grouped.setdefault(event.file_id, []).append(event)
    return grouped


def _precision(true_positives: int, n_sys: int) -> float:
    return math.nan if n_sys == 0 else true_positives / float(n_sys)


def _recall(true_positives: int, n_ref: int) -> float:
    return math.nan if n_ref == 0 else true_positives / float(n_ref)


def _f1(precision: float, recall: float) -> float:
    if precision == 0 and recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def _rate(count: int, n_ref: int) -> float:
    return count / (float(n_ref) + _EPS)


def _nanmean(values: Sequence[float]) -> float:
    array = np.asarray(values, dtype=np.float64)
    if np.isnan(array).all():
        return math.nan  # empty or all NaN, without numpy's warning
    return float(np.nanmean(array))


@dataclass(slots=True)
class _Counts:
    n_ref: int = 0
    n_sys: int = 0
    true_positives: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0


def _build(overall: _Counts, class_wise: Mapping[str, _Counts]) -> SedMetrics:
    precision = _precision(overall.true_positives, overall.n_sys)
    recall = _recall(overall.true_positives, overall.n_ref)
    substitution_rate = _rate(overall.substitutions, overall.n_ref)
    deletion_rate = _rate(overall.deletions, overall.n_ref)
    insertion_rate = _rate(overall.insertions, overall.n_ref)
    overall_metrics = OverallMetrics(
        n_ref=overall.n_ref,
        n_sys=overall.n_sys,
        true_positives=overall.true_positives,
        false_positives=overall.n_sys - overall.true_positives,
        false_negatives=overall.n_ref - overall.true_positives,
        substitutions=overall.substitutions,
        deletions=overall.deletions,
        insertions=overall.insertions,
        precision=precision,
        recall=recall,
        f1=_f1(precision, recall),
        error_rate=substitution_rate + deletion_rate + insertion_rate,
        substitution_rate=substitution_rate,
        deletion_rate=deletion_rate,
        insertion_rate=insertion_rate,
    )
    per_label: dict[str, ClassMetrics] = {}
    for label, counts in class_wise.items():
        false_positives = counts.n_sys - counts.true_positives
        false_negatives = counts.n_ref - counts.true_positives
        label_precision = _precision(counts.true_positives, counts.n_sys)
        label_recall = _recall(counts.true_positives, counts.n_ref)
        label_deletion_rate = _rate(false_negatives, counts.n_ref)
        label_insertion_rate = _rate(false_positives, counts.n_ref)
        per_label[label] = ClassMetrics(
            label=label,
            n_ref=counts.n_ref,
            n_sys=counts.n_sys,
            true_positives=counts.true_positives,
            false_positives=false_positives,
            false_negatives=false_negatives,
            precision=label_precision,
            recall=label_recall,
            f1=_f1(label_precision, label_recall),
            # sed_eval: error_rate(substitution_rate_value=0.0, deletion..., insertion...)
            error_rate=0.0 + label_deletion_rate + label_insertion_rate,
            deletion_rate=label_deletion_rate,
            insertion_rate=label_insertion_rate,
        )
    values = list(per_label.values())
    average = ClassWiseAverage(
        precision=_nanmean([item.precision for item in values]),
        recall=_nanmean([item.recall for item in values]),
        f1=_nanmean([item.f1 for item in values]),
        error_rate=_nanmean([item.error_rate for item in values]),
        deletion_rate=_nanmean([item.deletion_rate for item in values]),
        insertion_rate=_nanmean([item.insertion_rate for item in values]),
    )
    return SedMetrics(
        overall=overall_metrics,
        class_wise=MappingProxyType(per_label),
        class_wise_average=average,
    )


# -- Event-based ----------------------------------------------------------------------------------


def _time_hits(
    reference: Sequence[EvalEvent], system: Sequence[EvalEvent], settings: EventBasedSettings
) -> BoolMatrix:
    """[shape=(n_ref, n_sys)] bool: whether the times of each pair fit (labels not looked at)."""
    ref_onset = np.array([event.onset_s for event in reference], dtype=np.float64)
    ref_offset = np.array([event.offset_s for event in reference], dtype=np.float64)
    sys_onset = np.array([event.onset_s for event in system], dtype=np.float64)
    sys_offset = np.array([event.offset_s for event in system], dtype=np.float64)
    hits = np.ones((len(reference), len(system)), dtype=np.bool_)
    if settings.evaluate_onset:
        hits &= np.abs(ref_onset[:, None] - sys_onset[None, :]) <= settings.t_collar_s
    if settings.evaluate_offset:
        tolerance_s = np.maximum(
            settings.t_collar_s, settings.percentage_of_length * (ref_offset - ref_onset)
        )
        hits &= np.abs(ref_offset[:, None] - sys_offset[None, :]) <= tolerance_s[:, None]
    return hits


def _hopcroft_karp_like_sed_eval(graph: dict[int, list[int]]) -> dict[int, int]:
    """A maximum-cardinality matching of a bipartite graph, the very one sed_eval finds.

    ``graph`` maps each system event (left) to its candidate reference events (right); the result
    maps matched reference events to system events. This is Eppstein's Hopcroft-Karp (as in
    mir_eval and sed_eval's ``util.bipartite_match``), with every visiting order kept identical so
    that the same events are left unmatched (they decide the substitutions). The backward search
    for augmenting paths runs on an explicit stack instead of recursion.
    """
    matching: dict[int, int] = {}
    for left, rights in graph.items():  # greedy start
        for right in rights:
            if right not in matching:
                matching[right] = left
                break
    while True:
        preds, pred, unmatched = _layers(graph, matching)
        if not unmatched:
            return matching
        for right in unmatched:
            _augment(right, preds, pred, matching)


# pred value of the free left vertices, the first layer (right vertices are >= 0).
_FIRST_LAYER: Final = -1


def _layers(
    graph: dict[int, list[int]], matching: dict[int, int]
) -> tuple[dict[int, list[int]], dict[int, int], list[int]]:
    """One breadth-first layering of the residual graph, from the free left vertices.

    Returns ``preds`` (right -> its neighbours in the previous layer), ``pred`` (left -> the
    right vertex it was reached through, or ``_FIRST_LAYER``) and the free right vertices of the
    last layer (empty when no augmenting path is left).
    """
    preds: dict[int, list[int]] = {}
    unmatched: list[int] = []
    pred: dict[int, int] = dict.fromkeys(graph, _FIRST_LAYER)
    for left in matching.values():
        del pred[left]
    layer = list(pred)
    while layer and not unmatched:
        new_layer: dict[int, list[int]] = {}
        for left in layer:
            for right in graph[left]:
                if right not in preds:
                    new_layer.setdefault(right, []).append(left)
        layer = []
        for right, lefts in new_layer.items():
            preds[right] = lefts
            if right in matching:
                layer.append(matching[right])
                pred[matching[right]] = right
            else:
                unmatched.append(right)
    return preds, pred, unmatched


def _augment(
    start: int,
    preds: dict[int, list[int]],
    pred: dict[int, int],
    matching: dict[int, int],
) -> bool:
    """Search back from a free right vertex through the layers for an augmenting path (the
    recursive ``recurse`` of sed_eval, depth-first in the same order) and flip it if found."""
    if start not in preds:
        return False
    stack = [(start, iter(preds.pop(start)))]
    taken: list[int] = []  # the left vertex each frame below the top descended through
    while stack:
        right, candidates = stack[-1]
        for left in candidates:
            if left not in pred:
                continue
            previous = pred.pop(left)
            if previous == _FIRST_LAYER:
                matching[right] = left
                for (frame_right, _), frame_left in zip(
                    reversed(stack[:-1]), reversed(taken), strict=True
                ):
                    matching[frame_right] = frame_left
                return True
            if previous in preds:
                taken.append(left)
                stack.append((previous, iter(preds.pop(previous))))
                break
        else:
            stack.pop()
            if taken:
                taken.pop()
    return False


def _match(hits: BoolMatrix, matching: Matching) -> tuple[BoolMatrix, BoolMatrix]:
    """Which reference events [shape=(n_ref,)] and system events [shape=(n_sys,)] are matched."""
    n_ref, n_sys = hits.shape
    ref_matched = np.zeros(n_ref, dtype=np.bool_)
    sys_matched = np.zeros(n_sys, dtype=np.bool_)
    if matching == "greedy":
        for ref_index in range(n_ref):
            free = np.flatnonzero(hits[ref_index] & ~sys_matched)
            if free.size:
                ref_matched[ref_index] = True
                sys_matched[free[0]] = True
        return ref_matched, sys_matched
    graph: dict[int, list[int]] = {}  # sed_eval's G: keys in order of first hit, row-major
    for ref_index, sys_index in zip(*np.nonzero(hits), strict=True):
        graph.setdefault(int(sys_index), []).append(int(ref_index))
    for ref_index, sys_index in _hopcroft_karp_like_sed_eval(graph).items():
        ref_matched[ref_index] = True
        sys_matched[sys_index] = True
    return ref_matched, sys_matched


def _substitutions(time_hits: BoolMatrix, ref_free: BoolMatrix, sys_free: BoolMatrix) -> int:
    """Unmatched pairs whose times fit, taken reference by reference, first fitting system event
    first; each system event serves once."""
    sys_left = np.flatnonzero(sys_free)
    counted = np.zeros(time_hits.shape[1], dtype=np.bool_)
    substitutions = 0
    for ref_index in np.flatnonzero(ref_free):
        fitting = sys_left[time_hits[ref_index, sys_left] & ~counted[sys_left]]
        if fitting.size:
            counted[fitting[0]] = True
            substitutions += 1
    return substitutions


def _event_based(
    reference: Sequence[EvalEvent],
    system: Sequence[EvalEvent],
    labels: Sequence[str],
    settings: EventBasedSettings,
) -> SedMetrics:
    ref_by_file, sys_by_file = _by_file(reference), _by_file(system)
    overall = _Counts()
    class_wise = {label: _Counts() for label in labels}
    for file_id in sorted(ref_by_file.keys() | sys_by_file.keys()):
        ref = ref_by_file.get(file_id, [])
        est = sys_by_file.get(file_id, [])
        time_hits = _time_hits(ref, est, settings)
        ref_labels = np.array([event.label for event in ref], dtype=object)
        sys_labels = np.array([event.label for event in est], dtype=object)
        same_label = ref_labels[:, None] == sys_labels[None, :]
        ref_matched, sys_matched = _match(time_hits & same_label, settings.matching)
        true_positives = int(ref_matched.sum())
        substitutions = _substitutions(time_hits, ~ref_matched, ~sys_matched)
        overall.n_ref += len(ref)
        overall.n_sys += len(est)
        overall.true_positives += true_positives
        overall.substitutions += substitutions
        overall.deletions += len(ref) - true_positives - substitutions
        overall.insertions += len(est) - true_positives - substitutions
        for label, counts in class_wise.items():
            ref_rows = np.flatnonzero(ref_labels == label)
            sys_columns = np.flatnonzero(sys_labels == label)
            label_hits = time_hits[np.ix_(ref_rows, sys_columns)]
            label_matched, _ = _match(label_hits, settings.matching)
            counts.n_ref += ref_rows.size
            counts.n_sys += sys_columns.size
            counts.true_positives += int(label_matched.sum())
    return _build(overall, class_wise)


# -- Segment-based --------------------------------------------------------------------------------


def _activity(
    events: Sequence[EvalEvent],
    label_index: Mapping[str, int],
    n_segments: int,
    segment_length_s: float,
) -> BoolMatrix:
    """[shape=(n_segments, n_labels)] bool: which labels are active in which segment."""
    roll = np.zeros((n_segments, len(label_index)), dtype=np.bool_)
    for event in events:
        first = math.floor(event.onset_s / segment_length_s)
        stop = math.ceil(event.offset_s / segment_length_s)
        roll[first:stop, label_index[event.label]] = True
    return roll


def _segment_based(
    reference: Sequence[EvalEvent],
    system: Sequence[EvalEvent],
    labels: Sequence[str],
    segment_length_s: float,
    file_durations_s: Mapping[str, float] | None,
) -> SedMetrics:
    ref_by_file, sys_by_file = _by_file(reference), _by_file(system)
    file_ids = ref_by_file.keys() | sys_by_file.keys()
    if file_durations_s is not None:
        missing = sorted(file_ids - file_durations_s.keys())
        if missing:
            raise EvaluationInputError(f"file_durations_s has no duration for files {missing}")
        bad = {
            file_id: duration_s
            for file_id, duration_s in file_durations_s.items()
            if not (math.isfinite(_number(duration_s)) and duration_s >= 0)
        }
        if bad:
            raise EvaluationInputError(f"file durations must be finite and >= 0 seconds, got {bad}")
        file_ids |= file_durations_s.keys()
    label_index = {label: index for index, label in enumerate(labels)}
    overall = _Counts()
    class_tp = np.zeros(len(labels), dtype=np.int64)
    class_ref = np.zeros(len(labels), dtype=np.int64)
    class_sys = np.zeros(len(labels), dtype=np.int64)
    for file_id in sorted(file_ids):
        ref = ref_by_file.get(file_id, [])
        est = sys_by_file.get(file_id, [])
        if file_durations_s is None:
            duration_s = max([0.0] + [event.offset_s for event in (*ref, *est)])
        else:
            duration_s = float(file_durations_s[file_id])
        n_segments = math.ceil(duration_s / segment_length_s)
        ref_roll = _activity(ref, label_index, n_segments, segment_length_s)
        sys_roll = _activity(est, label_index, n_segments, segment_length_s)
        both = ref_roll & sys_roll
        tp_per_segment = both.sum(axis=1)
        ref_per_segment = ref_roll.sum(axis=1)
        sys_per_segment = sys_roll.sum(axis=1)
        overall.n_ref += int(ref_per_segment.sum())
        overall.n_sys += int(sys_per_segment.sum())
        overall.true_positives += int(tp_per_segment.sum())
        overall.substitutions += int(
            (np.minimum(ref_per_segment, sys_per_segment) - tp_per_segment).sum()
        )
        overall.deletions += int(np.maximum(0, ref_per_segment - sys_per_segment).sum())
        overall.insertions += int(np.maximum(0, sys_per_segment - ref_per_segment).sum())
        class_tp += both.sum(axis=0)
        class_ref += ref_roll.sum(axis=0)
        class_sys += sys_roll.sum(axis=0)
    class_wise = {
        label: _Counts(
            n_ref=int(class_ref[index]),
            n_sys=int(class_sys[index]),
            true_positives=int(class_tp[index]),
        )
        for label, index in label_index.items()
    }
    return _build(overall, class_wise)


FileMatch = Literal["name", "path"]


def match_files(
    reference: Sequence[EvalEvent], system: Sequence[EvalEvent], *, by: FileMatch = "name"
) -> tuple[list[EvalEvent], list[EvalEvent]]:
    """Reference and system events with file ids that match across the two lists.

    ``by="name"`` (the default) keys files by their base name, so ``recordings/a.wav`` and
    ``a.wav`` are one file (what ``soundsentry detect`` prints next to a truth file that names
    files only); ``by="path"`` keeps the ids as they are.

    Raises
    ------
    EvaluationInputError
        for a reference without events, two different paths with one base name, or detected
        events none of whose files the reference names (a scoring of 0 that would look real).
    """
    if not reference:
        raise EvaluationInputError("the reference holds no events: nothing to score against")

    def keyed(events: Sequence[EvalEvent], which: str) -> list[EvalEvent]:
        if by == "path":
            return list(events)
        names: dict[str, str] = {}
        for event in events:
            name = PurePath(event.file_id.replace("\\", "/")).name
            if names.setdefault(name, event.file_id) != event.file_id:
                raise EvaluationInputError(
                    f"{which}: {names[name]!r} and {event.file_id!r} share the name {name!r}; "
                    "match by path (--match path) or rename them"
                )
        return [replace(e, file_id=PurePath(e.file_id.replace("\\", "/")).name) for e in events]

    ours, theirs = keyed(reference, "reference"), keyed(system, "detected events")
    reference_files = {e.file_id for e in ours}
    system_files = {e.file_id for e in theirs}
    if system_files and not system_files & reference_files:
        raise EvaluationInputError(
            f"no detected event is in a file the reference names (matched by {by}): detected "
            f"{sorted(system_files)[:3]}, reference {sorted(reference_files)[:3]}"
        )
    return ours, theirs


def read_event_list(path: str | Path) -> list[EvalEvent]:
    """Events from a DCASE-style list: ``file<TAB>onset<TAB>offset<TAB>label`` per line.

    Comma-separated files with a header ``file,label,onset_s,offset_s`` (what
    ``soundsentry detect --format csv`` writes) are read too. Lines with only a file name
    (a file without events) are skipped; blank lines and ``#`` comments are ignored.

    Raises
    ------
    EvaluationInputError
        naming the file, the line and the problem.
    """
    source = Path(path)
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationInputError(f"cannot read event list {source}: {exc}") from exc
    header = lines[0].strip().split(",") if lines else []
    csv_columns = header if {"file", "label", "onset_s", "offset_s"} <= set(header) else None
    events: list[EvalEvent] = []
    for number, line in enumerate(
        lines[1:] if csv_columns else lines, start=2 if csv_columns else 1
    ):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            if csv_columns:
                row = dict(zip(csv_columns, next(csv.reader([text])), strict=True))
                file_id, label = row["file"], row["label"]
                onset, offset = float(row["onset_s"]), float(row["offset_s"])
            else:
                fields = text.split("\t")
                if len(fields) == 1:
                    continue
                file_id, onset_text, offset_text, label = fields
                onset, offset = float(onset_text), float(offset_text)
            events.append(EvalEvent(file_id=file_id, label=label, onset_s=onset, offset_s=offset))
        except (ValueError, KeyError) as exc:
            raise EvaluationInputError(
                f"{source}:{number}: not an event ({exc}): {text!r}"
            ) from exc
    return events


def metrics_table(metrics: SedMetrics, *, title: str) -> str:
    """A plain-text table: one row per label, then the class-wise average and the overall."""
    rows = [
        f"{title}",
        f"{'label':<20} {'Nref':>5} {'Nsys':>5} {'F1':>7} {'ER':>7} {'P':>7} {'R':>7}",
    ]
    # sed_eval divides by n_ref + eps: a label without reference events gets an error rate of
    # about 1e15 per false alarm, which the table shows as undefined.
    undefined = [label for label in metrics.labels if metrics.class_wise[label].n_ref == 0]
    for label in metrics.labels:
        c = metrics.class_wise[label]
        er = f"{'n/a':>7}" if c.n_ref == 0 else f"{c.error_rate:>7.3f}"
        rows.append(
            f"{label:<20} {c.n_ref:>5} {c.n_sys:>5} {c.f1:>7.3f} {er} "
            f"{c.precision:>7.3f} {c.recall:>7.3f}"
        )
    avg, o = metrics.class_wise_average, metrics.overall
    avg_er = f"{'n/a':>7}" if undefined else f"{avg.error_rate:>7.3f}"
    rows.append(
        f"{'class-wise average':<20} {'':>5} {'':>5} {avg.f1:>7.3f} {avg_er} "
        f"{avg.precision:>7.3f} {avg.recall:>7.3f}"
    )
    rows.append(
        f"{'overall (micro)':<20} {o.n_ref:>5} {o.n_sys:>5} {o.f1:>7.3f} {o.error_rate:>7.3f} "
        f"{o.precision:>7.3f} {o.recall:>7.3f}"
    )
    return "\n".join(rows)


def metrics_as_dict(metrics: SedMetrics) -> dict[str, object]:
    """Plain data (JSON-ready; NaN stays NaN) of a metrics result."""
    return {
        "overall": {f.name: getattr(metrics.overall, f.name) for f in fields(metrics.overall)},
        "class_wise": {
            label: {f.name: getattr(c, f.name) for f in fields(c)}
            for label, c in metrics.class_wise.items()
        },
        "class_wise_average": {
            f.name: getattr(metrics.class_wise_average, f.name)
            for f in fields(metrics.class_wise_average)
        },
    }
