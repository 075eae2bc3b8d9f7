"""Hard negatives: background the model still takes for a target, added to its training data.

``soundsentry dataset mine`` mixes long background-only recordings from the **training** split
(the same mixer as ``synth``: 1..N layers of ambience and non-target events, no target), runs
the model over them as ``soundsentry detect`` does, and keeps every stretch where a label scores
at or above ``min_score``: an example of ``duration_s`` centred on the window (one per window
run, the loudest-scoring window of each), written into an existing data set's ``train`` split
as a target-free example. Training again on the data set then sees exactly the background
that fooled the model, at the rate it fooled it; the validation and test material is never
touched, so calibration and the detection benchmark stay honest.

``soundsentry dataset background`` adds hours of the same kind of background-only mixtures to
a data set's **validation** split (from that split's own material): calibration then counts a
label's false alarms over hours of long recordings instead of the 4 s examples alone, so the
false-alarm budget is checked on the kind of audio a deployment lives with.
"""

from __future__ import annotations

import csv
import logging
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from soundsentry.exceptions import ConfigurationError
from soundsentry.training.dataset import (
    MANIFEST_FIELDS,
    ClipLoader,
    Example,
    MixSpec,
    load_catalog,
    make_example,
    manifest_row,
    split_by_group,
    write_flac,
)

__all__ = [
    "MinedNegative",
    "add_background",
    "add_to_dataset",
    "background_mixtures",
    "mine_hard_negatives",
]

logger = logging.getLogger(__name__)

_MIX_S = 30.0
_SAMPLE_RATE_HZ = MixSpec().sample_rate_hz


@dataclass(frozen=True, slots=True)
class MinedNegative:
    """One hard negative: ``audio`` [shape=(n,)] float32, and what fooled the model."""

    audio: npt.NDArray[np.float32]
    sample_rate_hz: int
    label: str
    score: float
    sources: tuple[str, ...]
    licences: tuple[str, ...]


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(first, last + 1) index pairs of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _excerpt(audio: npt.NDArray[np.float32], centre: int, length: int) -> npt.NDArray[np.float32]:
    start = min(max(0, centre - length // 2), max(0, audio.size - length))
    piece = np.zeros(length, dtype=np.float32)
    taken = audio[start : start + length]
    piece[: taken.size] = taken
    return piece


def mine_hard_negatives(
    *,
    model_dir: Path,
    data_dir: Path,
    hours: float,
    seed: int,
    split_seed: int,
    min_score: float = 0.3,
    duration_s: float = 4.0,
) -> list[MinedNegative]:
    """Hard negatives from ``hours`` of training-split background (module docstring).

    ``split_seed`` must be the seed the data set was mixed with, so that only its training
    material is used.

    Raises
    ------
    ConfigurationError
        for a bad model directory, data directory or setting.
    """
    from soundsentry.models.model_set import ModelSet  # noqa: PLC0415
    from soundsentry.pipeline.detect import WindowTrace, detect_file  # noqa: PLC0415

    if not 0.0 < min_score < 1.0:
        raise ConfigurationError(f"min_score must be in (0, 1), got {min_score}")
    models = ModelSet.from_dir(model_dir)
    mixtures = background_mixtures(
        data_dir=data_dir, split="train", split_seed=split_seed, hours=hours, seed=seed
    )
    length = round(duration_s * _SAMPLE_RATE_HZ)
    mined: list[MinedNegative] = []
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "background.flac"
        for example in mixtures:
            write_flac(path, example)
            traces: list[WindowTrace] = []
            detect_file(path, models, traces=traces)
            for trace in traces:
                scores = np.asarray(trace.scores)
                for first, last in _runs(scores >= min_score):
                    best = first + int(np.argmax(scores[first:last]))
                    centre = round(trace.times_s[best] * _SAMPLE_RATE_HZ)
                    mined.append(
                        MinedNegative(
                            audio=_excerpt(example.audio, centre, length),
                            sample_rate_hz=_SAMPLE_RATE_HZ,
                            label=trace.label,
                            score=float(scores[best]),
                            sources=tuple(example.sources),
                            licences=example.licences,
                        )
                    )
    logger.info("mined %d hard negatives from %.2f h of background", len(mined), hours)
    return mined


def background_mixtures(
    *, data_dir: Path, split: str, split_seed: int, hours: float, seed: int
) -> Iterator[Example]:
    """``hours`` of 30 s background-only mixtures (1..N layers of ambience and non-target
    events, as ``synth`` mixes them) from ``split``'s material of the data set mixed with
    ``split_seed``; the same arguments give the same audio.

    Raises
    ------
    ConfigurationError
        for hours outside (0, 100] or an unknown split.
    """
    if not 0.0 < hours <= 100.0:
        raise ConfigurationError(f"hours must be in (0, 100], got {hours}")
    splits = split_by_group(load_catalog(data_dir), seed=split_seed)
    if split not in splits:
        raise ConfigurationError(f"unknown split {split!r}; known: {sorted(splits)}")
    backgrounds = [clip for clip in splits[split] if clip.role != "target"]
    spec = MixSpec(duration_s=_MIX_S, target_probability=0.0, min_ambience_s=4.0)
    loader = ClipLoader(sample_rate_hz=spec.sample_rate_hz)
    # "mine" for the training split keeps the mixtures mined before this function existed.
    purpose = b"mine" if split == "train" else f"background:{split}".encode()
    for index in range(max(1, round(hours * 3600.0 / _MIX_S))):
        rng = np.random.default_rng([seed, zlib.crc32(purpose), index])
        example = make_example(
            rng=rng,
            spec=spec,
            targets=[],
            backgrounds=backgrounds,
            target_label=None,
            loader=loader,
        )
        yield replace(example, split=split)


def add_background(
    dataset_dir: Path, *, data_dir: Path, split: str, split_seed: int, hours: float, seed: int
) -> int:
    """Append :func:`background_mixtures` of ``split`` to that split of ``dataset_dir`` (one
    example per 30 s mixture, written as it is mixed); returns how many."""
    taken = _manifest_paths(dataset_dir)
    return _append(
        dataset_dir,
        background_mixtures(
            data_dir=data_dir, split=split, split_seed=split_seed, hours=hours, seed=seed
        ),
        split=split,
        stem="background",
        taken=taken,
    )


def add_to_dataset(dataset_dir: Path, negatives: Sequence[MinedNegative]) -> int:
    """Append ``negatives`` to ``dataset_dir``'s ``train`` split (FLAC files and manifest
    rows); returns how many. Their sources are the data set's own training material, so its
    LICENCES.txt already covers them."""
    taken = _manifest_paths(dataset_dir)
    examples = (
        Example(
            audio=negative.audio,
            sample_rate_hz=negative.sample_rate_hz,
            labels=frozenset(),
            events=[],
            sources=[f"mined:{negative.label}@{negative.score:.2f}", *negative.sources],
            split="train",
            background_layers=len(negative.sources),
            licences=negative.licences,
        )
        for negative in negatives
    )
    return _append(dataset_dir, examples, split="train", stem="mined", taken=taken)


def _manifest_paths(dataset_dir: Path) -> set[str]:
    manifest = dataset_dir / "manifest.csv"
    if not manifest.is_file():
        raise ConfigurationError(f"{manifest} is missing: add to a 'dataset synth' folder")
    with manifest.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != MANIFEST_FIELDS:
            raise ConfigurationError(
                f"{manifest} has columns {reader.fieldnames}, not {MANIFEST_FIELDS}"
            )
        return {row["path"] for row in reader}


def _append(
    dataset_dir: Path,
    examples: Iterator[Example] | Sequence[Example],
    *,
    split: str,
    stem: str,
    taken: set[str],
) -> int:
    folder = dataset_dir / split
    folder.mkdir(exist_ok=True)
    rows = []
    number = 0
    for example in examples:
        while f"{split}/{stem}-{number:06d}.flac" in taken:
            number += 1
        relative = f"{split}/{stem}-{number:06d}.flac"
        taken.add(relative)
        write_flac(dataset_dir / relative, example)
        rows.append(manifest_row(relative, example))
    with (dataset_dir / "manifest.csv").open("a", newline="", encoding="utf-8") as handle:
        csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS, lineterminator="\n").writerows(rows)
    return len(rows)
