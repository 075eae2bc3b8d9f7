"""soundsentry.training.quantize: int8 cards from float ones, checked (soundsentry quantize)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from soundsentry.exceptions import ConfigurationError
from soundsentry.models.model_set import load_model, read_card
from soundsentry.training.calibration import (
    calibrate_thresholds,
    json_safe,
    rule_document,
    window_metrics,
)
from soundsentry.training.examples import TrainingData, validation_set, validation_windows
from soundsentry.training.quantize import MAX_MEAN_DIFFERENCE, QuantizationCheckError, quantize_card

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")  # the tiny model is trained with PyTorch


# -- int8 (soundsentry quantize) --------------------------------------------------------------


@pytest.fixture
def float_copy(card_path: Path, tmp_path: Path) -> Path:
    """The tiny model's folder, copied: quantize rewrites a card in place."""
    folder = tmp_path / "model"
    shutil.copytree(card_path.parent, folder)
    return folder / card_path.name


def _quantize_nodes(path: Path) -> tuple[int, list[str]]:
    graph = onnx.load(str(path)).graph
    quantize = sum(node.op_type == "QuantizeLinear" for node in graph.node)
    convs = [node for node in graph.node if node.op_type == "Conv"]
    # A quantized convolution reads a DequantizeLinear'd input; a float one reads floats.
    producers = {out: node.op_type for node in graph.node for out in node.output}
    float_convs = [c.name for c in convs if producers.get(c.input[0]) != "DequantizeLinear"]
    return quantize, float_convs


def test_quantize_makes_an_int8_card_close_to_the_float_model(
    float_copy: Path, dataset_dir: Path, data: TrainingData
) -> None:
    float_card = read_card(float_copy)
    float_model = load_model(float_copy)
    report = quantize_card(float_copy, dataset_dir, calibration_windows=16)
    card = read_card(float_copy)
    assert card.onnx == "tiny.int8.onnx"
    assert report.onnx == float_copy.with_name(card.onnx)
    assert card.version == "0.0.1+int8"
    assert card.description == f"{float_card.description} Made int8 by soundsentry quantize."
    assert card.quantization is not None
    assert card.quantization.source_onnx == "tiny.onnx"
    assert (float_copy.parent / "tiny.onnx").is_file()  # kept: the source of a re-quantization
    assert card.quantization.calibration.endswith("16 validation windows (seed 0)")
    assert not [p for p in float_copy.parent.iterdir() if p.name.startswith(".")]  # no scratch
    quantize_ops, float_convs = _quantize_nodes(report.onnx)
    assert quantize_ops > 0
    assert float_convs == card.quantization.float_nodes  # only the first convolution
    # Clip and frame scores each stay close to the float model's, as the card records.
    inputs, _, _ = validation_windows(data)
    scores, frames = load_model(float_copy).predict(inputs)
    expected, expected_frames = float_model.predict(inputs)
    assert frames is not None
    assert expected_frames is not None
    clip, frame = np.abs(scores - expected), np.abs(frames - expected_frames)
    recorded = card.quantization.score_difference
    assert recorded == pytest.approx(
        {
            "clip_max": clip.max(),
            "clip_mean": clip.mean(),
            "frame_max": frame.max(),
            "frame_mean": frame.mean(),
        },
        abs=1e-5,
    )
    assert report.differences == pytest.approx(recorded, abs=1e-5)
    assert max(recorded["clip_mean"], recorded["frame_mean"]) <= MAX_MEAN_DIFFERENCE
    # Thresholds, window metrics and event rules are the int8 model's own.
    _, targets = validation_set(data)
    assert card.thresholds == calibrate_thresholds(scores, targets, card.labels)
    assert card.metrics["window"] == json_safe(
        window_metrics(scores, targets, card.labels, card.thresholds)
    )
    tuned = {label: rule_document(result.rule) for label, result in report.tuned.items()}
    assert {label: spec.model_dump() for label, spec in card.event_rules.items()} == tuned
    assert card.metrics["event_rules_tuned_on"] == "mixed: validate, 8 examples"


def test_quantize_takes_a_version(float_copy: Path, dataset_dir: Path) -> None:
    quantize_card(float_copy, dataset_dir, calibration_windows=8, version="0.1.0")
    assert read_card(float_copy).version == "0.1.0"


def test_quantizing_again_starts_from_the_float_model(float_copy: Path, dataset_dir: Path) -> None:
    quantize_card(float_copy, dataset_dir, calibration_windows=16)
    first = (float_copy.with_name("tiny.int8.onnx")).read_bytes()
    card = read_card(float_copy)
    quantize_card(float_copy, dataset_dir, calibration_windows=16)
    again = read_card(float_copy)
    assert float_copy.with_name("tiny.int8.onnx").read_bytes() == first  # not int8 of int8
    assert again.version == card.version == "0.0.1+int8"
    assert again.description == card.description  # the int8 note once
    assert again.quantization == card.quantization


def test_quantize_refuses_a_float_card_whose_model_is_int8(
    float_copy: Path, dataset_dir: Path
) -> None:
    quantize_card(float_copy, dataset_dir, calibration_windows=8)
    document = json.loads(float_copy.read_text())
    document.pop("quantization")
    document["onnx"] = "tiny.int8.onnx"  # a card that lost its quantization note
    float_copy.write_text(json.dumps(document))
    with pytest.raises(ConfigurationError, match="quantized already"):
        quantize_card(float_copy, dataset_dir, calibration_windows=8)


def test_quantize_writes_nothing_when_tuning_fails(
    float_copy: Path, dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = float_copy.read_bytes()

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("soundsentry.training.calibration.calibrate_document", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quantize_card(float_copy, dataset_dir, calibration_windows=8)
    assert float_copy.read_bytes() == before
    assert not float_copy.with_name("tiny.int8.onnx").exists()
    assert not [p for p in float_copy.parent.iterdir() if p.name.startswith(".")]


def test_quantize_writes_nothing_when_int8_is_too_far_off(
    float_copy: Path, dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = float_copy.read_bytes()
    monkeypatch.setattr("soundsentry.training.quantize.MAX_MEAN_DIFFERENCE", -1.0)
    with pytest.raises(QuantizationCheckError, match="nothing was written"):
        quantize_card(float_copy, dataset_dir, calibration_windows=16)
    assert float_copy.read_bytes() == before
    assert sorted(p.name for p in float_copy.parent.iterdir()) == sorted(  # no int8, no scratch
        ["tiny.json", "tiny.onnx", "tiny.LICENCES.txt", "tiny.FREESOUNDCREDITS.txt"]
    )


def test_quantize_needs_the_float_model(float_copy: Path, dataset_dir: Path) -> None:
    float_copy.with_name("tiny.onnx").unlink()
    with pytest.raises(ConfigurationError, match=r"float model tiny.onnx is missing"):
        quantize_card(float_copy, dataset_dir)


def test_quantize_command(
    float_copy: Path, dataset_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from soundsentry.cli import main  # noqa: PLC0415

    code = main(["quantize", str(float_copy), str(dataset_dir), "--calibration-windows", "8"])
    out = capsys.readouterr().out
    assert code == 0
    assert "tiny.int8.onnx" in out
    assert "clip_mean" in out
    assert read_card(float_copy).quantization is not None
