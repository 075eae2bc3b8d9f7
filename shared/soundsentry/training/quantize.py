"""Int8 models (``soundsentry quantize``): a float model card becomes an int8 one, checked.

The CNN's cost is its convolutions, and on one core ONNX Runtime runs the float network at
about 0.5 ms a window, close to what the core's float units can do. Static int8 quantization
(QDQ format: uint8 activations, int8 weights per output channel) lets ONNX Runtime use its
integer kernels (VNNI where the CPU has it); ``benchmarks/classifier.py`` gives the figures.

What is quantized: the convolutions, their ReLUs and max pooling, with activation ranges
measured (min/max) on windows of the data set's validation split. The first convolution stays
float: it reads the normalised log-mel itself, whose range int8 resolves coarsely, and
quantizing it made the mean score error half again as large. The heads are small and stay
float too.

Then the int8 model is checked and re-tuned on the whole validation split: its clip scores and,
apart, its frame scores against the float model's (mean absolute difference at most
:data:`MAX_MEAN_DIFFERENCE` each, or nothing is written), its window thresholds and metrics, and
its event rules (:func:`~soundsentry.training.calibration.retune_document`), because a rule tuned on
the float model's scores sits at the edge of what it tuned. Only when all of that succeeded is
anything written: the int8 file (``<float name>.int8.onnx``), then the card in one rename
(``onnx`` names the int8 file, ``quantization`` says how it was made and from which float file,
which stays beside it; quantizing again starts from that file).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from soundsentry.exceptions import ConfigurationError, SoundSentryError
from soundsentry.models.model_set import (
    INPUT_NAME,
    LoadedModel,
    ModelCard,
    Quantization,
    read_card,
    write_card,
)
from soundsentry.training.calibration import TunedRule, predict_all, retune_document

__all__ = [
    "MAX_MEAN_DIFFERENCE",
    "QuantizationCheckError",
    "QuantizeReport",
    "quantize_card",
    "quantize_onnx",
]

logger = logging.getLogger(__name__)

SCHEME = "int8 static QDQ (uint8 activations, int8 weights per channel, min/max ranges)"
MAX_MEAN_DIFFERENCE = 0.02
_QUANTIZED_OPS = ["Conv", "Relu", "MaxPool"]
_CALIBRATION_BATCH = 64


class QuantizationCheckError(SoundSentryError):
    """The int8 model's scores are too far from the float model's."""


@dataclass(frozen=True)
class QuantizeReport:
    card: Path
    onnx: Path
    source_onnx: Path
    differences: dict[str, float]  # clip_max, clip_mean (and frame_max, frame_mean)
    calibration_windows: int
    tuned: dict[str, TunedRule]


def _first_conv(model: Any) -> str:
    """The name of the first Conv node (ONNX graphs list nodes in topological order)."""
    for node in model.graph.node:
        if node.op_type == "Conv":
            return str(node.name)
    raise ConfigurationError("the model has no convolution to quantize")


def _missing(error: ImportError) -> ConfigurationError:
    return ConfigurationError(
        f"soundsentry quantize needs onnx and sympy: pip install 'soundsentry[quantize]' ({error})"
    )


def quantize_onnx(source: Path, target: Path, calibration: npt.NDArray[np.float32]) -> list[str]:
    """Write the int8 version of ``source`` to ``target``, its activation ranges measured on
    ``calibration`` (log-mel windows, shape (n, bands, frames)); returns the nodes left float
    (the first convolution). :func:`quantize_card` checks and re-tunes what this makes.

    Raises
    ------
    ConfigurationError
        without the onnx package (or sympy, which the graph preparation needs), for a source
        that is int8 already, or when ONNX Runtime cannot quantize it.
    """
    try:
        import onnx  # noqa: PLC0415
        from onnxruntime.quantization import (  # noqa: PLC0415
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415
    except ImportError as exc:
        raise _missing(exc) from exc

    class _Windows(CalibrationDataReader):  # type: ignore[misc]  # untyped in onnxruntime
        def __init__(self) -> None:
            self.next = 0

        def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
            if self.next >= calibration.shape[0]:
                return None
            batch = calibration[self.next : self.next + _CALIBRATION_BATCH, None]
            self.next += _CALIBRATION_BATCH
            return {INPUT_NAME: np.ascontiguousarray(batch)}

    graph = onnx.load(str(source)).graph
    if any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node):
        raise ConfigurationError(
            f"{source}: the model is quantized already; quantize its float one"
        )
    try:
        with tempfile.TemporaryDirectory() as scratch:
            prepared = Path(scratch) / "prepared.onnx"
            quant_pre_process(str(source), str(prepared))  # shape inference, graph clean-up
            float_nodes = [_first_conv(onnx.load(str(prepared)))]
            quantize_static(
                str(prepared),
                str(target),
                _Windows(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                calibrate_method=CalibrationMethod.MinMax,
                op_types_to_quantize=_QUANTIZED_OPS,
                nodes_to_exclude=float_nodes,
            )
    except ImportError as exc:  # sympy, imported by the graph preparation
        raise _missing(exc) from exc
    except ConfigurationError:
        raise
    except Exception as exc:  # onnx and onnxruntime raise their own, unrelated types
        raise ConfigurationError(f"{source}: ONNX Runtime could not quantize it: {exc}") from exc
    return float_nodes


def _differences(
    ours: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None],
    reference: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None],
) -> dict[str, float]:
    """Max and mean absolute difference of the clip scores and, apart, of the frame scores
    (a window has some fifty frame scores per label and one clip score: pooled, the frame
    scores would hide the clip scores, which the thresholds read)."""
    clip = np.abs(ours[0] - reference[0])
    out = {"clip_max": float(clip.max()), "clip_mean": float(clip.mean())}
    if ours[1] is not None and reference[1] is not None:
        frames = np.abs(ours[1] - reference[1])
        out |= {"frame_max": float(frames.max()), "frame_mean": float(frames.mean())}
    return out


def _int8_version(card: ModelCard) -> str:
    if card.quantization is not None:
        return card.version
    return f"{card.version}{'.' if '+' in card.version else '+'}int8"  # semver build metadata


def quantize_card(
    card_path: str | Path,
    dataset_dir: str | Path,
    *,
    calibration_windows: int = 512,
    version: str | None = None,
    seed: int = 0,
) -> QuantizeReport:
    """Make the model of ``card_path`` int8 (module docstring) and rewrite its card.

    ``version`` default: the float card's with ``+int8`` appended, or the card's own when it
    is int8 already (give a new one when quantizing again with other data: score ids include
    the version).

    Raises
    ------
    ConfigurationError
        for a card that does not load, a data set without its labels, a missing float source
        or missing packages.
    QuantizationCheckError
        when the int8 scores are too far from the float ones (nothing is written).
    """
    from soundsentry.training.examples import load_dataset, validation_set  # noqa: PLC0415

    if calibration_windows < 1:
        raise ConfigurationError(f"calibration_windows must be >= 1, got {calibration_windows}")
    path = Path(card_path)
    card = read_card(path)
    source = path.parent / (card.quantization.source_onnx if card.quantization else card.onnx)
    if not source.is_file():
        raise ConfigurationError(f"{path}: the float model {source.name} is missing")
    target = source.with_name(f"{source.stem}.int8.onnx")

    float_model = LoadedModel(card, source, card_path=path)
    labels = tuple(card.labels)
    data = load_dataset(dataset_dir, profile=card.profile, labels=labels, splits=("validate",))
    inputs, targets = validation_set(data)
    rng = np.random.default_rng(seed)
    count = min(calibration_windows, inputs.shape[0])
    chosen = np.sort(rng.choice(inputs.shape[0], size=count, replace=False))
    dataset_name = Path(dataset_dir).resolve().name
    logger.info("quantizing %s with %d validation windows of %s", source, count, dataset_dir)

    # Hidden, so that nothing reading the model folder (or an image build) takes it for a model.
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".quantize-") as scratch:
        candidate = Path(scratch) / target.name
        float_nodes = quantize_onnx(source, candidate, inputs[chosen])
        quantized = LoadedModel(card, candidate, card_path=path)
        ours = predict_all(quantized, inputs)
        differences = _differences(ours, predict_all(float_model, inputs))
        worst = max(differences.get("clip_mean", 0.0), differences.get("frame_mean", 0.0))
        if worst > MAX_MEAN_DIFFERENCE:
            raise QuantizationCheckError(
                f"{path}: int8 scores differ from the float model's by {worst:.4f} on average "
                f"(allowed {MAX_MEAN_DIFFERENCE}; {differences}); nothing was written"
            )
        document = json.loads(path.read_text(encoding="utf-8"))
        document["version"] = version or _int8_version(card)
        document["onnx"] = target.name
        if card.quantization is None:
            document["description"] = (
                f"{card.description} Made int8 by soundsentry quantize.".strip()
            )
        document["quantization"] = Quantization(
            scheme=SCHEME,
            source_onnx=source.name,
            calibration=f"{dataset_name}: {count} validation windows (seed {seed})",
            float_nodes=float_nodes,
            score_difference={k: round(v, 6) for k, v in differences.items()},
        ).model_dump()
        tuned = retune_document(document, data, ours, targets, dataset_name=dataset_name)
        # The ONNX file first, then the card in one rename (a reloading service may look).
        candidate.replace(target)
        write_card(path, document)
    return QuantizeReport(
        card=path,
        onnx=target,
        source_onnx=source,
        differences=differences,
        calibration_windows=count,
        tuned=tuned,
    )
