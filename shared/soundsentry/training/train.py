"""Training a detector on a mixed data set (``soundsentry train``), exported as ONNX + model card.

Data
----
:func:`soundsentry.training.examples.load_dataset` reads and featurises the data set once; its
module says how each example's windows and their targets are made. The ``train`` split trains,
``validate`` stops training early, calibrates the thresholds and gives the card's metrics.

Augmentation (training batches only)
------------------------------------
In order: **time shift** (each window starts up to half a hop off its grid position, drawn
uniformly, labels recomputed exactly for the shifted position); **background mix** (with
probability 0.5 a window gets the window of another training example that holds no target
sound at all (every clip and frame label negative) added in the power domain,
``10 log10(10^(a/10) + g 10^(b/10))``, at a gain ``g`` drawn from -20..0 dB: a second
background at most as loud as the example's own, so the labels stay); **filter augment**
(``filter_augment_db`` > 0, after Nam et al., ICASSP 2022: each window's bands get a random
piecewise-linear gain in dB (:func:`filter_gains`: up to 5 segments with knots at random bands
and gains drawn uniformly from +-``filter_augment_db``), as a different microphone, room or
distance would colour the whole scene; unless the profile standardises, it also varies the
window's level); the profile's standardisation; **SpecAugment** (2 frequency masks of up to 8
bands, 2 time masks of up to 10 frames, filled with the training data's band means, which the
network maps to 0); **mixup** (pairs within the batch, ``lambda ~ Beta(alpha, alpha)`` folded
to >= 0.5, inputs and targets mixed linearly).

Model
-----
A small CNN on ``log_mel [batch, 1, bands, frames]``: the input is normalised with the
training data's per-band mean and standard deviation (constants in the graph), then blocks of
two 3x3 convolutions (batch norm, ReLU) and 2x2 max pooling (frequency only in the last
block). With ``keep_frequency`` (the default) each frame's feature map, ``channels x bands'``,
is projected to ``channels`` by a 1x1 convolution over time (batch norm, ReLU), so the heads
know *where* in frequency a pattern lies: a 3 kHz alarm beep and a 400 Hz car horn make
similar shapes in the feature map and only their band tells them apart. Without it the map is
averaged over frequency. Either way that gives ``[batch, channels, frames']``.
Clip scores: mean plus max over time, dropout, a linear layer, sigmoid. Frame scores
(``frame_output``): a 1x1 convolution over time, linearly interpolated back to the window's
frames, sigmoid. The sigmoids are in the exported graph; outputs ``scores [batch, labels]``
and ``frame_scores [batch, labels, frames]``.

Training, calibration, metrics
------------------------------
AdamW on binary cross-entropy (clip, plus ``frame_loss_weight`` x frame) with a one-cycle
learning-rate schedule over ``epochs`` (warm-up over the first 10 % of the steps to
``learning_rate``, then cosine annealing; a constant rate left the validation loss noisy enough
for early stopping to end runs at epoch 4 of 20), seeded
(``torch.manual_seed`` and a numpy generator: the same seed gives the same weights), early
stopping on the validation loss with the best epoch's weights kept (:class:`EarlyStopping`).
Each label's threshold is the one of 0.05, 0.10, .., 0.95 with the best window-level F1 on the
validation windows (the lowest of equal ones; 0.5 when no threshold finds a positive).
Metrics at those thresholds: window-level precision, recall, F1. Each label's event rule is
tuned on the validation events (:mod:`soundsentry.training.calibration`) and stored in the card; the
event-based (collar 0.2 s) and segment-based (1 s) F1 and error rate are those of the events
:func:`soundsentry.events.tracker.detect_events` finds with those rules, as ``soundsentry detect``
does.

Export
------
``<name>.onnx`` (opset 17, dynamic batch) and ``<name>.json`` (a card
:func:`soundsentry.models.model_set.load_model` accepts, with the training data's sources and
licences; ``<name>.LICENCES.txt`` and ``<name>.FREESOUNDCREDITS.txt`` are copied from the data set).
The export is checked: the card is loaded and the ONNX scores must equal PyTorch's within 1e-4.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO, cast

import numpy as np
import numpy.typing as npt

from soundsentry.events.tracker import EventRule
from soundsentry.exceptions import ConfigurationError, SoundSentryError
from soundsentry.features.featurizer import FeatureProfile, profile_document
from soundsentry.training.calibration import (
    calibrate_thresholds,
    check_false_alarm_margin,
    event_metrics,
    false_alarm_metrics,
    json_safe,
    margin_metric,
    rule_document,
    scored_examples,
    tune_event_rules,
    window_metrics,
)
from soundsentry.training.examples import (
    DEFAULT_PROFILE,
    TrainingData,
    WindowBatch,
    cut_windows,
    load_dataset,
    standardize,
    validation_batch,
)

if TYPE_CHECKING:
    import torch

    from soundsentry.models.model_set import LoadedModel

__all__ = [
    "EarlyStopping",
    "ExportCheckError",
    "TrainConfig",
    "TrainResult",
    "build_network",
    "export_model",
    "filter_gains",
    "train",
    "train_model",
]

logger = logging.getLogger(__name__)

EXPORT_TOLERANCE = 1e-4
OPSET = 17
INPUT_NAME = "log_mel"
_BACKGROUND_MIX_PROBABILITY = 0.5
_BACKGROUND_GAIN_DB = (-20.0, 0.0)
_EVAL_BATCH = 256


class ExportCheckError(SoundSentryError):
    """The exported ONNX model does not compute what the PyTorch model computes."""


def _require_torch() -> None:
    """Raise a ConfigurationError saying how to install torch and onnx when they are missing."""
    try:
        import onnx  # noqa: F401, PLC0415 - the exporter needs it
        import torch  # noqa: F401, PLC0415 - training only; services never install torch
    except ImportError as exc:
        raise ConfigurationError(
            "training needs PyTorch and onnx: pip install 'soundsentry[train]'"
        ) from exc


class _Network(Protocol):
    """What training needs of the network besides nn.Module: the outputs before the sigmoid."""

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Invalid values raise ConfigurationError naming every problem.

    ``labels``: the labels to learn, in output order (default None: every label of the data
    set's manifest, sorted). ``patience``: epochs without a better validation loss before
    stopping. ``channels``: output channels of each convolution block. ``mixup_alpha``: 0
    disables mixup. ``filter_augment_db``: largest gain of the random filter each training
    window gets (module docstring, "Augmentation"); 0 disables it. ``frame_output``: add the
    frame-level output, trained with ``frame_loss_weight`` x its loss. ``keep_frequency``: the
    heads see the feature map's bands (module docstring, "Model"); False averages them away.
    ``false_alarms_per_hour``: each label's event rule keeps at most this many false alarms
    per hour of the validation examples without that label
    (:mod:`soundsentry.training.calibration`); None tunes for F1 alone.
    ``false_alarm_margin``: ... and keeps them there with its thresholds this much lower in
    log-odds too (0: no margin).
    """

    profile: FeatureProfile = DEFAULT_PROFILE
    labels: Sequence[str] | None = None
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5
    seed: int = 0
    time_shift: bool = True
    mixup_alpha: float = 0.2
    specaugment: bool = True
    background_mix: bool = True
    filter_augment_db: float = 0.0
    channels: Sequence[int] = (16, 32, 64)
    dropout: float = 0.2
    frame_output: bool = True
    frame_loss_weight: float = 0.5
    keep_frequency: bool = True
    false_alarms_per_hour: float | None = 0.1
    false_alarm_margin: float = 0.0

    def __post_init__(self) -> None:
        # Sequences are kept as tuples (the settings are frozen and hashable).
        labels: object = self.labels
        if labels is not None and not isinstance(labels, str | tuple):
            object.__setattr__(self, "labels", tuple(self.labels or ()))
        object.__setattr__(self, "channels", tuple(self.channels))
        problems = [*self._count_problems(), *self._rate_problems(), *self._shape_problems()]
        if problems:
            raise ConfigurationError("invalid training settings: " + "; ".join(problems))

    def _count_problems(self) -> list[str]:
        problems = []
        for name, low in (("epochs", 1), ("batch_size", 1), ("patience", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append(f"{name}={value!r} must be a whole number >= {low}")
        return problems

    def _rate_problems(self) -> list[str]:
        problems = []
        budget: object = self.false_alarms_per_hour
        if budget is not None and (
            isinstance(budget, bool)
            or not isinstance(budget, int | float)
            or not math.isfinite(budget)
            or budget < 0
        ):
            problems.append(f"false_alarms_per_hour={budget!r} must be None or a number >= 0")
        try:
            check_false_alarm_margin(self.false_alarm_margin, budget=self.false_alarms_per_hour)
        except ConfigurationError as error:
            problems.append(str(error))
        for name, low, high, low_open in (
            ("learning_rate", 0.0, 1.0, True),
            ("weight_decay", 0.0, 1.0, False),
            ("mixup_alpha", 0.0, 10.0, False),
            ("filter_augment_db", 0.0, 24.0, False),
            ("dropout", 0.0, 0.9, False),
            ("frame_loss_weight", 0.0, 10.0, False),
        ):
            value = getattr(self, name)
            ok = (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and (low < value if low_open else low <= value)
                and value <= high
            )
            if not ok:
                bracket = "(" if low_open else "["
                problems.append(f"{name}={value!r} must be a number in {bracket}{low}, {high}]")
        return problems

    def _shape_problems(self) -> list[str]:
        problems = []
        profile: object = self.profile
        if not isinstance(profile, FeatureProfile):
            problems.append(f"profile must be a FeatureProfile, got {type(profile).__name__}")
        labels: object = self.labels
        if labels is not None:
            names = list(labels) if isinstance(labels, tuple) else []
            if not names or not all(isinstance(x, str) and x and x.strip() == x for x in names):
                problems.append(f"labels={labels!r} must be a list of names without spaces")
            elif len(set(names)) != len(names):
                problems.append(f"labels={names} repeat a label")
        channels: tuple[object, ...] = tuple(self.channels)
        if not 1 <= len(channels) <= 8 or not all(
            isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 512 for c in channels
        ):
            problems.append(f"channels={channels!r} must be 1..8 block widths in 1..512")
        elif isinstance(profile, FeatureProfile) and (
            profile.num_bands < 2 ** len(channels)
            or profile.window_frames < 2 ** (len(channels) - 1)
        ):
            problems.append(
                f"{len(channels)} blocks pool {profile.name!r}'s {profile.num_bands} bands x "
                f"{profile.window_frames} frames to nothing: use fewer channels entries"
            )
        return problems


# ---------------------------------------------------------------------------------------------
# Augmentation


class _Augmenter:
    """Builds augmented training batches (module docstring, "Augmentation")."""

    def __init__(
        self,
        data: TrainingData,
        config: TrainConfig,
        rng: np.random.Generator,
        band_mean: npt.NDArray[np.float32],
    ) -> None:
        self.examples = data.examples["train"]
        self.profile = data.profile
        self.config = config
        self.rng = rng
        self.fill = band_mean[:, None]  # [bands, 1]
        # Windows of examples that hold no target at all: the background-mix material.
        self.quiet = np.array(
            [
                i
                for i, example in enumerate(self.examples)
                if not example.window_targets.any() and not example.frame_targets.any()
            ],
            dtype=np.intp,
        )

    def batch(self, indices: npt.NDArray[np.intp], starts: npt.NDArray[np.intp]) -> WindowBatch:
        config, rng = self.config, self.rng
        if config.time_shift:
            reach = self.profile.hop_frames // 2
            shift = rng.integers(-reach, reach + 1, size=starts.size)
            limits = np.array([self.examples[i].num_starts - 1 for i in indices], dtype=np.intp)
            starts = np.clip(starts + shift, 0, limits).astype(np.intp)
        batch = cut_windows(self.examples, indices, starts, self.profile)
        inputs = batch.inputs
        if config.background_mix and self.quiet.size:
            inputs = self._mix_backgrounds(inputs)
        if config.filter_augment_db > 0:
            count, num_bands = inputs.shape[0], inputs.shape[1]
            gains = filter_gains(
                rng, count=count, num_bands=num_bands, max_db=config.filter_augment_db
            )
            inputs = inputs + gains[:, :, None]
        if self.profile.standardize:
            inputs = standardize(inputs)
        if config.specaugment:
            inputs = self._mask(inputs)
        clip, frames = batch.clip, batch.frames
        if config.mixup_alpha > 0 and inputs.shape[0] > 1:
            lam = rng.beta(config.mixup_alpha, config.mixup_alpha, size=inputs.shape[0])
            lam = np.maximum(lam, 1.0 - lam).astype(np.float32)
            other = rng.permutation(inputs.shape[0])
            inputs = lam[:, None, None] * inputs + (1 - lam[:, None, None]) * inputs[other]
            clip = lam[:, None] * clip + (1 - lam[:, None]) * clip[other]
            frames = lam[:, None, None] * frames + (1 - lam[:, None, None]) * frames[other]
        return WindowBatch(
            inputs.astype(np.float32), clip.astype(np.float32), frames.astype(np.float32)
        )

    def _mix_backgrounds(self, inputs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        rng, width = self.rng, self.profile.window_frames
        chosen = np.flatnonzero(rng.random(inputs.shape[0]) < _BACKGROUND_MIX_PROBABILITY)
        if not chosen.size:
            return inputs
        out = inputs.copy()
        sources = self.quiet[rng.integers(self.quiet.size, size=chosen.size)]
        gains_db = rng.uniform(*_BACKGROUND_GAIN_DB, size=chosen.size)
        for row, source, gain_db in zip(chosen, sources, gains_db, strict=True):
            example = self.examples[source]
            start = int(rng.integers(example.num_starts))
            other = example.log_mel_db[:, start : start + width].astype(np.float64)
            power = 10.0 ** (inputs[row].astype(np.float64) / 10.0) + 10.0 ** (
                (other + gain_db) / 10.0
            )
            out[row] = (10.0 * np.log10(power)).astype(np.float32)
        return out

    def _mask(self, inputs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        rng = self.rng
        out = inputs.copy()
        bands, frames = out.shape[1], out.shape[2]
        for row in range(out.shape[0]):
            for _ in range(2):
                width = int(rng.integers(0, min(8, bands) + 1))
                low = int(rng.integers(0, bands - width + 1))
                out[row, low : low + width, :] = self.fill[low : low + width]
            for _ in range(2):
                width = int(rng.integers(0, min(10, frames) + 1))
                low = int(rng.integers(0, frames - width + 1))
                out[row, :, low : low + width] = self.fill
        return out


def filter_gains(
    rng: np.random.Generator, *, count: int, num_bands: int, max_db: float
) -> npt.NDArray[np.float32]:
    """``count`` random filters over ``num_bands`` mel bands, in dB: np.ndarray
    [shape=(count, num_bands)], float32. Each is piecewise linear through knots at the first
    and last band and 1 to 4 random bands between them (2 to 5 segments, fewer when there are
    not that many bands), with gains uniform in +-``max_db`` (FilterAugment's linear type).

    Raises
    ------
    ConfigurationError
        for ``count`` < 0, ``num_bands`` < 2 or ``max_db`` < 0.
    """
    if count < 0 or num_bands < 2 or not max_db >= 0:
        raise ConfigurationError(
            f"filter_gains needs count >= 0, num_bands >= 2 and max_db >= 0, got {count}, "
            f"{num_bands}, {max_db}"
        )
    out = np.empty((count, num_bands), dtype=np.float32)
    grid = np.arange(num_bands)
    inner_bands = np.arange(1, num_bands - 1)
    for row in range(count):
        inner = min(int(rng.integers(1, 5)), inner_bands.size)
        knots = np.sort(rng.choice(inner_bands, size=inner, replace=False))
        where = np.concatenate(([0], knots, [num_bands - 1]))
        gains = rng.uniform(-max_db, max_db, size=where.size)
        out[row] = np.interp(grid, where, gains)
    return out


def _band_stats(
    data: TrainingData,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Per-band mean and standard deviation of the training grid windows (as the model sees
    them: standardised when the profile is)."""
    indices, starts = data.grid("train")
    total = np.zeros(data.profile.num_bands)
    square = np.zeros(data.profile.num_bands)
    count = 0
    for lo in range(0, indices.size, 512):
        batch = cut_windows(
            data.examples["train"], indices[lo : lo + 512], starts[lo : lo + 512], data.profile
        )
        inputs = standardize(batch.inputs) if data.profile.standardize else batch.inputs
        values = inputs.astype(np.float64)
        total += values.sum(axis=(0, 2))
        square += np.square(values).sum(axis=(0, 2))
        count += values.shape[0] * values.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(square / count - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Network


@cache
def _network_class() -> type[torch.nn.Module]:
    _require_torch()
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415
    from torch.nn import functional  # noqa: PLC0415

    class SoundSentryCNN(nn.Module):
        """Module docstring, "Model"; ``forward`` gives probabilities, ``logits`` the logits."""

        band_mean: torch.Tensor
        band_scale: torch.Tensor

        def __init__(
            self,
            *,
            num_bands: int,
            num_frames: int,
            num_labels: int,
            channels: Sequence[int],
            dropout: float,
            frame_output: bool,
            keep_frequency: bool,
            band_mean: npt.NDArray[np.float32],
            band_std: npt.NDArray[np.float32],
        ) -> None:
            super().__init__()
            self.num_frames = num_frames
            shape = (1, 1, num_bands, 1)
            self.register_buffer("band_mean", torch.tensor(band_mean).reshape(shape))
            self.register_buffer("band_scale", torch.tensor(1.0 / band_std).reshape(shape))
            layers: list[Any] = []
            width = 1
            for index, out in enumerate(channels):
                last = index == len(channels) - 1
                for c_in in (width, out):
                    layers += [
                        nn.Conv2d(c_in, out, kernel_size=3, padding=1, bias=False),
                        nn.BatchNorm2d(out),
                        nn.ReLU(),
                    ]
                layers.append(nn.MaxPool2d((2, 1) if last else (2, 2)))
                width = out
            self.features = nn.Sequential(*layers)
            bands_out = num_bands >> len(channels)
            self.project = (
                nn.Sequential(
                    nn.Conv1d(width * bands_out, width, kernel_size=1, bias=False),
                    nn.BatchNorm1d(width),
                    nn.ReLU(),
                )
                if keep_frequency
                else None
            )
            self.dropout = nn.Dropout(dropout)
            self.clip_head = nn.Linear(width, num_labels)
            self.frame_head = nn.Conv1d(width, num_labels, kernel_size=1) if frame_output else None

        def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            x = (x - self.band_mean) * self.band_scale
            mapped = self.features(x)  # [batch, channels, bands', frames']
            if self.project is None:
                hidden = mapped.mean(dim=2)
            else:
                hidden = self.project(mapped.flatten(1, 2))  # [batch, channels, frames']
            pooled = hidden.mean(dim=2) + hidden.amax(dim=2)
            clip = self.clip_head(self.dropout(pooled))
            if self.frame_head is None:
                return clip, None
            frames = self.frame_head(self.dropout(hidden))
            frames = functional.interpolate(
                frames, size=self.num_frames, mode="linear", align_corners=False
            )
            return clip, frames

        def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
            clip, frames = self.logits(x)
            if frames is None:
                return torch.sigmoid(clip)
            return torch.sigmoid(clip), torch.sigmoid(frames)

    return SoundSentryCNN


def build_network(
    profile: FeatureProfile,
    num_labels: int,
    *,
    channels: Sequence[int] = (16, 32, 64),
    dropout: float = 0.2,
    frame_output: bool = True,
    keep_frequency: bool = True,
    band_mean: npt.NDArray[np.float32] | None = None,
    band_std: npt.NDArray[np.float32] | None = None,
) -> torch.nn.Module:
    """The CNN for windows of ``profile`` (module docstring, "Model"), freshly initialised.

    ``band_mean`` / ``band_std`` [shape=(num_bands,)], float32: input normalisation
    (default 0 and 1).
    """
    bands = profile.num_bands
    module: torch.nn.Module = _network_class()(
        num_bands=bands,
        num_frames=profile.window_frames,
        num_labels=num_labels,
        channels=tuple(channels),
        dropout=dropout,
        frame_output=frame_output,
        keep_frequency=keep_frequency,
        band_mean=np.zeros(bands, np.float32) if band_mean is None else band_mean,
        band_std=np.ones(bands, np.float32) if band_std is None else band_std,
    )
    return module


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class EarlyStopping:
    """Tracks the best (lowest) validation loss; stop after ``patience`` epochs without one.

    A NaN loss never counts as an improvement.
    """

    patience: int
    best_loss: float = math.inf
    best_epoch: int = -1
    epochs_without_improvement: int = 0

    def update(self, epoch: int, loss: float) -> bool:
        """Record an epoch's loss; True when it is the best so far (keep these weights)."""
        if math.isfinite(loss) and loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, epoch
            self.epochs_without_improvement = 0
            return True
        self.epochs_without_improvement += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.epochs_without_improvement >= self.patience


class _Progress:
    """A one-line progress bar on a text stream (a terminal), cleared at the end."""

    def __init__(self, stream: TextIO | None, total: int, prefix: str) -> None:
        self.stream, self.total, self.prefix = stream, max(total, 1), prefix
        self.done = 0

    def step(self, note: str) -> None:
        self.done += 1
        if self.stream is None:
            return
        filled = round(24 * self.done / self.total)
        bar = "#" * filled + "." * (24 - filled)
        self.stream.write(f"\r{self.prefix} [{bar}] {self.done}/{self.total} {note}")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


@dataclass(eq=False)
class TrainResult:
    """A trained model (eval mode, best epoch's weights) and what the card says about it.

    ``check_inputs`` [shape=(n, bands, frames)], float32: validation windows, as the model
    takes them, for checking the export.
    """

    model: torch.nn.Module
    profile: FeatureProfile
    labels: tuple[str, ...]
    thresholds: dict[str, float]
    event_rules: dict[str, EventRule]
    metrics: dict[str, Any]
    training_data: list[dict[str, str]]
    licence: str
    config: TrainConfig
    check_inputs: npt.NDArray[np.float32] = field(repr=False)
    dataset_dir: Path | None = None


def _loss(model: torch.nn.Module, batch: WindowBatch, frame_weight: float) -> torch.Tensor:
    import torch  # noqa: PLC0415
    from torch.nn import functional  # noqa: PLC0415

    clip_logits, frame_logits = cast("_Network", model).logits(
        torch.from_numpy(batch.inputs[:, None])
    )
    loss = functional.binary_cross_entropy_with_logits(clip_logits, torch.from_numpy(batch.clip))
    if frame_logits is not None and frame_weight > 0:
        loss = loss + frame_weight * functional.binary_cross_entropy_with_logits(
            frame_logits, torch.from_numpy(batch.frames)
        )
    result: torch.Tensor = loss
    return result


def _validation_loss(model: torch.nn.Module, batch: WindowBatch, frame_weight: float) -> float:
    """:func:`_loss` over all of ``batch``, computed in slices: the validation split's windows
    at once would need gigabytes of activations (hours of validation background)."""
    total, count = 0.0, int(batch.inputs.shape[0])
    for lo in range(0, count, _EVAL_BATCH):
        part = WindowBatch(
            batch.inputs[lo : lo + _EVAL_BATCH],
            batch.clip[lo : lo + _EVAL_BATCH],
            batch.frames[lo : lo + _EVAL_BATCH],
        )
        total += float(_loss(model, part, frame_weight).item()) * int(part.inputs.shape[0])
    return total / max(count, 1)


def _predict(
    model: torch.nn.Module, inputs: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
    """Probabilities [n, labels] and frame probabilities [n, labels, frames] (or None)."""
    import torch  # noqa: PLC0415

    model.eval()
    clips, frames = [], []
    with torch.no_grad():
        for lo in range(0, inputs.shape[0], _EVAL_BATCH):
            out = model(torch.from_numpy(inputs[lo : lo + _EVAL_BATCH, None]))
            if isinstance(out, tuple):
                clips.append(out[0].numpy())
                frames.append(out[1].numpy())
            else:
                clips.append(out.numpy())
    clip = np.concatenate(clips).astype(np.float32)
    return clip, (np.concatenate(frames).astype(np.float32) if frames else None)


def _train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    augmenter: _Augmenter,
    grid: tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]],
    config: TrainConfig,
    rng: np.random.Generator,
    bar: _Progress,
) -> float:
    """One pass over the training windows in a random order; returns the mean loss."""
    indices, starts = grid
    frame_weight = config.frame_loss_weight if config.frame_output else 0.0
    model.train()
    order = rng.permutation(indices.size)
    total = 0.0
    for lo in range(0, order.size, config.batch_size):
        rows = order[lo : lo + config.batch_size]
        batch = augmenter.batch(indices[rows], starts[rows])
        optimizer.zero_grad()
        loss = _loss(model, batch, frame_weight)
        loss.backward()  # type: ignore[no-untyped-call]  # untyped in torch
        optimizer.step()
        scheduler.step()
        total += float(loss.item()) * rows.size
        bar.step(f"loss {total / (lo + rows.size):.4f}")
    bar.close()
    return total / max(order.size, 1)


def train_model(
    data: TrainingData, config: TrainConfig, *, progress: TextIO | None = None
) -> TrainResult:
    """Train, keep the best epoch, calibrate thresholds and measure them on ``validate``.

    ``progress``: where to draw a progress bar (e.g. ``sys.stderr``); None draws none.
    Per-epoch losses are logged at INFO.

    Raises
    ------
    ConfigurationError
        when torch is missing, or ``config`` does not fit ``data`` (profile or labels).
    """
    _require_torch()
    import torch  # noqa: PLC0415

    if config.profile != data.profile:
        raise ConfigurationError(
            f"the data were featurised for profile {data.profile.name!r}, the settings ask "
            f"for {config.profile.name!r}"
        )
    if config.labels is not None and tuple(config.labels) != data.labels:
        raise ConfigurationError(
            f"the data were labelled for {list(data.labels)}, the settings ask for "
            f"{list(config.labels)}"
        )
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    band_mean, band_std = _band_stats(data)
    model = build_network(
        data.profile,
        len(data.labels),
        channels=config.channels,
        dropout=config.dropout,
        frame_output=config.frame_output,
        keep_frequency=config.keep_frequency,
        band_mean=band_mean,
        band_std=band_std,
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    augmenter = _Augmenter(data, config, rng, band_mean)
    train_indices, train_starts = data.grid("train")
    steps_per_epoch = -(-train_indices.size // config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    scheduler: torch.optim.lr_scheduler.LRScheduler
    if total_steps >= 4:  # each one-cycle phase needs two steps
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=config.learning_rate,
            total_steps=total_steps,
            pct_start=max(0.1, 2.0 / total_steps),
        )
    else:  # a run too short for a schedule
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    validation, val_indices, val_starts = validation_batch(data)
    frame_weight = config.frame_loss_weight if config.frame_output else 0.0
    stopping = EarlyStopping(config.patience)
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    grid = (train_indices, train_starts)
    for epoch in range(config.epochs):
        started = time.monotonic()
        bar = _Progress(
            progress,
            steps_per_epoch,
            f"epoch {epoch + 1}/{config.epochs}",
        )
        train_loss = _train_epoch(
            model,
            optimizer,
            scheduler,
            augmenter=augmenter,
            grid=grid,
            config=config,
            rng=rng,
            bar=bar,
        )
        model.eval()
        with torch.no_grad():
            val_loss = _validation_loss(model, validation, frame_weight)
        history.append({"train_loss": round(train_loss, 6), "validation_loss": round(val_loss, 6)})
        improved = stopping.update(epoch, val_loss)
        logger.info(
            "epoch %d/%d: train loss %.4f, validation loss %.4f%s (%.1f s)",
            epoch + 1,
            config.epochs,
            train_loss,
            val_loss,
            " (best)" if improved else "",
            time.monotonic() - started,
        )
        if improved:
            best_state = copy.deepcopy(model.state_dict())
        if stopping.should_stop:
            logger.info("stopping early: no better validation loss for %d epochs", config.patience)
            break
    model.load_state_dict(best_state)
    model.eval()
    probs, frame_probs = _predict(model, validation.inputs)
    thresholds = calibrate_thresholds(probs, validation.clip, data.labels)
    scored = scored_examples(
        data.examples["validate"],
        val_indices,
        val_starts,
        probs,
        frame_probs,
        profile=data.profile,
    )
    tuned_rules = tune_event_rules(
        scored,
        data.labels,
        data.profile,
        false_alarms_per_hour=config.false_alarms_per_hour,
        false_alarm_margin=config.false_alarm_margin,
    )
    rules = {label: tuned.rule for label, tuned in tuned_rules.items()}
    metrics: dict[str, Any] = {
        "split": "validate",
        "examples": len(data.examples["validate"]),
        "windows": int(validation.inputs.shape[0]),
        "best_epoch": stopping.best_epoch + 1,
        "epochs_run": len(history),
        "best_validation_loss": round(stopping.best_loss, 6),
        "history": history,
        "window": window_metrics(probs, validation.clip, data.labels, thresholds),
        **event_metrics(scored, data.labels, rules, data.profile),
        "event_rules_tuned_on": f"validate, {len(scored)} examples",
        "false_alarms_per_hour": false_alarm_metrics(tuned_rules),
        **margin_metric(config.false_alarm_margin, budget=config.false_alarms_per_hour),
    }
    return TrainResult(
        model=model,
        profile=data.profile,
        labels=data.labels,
        thresholds=thresholds,
        event_rules=rules,
        metrics=json_safe(metrics),
        training_data=data.training_data,
        licence=data.licence,
        config=config,
        check_inputs=np.ascontiguousarray(validation.inputs[:16]),
        dataset_dir=data.dataset_dir,
    )


# ---------------------------------------------------------------------------------------------
# Export


def _check_name(name: str) -> None:
    if not name or not name.isascii() or not all(c.isalnum() or c in "._-" for c in name):
        raise ConfigurationError(
            f"model name {name!r} must be ASCII letters, digits, '.', '_', '-'"
        )


def export_model(
    result: TrainResult,
    out_dir: str | Path,
    *,
    name: str,
    version: str,
    description: str | None = None,
    takes_over: Sequence[str] = (),
) -> Path:
    """Write ``<name>.onnx`` and ``<name>.json`` into ``out_dir`` and check them.

    ``takes_over``: labels the model reports instead of the other models of its directory
    (the card field of that name). Returns the card's path.

    Raises
    ------
    ConfigurationError
        for an invalid name, or a card :func:`~soundsentry.models.model_set.load_model` rejects.
    ExportCheckError
        when the ONNX scores differ from PyTorch's by more than 1e-4 (the card is removed).
    """
    _require_torch()
    import torch  # noqa: PLC0415

    from soundsentry.models.model_set import load_model  # noqa: PLC0415

    _check_name(name)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / f"{name}.onnx"
    card_path = folder / f"{name}.json"
    model = result.model.eval()
    frame_output = getattr(model, "frame_head", None) is not None
    outputs = ["scores", "frame_scores"] if frame_output else ["scores"]
    sample = torch.from_numpy(result.check_inputs[:2, None])
    with warnings.catch_warnings():
        # The TorchScript exporter: the torch.export one needs onnxscript, another dependency.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (sample,),
            str(onnx_path),
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes={key: {0: "batch"} for key in [INPUT_NAME, *outputs]},
            opset_version=OPSET,
            dynamo=False,
        )
    config = result.config
    card = {
        "name": name,
        "version": version,
        "onnx": onnx_path.name,
        "labels": list(result.labels),
        "profile": profile_document(result.profile),
        "thresholds": dict(result.thresholds),
        "event_rules": {label: rule_document(r) for label, r in result.event_rules.items()},
        "false_alarm_budget_per_hour": result.config.false_alarms_per_hour,
        "silence_gate_dbfs": -70.0,
        "metrics": result.metrics,
        "training_data": result.training_data,
        "licence": result.licence,
        "description": description
        or (
            f"SoundSentry CNN {list(config.channels)}"
            + (", band-aware head" if config.keep_frequency else "")
            + f" on {result.profile.name} log-mel windows, "
            f"{len(result.labels)} labels, sigmoid outputs"
            + (" with frame-level scores" if frame_output else "")
            + (
                f"; filter augment +-{config.filter_augment_db:g} dB"
                if config.filter_augment_db > 0
                else ""
            )
            + f"; trained with soundsentry train (seed {config.seed})."
        ),
    }
    if takes_over:
        card["takes_over"] = list(takes_over)
    card_path.write_text(json.dumps(card, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    dataset_dir = result.dataset_dir
    if dataset_dir is not None:
        for extra in ("LICENCES.txt", "FREESOUNDCREDITS.txt"):
            if (dataset_dir / extra).is_file():
                shutil.copyfile(dataset_dir / extra, folder / f"{name}.{extra}")
    loaded = load_model(card_path)
    difference = _max_difference(model, loaded, result.check_inputs)
    if difference > EXPORT_TOLERANCE:
        card_path.unlink()
        raise ExportCheckError(
            f"{onnx_path}: ONNX scores differ from PyTorch's by {difference:.2e} "
            f"(> {EXPORT_TOLERANCE}); the card was removed"
        )
    logger.info("wrote %s (export check: max difference %.1e)", card_path, difference)
    return card_path


def _max_difference(
    model: torch.nn.Module, loaded: LoadedModel, inputs: npt.NDArray[np.float32]
) -> float:
    """Largest absolute difference of the ONNX and PyTorch outputs on ``inputs``."""
    scores, frames = loaded.predict(inputs)
    expected, expected_frames = _predict(model, inputs)
    difference = float(np.max(np.abs(scores - expected)))
    if frames is not None and expected_frames is not None:
        difference = max(difference, float(np.max(np.abs(frames - expected_frames))))
    elif (frames is None) != (expected_frames is None):
        return math.inf
    return difference


def train(
    dataset_dir: str | Path,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    name: str = "default",
    version: str = "1.0.0",
    progress: TextIO | None = None,
    takes_over: Sequence[str] = (),
) -> Path:
    """Featurise ``dataset_dir``, train, export into ``out_dir``; returns the card's path.

    ``takes_over`` as in :func:`export_model`; checked against the labels before training.

    Raises
    ------
    ConfigurationError
        for bad settings or data, or when torch is missing.
    ExportCheckError
        when the export does not reproduce the PyTorch model.
    """
    config = config or TrainConfig()
    _check_name(name)
    _require_torch()
    if config.labels is not None:
        _check_takes_over(takes_over, config.labels)
    started = time.monotonic()
    data = load_dataset(dataset_dir, profile=config.profile, labels=config.labels)
    logger.info(
        "featurised %d train and %d validate examples for %s in %.1f s",
        len(data.examples["train"]),
        len(data.examples["validate"]),
        list(data.labels),
        time.monotonic() - started,
    )
    _check_takes_over(takes_over, data.labels)
    result = train_model(data, config, progress=progress)
    return export_model(result, out_dir, name=name, version=version, takes_over=takes_over)


def _check_takes_over(takes_over: Sequence[str], labels: Sequence[str]) -> None:
    unknown = sorted(set(takes_over) - set(labels))
    if unknown:
        raise ConfigurationError(f"takes_over names labels the model will not have: {unknown}")
