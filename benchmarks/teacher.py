"""Does the pretrained teacher (BirdNET V2.4) pay as a second-stage confirmer? With and without.

The cascade measured: the live model scores every window; a window whose score for some label
reaches ``--candidate`` is a candidate, and the teacher hears the 3 s of audio that end with it
(resampled 16 -> 48 kHz; trailing, so confirming adds no wait). A logistic head per label on the
teacher's 1,024-d embedding and its 11 non-bird logits gives the teacher's opinion, and a
two-input logistic combiner per label (the live score's logit and the head's) gives the
candidate's new score; windows that are no candidate keep the live score.

Nothing is fitted on the audio it is measured on:

- heads: contexts of the training split of ``--dataset`` (a ``soundsentry dataset synth``
  folder: every example, two contexts per event, one per target-free clip, every 3 s of the
  long background mixtures);
- combiners: the validation split's candidate windows, scored by the live model;
- measured: the detection benchmark's audio (``benchmarks/detection.py``, same seeds and
  protocol, test split held out by source): window average precision per label, and per label
  the best recall (onset-only 500 ms collar) at a false-alarm rate of at most 0.5, 1 and
  3 per hour of all the audio, as the event rule's on-threshold moves
  (:mod:`soundsentry.evaluation.operating`), with and without the confirmer; the share of background
  windows escalated and the teacher's CPU per call.

    .venv/bin/python benchmarks/teacher.py --teacher birdnet_v24.onnx --dataset DIR
        [--model models] [--background-hours 2] [--candidate 0.05 0.3]

The teacher file is built by ``tools/birdnet/build_onnx.py``. The heads' inputs are kept in
``DIR/teacher-contexts-*.npz`` for the next run. Last line: one JSON object.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
import onnxruntime as ort  # noqa: E402
import soxr  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import average_precision_score  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detection import DATA, ROOT, build_mixtures  # noqa: E402

from soundsentry.audio.pcm import load_audio  # noqa: E402
from soundsentry.evaluation.operating import ScoreTrack, operating_points  # noqa: E402
from soundsentry.evaluation.sed_metrics import EvalEvent  # noqa: E402
from soundsentry.models.model_set import ModelCard, ModelSet  # noqa: E402
from soundsentry.models.trackers import event_rule_for  # noqa: E402
from soundsentry.pipeline.detect import WindowTrace, detect_file  # noqa: E402

RATE = 16_000
CONTEXT = 3 * RATE
TEACHER_RATE = 48_000
# BirdNET V2.4 logits of its non-bird classes (tools/birdnet/README.md).
NON_BIRD = {
    "Dog": 1949,
    "Engine": 2143,
    "Environmental": 2152,
    "Fireworks": 2325,
    "Gun": 2609,
    "Human non-vocal": 2818,
    "Human vocal": 2819,
    "Human whistle": 2820,
    "Noise": 3927,
    "Power tools": 4862,
    "Siren": 5560,
}
BUDGETS_PER_HOUR = (0.5, 1.0, 3.0)
THRESHOLDS = (*np.round(np.arange(0.05, 0.95, 0.05), 2), 0.95, 0.97, 0.98, 0.99, 0.995)

Floats = npt.NDArray[np.float64]


class Teacher:
    """BirdNET as features: 3 s contexts at 16 kHz in, embedding + non-bird logits out."""

    def __init__(self, path: Path) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.cpu_s = 0.0
        self.calls = 0

    def features(self, contexts: npt.NDArray[np.float32]) -> Floats:
        before = time.thread_time()
        up = np.stack([soxr.resample(c, RATE, TEACHER_RATE) for c in contexts]).astype(np.float32)
        parts = []
        for start in range(0, len(up), 16):
            logits, embedding = self._session.run(
                ["logits", "embedding"], {"audio": up[start : start + 16]}
            )
            parts.append(np.concatenate([embedding, logits[:, list(NON_BIRD.values())]], axis=1))
        self.cpu_s += time.thread_time() - before
        self.calls += len(contexts)
        return np.concatenate(parts).astype(np.float64)


def context_at(audio: npt.NDArray[np.float32], end: int) -> npt.NDArray[np.float32]:
    """The 3 s that end at sample ``end``, zero-padded at the start of a recording."""
    context = np.zeros(CONTEXT, np.float32)
    part = audio[max(0, end - CONTEXT) : end]
    context[CONTEXT - part.size :] = part
    return context


def read_mono(path: Path) -> npt.NDArray[np.float32]:
    audio, rate = load_audio(path)
    if rate != RATE:
        raise SystemExit(f"{path}: {rate} Hz, the benchmark expects {RATE}")
    return audio


@dataclass
class Scored:
    """The live model's window scores of one recording and its reference events."""

    name: str
    path: Path
    starts: npt.NDArray[np.int64]
    scores: Floats  # [windows, labels]
    events: list[EvalEvent]


def live_scores(
    models: ModelSet, labels: Sequence[str], files: Sequence[tuple[Path, list[EvalEvent]]]
) -> list[Scored]:
    result = []
    for path, events in files:
        traces: list[WindowTrace] = []
        detect_file(path, models, traces=traces)
        by_label = {t.label: t for t in traces}
        starts = np.asarray(by_label[labels[0]].start_samples, dtype=np.int64)
        scores = np.stack([np.asarray(by_label[label].scores) for label in labels], axis=1)
        result.append(Scored(path.name, path, starts, scores, events))
    return result


def window_truth(item: Scored, labels: Sequence[str], window_samples: int) -> Floats:
    truth = np.zeros((item.starts.size, len(labels)))
    begin = item.starts / RATE
    end = (item.starts + window_samples) / RATE
    for event in item.events:
        overlap = (begin < event.offset_s) & (end > event.onset_s)
        truth[overlap, labels.index(event.label)] = 1.0
    return truth


def manifest_files(dataset: Path, split: str) -> list[tuple[Path, list[EvalEvent]]]:
    with (dataset / "manifest.csv").open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == split]
    files = []
    for row in rows:
        path = dataset / row["path"]
        events = [
            EvalEvent(path.name, label, float(on), float(off))
            for label, on, off in json.loads(row["events"] or "[]")
        ]
        files.append((path, events))
    return files


def head_training_set(
    teacher: Teacher, files: Sequence[tuple[Path, list[EvalEvent]]], labels: Sequence[str]
) -> tuple[Floats, Floats]:
    rng = np.random.default_rng(0)
    features, truth = [], []
    contexts: list[npt.NDArray[np.float32]] = []
    targets: list[Floats] = []
    for number, (path, events) in enumerate(files):
        audio = read_mono(path)
        seconds = audio.size / RATE
        if events:  # windows that overlap the event's first second, twice per event
            ends = [
                float(
                    np.clip(
                        e.onset_s + rng.uniform(0.2, min(1.0, e.offset_s - e.onset_s) + 0.8),
                        1.0,
                        seconds,
                    )
                )
                for e in events
                for _ in range(2)
            ]
        elif seconds > 30.0:
            ends = list(np.arange(3.0, seconds, 3.0))
        else:
            ends = [float(rng.uniform(1.0, seconds))]
        for end in ends:
            contexts.append(context_at(audio, int(end * RATE)))
            target = np.zeros(len(labels))
            for e in events:
                if e.label in labels and e.onset_s < end and e.offset_s > end - 1.0:
                    target[labels.index(e.label)] = 1.0
            targets.append(target)
        if len(contexts) >= 256 or number == len(files) - 1:
            features.append(teacher.features(np.stack(contexts)))
            truth.extend(targets)
            contexts, targets = [], []
    return np.concatenate(features), np.stack(truth)


@dataclass
class Heads:
    mean: Floats
    scale: Floats
    models: list[LogisticRegression]

    @classmethod
    def fit(cls, x: Floats, y: Floats) -> Heads:
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        z = (x - mean) / scale
        return cls(
            mean,
            scale,
            [LogisticRegression(C=0.01, max_iter=2000).fit(z, y[:, j]) for j in range(y.shape[1])],
        )

    def logits(self, x: Floats) -> Floats:
        z = (x - self.mean) / self.scale
        return np.stack([m.decision_function(z) for m in self.models], axis=1)


def _logit(p: Floats) -> Floats:
    q = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(q / (1 - q))


def candidates_with_teacher(
    items: Sequence[Scored], teacher: Teacher, heads: Heads, candidate: float
) -> dict[str, tuple[npt.NDArray[np.intp], Floats]]:
    """Per recording: the candidate windows and the head's logits for them."""
    result = {}
    for item in items:
        rows = np.flatnonzero((item.scores >= candidate).any(axis=1))
        if rows.size == 0:
            continue
        audio = read_mono(item.path)
        window_end = item.starts[rows] + RATE  # the live model's windows are 1 s
        contexts = np.stack([context_at(audio, int(end)) for end in window_end])
        result[item.name] = (rows, heads.logits(teacher.features(contexts)))
    return result


def candidate_inputs(
    item: Scored, rows: npt.NDArray[np.intp], head: Floats, column: int, candidate: float
) -> tuple[npt.NDArray[np.intp], Floats]:
    """The rows of ``item`` that are candidates for label ``column``, and the combiner's
    inputs for them: the live score's logit and the head's."""
    keep = item.scores[rows, column] >= candidate
    chosen = rows[keep]
    return chosen, np.stack([_logit(item.scores[chosen, column]), head[keep, column]], axis=1)


def fit_combiners(
    validation: Sequence[Scored],
    found: dict[str, tuple[npt.NDArray[np.intp], Floats]],
    labels: Sequence[str],
    window_samples: int,
    candidate: float,
) -> list[LogisticRegression | None]:
    """Per label: the live score's logit and the head's logit -> P(label) of a candidate
    (None where the validation candidates hold one class only: the live score stays)."""
    scored = [item for item in validation if item.name in found]
    truths = [window_truth(item, labels, window_samples) for item in scored]
    combiners: list[LogisticRegression | None] = []
    for j, label in enumerate(labels):
        inputs, truth = [], []
        for item, item_truth in zip(scored, truths, strict=True):
            chosen, features = candidate_inputs(item, *found[item.name], j, candidate)
            inputs.append(features)
            truth.append(item_truth[chosen, j])
        target = np.concatenate(truth)
        if np.unique(target).size < 2:
            print(f"{label}: validation candidates of one class only, the live score stays")
            combiners.append(None)
            continue
        combiners.append(LogisticRegression().fit(np.concatenate(inputs), target))
    return combiners


def confirm(
    test: Sequence[Scored],
    found: dict[str, tuple[npt.NDArray[np.intp], Floats]],
    combiners: Sequence[LogisticRegression | None],
    candidate: float,
) -> dict[str, Floats]:
    """The cascade's scores: candidates re-scored by their combiner, the rest kept."""
    confirmed: dict[str, Floats] = {}
    for item in test:
        merged = item.scores.copy()
        if item.name in found:
            for j, combiner in enumerate(combiners):
                chosen, features = candidate_inputs(item, *found[item.name], j, candidate)
                if combiner is None or chosen.size == 0:
                    continue
                merged[chosen, j] = combiner.predict_proba(features)[:, 1]
        confirmed[item.name] = merged
    return confirmed


def compare(
    test: Sequence[Scored],
    systems: dict[str, dict[str, Floats]],
    reference: Sequence[EvalEvent],
    card: ModelCard,
) -> dict[str, dict[str, float]]:
    """Per label and system: window average precision and recall within each budget."""
    labels = list(card.labels)
    profile = card.profile
    window, hop = profile.window_samples, profile.hop_frames * profile.mel.hop_length
    hours = len(test) * 30.0 / 3600.0
    truth = np.concatenate([window_truth(item, labels, window) for item in test])
    rows: dict[str, dict[str, float]] = {label: {} for label in labels}
    for name, score_of in systems.items():
        tracks = [
            ScoreTrack(
                item.name,
                event_rule_for(card, label),
                item.starts,
                score_of[item.name][:, j],
                RATE,
                window,
                hop,
            )
            for item in test
            for j, label in enumerate(labels)
        ]
        curves = operating_points(tracks, reference, hours=hours, thresholds=THRESHOLDS)
        for j, label in enumerate(labels):
            flat = np.concatenate([score_of[item.name][:, j] for item in test])
            ap = float(average_precision_score(truth[:, j], flat))
            rows[label][f"window_ap_{name}"] = round(ap, 3)
            for budget in BUDGETS_PER_HOUR:
                ok = [p.recall for p in curves[label] if p.false_alarms_per_hour <= budget]
                rows[label][f"recall_at_{budget:g}_per_hour_{name}"] = round(
                    max(ok, default=0.0), 3
                )
    return rows


def print_table(rows: dict[str, dict[str, float]]) -> None:
    print(
        f"{'label':<12} {'AP live':>8} {'cascade':>8}"
        + "".join(f"{f'rec@{b:g}/h live':>16}{'cascade':>9}" for b in BUDGETS_PER_HOUR)
    )
    for label, row in rows.items():
        print(
            f"{label:<12} {row['window_ap_live']:>8.3f} {row['window_ap_cascade']:>8.3f}"
            + "".join(
                f"{row[f'recall_at_{b:g}_per_hour_live']:>16.2f}"
                f"{row[f'recall_at_{b:g}_per_hour_cascade']:>9.2f}"
                for b in BUDGETS_PER_HOUR
            )
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--teacher", type=Path, required=True, help="birdnet_v24.onnx")
    parser.add_argument(
        "--dataset", type=Path, required=True, help="soundsentry dataset synth folder"
    )
    parser.add_argument("--model", type=Path, default=ROOT / "models")
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--background-hours", type=float, default=2.0)
    parser.add_argument(
        "--candidate", type=float, nargs="+", default=[0.05, 0.3], help="candidate thresholds"
    )
    args = parser.parse_args(argv)

    models = ModelSet.from_dir(args.model)
    card = models.models[0].card
    labels = list(card.labels)
    teacher = Teacher(args.teacher)

    # The heads' inputs take minutes to make: kept beside the data set, per teacher file and
    # label set, so a second run (another --candidate) starts at the combiners.
    key = zlib.crc32(f"{args.teacher.stat().st_size}:{','.join(labels)}".encode())
    cached = args.dataset / f"teacher-contexts-{args.teacher.stem}-{key:08x}.npz"
    if cached.exists():
        stored = np.load(cached)
        x, y = stored["x"], stored["y"]
    else:
        x, y = head_training_set(teacher, manifest_files(args.dataset, "train"), labels)
        np.savez(cached, x=x, y=y)
    heads = Heads.fit(x, y)
    print(f"heads fitted on {len(x)} training contexts", flush=True)
    validation = live_scores(models, labels, manifest_files(args.dataset, "validate"))
    lowest = min(args.candidate)
    found = candidates_with_teacher(validation, teacher, heads, lowest)
    window_samples = card.profile.window_samples
    combiners = {
        c: fit_combiners(validation, found, labels, window_samples, c) for c in args.candidate
    }
    print("combiners fitted on the validation split's candidates", flush=True)

    teacher.cpu_s, teacher.calls = 0.0, 0
    with tempfile.TemporaryDirectory() as scratch:
        files, reference, empty, _ = build_mixtures(
            Path(scratch),
            data_dir=args.data_dir,
            labels=labels,
            per_cell=6,
            background_hours=args.background_hours,
            split_seed=7,
            seed=2017,
        )
        by_file: dict[str, list[EvalEvent]] = {}
        for event in reference:
            by_file.setdefault(event.file_id, []).append(event)
        test = live_scores(models, labels, [(p, by_file.get(p.name, [])) for p in files])
        found = candidates_with_teacher(test, teacher, heads, lowest)
    live = {item.name: item.scores for item in test}
    background = [item for item in test if item.name in empty]
    summary: dict[str, object] = {
        "benchmark": "teacher_confirmer",
        "model": str(args.model),
        "hours": round(len(test) * 30.0 / 3600.0, 3),
        "teacher_ms_per_call": round(1000.0 * teacher.cpu_s / max(1, teacher.calls), 2),
    }
    for candidate in args.candidate:
        rows = compare(
            test,
            {"live": live, "cascade": confirm(test, found, combiners[candidate], candidate)},
            reference,
            card,
        )
        escalated = sum(int((i.scores >= candidate).any(axis=1).sum()) for i in background)
        share = escalated / max(1, sum(i.starts.size for i in background))
        print(f"candidates at a live score >= {candidate:g}: {share:.1%} of background windows")
        print_table(rows)
        summary[f"candidate_{candidate:g}"] = {
            "escalated_share_of_background_windows": round(share, 4),
            "labels": rows,
        }
    print(f"teacher {summary['teacher_ms_per_call']} ms of CPU per call (with resampling)")
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
