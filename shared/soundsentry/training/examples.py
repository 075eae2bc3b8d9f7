"""Training examples, featurised once for a profile and label list: what every training,
calibration, quantization and composition step reads (:func:`load_dataset`).

Data
----
The data set is a folder written by :func:`soundsentry.training.dataset.synthesize`:
``manifest.csv`` (path, split, labels, events as JSON ``[[label, onset_s, offset_s], ...]``,
licences) and the FLAC files. The ``train`` split trains, ``validate`` stops training early,
calibrates the thresholds and gives the card's metrics; ``test`` is left alone (``soundsentry
evaluate``).

Each example is read (resampled to the profile's rate with soxr when its rate differs) and cut
into AudioChunks, and a :class:`~soundsentry.features.featurizer.Featurizer` computes its frames
once: the example is one window of a profile that covers the whole example (the model profile's mel
spec and band, not standardised). The model's windows are slices of those frames, so the grid
windows (frame ``k * hop_frames`` on) equal what the featurizer service emits for the example, and
training can also cut windows off the grid (time shift). Everything is kept in memory: ``bands x
frames`` float32 per example (51 KB for 4 s at the default profile).

Labels of a window
------------------
A window speaks for its central hop segment (:func:`soundsentry.events.tracker.segment_bounds`): a
label is positive for a window when that label's events cover at least 50 % of the segment
(the overlaps of all its events with the segment are added up). Labels of the data set that are
not trained are ignored (their windows are negatives). Frame ``f`` of a window (samples
``[f * hop_length, f * hop_length + n_fft)`` of the window) is positive when the events cover
at least 50 % of the frame; those are the targets of the optional frame-level output.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from soundsentry.audio.pcm import load_audio, s16_chunks, to_s16
from soundsentry.events.tracker import segment_bounds
from soundsentry.exceptions import ConfigurationError, SoundSentryError
from soundsentry.features.featurizer import FeatureProfile, Featurizer
from soundsentry.training.dataset import SPLITS, EventSpan

__all__ = [
    "DEFAULT_PROFILE",
    "ExampleFeatures",
    "TrainingData",
    "WindowBatch",
    "cut_windows",
    "frame_targets",
    "load_dataset",
    "segment_targets",
    "standardize",
    "validation_batch",
    "validation_set",
    "validation_windows",
]

logger = logging.getLogger(__name__)

DEFAULT_PROFILE = FeatureProfile("full-16k")
# Share of the segment (or frame) the events of a label must cover for it to be positive.
_MIN_COVER = 0.5
_CHUNK_S = 1.0  # AudioChunk length when feeding the featurizer
_UNCLEAR_LICENCE = "no licence stated"
_NON_COMMERCIAL_DATASET = "urbansound8k_subset"


# ---------------------------------------------------------------------------------------------
# Window labels


def _cover(
    begins: npt.NDArray[np.float64],
    ends: npt.NDArray[np.float64],
    events: Sequence[EventSpan],
    labels: Sequence[str],
    *,
    sample_rate_hz: int,
) -> npt.NDArray[np.float32]:
    """1.0 where a label's events cover >= 50 % of ``[begins, ends)`` (samples) [n, labels]."""
    covered = np.zeros((begins.size, len(labels)), dtype=np.float64)
    index = {label: i for i, label in enumerate(labels)}
    for event in events:
        column = index.get(event.label)
        if column is None:
            continue
        onset, offset = event.onset_s * sample_rate_hz, event.offset_s * sample_rate_hz
        covered[:, column] += np.clip(np.minimum(ends, offset) - np.maximum(begins, onset), 0, None)
    return (covered >= _MIN_COVER * (ends - begins)[:, None]).astype(np.float32)


def segment_targets(
    start_samples: npt.ArrayLike,
    events: Sequence[EventSpan],
    labels: Sequence[str],
    *,
    sample_rate_hz: int,
    window_samples: int,
    hop_samples: int,
) -> npt.NDArray[np.float32]:
    """Multi-label targets of windows from events (module docstring, "Labels of a window").

    Parameters
    ----------
    start_samples : np.ndarray [shape=(n,)], int
        Window starts, in samples at ``sample_rate_hz`` since the example's start.
    events : sequence of EventSpan
        Onsets and offsets in seconds; labels not in ``labels`` are ignored.

    Returns
    -------
    np.ndarray [shape=(n, len(labels))], float32
        1.0 where the label's events cover at least half of the window's central hop segment.
    """
    starts = np.asarray(start_samples, dtype=np.int64)
    begins = np.array(
        [
            segment_bounds(int(s), window_samples=window_samples, hop_samples=hop_samples)[0]
            for s in starts
        ],
        dtype=np.float64,
    )
    return _cover(begins, begins + hop_samples, events, labels, sample_rate_hz=sample_rate_hz)


def frame_targets(
    num_frames: int,
    events: Sequence[EventSpan],
    labels: Sequence[str],
    *,
    sample_rate_hz: int,
    hop_length: int,
    n_fft: int,
) -> npt.NDArray[np.float32]:
    """Targets of frames ``[f * hop_length, f * hop_length + n_fft)``: [num_frames, labels].

    1.0 where the label's events cover at least half of the frame.
    """
    begins = np.arange(num_frames, dtype=np.float64) * hop_length
    return _cover(begins, begins + n_fft, events, labels, sample_rate_hz=sample_rate_hz)


# ---------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True, slots=True)
class _Row:
    path: str
    split: str
    labels: frozenset[str]
    events: tuple[EventSpan, ...]
    licences: tuple[str, ...]


def _read_manifest(dataset_dir: Path) -> list[_Row]:
    manifest = dataset_dir / "manifest.csv"
    if not manifest.is_file():
        raise ConfigurationError(
            f"{manifest} is missing: give a folder written by 'soundsentry dataset synth'"
        )
    rows = []
    with manifest.open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            where = f"{manifest}:{line}"
            try:
                split = row["split"]
                events = tuple(
                    EventSpan(str(label), float(onset), float(offset))
                    for label, onset, offset in json.loads(row["events"] or "[]")
                )
                rows.append(
                    _Row(
                        path=row["path"],
                        split=split,
                        labels=frozenset(x for x in (row["labels"] or "").split(";") if x),
                        events=events,
                        licences=tuple(x for x in (row.get("licences") or "").split(";") if x),
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigurationError(f"{where}: malformed manifest row ({exc!r})") from exc
            if split not in SPLITS:
                raise ConfigurationError(f"{where}: unknown split {split!r}; known: {SPLITS}")
    return rows


@dataclass(frozen=True, slots=True, eq=False)
class ExampleFeatures:
    """One example, featurised once.

    ``log_mel_db`` : np.ndarray [shape=(bands, n_frames)], float32, the profile's band, not
    standardised. ``window_targets`` : [shape=(n_frames - window_frames + 1, labels)], float32,
    the targets of the window starting at each frame. ``frame_targets`` :
    [shape=(n_frames, labels)], float32. ``events`` holds the trained labels' events only.
    """

    path: str
    split: str
    log_mel_db: npt.NDArray[np.float32]
    window_targets: npt.NDArray[np.float32]
    frame_targets: npt.NDArray[np.float32]
    events: tuple[EventSpan, ...]
    duration_s: float

    @property
    def num_starts(self) -> int:
        return int(self.window_targets.shape[0])


@dataclass(frozen=True, eq=False)
class TrainingData:
    """A data set featurised for one profile and label list (see :func:`load_dataset`)."""

    dataset_dir: Path
    profile: FeatureProfile
    labels: tuple[str, ...]
    examples: dict[str, list[ExampleFeatures]]  # by split
    training_data: list[dict[str, str]]  # the card's sources and licences
    licence: str  # the card's licence statement

    def grid(self, split: str) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """(example index, start frame) of every grid window of a split."""
        hop = self.profile.hop_frames
        pairs = [
            (i, start)
            for i, example in enumerate(self.examples.get(split, []))
            for start in range(0, example.num_starts, hop)
        ]
        array = np.array(pairs, dtype=np.intp).reshape(-1, 2)
        return array[:, 0], array[:, 1]


def _whole_example_profile(profile: FeatureProfile, num_frames: int) -> FeatureProfile:
    mel = profile.mel
    window_s = ((num_frames - 1) * mel.hop_length + mel.n_fft) / mel.sample_rate_hz
    return FeatureProfile(
        name="training-example",
        mel=mel,
        window_s=window_s,
        window_hop_s=window_s,
        band_fmin_hz=profile.band_fmin_hz,
        band_fmax_hz=profile.band_fmax_hz,
        standardize=False,
    )


def _read_pcm(path: Path, rate: int) -> npt.NDArray[np.int16]:
    mono, file_rate = load_audio(path)
    if file_rate != rate:
        import soxr  # noqa: PLC0415

        mono = soxr.resample(mono, file_rate, rate, quality="HQ")
    return to_s16(mono)


def _example_frames(
    pcm: npt.NDArray[np.int16], profile: FeatureProfile, featurizers: dict[int, Featurizer]
) -> npt.NDArray[np.float32] | None:
    """The example's band-cropped log-mel frames [bands, n_frames] from the Featurizer."""
    mel = profile.mel
    frames = (pcm.size - mel.n_fft) // mel.hop_length + 1 if pcm.size >= mel.n_fft else 0
    if frames < profile.window_frames:
        return None
    featurizer = featurizers.get(frames)
    if featurizer is None:
        featurizer = featurizers[frames] = Featurizer([_whole_example_profile(profile, frames)])
    rate = mel.sample_rate_hz
    step = round(_CHUNK_S * rate)
    chunks = s16_chunks(
        (pcm[start : start + step] for start in range(0, pcm.size, step)),
        sensor_id="training",
        stream_id="example",
        sample_rate_hz=rate,
    )
    windows = featurizer.process(chunks).windows
    featurizer.forget("training")
    if len(windows) != 1:  # pragma: no cover - the profile covers exactly the example
        raise SoundSentryError(f"expected one whole-example window, got {len(windows)}")
    return np.ascontiguousarray(windows[0].log_mel_db, dtype=np.float32)


def _licence_summaries(rows: Sequence[_Row]) -> tuple[list[dict[str, str]], str]:
    """The card's training_data entries and licence statement from the rows used."""
    counts: Counter[str] = Counter()
    summaries: dict[str, str] = {}
    for row in rows:
        for line in row.licences:
            name, _, licence = line.partition(":")
            summaries[name.strip()] = licence.strip() or line
            counts[name.strip()] += 1
    entries = [
        {"name": name, "licence": summaries[name], "examples": str(counts[name])}
        for name in sorted(summaries)
    ]
    statements = []
    if _NON_COMMERCIAL_DATASET in summaries:
        statements.append(
            "NON-COMMERCIAL USE ONLY: trained on UrbanSound8K material (CC BY-NC 3.0); this "
            "model may be used for non-commercial purposes only. Attribution of the Freesound "
            "recordings is in the FREESOUNDCREDITS.txt copied beside the card."
        )
    unclear = sorted(n for n, s in summaries.items() if _UNCLEAR_LICENCE in s.lower())
    if unclear:
        statements.append(
            f"No licence is stated for {', '.join(unclear)}: check the rights to that audio "
            "before shipping this model."
        )
    others = sorted(
        f"{n} ({s})"
        for n, s in summaries.items()
        if n != _NON_COMMERCIAL_DATASET and n not in unclear
    )
    if others:
        statements.append("Other sources: " + "; ".join(others) + ".")
    return entries, " ".join(statements) or "No third-party training material recorded."


def load_dataset(
    dataset_dir: str | Path,
    *,
    profile: FeatureProfile = DEFAULT_PROFILE,
    labels: Sequence[str] | None = None,
    splits: Sequence[str] = ("train", "validate"),
) -> TrainingData:
    """Read and featurise the examples of ``splits`` of a data set.

    ``labels`` default: every label of the manifest (all splits), sorted.

    Raises
    ------
    ConfigurationError
        for a missing or malformed manifest, unreadable audio, a label the manifest never
        uses, or an empty split of ``splits``.
    """
    folder = Path(dataset_dir)
    rows = _read_manifest(folder)
    present = sorted({label for row in rows for label in row.labels})
    chosen = tuple(labels) if labels is not None else tuple(present)
    missing = [label for label in chosen if label not in present]
    if missing:
        raise ConfigurationError(
            f"labels {missing} do not occur in {folder / 'manifest.csv'}; it has {present}"
        )
    if not chosen:
        raise ConfigurationError(f"{folder / 'manifest.csv'} has no labelled example")
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ConfigurationError(f"splits {unknown} are unknown; known: {list(SPLITS)}")
    used = [row for row in rows if row.split in splits]
    mel = profile.mel
    window_samples = profile.window_samples
    hop_samples = profile.hop_frames * mel.hop_length
    featurizers: dict[int, Featurizer] = {}
    examples: dict[str, list[ExampleFeatures]] = {split: [] for split in splits}
    skipped = 0
    for row in used:
        pcm = _read_pcm(folder / row.path, mel.sample_rate_hz)
        log_mel = _example_frames(pcm, profile, featurizers)
        if log_mel is None:
            skipped += 1
            continue
        events = tuple(e for e in row.events if e.label in chosen)
        n_frames = log_mel.shape[1]
        starts = np.arange(n_frames - profile.window_frames + 1) * mel.hop_length
        examples[row.split].append(
            ExampleFeatures(
                path=row.path,
                split=row.split,
                log_mel_db=log_mel,
                window_targets=segment_targets(
                    starts,
                    events,
                    chosen,
                    sample_rate_hz=mel.sample_rate_hz,
                    window_samples=window_samples,
                    hop_samples=hop_samples,
                ),
                frame_targets=frame_targets(
                    n_frames,
                    events,
                    chosen,
                    sample_rate_hz=mel.sample_rate_hz,
                    hop_length=mel.hop_length,
                    n_fft=mel.n_fft,
                ),
                events=events,
                duration_s=pcm.size / mel.sample_rate_hz,
            )
        )
    if skipped:
        logger.warning("skipped %d examples shorter than one %s window", skipped, profile.name)
    for split in splits:
        if not examples[split]:
            raise ConfigurationError(f"{folder}: the {split!r} split has no usable example")
    entries, licence = _licence_summaries(used)
    source = {
        "name": "soundsentry dataset synth",
        "dataset": folder.resolve().name,
        "licence": "the most restrictive licence of its sources; see LICENCES.txt",
        "examples": ", ".join(f"{split} {len(examples[split])}" for split in splits),
    }
    return TrainingData(
        dataset_dir=folder,
        profile=profile,
        labels=chosen,
        examples=examples,
        training_data=[source, *entries],
        licence=licence,
    )


# ---------------------------------------------------------------------------------------------
# Batches of windows


def standardize(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Per-window standardisation, as :class:`~soundsentry.features.featurizer.Featurizer` does."""
    mean = batch.mean(axis=(1, 2), keepdims=True)
    std = np.maximum(batch.std(axis=(1, 2), keepdims=True), 1e-6)
    result: npt.NDArray[np.float32] = ((batch - mean) / std).astype(np.float32)
    return result


@dataclass(frozen=True, slots=True)
class WindowBatch:
    """Windows as the network takes them, with their clip and frame targets."""

    inputs: npt.NDArray[np.float32]  # [n, bands, frames]
    clip: npt.NDArray[np.float32]  # [n, labels]
    frames: npt.NDArray[np.float32]  # [n, labels, frames]


def cut_windows(
    examples: Sequence[ExampleFeatures],
    indices: npt.NDArray[np.intp],
    starts: npt.NDArray[np.intp],
    profile: FeatureProfile,
) -> WindowBatch:
    """The windows of ``profile`` starting at frame ``starts[k]`` of example ``indices[k]``."""
    width = profile.window_frames
    inputs = np.stack(
        [examples[i].log_mel_db[:, s : s + width] for i, s in zip(indices, starts, strict=True)]
    )
    clip = np.stack([examples[i].window_targets[s] for i, s in zip(indices, starts, strict=True)])
    frames = np.stack(
        [examples[i].frame_targets[s : s + width].T for i, s in zip(indices, starts, strict=True)]
    )
    return WindowBatch(inputs.astype(np.float32), clip, frames)


# ---------------------------------------------------------------------------------------------
# Validation windows


def validation_windows(
    data: TrainingData,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The validation grid windows as the model takes them [n, bands, frames], with the
    (example index, start frame) of each."""
    batch, indices, starts = validation_batch(data)
    return batch.inputs, indices, starts


def validation_set(
    data: TrainingData,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The windows of :func:`validation_windows` with their clip targets [n, labels]."""
    batch, _, _ = validation_batch(data)
    return batch.inputs, batch.clip


def validation_batch(
    data: TrainingData,
) -> tuple[WindowBatch, npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The validation grid windows, standardised when the profile says so, with the (example
    index, start frame) of each."""
    indices, starts = data.grid("validate")
    batch = cut_windows(data.examples["validate"], indices, starts, data.profile)
    if data.profile.standardize:
        batch = WindowBatch(standardize(batch.inputs), batch.clip, batch.frames)
    return batch, indices, starts
