"""Detection as a deployment lives it: long mixtures and hours of background, never heard before.

Everything is built from the development data's **test** split (``split_by_group`` with the
seed the model's training data was mixed with, ``--split-seed``, default 7 as for the default
model): target recordings held out by source, and background recordings no training example
used (the test scenes of ``soundsentry.training.dataset.SCENE_SPLITS``, UrbanSound8K's test folds'
background classes, the held-out household sounds and glass-break backgrounds).

- **Long mixtures** after the DCASE 2017 task 2 protocol: 30 s each, half hold one event of a
  label (a real clip, or a synthetic alarm burst of one or two cycles with varied timing) at an
  event-to-background ratio of -6, 0 or +6 dB, over 1..3 background layers (the first a scene of
  at least 4 s); the other half hold none. Scored per label by event-based F1 and error rate with
  an onset-only 500 ms collar (DCASE 2017 task 2) and with a 200 ms onset + offset collar (offset
  tolerance max(200 ms, half the event)).
- **False alarms per hour**: every event detected in the target-free mixtures (the DCASE half
  and ``--background-hours`` of further background-only mixtures), per label and in total; and
  where they come from: short recordings are looped to fill 30 s and the same clip serves
  several mixtures, so one confusing 4 s clip can give dozens. Per label, the number of
  distinct background clips in the mixtures that raised one, and the clip present in the most
  of them with its share (``false_alarm_sources``).
- **CPU**: classifier (ONNX Runtime, one thread) milliseconds per window, and the real-time
  factor of the whole in-process pipeline (``soundsentry detect``'s, file by file).
- **Operating points**: per label, recall (onset-only 500 ms) and false alarms per hour (of all
  the audio) as the rule's on-threshold moves (:mod:`soundsentry.evaluation.operating`), from the
  same window scores.

Mixtures are made from seeds, so every model is measured on the same audio.

``--devices`` hears every file through a microphone of its own (:class:`Device`, drawn from
the file's name and the seed): a band-pass from 100-400 Hz to 4-7.5 kHz and a spectral tilt of
-2..+2 dB an octave around 1 kHz within the band, as cheap microphones, phones, enclosures and
distance colour a scene. Held-out audio comes from other devices than ``../shared/data``'s; this
measures how much a model's figures depend on the recording chain. Same mixtures, same events.

    .venv/bin/python benchmarks/detection.py [--model models] [--per-cell 6]
        [--background-hours 2] [--split-seed 7] [--devices] [--keep DIR] [--record]

``--record`` writes the figures into the model cards (``metrics.detection_benchmark``).

Last line: one JSON object with every figure.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import replace  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, NamedTuple  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from soundsentry.evaluation.operating import ScoreTrack, operating_points  # noqa: E402
from soundsentry.evaluation.sed_metrics import EvalEvent, event_based_metrics  # noqa: E402
from soundsentry.features.featurizer import Window  # noqa: E402
from soundsentry.models.model_set import ModelSet, WindowScore, write_card  # noqa: E402
from soundsentry.pipeline.detect import WindowTrace, detect_file, score_tracks  # noqa: E402
from soundsentry.training.alarms import PATTERNS  # noqa: E402
from soundsentry.training.dataset import (  # noqa: E402
    TARGET_LABELS,
    ClipLoader,
    Example,
    MixSpec,
    load_catalog,
    make_example,
    split_by_group,
    write_flac,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
EBRS_DB = (-6.0, 0.0, 6.0)
DURATION_S = 30.0


def _rng(seed: int, *words: str | int) -> np.random.Generator:
    return np.random.default_rng(
        [seed, *(w if isinstance(w, int) else zlib.crc32(w.encode()) for w in words)]
    )


DEVICE_LOW_HZ = (100.0, 400.0)
DEVICE_HIGH_HZ = (4000.0, 7500.0)
DEVICE_TILT_DB_PER_OCTAVE = (-2.0, 2.0)


class Device(NamedTuple):
    """A microphone's magnitude response: band-pass corners and a tilt within the band."""

    low_hz: float
    high_hz: float
    tilt_db_per_octave: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Device:
        """Corners log-uniform in :data:`DEVICE_LOW_HZ` and :data:`DEVICE_HIGH_HZ`, the tilt
        uniform in :data:`DEVICE_TILT_DB_PER_OCTAVE`."""
        return cls(
            low_hz=math.exp(rng.uniform(*np.log(DEVICE_LOW_HZ))),
            high_hz=math.exp(rng.uniform(*np.log(DEVICE_HIGH_HZ))),
            tilt_db_per_octave=float(rng.uniform(*DEVICE_TILT_DB_PER_OCTAVE)),
        )

    def gain(self, freqs_hz: np.ndarray) -> np.ndarray:
        """Linear gain at ``freqs_hz``: second-order Butterworth high-pass at ``low_hz`` and
        low-pass at ``high_hz`` (magnitudes), times the tilt around 1 kHz, held flat outside
        the band (a thin microphone loses its edges; it does not boost them); 0 at DC."""
        safe = np.maximum(np.asarray(freqs_hz, dtype=np.float64), 1e-3)
        out = 1.0 / np.sqrt(1.0 + (self.low_hz / safe) ** 4)
        out /= np.sqrt(1.0 + (safe / self.high_hz) ** 4)
        octaves = np.log2(np.clip(safe, self.low_hz, self.high_hz) / 1000.0)
        out *= 10.0 ** (self.tilt_db_per_octave * octaves / 20.0)
        return np.where(np.asarray(freqs_hz) > 0, out, 0.0)


def device_response(
    audio: np.ndarray, *, sample_rate_hz: int, device: Device
) -> npt.NDArray[np.float32]:
    """``audio`` (np.ndarray [shape=(n,)], full scale 1.0) as ``device`` hears it: float32
    [shape=(n,)], filtered with zero phase in the frequency domain over the whole signal (a
    30 s file's end rings into its start by a few milliseconds, harmlessly here)."""
    if sample_rate_hz <= 0:
        raise ValueError(f"sample_rate_hz must be > 0, got {sample_rate_hz}")
    freqs = np.fft.rfftfreq(audio.size, 1.0 / sample_rate_hz)
    spectrum = np.fft.rfft(np.asarray(audio, dtype=np.float64)) * device.gain(freqs)
    return np.fft.irfft(spectrum, n=audio.size).astype(np.float32)


def _through_device(example: Example, device: Device) -> Example:
    """``example`` heard through ``device``: its two parts filtered and added up again (the
    filter is linear, so that is the filtered mixture, for two transforms instead of three),
    otherwise its audio and whichever part it has; all scaled down together when the tilt
    lifted a peak past full scale (so audio = background + target still holds)."""

    def heard(part: npt.NDArray[np.float32] | None) -> npt.NDArray[np.float32] | None:
        if part is None:
            return None
        return device_response(part, sample_rate_hz=example.sample_rate_hz, device=device)

    background, target = heard(example.background_audio), heard(example.target_audio)
    if background is not None and target is not None:
        audio = background + target
    else:
        audio = device_response(example.audio, sample_rate_hz=example.sample_rate_hz, device=device)
    scale = np.float32(min(1.0, 1.0 / max(float(np.abs(audio).max(initial=0.0)), 1e-12)))
    return replace(
        example,
        audio=audio * scale,
        background_audio=None if background is None else background * scale,
        target_audio=None if target is None else target * scale,
    )


class Mixtures(NamedTuple):
    files: list[Path]
    reference: list[EvalEvent]
    empty: set[str]  # names of the target-free files
    sources: dict[str, list[str]]  # file name -> the recordings mixed into it (no fragments)


def build_mixtures(
    out: Path,
    *,
    data_dir: Path,
    labels: Sequence[str],
    per_cell: int,
    background_hours: float,
    split_seed: int,
    seed: int,
    devices: bool = False,
) -> Mixtures:
    """Write the mixtures (each through a :class:`Device` of its own with ``devices``)."""
    test = split_by_group(load_catalog(data_dir), seed=split_seed)["test"]
    targets = [c for c in test if c.role == "target"]
    backgrounds = [c for c in test if c.role != "target"]
    loader = ClipLoader(sample_rate_hz=16_000)
    base = MixSpec(
        duration_s=DURATION_S,
        target_probability=1.0,
        alarm_variety=1.0,
        alarm_burst_share=1.0,
        burst_share=0.0,  # whole clips' active regions, whatever the mixer's default
        min_ambience_s=4.0,
    )
    files: list[Path] = []
    reference: list[EvalEvent] = []
    empty: set[str] = set()
    sources: dict[str, list[str]] = {}

    def write(name: str, rng: np.random.Generator, spec: MixSpec, label: str | None) -> None:
        example = make_example(
            rng=rng,
            spec=spec,
            targets=targets,
            backgrounds=backgrounds,
            target_label=label,
            loader=loader,
        )
        path = out / f"{name}.flac"
        if devices:
            example = _through_device(example, Device.draw(_rng(seed, "device", name)))
        write_flac(path, example)
        files.append(path)
        sources[path.name] = sorted({ref.split("#")[0] for ref in example.sources})
        reference.extend(
            EvalEvent(path.name, e.label, e.onset_s, e.offset_s) for e in example.events
        )
        if not example.events:
            empty.add(path.name)

    cells = 0
    for label in labels:
        for ebr in EBRS_DB:
            spec = replace(base, snr_db=(ebr, ebr))
            for k in range(per_cell):
                write(
                    f"mix-{label}-{ebr:+.0f}dB-{k:02d}",
                    _rng(seed, label, int(ebr) + 100, k),
                    spec,
                    label,
                )
                cells += 1
    total_empty = max(cells, math.ceil(background_hours * 3600.0 / DURATION_S))
    for k in range(total_empty):
        write(f"background-{k:04d}", _rng(seed, "background", k), base, None)
    return Mixtures(files, reference, empty, sources)


def false_alarm_sources(
    system: Sequence[EvalEvent], empty: set[str], sources: dict[str, list[str]], label: str
) -> dict[str, Any]:
    """Where ``label``'s false alarms come from (module docstring)."""
    false = [e for e in system if e.label == label and e.file_id in empty]
    clips = Counter(clip for e in false for clip in sources[e.file_id])
    top, count = clips.most_common(1)[0] if clips else (None, 0)
    return {
        "false_alarms": len(false),
        "files": len({e.file_id for e in false}),
        "clips": len(clips),
        "top_clip": top,
        "top_clip_share": round(count / len(false), 4) if false else None,
    }


def _label_scores(
    reference: Sequence[EvalEvent], system: Sequence[EvalEvent], labels: Sequence[str]
) -> dict[str, dict[str, float]]:
    onset = event_based_metrics(
        reference=reference, system=system, labels=labels, t_collar_s=0.5, evaluate_offset=False
    )
    both = event_based_metrics(
        reference=reference, system=system, labels=labels, t_collar_s=0.2, percentage_of_length=0.5
    )
    result: dict[str, dict[str, float]] = {}
    for label in labels:
        a, b = onset.class_wise[label], both.class_wise[label]
        result[label] = {
            "events": a.n_ref,
            "detected": a.n_sys,
            "f1_onset_500ms": a.f1,
            "er_onset_500ms": a.error_rate,
            "recall_onset_500ms": a.recall,
            "f1_onset_offset_200ms": b.f1,
            "er_onset_offset_200ms": b.error_rate,
        }
    result["overall"] = {
        "events": float(len(reference)),
        "detected": float(len(system)),
        "f1_onset_500ms": onset.overall.f1,
        "er_onset_500ms": onset.overall.error_rate,
        "recall_onset_500ms": onset.overall.recall,
        "f1_onset_offset_200ms": both.overall.f1,
        "er_onset_offset_200ms": both.overall.error_rate,
    }
    return result


def run_detection(
    models: ModelSet, files: Sequence[Path]
) -> tuple[list[EvalEvent], list[ScoreTrack], float, float, int]:
    """Detect over every file; (events, score tracks, pipeline CPU s, classifier CPU s, windows)."""
    classify_cpu = 0.0
    windows = 0
    score = models.score

    def timed_score(batch: Sequence[Window]) -> list[WindowScore]:
        nonlocal classify_cpu, windows
        before = time.thread_time()
        result = score(batch)
        classify_cpu += time.thread_time() - before
        windows += len(batch)
        return result

    # A wrapper in the instance's place, so every path through detect_file is timed.
    models.score = timed_score  # type: ignore[method-assign, assignment]
    system: list[EvalEvent] = []
    tracks: list[ScoreTrack] = []
    cpu_before = time.process_time()
    try:
        for path in files:
            traces: list[WindowTrace] = []
            system += [
                EvalEvent(path.name, e.label, e.onset_s, e.offset_s)
                for e in detect_file(path, models, traces=traces)
            ]
            tracks += score_tracks(path.name, traces, models)
    finally:
        models.score = score  # type: ignore[method-assign]
    detect_cpu = time.process_time() - cpu_before
    return system, tracks, detect_cpu, classify_cpu, windows


def print_table(
    labels: Sequence[str], scores: dict[str, dict[str, float]], summary: dict[str, Any]
) -> None:
    models = ", ".join(f"{name} {version}" for name, version in summary["models"].items())
    print(f"model directory {summary['model']}: {models}")
    print(
        f"{summary['long_mixtures']} long mixtures (DCASE 2017 task 2 protocol, half with an "
        f"event) and {summary['background_hours']:.2f} h of target-free audio in all"
    )
    columns = ("events", "found", "F1@0.5s", "ER@0.5s", "F1@0.2s", "ER@0.2s", "FA/h")
    print(f"{'label':<14}" + "".join(f"{c:>9}" for c in columns))
    keys = (
        "events",
        "detected",
        "f1_onset_500ms",
        "er_onset_500ms",
        "f1_onset_offset_200ms",
        "er_onset_offset_200ms",
        "false_alarms_per_hour",
    )
    for label in [*labels, "overall"]:
        row = scores[label]
        print(
            f"{label:<14}"
            + "".join(
                f"{row[k]:>9.0f}" if k in ("events", "detected") else f"{row[k]:>9.3f}"
                for k in keys
            )
        )
    for label in labels:
        where = summary["false_alarm_sources"][label]
        if where["false_alarms"]:
            print(
                f"{label}: {where['false_alarms']} false alarms in {where['files']} files; "
                f"{where['top_clip_share']:.0%} with {where['top_clip']}"
            )
    print(
        f"classifier {summary['classifier_ms_per_window']:.3f} ms of CPU per window; whole "
        f"pipeline {summary['pipeline_real_time_factor']:.0f}x real time on one core"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models", help="model directory")
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--per-cell", type=int, default=6, help="mixtures per label and EBR")
    parser.add_argument("--background-hours", type=float, default=2.0)
    parser.add_argument("--split-seed", type=int, default=7)
    parser.add_argument("--seed", type=int, default=2017, help="seed of the mixtures")
    parser.add_argument(
        "--devices", action="store_true", help="hear each file through a random microphone"
    )
    parser.add_argument("--keep", type=Path, default=None, help="write the mixtures here")
    parser.add_argument(
        "--record",
        action="store_true",
        help="also write the figures (without the operating points) into each card's "
        "metrics.detection_benchmark",
    )
    args = parser.parse_args(argv)
    if args.record and args.devices:
        parser.error(
            "--record writes the card's figures, which are the recordings' own: not with --devices"
        )

    models = ModelSet.from_dir(args.model)
    reported = sorted(set().union(*models.reported.values()))
    labels = [label for label in reported if label in set(TARGET_LABELS) | set(PATTERNS)]
    with tempfile.TemporaryDirectory() as scratch:
        out = args.keep or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        files, reference, empty, sources = build_mixtures(
            out,
            data_dir=args.data_dir,
            labels=labels,
            per_cell=args.per_cell,
            background_hours=args.background_hours,
            split_seed=args.split_seed,
            seed=args.seed,
            devices=args.devices,
        )
        system, tracks, detect_cpu, classify_cpu, windows = run_detection(models, files)
    system = [e for e in system if e.label in labels]
    hours = len(empty) * DURATION_S / 3600.0
    # The DCASE half: every event mixture and as many of the target-free ones.
    dcase = {p.name for p in files if p.name.startswith("mix-")}
    dcase |= set(sorted(empty)[: len(dcase)])
    scores = _label_scores(
        [e for e in reference if e.file_id in dcase],
        [e for e in system if e.file_id in dcase],
        labels,
    )
    where = {label: false_alarm_sources(system, empty, sources, label) for label in labels}
    for label in labels:
        scores[label]["false_alarms_per_hour"] = where[label]["false_alarms"] / hours
    scores["overall"]["false_alarms_per_hour"] = (
        sum(1 for e in system if e.file_id in empty) / hours
    )
    curves = operating_points(
        [t for t in tracks if t.label in labels],
        reference,
        hours=len(files) * DURATION_S / 3600.0,
    )
    summary: dict[str, Any] = {
        "benchmark": "detection",
        "model": str(args.model),
        "models": {m.name: m.card.version for m in models.models},
        "split_seed": args.split_seed,
        "seed": args.seed,
        "devices": args.devices,
        "long_mixtures": len(dcase),
        "background_hours": round(hours, 3),
        "labels": {k: {n: _finite(v) for n, v in row.items()} for k, row in scores.items()},
        "false_alarm_sources": where,
        "classifier_ms_per_window": round(1000.0 * classify_cpu / max(windows, 1), 4),
        "pipeline_real_time_factor": round(len(files) * DURATION_S / max(detect_cpu, 1e-9), 1),
        "operating_points": {
            label: [
                {
                    "on_threshold": p.on_threshold,
                    "recall": _finite(p.recall),
                    "false_alarms_per_hour": _finite(p.false_alarms_per_hour),
                }
                for p in points
            ]
            for label, points in curves.items()
        },
    }
    print_table(labels, scores, summary)
    if args.record:
        record(args.model, summary, argv if argv is not None else sys.argv[1:])
    print(json.dumps(summary, separators=(",", ":")))
    return 0


def record(model_dir: Path, summary: dict[str, Any], argv: Sequence[str]) -> None:
    """Put the figures into every card of ``model_dir`` (the card states how it detects)."""
    figures = {k: v for k, v in summary.items() if k not in ("operating_points", "model")}
    figures["date"] = datetime.now(UTC).date().isoformat()
    figures["command"] = " ".join(["benchmarks/detection.py", *argv])
    for card in sorted(model_dir.glob("*.json")):
        document = json.loads(card.read_text(encoding="utf-8"))
        document.setdefault("metrics", {})["detection_benchmark"] = figures
        write_card(card, document)


def _finite(value: float) -> float | None:
    value = float(value)
    return round(value, 4) if math.isfinite(value) else None


if __name__ == "__main__":
    sys.exit(main())
