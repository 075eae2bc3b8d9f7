"""Event rules tuned on validation data (``soundsentry calibrate``; ``soundsentry train`` too).

A threshold that maximises window-level F1 does not maximise event-level F1: a siren scored
just around its threshold breaks into many short events, a gun shot seen by one window is one
event however high its score. So each label gets its own
:class:`~soundsentry.events.tracker.EventRule`, chosen by the event-based F1 of the events
:func:`~soundsentry.events.tracker.detect_events` finds on the validation examples (the same
function the detector and the alerter use), scored as DCASE 2017 task 2 scores rare events and
as an operator is told of them: by onset, with a 500 ms collar. (Tuned for the 200 ms onset +
offset collar instead, the rules of long sounds with a soft start, baby cries and sirens, went
strict enough to miss most of them: on the detection benchmark the default model's event F1
(onset, 0.5 s) is 0.494, and 0.517 tuned this way, though with 4.6 false alarms an hour
against 3.5; docs/models.md.)

Search (per label, deterministic; ties keep the earlier candidate, so the simpler rule wins):

1. ``on_threshold`` in 0.1, 0.2, .., 0.9 x ``merge_gap_s`` in 0, 2, 3, 4, 6, 8 hops x
   ``min_duration_s`` in 0, 1, 2 hops x ``onset_lookback_windows`` in 0, 1, with
   ``off_threshold = 0.75 x on`` and no smoothing. The look-back is chosen with the threshold:
   a window that holds only a sound's first part often scores below a threshold that keeps
   false alarms out, and without a look-back that threshold puts the onset a hop (0.5 s) late,
   outside the 0.2 s collar, so it would never win on its own;
2. at the best of those, ``smoothing_windows`` in 1, 2, 3 x ``off_threshold`` in 0.75, 0.5,
   1.0, 0.25 x on (that order: the stage-one rule comes first; a low off threshold keeps a
   cry or a bark series with pauses one event);
3. at the best of those, ``onset_lookback_windows`` in 0, 1, 2, 3, 4 x ``onset_ratio`` in 1,
   0.75, 0.5 (the onset is placed and looked back for from that share of the on threshold: a
   threshold high enough to keep false alarms out confirms a siren a window or two after it
   starts, and the windows before it score 0.7-0.9, so without a lower onset threshold its
   onset lands outside the 500 ms collar).

Candidates are compared by F1, then by the lower error rate. 351 candidates a label (423 with a
budget); on 3,200 validation examples (12 hours) about 3.5 minutes a label with a margin.
Labels are tuned in worker processes, one per CPU (:func:`tune_event_rules`): the default
model's eight in 15 minutes on two cores.

**False-alarm budget.** A deployment lives mostly on background, so with
``false_alarms_per_hour`` a rule must also keep the label's false alarms within that budget:
its detections in the validation examples that hold no event of the label (background-only
examples and the other labels' examples, the confusers), per hour of those examples. A
candidate over budget loses to any candidate within it; among candidates all over budget the
one with fewest false alarms wins. The thresholds then also run to 0.95 and 0.98. With less
background than one false alarm's worth of budget (0.1 per hour needs ten hours), the budget
allows none at all: the figure the card states is the budget, and the false alarms per hour on
validation are stated beside it. That is strict, and meant: allowing the nearest whole number
instead (one in 6 hours) gave the default model's baby-cry rule validation F1 0.65 for 0.01,
but on the detection benchmark's 10 hours of unheard background it took the false alarms from
4.6 to 9.4 an hour for event F1 0.518 against 0.517. More validation background, not a looser
count, is the way to rules that both find and keep quiet.

**Margin.** With ``false_alarm_margin`` d > 0 (it needs a budget) a rule must also keep within
the budget with its thresholds d lower in log-odds (0.98 at d = 1 becomes 0.947, 0.4 becomes
0.197): no rule may sit just above the highest scores the validation background happened to
give, since unheard background scores a little differently. The margin is in log-odds because
the scores are a sigmoid's: a margin as a share of the threshold (0.8 x, as first built) is
2.6 log-odds below a siren rule at 0.98 and 0.35 below a gun-shot rule at 0.4, so it took
the siren and baby-cry rules' detections (validation event F1 0.06 and 0) while it hardly
guarded the low thresholds (docs/models.md). Candidates are
ranked by their false alarms over the budget, then by those at the margin, then by F1: where
no rule keeps the margin, the plain budget still holds. Each candidate within the budget is
run a second time over the background, so tuning takes about twice as long. The card states
the rule and its false alarms as they are, and the margin in
``metrics.false_alarm_margin_logit``, which calibrating again (and quantizing) keeps.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from soundsentry.evaluation.sed_metrics import EvalEvent, event_based_metrics, segment_based_metrics
from soundsentry.events.rules import RuleSpec
from soundsentry.events.tracker import EventRule, detect_events
from soundsentry.exceptions import ConfigurationError
from soundsentry.models.trackers import OFF_RATIO
from soundsentry.training.examples import (
    ExampleFeatures,
    TrainingData,
    load_dataset,
    validation_windows,
)

if TYPE_CHECKING:
    from soundsentry.features.featurizer import FeatureProfile
    from soundsentry.models.model_set import LoadedModel

__all__ = [
    "MARGIN_METRIC",
    "PARALLEL_MIN_EXAMPLES",
    "THRESHOLD_GRID",
    "ScoredExample",
    "TunedRule",
    "calibrate_card",
    "calibrate_document",
    "calibrate_thresholds",
    "card_margin",
    "check_false_alarm_margin",
    "event_metrics",
    "false_alarm_metrics",
    "json_safe",
    "lowered_threshold",
    "margin_metric",
    "predict_all",
    "retune_document",
    "rule_document",
    "scored_examples",
    "tune_event_rule",
    "tune_event_rules",
    "window_metrics",
]

logger = logging.getLogger(__name__)

ON_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
BUDGET_ON_THRESHOLDS = (*ON_THRESHOLDS, 0.95, 0.98)
MERGE_HOPS = (0, 2, 3, 4, 6, 8)
MIN_DURATION_HOPS = (0, 1, 2)
SMOOTHING_WINDOWS = (1, 2, 3)
LOOKBACK_WINDOWS = (0, 1, 2, 3, 4)  # stage one tries the first two
ONSET_RATIOS = (1.0, 0.75, 0.5)  # the default first: it wins ties
OFF_RATIOS = (0.75, 0.5, 1.0, 0.25)  # the stage-one ratio first: it wins ties
# The event metric rules are tuned for: DCASE 2017 task 2's, onsets within 500 ms.
TUNING_COLLAR_S = 0.5
_BATCH = 256


@dataclass(frozen=True, slots=True)
class ScoredExample:
    """One validation example's grid windows, scored.

    ``start_samples`` [shape=(n,)], int64; ``scores`` [shape=(n, labels)];
    ``frame_scores`` [shape=(n, labels, frames)] or None; ``events`` the reference events.
    """

    key: str
    duration_s: float
    start_samples: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    frame_scores: npt.NDArray[np.float32] | None
    events: tuple[EvalEvent, ...]


@dataclass(frozen=True, slots=True)
class TunedRule:
    rule: EventRule
    f1: float
    error_rate: float
    false_alarms: int = 0
    background_hours: float = 0.0
    events: int = 0  # reference events of the label: F1 means nothing without any
    margin_false_alarms: int = 0  # with the thresholds at the margin (at least false_alarms)

    @property
    def false_alarms_per_hour(self) -> float:
        return self.false_alarms / self.background_hours if self.background_hours else math.nan


@dataclass(frozen=True, slots=True)
class _Budget:
    """How many false alarms of a label the validation background allows, and the margin
    a rule's thresholds must keep them with (module docstring)."""

    allowed: int
    background: tuple[ScoredExample, ...]
    background_keys: frozenset[str]
    hours: float
    margin: float = 0.0


def _budget(
    examples: Sequence[ScoredExample], label: str, per_hour: float | None, margin: float = 0.0
) -> _Budget | None:
    if per_hour is None:
        return None
    background = tuple(e for e in examples if not any(ev.label == label for ev in e.events))
    hours = sum(e.duration_s for e in background) / 3600.0
    keys = frozenset(e.key for e in background)
    return _Budget(math.floor(per_hour * hours), background, keys, hours, margin)


def _detect(
    examples: Sequence[ScoredExample], column: int, rule: EventRule, profile: FeatureProfile
) -> list[EvalEvent]:
    mel = profile.mel
    hop_samples = profile.hop_frames * mel.hop_length
    found: list[EvalEvent] = []
    for example in examples:
        if not example.start_samples.size:
            continue
        events = detect_events(
            example.start_samples,
            example.scores[:, column].astype(np.float64),
            rule,
            sample_rate_hz=mel.sample_rate_hz,
            window_samples=profile.window_samples,
            hop_samples=hop_samples,
            frame_scores=None if example.frame_scores is None else example.frame_scores[:, column],
            frame_hop_samples=mel.hop_length,
            frame_samples=mel.n_fft,
        )
        found += [EvalEvent(example.key, rule.label, e.onset_s, e.offset_s) for e in events]
    return found


def _score(
    examples: Sequence[ScoredExample],
    column: int,
    rule: EventRule,
    profile: FeatureProfile,
    reference: Sequence[EvalEvent],
    *,
    budget: _Budget | None = None,
) -> TunedRule:
    system = _detect(examples, column, rule, profile)
    metrics = event_based_metrics(
        reference=reference,
        system=system,
        labels=[rule.label],
        t_collar_s=TUNING_COLLAR_S,
        evaluate_offset=False,
    )
    f1, error_rate = metrics.overall.f1, metrics.overall.error_rate
    false_alarms = margin_false_alarms = 0
    if budget is not None:
        keys = budget.background_keys
        false_alarms = margin_false_alarms = sum(e.file_id in keys for e in system)
        # Over the budget already, the margin cannot make it worse in the ranking.
        if budget.margin > 0.0 and false_alarms <= budget.allowed:
            lower = replace(
                rule,
                on_threshold=lowered_threshold(rule.on_threshold, budget.margin),
                off_threshold=lowered_threshold(rule.off_threshold, budget.margin),
            )
            margin_false_alarms = len(_detect(budget.background, column, lower, profile))
    return TunedRule(
        rule,
        0.0 if np.isnan(f1) else f1,
        np.inf if np.isnan(error_rate) else error_rate,
        false_alarms,
        0.0 if budget is None else budget.hours,
        len(reference),
        max(false_alarms, margin_false_alarms),
    )


def tune_event_rule(
    label: str,
    column: int,
    examples: Sequence[ScoredExample],
    profile: FeatureProfile,
    *,
    false_alarms_per_hour: float | None = None,
    false_alarm_margin: float = 0.0,
) -> TunedRule:
    """The rule for ``label`` (scores in ``column``) with the best event F1 within the
    false-alarm budget, if one is given, kept at ``false_alarm_margin`` (module docstring)."""
    check_false_alarm_margin(false_alarm_margin, budget=false_alarms_per_hour)
    mel = profile.mel
    hop_s = profile.hop_frames * mel.hop_length / mel.sample_rate_hz
    reference = [e for example in examples for e in example.events if e.label == label]
    budget = _budget(examples, label, false_alarms_per_hour, false_alarm_margin)
    allowed = budget.allowed if budget is not None else 0
    thresholds = ON_THRESHOLDS if budget is None else BUDGET_ON_THRESHOLDS

    def best_of(candidates: list[EventRule]) -> TunedRule:
        scored = [
            _score(examples, column, rule, profile, reference, budget=budget) for rule in candidates
        ]
        # max() keeps the first of equals: the earlier, simpler candidate.
        return max(
            scored,
            key=lambda t: (
                -max(0, t.false_alarms - allowed),
                -max(0, t.margin_false_alarms - allowed),
                t.f1,
                -t.error_rate,
            ),
        )

    first = best_of(
        [
            EventRule(
                label=label,
                on_threshold=on,
                off_threshold=round(on * OFF_RATIO, 6),
                min_duration_s=round(min_hops * hop_s, 6),
                merge_gap_s=round(merge * hop_s, 6),
                onset_lookback_windows=lookback,
            )
            for on in thresholds
            for merge in MERGE_HOPS
            for min_hops in MIN_DURATION_HOPS
            for lookback in LOOKBACK_WINDOWS[:2]
        ]
    )
    # The stage-one rule is among the stage-two candidates (smoothing 1, ratio 0.75).
    second = best_of(
        [
            EventRule(
                label=label,
                on_threshold=first.rule.on_threshold,
                off_threshold=round(first.rule.on_threshold * ratio, 6),
                smoothing_windows=smoothing,
                min_duration_s=first.rule.min_duration_s,
                merge_gap_s=first.rule.merge_gap_s,
                onset_lookback_windows=first.rule.onset_lookback_windows,
            )
            for smoothing in SMOOTHING_WINDOWS
            for ratio in OFF_RATIOS
        ]
    )
    # ... and the stage-two rule among the stage-three ones.
    return best_of(
        [
            replace(second.rule, onset_lookback_windows=n, onset_ratio=ratio)
            for ratio in ONSET_RATIOS
            for n in LOOKBACK_WINDOWS
        ]
    )


MAX_MARGIN = 5.0  # log-odds: 0.99 lowered to 0.4, 0.98 to 0.25; beyond, hardly any rule keeps it
# The card's record of the retired margin, a share of the thresholds (until 9d181fa).
_SHARE_MARGIN_METRIC = "false_alarm_margin"


def lowered_threshold(threshold: float, margin: float) -> float:
    """``threshold`` ``margin`` lower in log-odds (the scores are a sigmoid's); never above it.
    0 stays 0; a threshold of 1 is taken as 1 - 1e-6."""
    if margin == 0.0 or threshold <= 0.0:
        return threshold
    p = min(threshold, 1.0 - 1e-6)
    z = math.log(p) - math.log1p(-p) - margin
    # The logistic function, in the form that cannot overflow for either sign of z.
    lowered = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
    return min(threshold, round(lowered, 6))


def check_false_alarm_margin(margin: object, *, budget: object = 0.0) -> float:
    """``margin`` as a float, or ConfigurationError: outside 0..MAX_MARGIN, or above 0 with no
    false-alarm budget (``budget`` None)."""
    if (
        isinstance(margin, bool)
        or not isinstance(margin, int | float)
        or not 0.0 <= margin <= MAX_MARGIN  # NaN fails too
    ):
        raise ConfigurationError(
            f"false_alarm_margin={margin!r} must be in 0..{MAX_MARGIN} (log-odds)"
        )
    if margin > 0.0 and budget is None:
        raise ConfigurationError(
            f"false_alarm_margin={margin} needs a false-alarm budget (false_alarms_per_hour)"
        )
    return float(margin)


MARGIN_METRIC = "false_alarm_margin_logit"


def card_margin(metrics: Mapping[str, Any]) -> float:
    """The margin a card's rules keep (``metrics.false_alarm_margin_logit``, else 0), or
    ConfigurationError for a card with the retired one (a share of the thresholds), which
    would otherwise be re-tuned without any."""
    if _SHARE_MARGIN_METRIC in metrics:
        raise ConfigurationError(
            f"the card's metrics.{_SHARE_MARGIN_METRIC} is the retired margin (a share of the "
            "thresholds): calibrate it with --false-alarm-margin D (log-odds) first"
        )
    return float(metrics.get(MARGIN_METRIC, 0.0))


def margin_metric(margin: float, *, budget: float | None) -> dict[str, float]:
    """The card's record of a margin its rules kept (``metrics.false_alarm_margin_logit``):
    only with a budget and above 0, so that calibrating again keeps it."""
    return {MARGIN_METRIC: margin} if budget is not None and margin > 0.0 else {}


def rule_document(rule: EventRule) -> dict[str, Any]:
    """A rule as the model card stores it (``ModelCard.event_rules``)."""
    return RuleSpec.of(rule).model_dump()


def scored_examples(
    examples: Sequence[ExampleFeatures],
    indices: npt.NDArray[np.intp],
    starts: npt.NDArray[np.intp],
    probs: npt.NDArray[np.float32],
    frame_probs: npt.NDArray[np.float32] | None,
    *,
    profile: FeatureProfile,
) -> list[ScoredExample]:
    """Group grid-window predictions (rows of ``probs``) by example."""
    result = []
    for number, example in enumerate(examples):
        rows = np.flatnonzero(indices == number)
        result.append(
            ScoredExample(
                key=example.path,
                duration_s=example.duration_s,
                start_samples=starts[rows].astype(np.int64) * profile.mel.hop_length,
                scores=probs[rows],
                frame_scores=None if frame_probs is None else frame_probs[rows],
                events=tuple(
                    EvalEvent(example.path, e.label, e.onset_s, e.offset_s)
                    for e in example.events
                    if e.offset_s > e.onset_s
                ),
            )
        )
    return result


def event_metrics(
    examples: Sequence[ScoredExample],
    labels: Sequence[str],
    rules: Mapping[str, EventRule],
    profile: FeatureProfile,
) -> dict[str, Any]:
    """Event-based (collar 0.2 s) and segment-based (1 s) metrics with ``rules``."""
    reference = [e for example in examples for e in example.events if e.label in rules]
    system: list[EvalEvent] = []
    for column, label in enumerate(labels):
        system += _detect(examples, column, rules[label], profile)
    event_based = event_based_metrics(reference=reference, system=system, labels=list(labels))
    segment_based = segment_based_metrics(
        reference=reference,
        system=system,
        labels=list(labels),
        file_durations_s={example.key: example.duration_s for example in examples},
    )

    def summary(metrics: Any, **settings: float) -> dict[str, Any]:
        return {
            **settings,
            "f1": metrics.overall.f1,
            "error_rate": metrics.overall.error_rate,
            "class_wise": {
                label: {"f1": c.f1, "error_rate": c.error_rate, "n_ref": c.n_ref, "n_sys": c.n_sys}
                for label, c in metrics.class_wise.items()
            },
        }

    return {
        "event_based": summary(event_based, t_collar_s=0.2, percentage_of_length=0.5),
        "segment_based": summary(segment_based, segment_length_s=1.0),
    }


def tune_event_rules(
    examples: Sequence[ScoredExample],
    labels: Sequence[str],
    profile: FeatureProfile,
    *,
    false_alarms_per_hour: float | None = None,
    false_alarm_margin: float = 0.0,
    jobs: int | None = None,
) -> dict[str, TunedRule]:
    """:func:`tune_event_rule` for every label (logged at INFO), ``jobs`` labels at a time in
    worker processes (None: one per CPU, for data sets of PARALLEL_MIN_EXAMPLES or more; the
    labels are independent, so the rules are the same either way)."""
    check_false_alarm_margin(false_alarm_margin, budget=false_alarms_per_hour)
    if jobs is None:
        jobs = _cpus() if len(examples) >= PARALLEL_MIN_EXAMPLES else 1
    if jobs < 1:
        raise ConfigurationError(f"jobs={jobs} must be at least 1")
    tasks = [
        (label, _column(examples, column), profile, false_alarms_per_hour, false_alarm_margin)
        for column, label in enumerate(labels)
    ]
    workers = min(jobs, len(tasks))
    # spawn, not fork: train calls this with PyTorch's threads running.
    pool = (
        ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
        if workers > 1
        else None
    )
    tuned: dict[str, TunedRule] = {}
    try:
        results = map(_tune_task, tasks) if pool is None else pool.map(_tune_task, tasks)
        for label, tuned_rule in zip(labels, results, strict=True):
            tuned[label] = tuned_rule
            _log_rule(label, tuned_rule)
    finally:
        if pool is not None:  # on an error the labels still queued are not tuned for nothing
            pool.shutdown(cancel_futures=True)
    return tuned


def _log_rule(label: str, tuned_rule: TunedRule) -> None:
    logger.info(
        "event rule for %s: %s (validation event F1 %.3f, ER %.3f, %d false alarms in "
        "%.2f h of background, %d with the thresholds at the margin)",
        label,
        rule_document(tuned_rule.rule),
        tuned_rule.f1,
        tuned_rule.error_rate,
        tuned_rule.false_alarms,
        tuned_rule.background_hours,
        tuned_rule.margin_false_alarms,
    )


# Below this many validation examples tuning takes seconds, less than starting workers.
PARALLEL_MIN_EXAMPLES = 500


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _column(examples: Sequence[ScoredExample], column: int) -> list[ScoredExample]:
    """The examples with one label's scores only: a worker is sent an eighth of the data."""
    keep = slice(column, column + 1)
    return [
        replace(
            e,
            scores=e.scores[:, keep],
            frame_scores=None if e.frame_scores is None else e.frame_scores[:, keep],
        )
        for e in examples
    ]


def _tune_task(
    task: tuple[str, list[ScoredExample], FeatureProfile, float | None, float],
) -> TunedRule:
    label, examples, profile, per_hour, margin = task
    return tune_event_rule(
        label, 0, examples, profile, false_alarms_per_hour=per_hour, false_alarm_margin=margin
    )


def predict_all(
    model: LoadedModel, inputs: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
    """``model.predict`` over many windows, in batches."""
    scores, frames = [], []
    for lo in range(0, inputs.shape[0], _BATCH):
        batch_scores, batch_frames = model.predict(inputs[lo : lo + _BATCH])
        scores.append(batch_scores)
        if batch_frames is not None:
            frames.append(batch_frames)
    return np.concatenate(scores), np.concatenate(frames) if frames else None


def calibrate_document(
    document: dict[str, Any],
    data: TrainingData,
    scores: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None],
    *,
    dataset_name: str,
    false_alarm_margin: float | None = None,
) -> dict[str, TunedRule]:
    """Tune event rules for ``scores`` (a model's clip and frame scores of ``data``'s
    validation windows, :func:`~soundsentry.training.examples.validation_windows`) and put them,
    with the event and segment metrics they reach, into the card ``document`` (changed in place).
    ``false_alarm_margin`` None keeps the card's (``metrics.false_alarm_margin_logit``, else 0);
    one above 0 is recorded there."""
    labels = tuple(data.labels)
    indices, starts = data.grid("validate")  # the rows of validation_windows
    examples = scored_examples(
        data.examples["validate"], indices, starts, scores[0], scores[1], profile=data.profile
    )
    budget = document.get("false_alarm_budget_per_hour")
    metrics = document.setdefault("metrics", {})
    if false_alarm_margin is None:
        margin = card_margin(metrics)
    else:  # an explicit margin replaces the card's, the retired one too
        margin = false_alarm_margin
        metrics.pop(_SHARE_MARGIN_METRIC, None)
    metrics.pop(MARGIN_METRIC, None)
    margin = check_false_alarm_margin(margin, budget=budget)
    tuned = tune_event_rules(
        examples, labels, data.profile, false_alarms_per_hour=budget, false_alarm_margin=margin
    )
    document["event_rules"] = {label: rule_document(t.rule) for label, t in tuned.items()}
    metrics.update(
        json_safe(
            event_metrics(examples, labels, {k: t.rule for k, t in tuned.items()}, data.profile)
        )
    )
    metrics["event_rules_tuned_on"] = f"{dataset_name}: validate, {len(examples)} examples"
    if budget is not None:
        metrics["false_alarms_per_hour"] = false_alarm_metrics(tuned)
    metrics.update(margin_metric(margin, budget=budget))
    return tuned


def false_alarm_metrics(tuned: Mapping[str, TunedRule]) -> dict[str, Any]:
    """Per label: false alarms on the validation examples without it, and their hours."""
    summary: dict[str, Any] = json_safe(
        {
            label: {
                "false_alarms": t.false_alarms,
                "background_hours": t.background_hours,
                "per_hour": t.false_alarms_per_hour,
                # with the thresholds at the margin: above the budget where no rule kept it
                "at_margin": t.margin_false_alarms,
            }
            for label, t in tuned.items()
        }
    )
    return summary


def retune_document(
    document: dict[str, Any],
    data: TrainingData,
    scores: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None],
    targets: npt.NDArray[np.float32],
    *,
    dataset_name: str,
) -> dict[str, TunedRule]:
    """Tune everything of a card that depends on its model's scores, for new ``scores`` of
    ``data``'s validation windows (``targets``: their clip targets,
    :func:`~soundsentry.training.examples.validation_set`): the window thresholds and the window
    metrics they reach, then the event rules (:func:`calibrate_document`). ``document`` changes in
    place."""
    labels = tuple(data.labels)
    thresholds = calibrate_thresholds(scores[0], targets, labels)
    document["thresholds"] = thresholds
    metrics = document.setdefault("metrics", {})
    metrics["window"] = json_safe(window_metrics(scores[0], targets, labels, thresholds))
    return calibrate_document(document, data, scores, dataset_name=dataset_name)


def calibrate_card(
    card_path: str | Path,
    dataset_dir: str | Path,
    *,
    false_alarms_per_hour: float | None = None,
    false_alarm_margin: float | None = None,
) -> dict[str, TunedRule]:
    """Tune the event rules of the model behind ``card_path`` on ``dataset_dir``'s validation
    split (scored by the ONNX model, as deployed) and write them, with the event and segment
    metrics they reach, into the card (one atomic replace). ``false_alarms_per_hour`` replaces
    the card's ``false_alarm_budget_per_hour`` (None keeps it); ``false_alarm_margin`` is how
    far below its thresholds, in log-odds, a rule must keep the budget too (module docstring;
    None keeps the card's).

    Raises
    ------
    ConfigurationError
        for a card that does not load or a data set without the card's labels.
    """
    from soundsentry.models.model_set import load_model, write_card  # noqa: PLC0415

    if false_alarms_per_hour is not None and not (
        math.isfinite(false_alarms_per_hour) and false_alarms_per_hour >= 0
    ):
        raise ConfigurationError(
            f"false_alarms_per_hour={false_alarms_per_hour} must be a finite number >= 0"
        )
    if false_alarm_margin is not None:
        # Checked against the card's budget too, once the card is read (calibrate_document).
        check_false_alarm_margin(false_alarm_margin)
    path = Path(card_path)
    model = load_model(path)
    labels = tuple(model.card.labels)
    data = load_dataset(dataset_dir, profile=model.profile, labels=labels, splits=("validate",))
    inputs, _, _ = validation_windows(data)
    document = json.loads(path.read_text(encoding="utf-8"))
    if false_alarms_per_hour is not None:
        document["false_alarm_budget_per_hour"] = false_alarms_per_hour
    tuned = calibrate_document(
        document,
        data,
        predict_all(model, inputs),
        dataset_name=Path(dataset_dir).resolve().name,
        false_alarm_margin=false_alarm_margin,
    )
    write_card(path, document)
    return tuned


def json_safe(value: Any) -> Any:
    """NaN and infinities become None (the card is strict JSON); numpy scalars become floats."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value


# -- window thresholds ---------------------------------------------------------------------------

THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))


def _f1_at(
    probs: npt.NDArray[np.floating], targets: npt.NDArray[np.bool_], threshold: float
) -> tuple[int, int, int]:
    predicted = probs >= threshold
    tp = int(np.sum(predicted & targets))
    return tp, int(np.sum(predicted & ~targets)), int(np.sum(~predicted & targets))


def calibrate_thresholds(
    probs: npt.NDArray[np.floating],
    targets: npt.NDArray[np.floating],
    labels: Sequence[str],
    *,
    grid: Sequence[float] = THRESHOLD_GRID,
) -> dict[str, float]:
    """Per label, the threshold of ``grid`` with the best window-level F1.

    ``probs``, ``targets`` : np.ndarray [shape=(n, labels)]; a target counts as positive when
    >= 0.5. Ties go to the lowest threshold; a label whose best F1 is 0 (no positive found or
    none to find) gets 0.5.
    """
    truth = np.asarray(targets) >= 0.5
    result: dict[str, float] = {}
    for column, label in enumerate(labels):
        best, best_f1 = 0.5, 0.0
        for threshold in grid:
            tp, fp, fn = _f1_at(probs[:, column], truth[:, column], threshold)
            f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
            if f1 > best_f1:
                best, best_f1 = float(threshold), f1
        result[label] = best
    return result


def window_metrics(
    probs: npt.NDArray[np.floating],
    targets: npt.NDArray[np.floating],
    labels: Sequence[str],
    thresholds: Mapping[str, float],
) -> dict[str, Any]:
    """Window-level precision, recall, F1 and support per label at ``thresholds``.

    Precision (recall) is None when nothing is predicted (nothing is to be found); F1 is None
    when either is. ``macro_f1`` averages the defined F1 values (None when there is none).
    """
    truth = np.asarray(targets) >= 0.5
    per_label: dict[str, Any] = {}
    f1s = []
    for column, label in enumerate(labels):
        tp, fp, fn = _f1_at(probs[:, column], truth[:, column], thresholds[label])
        precision = tp / (tp + fp) if tp + fp else None
        recall = tp / (tp + fn) if tp + fn else None
        f1 = None
        if precision is not None and recall is not None:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            f1s.append(f1)
        per_label[label] = {
            "threshold": thresholds[label],
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": tp + fn,
        }
    return {"labels": per_label, "macro_f1": float(np.mean(f1s)) if f1s else None}
