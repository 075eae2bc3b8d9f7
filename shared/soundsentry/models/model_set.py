"""Models: an ONNX file plus a model card, loaded from a directory and run in batches.

A model card (``<name>.json``, in the directory of the ONNX file it names) says everything the
pipeline needs::

    {
      "name": "default", "version": "1.0.0", "onnx": "default.onnx",
      "labels": ["smoke_alarm", "co_alarm", ...],
      "profile": {"name": "full-16k", "window_s": 1.0, "window_hop_s": 0.5,
                  "mel": {"sample_rate_hz": 16000, "n_fft": 512, ...}},
      "thresholds": {"smoke_alarm": 0.5, ...},
      "event_rules": {"smoke_alarm": {"on_threshold": 0.5, "off_threshold": 0.375,
                      "smoothing_windows": 1, "min_duration_s": 0.5, "merge_gap_s": 1.0,
                      "onset_lookback_windows": 1}, ...},
      "silence_gate_dbfs": -70.0,
      "metrics": {...}, "training_data": [{"name": ..., "licence": ...}], "licence": "...",
      "quantization": null, "takes_over": []
    }

A card is checked once, when it is read: ``profile`` becomes a
:class:`~soundsentry.features.featurizer.FeatureProfile` and each ``event_rules`` entry a
:class:`~soundsentry.events.rules.RuleSpec` (the fields and bounds of an event rule, shared with
the alerter's overrides), so trackers are built from parsed values. A card that does not validate
is refused with a message that names the field (``event_rules.siren.on_threshold: ...``).

``quantization`` is set on an int8 model made by ``soundsentry quantize``
(:mod:`soundsentry.training.quantize`): how it was made and from which float ONNX file.

``takes_over`` names labels that this model reports *instead of* any other model of its
directory (a specialist beside a general model): the others still score them, but no events
come from their scores (:func:`reported_labels`). Removing the specialist gives the labels back.

A model whose profile is a band of another model's profile in the same directory (the same mel
spec and window geometry, neither standardised) is served from that profile's windows: the
featurizer emits each window once and the model gets the rows of its band (:class:`ModelSet`).

The ONNX graph takes ``log_mel`` float32 ``[batch, 1, num_bands, num_frames]`` (the profile's
window) and returns per-label probabilities float32 ``[batch, num_labels]`` as its first output;
an optional second output ``[batch, num_labels, num_frames]`` holds frame-level probabilities.
Loading checks the card against the graph, so a card that does not fit its model fails at
start-up with a message that names the file and the mismatch, never at the first window.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    model_validator,
)

from soundsentry.contracts import WindowScores
from soundsentry.events.rules import RuleSpec
from soundsentry.events.tracker import EventRule
from soundsentry.exceptions import ConfigurationError
from soundsentry.features.featurizer import FeatureProfile, Window, parse_profile, profile_document

__all__ = [
    "INFERENCE_SLICE",
    "INPUT_NAME",
    "PACKAGED_MODELS",
    "CompositionPart",
    "LoadedModel",
    "ModelCard",
    "ModelDirectory",
    "ModelSet",
    "Quantization",
    "ReloadReport",
    "WindowScore",
    "band_rows",
    "carries",
    "emitted_profiles",
    "load_model",
    "read_card",
    "read_cards",
    "reported_labels",
    "resolve_model_dir",
    "score_id",
    "score_to_proto",
    "write_card",
]

INPUT_NAME = "log_mel"
# The default model, installed with the package (default_model/ links to the checkout's models/).
PACKAGED_MODELS = Path(__file__).resolve().parents[1] / "default_model"
_DEFAULT_MODEL_DIR = Path("models")
# Windows per ONNX Runtime run (LoadedModel.predict cuts larger batches into runs of this size).
INFERENCE_SLICE = 16


def _beside_the_card(value: str) -> str:
    """A file named by a card must be in the card's folder or below it: a card (perhaps
    mounted from elsewhere) must not make a service read any file it can reach."""
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise ValueError(f"{value!r} must be a relative path inside the card's folder")
    return value


# A path relative to the card that stays inside its folder.
CardRelativePath = Annotated[str, AfterValidator(_beside_the_card)]


def _card_profile(value: object) -> FeatureProfile:
    """A card's profile, read by :func:`parse_profile` (a FeatureProfile passes as it is)."""
    if isinstance(value, FeatureProfile):
        return value
    try:
        return parse_profile(value, where="profile")
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None


# A feature profile, in a card as in a profiles file (written back in that form).
CardProfile = Annotated[
    FeatureProfile,
    PlainValidator(_card_profile),
    PlainSerializer(profile_document, return_type=dict[str, Any]),
]


class Quantization(BaseModel):
    """How an int8 model was made from a float one (``soundsentry quantize``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: str = Field(description="e.g. int8 static QDQ: uint8 activations, int8 weights")
    source_onnx: CardRelativePath = Field(
        description="the float ONNX file it was made from, relative to the card"
    )
    calibration: str = Field(description="the windows the activation ranges were measured on")
    float_nodes: list[str] = Field(default_factory=list, description="nodes left in float")
    score_difference: dict[str, float] = Field(
        default_factory=dict, description="max and mean |int8 - float| score on validation"
    )


class CompositionPart(BaseModel):
    """One model of a composite (``soundsentry compose``) and the labels taken from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    card: str = Field(description="the part's card, relative to the composite's (provenance)")
    name: str
    version: str
    labels: list[str]


class ModelCard(BaseModel):
    """What a model is, needs and reached. Unknown keys are errors (a typo must not pass)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    version: str
    onnx: CardRelativePath = Field(description="ONNX file, relative to the card")
    labels: list[str] = Field(min_length=1)
    profile: CardProfile = Field(description="the feature profile of the windows it takes")
    thresholds: dict[str, float] = Field(default_factory=dict)
    event_rules: dict[str, RuleSpec] = Field(
        default_factory=dict,
        description="per label, its event rule (tuned on validation by soundsentry calibrate)",
    )
    false_alarm_budget_per_hour: float | None = Field(
        default=None,
        ge=0.0,
        description="per label: the false alarms per hour of background its event rule was "
        "calibrated to stay within (soundsentry train's default 0.1); None: tuned for F1 alone",
    )
    silence_gate_dbfs: float | None = Field(
        default=None, description="windows quieter than this are not scored"
    )
    metrics: dict[str, Any] = Field(default_factory=dict)
    training_data: list[dict[str, str]] = Field(default_factory=list)
    licence: str = ""
    description: str = ""
    quantization: Quantization | None = None
    takes_over: list[str] = Field(
        default_factory=list,
        description="labels this model reports instead of the other models of its directory",
    )
    composition: list[CompositionPart] = Field(
        default_factory=list, description="the models a composite was made of (compose)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be unique, got {self.labels}")
        unknown = sorted(set(self.takes_over) - set(self.labels))
        if unknown or len(set(self.takes_over)) != len(self.takes_over):
            raise ValueError(
                f"takes_over must name labels of the model once each, got {self.takes_over}"
            )
        unknown = sorted(set(self.thresholds) - set(self.labels))
        if unknown:
            raise ValueError(f"thresholds for labels the model does not have: {unknown}")
        bad = {k: v for k, v in self.thresholds.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"thresholds must be in [0, 1]: {bad}")
        unknown = sorted(set(self.event_rules) - set(self.labels))
        if unknown:
            raise ValueError(f"event_rules for labels the model does not have: {unknown}")
        for label, spec in self.event_rules.items():
            try:
                spec.rule(label)  # a label no rule can have fails at load time
            except ConfigurationError as exc:
                raise ValueError(f"event_rules.{label}: {exc}") from None
        return self

    def threshold(self, label: str, default: float = 0.5) -> float:
        return self.thresholds.get(label, default)

    def event_rule(self, label: str) -> EventRule | None:
        """The card's event rule for ``label``, or None when the card has none."""
        spec = self.event_rules.get(label)
        return None if spec is None else spec.rule(label)


def score_id(window_id: str, model: str, model_version: str, escalated_to: str = "") -> str:
    """Deterministic id of one model's scores of one window (replays dedupe).

    A revision by a second stage (``escalated_to``) has an id of its own.
    """
    key = f"{window_id}\x1f{model}\x1f{model_version}"
    if escalated_to:
        key += f"\x1f{escalated_to}"
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def score_to_proto(
    result: WindowScore, labels: Sequence[str], *, escalated_to: str = ""
) -> WindowScores:
    """The wire form of one model's scores of one window; ``labels`` in output order.

    ``escalated_to`` names the second stage whose answer is merged into these scores.
    """
    window = result.window
    message = WindowScores(
        score_id=score_id(window.window_id, result.model, result.model_version, escalated_to),
        escalated_to=escalated_to,
        window_id=window.window_id,
        sensor_id=window.sensor_id,
        stream_id=window.stream_id,
        model=result.model,
        model_version=result.model_version,
        profile=window.profile,
        start_sample=window.start_sample,
        num_samples=window.num_samples,
        sample_rate_hz=window.sample_rate_hz,
        rms_dbfs=window.rms_dbfs,
        gated=result.gated,
    )
    if window.start_time_ns:
        message.start_time.FromNanoseconds(window.start_time_ns)
    for index, label in enumerate(labels):
        entry = message.scores.add(label=label, score=float(result.scores[index]))
        if result.frame_scores is not None:
            entry.frame_scores.extend(result.frame_scores[index].tolist())
    return message


@dataclass(frozen=True, slots=True)
class WindowScore:
    """One model's scores for one window."""

    window: Window
    model: str
    model_version: str
    scores: npt.NDArray[np.float32]  # shape=(num_labels,)
    frame_scores: npt.NDArray[np.float32] | None  # shape=(num_labels, num_frames)
    gated: bool = False  # below the model's silence gate: not run, scores 0


class LoadedModel:
    """A model card and its ONNX session, checked against each other."""

    def __init__(
        self, card: ModelCard, onnx_path: Path, *, threads: int = 1, card_path: Path | None = None
    ) -> None:
        import onnxruntime as ort  # noqa: PLC0415 - only processes that score load it

        self.card = card
        self.onnx_path = onnx_path
        self.card_path = card_path
        where = f"{card_path} ({onnx_path.name})" if card_path else str(onnx_path)
        self.profile = card.profile
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(onnx_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own, unrelated exception types
            raise ConfigurationError(f"{where}: not a loadable ONNX model: {exc}") from exc
        self._check_io(where)

    def _check_io(self, where: str) -> None:
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        expected = [1, self.profile.num_bands, self.profile.window_frames]
        problems = []
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            problems.append(f"needs one input named {INPUT_NAME!r}, has {[i.name for i in inputs]}")
        else:
            shape = list(inputs[0].shape)
            if len(shape) != 4 or any(
                isinstance(got, int) and got != want
                for got, want in zip(shape[1:], expected, strict=True)
            ):
                problems.append(
                    f"input shape {shape} does not fit the card's profile: "
                    f"[batch, {', '.join(map(str, expected))}]"
                )
        if not outputs:
            problems.append("has no output")
        else:
            shape = list(outputs[0].shape)
            if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != len(self.card.labels)):
                problems.append(
                    f"first output shape {shape} does not fit {len(self.card.labels)} labels"
                )
        if problems:
            raise ConfigurationError(
                f"{where}: the model does not match its card: " + "; ".join(problems)
            )
        self._frame_output = len(outputs) > 1

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def frame_output(self) -> bool:
        """Whether the graph gives frame-level scores (its second output)."""
        return self._frame_output

    def predict(
        self, log_mel: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
        """Scores for a batch of windows.

        Parameters
        ----------
        log_mel : np.ndarray [shape=(n, num_bands, num_frames)], float32

        Returns
        -------
        scores : np.ndarray [shape=(n, num_labels)], float32
        frame_scores : np.ndarray [shape=(n, num_labels, num_frames)], float32, or None
        """
        batch = np.ascontiguousarray(log_mel, dtype=np.float32)[:, None, :, :]
        # Slices keep each run's activations in cache: the default model takes 0.35-0.39 ms per
        # window in runs of 16 windows, 0.42 ms in runs of 256 (benchmarks/classifier.py).
        runs = [
            self.session.run(None, {INPUT_NAME: batch[lo : lo + INFERENCE_SLICE]})
            for lo in range(0, max(len(batch), 1), INFERENCE_SLICE)
        ]
        scores = np.concatenate([np.asarray(out[0], dtype=np.float32) for out in runs])
        if not self._frame_output:
            return scores, None
        return scores, np.concatenate([np.asarray(out[1], dtype=np.float32) for out in runs])


def read_card(card_path: str | Path) -> ModelCard:
    """Read and check one model card (not its ONNX file).

    Raises
    ------
    ConfigurationError
        naming the file and the problem: unreadable or invalid card.
    """
    path = Path(card_path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"{path}: cannot read the model card: {exc}") from exc
    try:
        return ModelCard.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'card'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"{path}: invalid model card: {problems}") from exc


def write_card(card_path: str | Path, document: Mapping[str, Any]) -> None:
    """Check ``document`` as a model card and its ONNX file, then put it at ``card_path`` in
    one rename, so that a service reloading the directory never reads half a card.

    Raises
    ------
    ConfigurationError
        for a document that is no valid card or does not fit its ONNX file (nothing written).
    """
    path = Path(card_path)
    scratch = path.with_name(f".{path.name}.tmp")  # not *.json: readers of the folder skip it
    scratch.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    try:
        card = read_card(scratch)
        LoadedModel(card, path.parent / card.onnx, card_path=path)
        os.replace(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)


def reported_labels(cards: Iterable[ModelCard]) -> dict[str, frozenset[str]]:
    """Per model name, the labels whose scores make events: all of the card's labels except
    those another card of the set ``takes_over``.

    Raises
    ------
    ConfigurationError
        when two cards take over the same label.
    """
    cards = list(cards)
    owner: dict[str, str] = {}
    for card in cards:
        for label in card.takes_over:
            if label in owner:
                raise ConfigurationError(
                    f"models {owner[label]!r} and {card.name!r} both take over {label!r}"
                )
            owner[label] = card.name
    return {
        card.name: frozenset(
            label for label in card.labels if owner.get(label, card.name) == card.name
        )
        for card in cards
    }


def resolve_model_dir(directory: str | Path) -> Path:
    """``directory``, except that the default ``models`` falls back to the model installed
    with the package when the current directory has none (``soundsentry detect`` anywhere)."""
    folder = Path(directory)
    if folder == _DEFAULT_MODEL_DIR and not folder.is_dir() and PACKAGED_MODELS.is_dir():
        return PACKAGED_MODELS
    return folder


def read_cards(directory: str | Path) -> dict[str, ModelCard]:
    """Every ``*.json`` card of a model directory by model name, without the ONNX files
    (for services that need a model's labels, profile and rules but never run it).

    Raises
    ------
    ConfigurationError
        if the directory has no card, a card fails to read (all problems are listed), two
        cards name the same model, or two take over the same label.
    """
    folder = resolve_model_dir(directory)
    paths = sorted(folder.glob("*.json"))
    if not paths:
        raise ConfigurationError(f"no model cards (*.json) in {folder}")
    cards: dict[str, ModelCard] = {}
    problems = []
    for path in paths:
        try:
            card = read_card(path)
        except ConfigurationError as exc:
            problems.append(str(exc))
            continue
        if card.name in cards:
            problems.append(f"{path}: a second card for model {card.name!r}")
        cards[card.name] = card
    if problems:
        raise ConfigurationError("\n".join(problems))
    try:
        reported_labels(cards.values())
    except ConfigurationError as exc:
        raise ConfigurationError(f"{folder}: {exc}") from None
    return cards


def load_model(card_path: str | Path, *, threads: int = 1) -> LoadedModel:
    """Load one card and its ONNX file.

    Raises
    ------
    ConfigurationError
        naming the file and the problem: unreadable or invalid card, missing ONNX file,
        or a graph that does not match the card.
    """
    path = Path(card_path)
    card = read_card(path)
    onnx_path = (path.parent / card.onnx).resolve()
    if not onnx_path.is_file():
        raise ConfigurationError(f"{path}: the ONNX file {card.onnx!r} does not exist")
    return LoadedModel(card, onnx_path, threads=threads, card_path=path)


def carries(wide: FeatureProfile, narrow: FeatureProfile) -> bool:
    """Whether ``narrow``'s windows are rows of ``wide``'s (same frames, a band within)."""
    return (
        wide.mel == narrow.mel
        and wide.window_frames == narrow.window_frames
        and wide.hop_frames == narrow.hop_frames
        and not wide.standardize
        and not narrow.standardize
        and wide.band.start <= narrow.band.start
        and narrow.band.stop <= wide.band.stop
    )


def band_rows(wide: FeatureProfile, narrow: FeatureProfile) -> slice:
    """The rows of ``wide``'s windows that are ``narrow``'s (for ``carries(wide, narrow)``)."""
    offset = int(wide.band.start)
    return slice(int(narrow.band.start) - offset, int(narrow.band.stop) - offset)


def _carriers(owned: Sequence[tuple[str, FeatureProfile]]) -> list[FeatureProfile]:
    """For each (model name, profile), the profile whose windows it is served from: the widest
    profile of the set that :func:`carries` it (its own when none is wider).

    Raises
    ------
    ConfigurationError
        when two models use one profile name with different settings.
    """
    profiles: dict[str, FeatureProfile] = {}
    for _, profile in owned:
        known = profiles.setdefault(profile.name, profile)
        if known != profile:
            group = [name for name, p in owned if p.name == known.name]
            raise ConfigurationError(
                f"models {group} use the profile name {known.name!r} with different settings"
            )
    return [
        max(
            (p for p in profiles.values() if p == own or carries(p, own)),
            key=lambda p: (p.num_bands, p.name == own.name, p.name),
        )
        for _, own in owned
    ]


def emitted_profiles(cards: Iterable[ModelCard]) -> tuple[FeatureProfile, ...]:
    """The feature profiles a featurizer emits for the models of these cards (the same as
    :meth:`ModelSet.profiles`, without loading the ONNX files): a profile that is a band of a
    wider one is served from the wider one's windows.

    Raises
    ------
    ConfigurationError
        when two cards use one profile name with different settings.
    """
    carriers = _carriers([(card.name, card.profile) for card in cards])
    return tuple({carrier.name: carrier for carrier in carriers}.values())


class ModelSet:
    """Every model of a directory; scores windows with each model whose profile made them.

    A model whose profile is a band of a wider profile of the set is served from the wider
    profile's windows (the rows of its band), so the featurizer emits each window once:
    :meth:`profiles` lists only the profiles that carry windows.
    """

    def __init__(self, models: Sequence[LoadedModel]) -> None:
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"model names must be unique, got {names}")
        self.models = tuple(models)
        carriers = _carriers([(m.name, m.profile) for m in self.models])
        self.reported = reported_labels(m.card for m in self.models)
        # Per carrying profile name: its models, each with the rows of its band.
        self._carrier: dict[str, FeatureProfile] = {}
        self._by_profile: dict[str, list[tuple[LoadedModel, slice]]] = {}
        for model, carrier in zip(self.models, carriers, strict=True):
            self._carrier[carrier.name] = carrier
            self._by_profile.setdefault(carrier.name, []).append(
                (model, band_rows(carrier, model.profile))
            )

    @classmethod
    def from_dir(cls, directory: str | Path, *, threads: int = 1) -> ModelSet:
        """Load every ``*.json`` card in ``directory``.

        Raises
        ------
        ConfigurationError
            if the directory has no card, or any card fails to load (all problems are listed).
        """
        folder = resolve_model_dir(directory)
        cards = sorted(folder.glob("*.json"))
        if not cards:
            raise ConfigurationError(f"no model cards (*.json) in {folder}")
        models, problems = [], []
        for card in cards:
            try:
                models.append(load_model(card, threads=threads))
            except ConfigurationError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigurationError("\n".join(problems))
        return cls(models)

    def profiles(self) -> list[FeatureProfile]:
        """The feature profiles the featurizer must emit for these models."""
        return list(self._carrier.values())

    def score(self, windows: Sequence[Window]) -> list[WindowScore]:
        """Score every window with every model of its profile, one batch per model.

        A window quieter than a model's ``silence_gate_dbfs`` is not run through that model:
        its result has ``gated=True``, scores 0 and no frame scores (silence is "no event",
        and gating it costs nothing).
        """
        results: list[WindowScore] = []
        by_profile: dict[str, list[Window]] = {}
        for window in windows:
            by_profile.setdefault(window.profile, []).append(window)
        for profile_name, group in by_profile.items():
            models = self._by_profile.get(profile_name, [])
            if not models:
                continue
            levels = np.array([w.rms_dbfs for w in group], dtype=np.float64)
            stacked: dict[bytes, npt.NDArray[np.float32]] = {}
            for model, band in models:
                gate = model.card.silence_gate_dbfs
                loud = np.ones(len(group), bool) if gate is None else levels >= gate
                rows = np.flatnonzero(loud)
                scores = frames = None
                if rows.size:
                    key = rows.tobytes()  # models with the same gate share the stack
                    if key not in stacked:
                        stacked[key] = np.stack([group[i].log_mel_db for i in rows])
                    scores, frames = model.predict(stacked[key][:, band])
                silent = np.zeros(len(model.card.labels), dtype=np.float32)
                row_of = {int(i): r for r, i in enumerate(rows)}
                for i, window in enumerate(group):
                    row = row_of.get(i)
                    results.append(
                        WindowScore(
                            window=window,
                            model=model.name,
                            model_version=model.card.version,
                            scores=silent if row is None or scores is None else scores[row],
                            frame_scores=None if row is None or frames is None else frames[row],
                            gated=row is None,
                        )
                    )
        return results


# -- hot reload -------------------------------------------------------------------------------

_Fingerprint = tuple[int, int, int, int]  # card (mtime_ns, size), ONNX (mtime_ns, size)


def _fingerprint(card: Path) -> _Fingerprint:
    """What changes when a card or its ONNX file is rewritten (-1 for an unreadable one)."""

    def stat(path: Path) -> tuple[int, int]:
        try:
            info = path.stat()
        except OSError:
            return (-1, -1)
        return (info.st_mtime_ns, info.st_size)

    onnx = (-1, -1)
    try:
        name = json.loads(card.read_text()).get("onnx")
        if isinstance(name, str):
            onnx = stat(card.parent / name)
    except (OSError, ValueError, AttributeError):
        pass  # load_model reports it
    return (*stat(card), *onnx)


@dataclass(frozen=True, slots=True)
class ReloadReport:
    """What one :meth:`ModelDirectory.refresh` did. Names are card file names; ``failed``
    maps a card (or ``"*"`` for the set as a whole) to the problem; what failed keeps serving
    its previous version."""

    loaded: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.loaded or self.removed)


class ModelDirectory:
    """A model directory re-read while serving: new and changed cards are loaded, removed ones
    dropped, and a card that fails to load is reported while its previous version (if any)
    keeps serving. ``models`` is the current :class:`ModelSet`.

    A change is seen through the card's and its ONNX file's modification time and size; a
    failed card is retried only after it changes again (so it is reported once). Write the
    ONNX file before the card (or rename both into place) so a reload never sees half a model.
    """

    def __init__(self, directory: str | Path, *, threads: int = 1) -> None:
        """Load every card; at start-up any problem is an error (ConfigurationError)."""
        self.directory = resolve_model_dir(directory)
        self._threads = threads
        self.models = ModelSet.from_dir(self.directory, threads=threads)
        self._loaded: dict[Path, tuple[_Fingerprint, LoadedModel]] = {}
        for model in self.models.models:
            if model.card_path is not None:  # from_dir always sets it
                self._loaded[model.card_path] = (_fingerprint(model.card_path), model)
        self._failed: dict[Path, _Fingerprint] = {}
        self._empty_reported = False

    def refresh(self) -> ReloadReport:
        """Re-read the directory (cheap when nothing changed: a few stat calls per model)."""
        cards = sorted(self.directory.glob("*.json"))
        current = dict(self._loaded)
        loaded, failed = [], []
        for card in cards:
            stamp = _fingerprint(card)
            known = current.get(card)
            if (known is not None and known[0] == stamp) or self._failed.get(card) == stamp:
                continue
            try:
                model = load_model(card, threads=self._threads)
            except ConfigurationError as exc:
                self._failed[card] = stamp
                failed.append((card.name, str(exc)))
                continue
            self._failed.pop(card, None)
            current[card] = (stamp, model)
            loaded.append(card.name)
        present = set(cards)
        removed = sorted(p.name for p in current if p not in present)
        for name in removed:
            del current[self.directory / name]
        if not (loaded or removed):
            return ReloadReport(failed=tuple(failed))
        if not current:
            if not self._empty_reported:  # once, not at every refresh
                self._empty_reported = True
                failed.append(("*", f"no model cards left in {self.directory}; keeping the models"))
            return ReloadReport(failed=tuple(failed))
        self._empty_reported = False
        try:
            models = ModelSet([model for _, model in current.values()])
        except ConfigurationError as exc:  # e.g. two cards now name the same model
            failed.append(("*", f"{exc}; the previous models keep serving"))
            return ReloadReport(failed=tuple(failed))
        self._loaded, self.models = current, models
        return ReloadReport(loaded=tuple(loaded), removed=tuple(removed), failed=tuple(failed))
