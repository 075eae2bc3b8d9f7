"""soundsentry.training.train: window labels, a tiny training run, the export and its model card."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile

from soundsentry.cli import add_train_arguments, run_train
from soundsentry.cli import main as cli_main
from soundsentry.exceptions import ConfigurationError
from soundsentry.features.featurizer import FeatureProfile, Featurizer
from soundsentry.models.model_set import ModelSet, load_model, read_card
from soundsentry.training.calibration import (
    calibrate_thresholds,
    json_safe,
    rule_document,
    window_metrics,
)
from soundsentry.training.compose import compose_cards
from soundsentry.training.dataset import EventSpan, MixSpec, synthesize
from soundsentry.training.examples import (
    TrainingData,
    frame_targets,
    load_dataset,
    segment_targets,
    validation_set,
    validation_windows,
)
from soundsentry.training.quantize import MAX_MEAN_DIFFERENCE, QuantizationCheckError, quantize_card
from soundsentry.training.train import (
    EarlyStopping,
    TrainConfig,
    TrainResult,
    build_network,
    export_model,
    train,
    train_model,
)
from tests.audio_fixtures import SHARED_DATA, chunks

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

TINY = TrainConfig(epochs=2, channels=(4, 8), batch_size=16, seed=0)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train-data") / "mixed"
    synthesize(
        data_dir=SHARED_DATA,
        out_dir=out,
        examples_per_split={"train": 24, "validate": 8, "test": 8},
        spec=MixSpec(duration_s=2.0),
        seed=0,
        created_utc=datetime(2025, 1, 2, tzinfo=UTC),
    )
    return out


@pytest.fixture(scope="module")
def data(dataset_dir: Path) -> TrainingData:
    return load_dataset(dataset_dir)


@pytest.fixture(scope="module")
def result(data: TrainingData) -> TrainResult:
    return train_model(data, TINY)


@pytest.fixture(scope="module")
def card_path(result: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_model(result, tmp_path_factory.mktemp("model"), name="tiny", version="0.0.1")


# -- window labels ----------------------------------------------------------------------------


def test_segment_targets_need_half_of_the_central_hop() -> None:
    # 1000 Hz, windows of 1000 samples every 500: window 0 speaks for [250, 750),
    # window 500 for [750, 1250).
    events = [
        EventSpan("a", 0.40, 0.60),  # 200 of window 0's 500 samples
        EventSpan("b", 0.50, 1.00),  # 250 of each: exactly half
        EventSpan("c", 0.30, 0.45),  # 150 ...
        EventSpan("c", 0.60, 0.72),  # ... + 120 = 270 of window 0; nothing of window 500
        EventSpan("other", 0.0, 2.0),  # not trained: ignored
    ]
    targets = segment_targets(
        [0, 500],
        events,
        ["a", "b", "c"],
        sample_rate_hz=1000,
        window_samples=1000,
        hop_samples=500,
    )
    assert targets.dtype == np.float32
    np.testing.assert_array_equal(targets, [[0, 1, 1], [0, 1, 0]])


def test_frame_targets_need_half_of_the_frame() -> None:
    # Frames of 4 samples every 2 at 10 Hz: frame f covers [2f, 2f + 4) samples = 0.2f s on.
    targets = frame_targets(
        4, [EventSpan("x", 0.3, 0.5)], ["x", "y"], sample_rate_hz=10, hop_length=2, n_fft=4
    )
    # Event = samples [3, 5): frame 0 [0,4) has 1, frame 1 [2,6) has 2, frame 2 [4,8) has 1.
    np.testing.assert_array_equal(targets, [[0, 0], [1, 0], [0, 0], [0, 0]])


def test_grid_windows_equal_the_featurizer_windows(data: TrainingData, dataset_dir: Path) -> None:
    example = data.examples["validate"][0]
    samples, rate = soundfile.read(dataset_dir / example.path, dtype="int16")
    windows = Featurizer([data.profile]).process(chunks(samples, rate, [3000])).windows
    indices, starts = data.grid("validate")
    ours = [int(s) for i, s in zip(indices, starts, strict=True) if i == 0]
    assert [w.start_sample // data.profile.mel.hop_length for w in windows] == ours
    width = data.profile.window_frames
    for window, start in zip(windows, ours, strict=True):
        np.testing.assert_allclose(
            example.log_mel_db[:, start : start + width], window.log_mel_db, atol=1e-4
        )


def test_unknown_labels_are_rejected(dataset_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"\['doorbell'\] do not occur"):
        load_dataset(dataset_dir, labels=["siren", "doorbell"])


# -- settings and helpers ---------------------------------------------------------------------


def test_config_names_every_problem() -> None:
    with pytest.raises(ConfigurationError) as error:
        TrainConfig(epochs=0, learning_rate=-1.0, labels=["a", "a"], channels=(8,) * 7)
    message = str(error.value)
    for part in ("epochs=0", "learning_rate=-1.0", "repeat a label", "7 blocks"):
        assert part in message


def test_config_keeps_sequences_as_tuples() -> None:
    config = TrainConfig(labels=["siren", "dog_bark"], channels=[8, 16])
    assert config.labels == ("siren", "dog_bark")
    assert config.channels == (8, 16)
    assert hash(config) == hash(TrainConfig(labels=("siren", "dog_bark"), channels=(8, 16)))


def test_early_stopping_keeps_the_best_epoch() -> None:
    stopping = EarlyStopping(patience=2)
    improved = [stopping.update(epoch, loss) for epoch, loss in enumerate([1.0, 0.7, 0.8])]
    assert improved == [True, True, False]
    assert not stopping.should_stop
    assert not stopping.update(3, math.nan)  # NaN never improves
    assert stopping.should_stop
    assert (stopping.best_epoch, stopping.best_loss) == (1, 0.7)


def test_thresholds_maximise_window_f1() -> None:
    probs = np.array([[0.9, 0.1], [0.6, 0.2], [0.3, 0.3], [0.1, 0.2]])
    targets = np.array([[1, 0], [1, 0], [0, 0], [0, 0]], dtype=np.float32)
    thresholds = calibrate_thresholds(probs, targets, ["a", "b"])
    # "a": every threshold in (0.3, 0.6] separates perfectly; the lowest is 0.35.
    assert thresholds == {"a": 0.35, "b": 0.5}  # "b" has nothing to find: 0.5
    metrics = window_metrics(probs, targets, ["a", "b"], thresholds)
    assert metrics["labels"]["a"] == {
        "threshold": 0.35,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "support": 2,
    }
    assert metrics["labels"]["b"]["recall"] is None
    assert metrics["macro_f1"] == 1.0


# -- training and export ----------------------------------------------------------------------


def test_card_loads_with_thresholds_metrics_and_licences(
    card_path: Path, data: TrainingData
) -> None:
    model = load_model(card_path)
    card = model.card
    assert card.labels == list(data.labels)
    assert model.profile == data.profile
    assert set(card.thresholds) == set(card.labels)
    assert all(0.0 <= value <= 1.0 for value in card.thresholds.values())
    assert set(card.event_rules) == set(card.labels)  # tuned on validation
    metrics = card.metrics
    assert metrics["epochs_run"] == 2
    assert len(metrics["history"]) == 2
    assert set(metrics["window"]["labels"]) == set(card.labels)
    assert {"f1", "error_rate", "class_wise"} <= set(metrics["event_based"])
    names = {entry["name"] for entry in card.training_data}
    assert "urbansound8k_subset" in names
    assert "NON-COMMERCIAL USE ONLY" in card.licence
    assert (card_path.parent / "tiny.LICENCES.txt").is_file()
    json.loads(card_path.read_text(), parse_constant=pytest.fail)  # strict JSON: no NaN


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_equals_pytorch(card_path: Path, result: TrainResult, batch: int) -> None:
    inputs = result.check_inputs[:batch]
    scores, frames = load_model(card_path).predict(inputs)
    with torch.no_grad():
        expected, expected_frames = result.model.eval()(torch.from_numpy(inputs[:, None]))
    assert scores.shape == (batch, len(result.labels))
    assert frames is not None
    assert frames.shape == (batch, len(result.labels), result.profile.window_frames)
    np.testing.assert_allclose(scores, expected.numpy(), atol=1e-4)
    np.testing.assert_allclose(frames, expected_frames.numpy(), atol=1e-4)


def test_same_seed_same_weights(data: TrainingData, result: TrainResult) -> None:
    again = train_model(data, TINY)
    first, second = result.model.state_dict(), again.model.state_dict()
    assert first.keys() == second.keys()
    for key, value in first.items():
        assert torch.equal(value, second[key]), key
    assert again.thresholds == result.thresholds


def test_a_profile_that_does_not_fit_the_data_is_rejected(data: TrainingData) -> None:
    other = TrainConfig(profile=FeatureProfile("short", window_s=0.5, window_hop_s=0.25))
    with pytest.raises(ConfigurationError, match="featurised for profile"):
        train_model(data, other)


def test_train_command(
    dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args(
        [str(dataset_dir), "--out", str(tmp_path), "--epochs", "1", "--labels", "siren", "gun_shot"]
    )
    assert run_train(args) == 0
    card = json.loads((tmp_path / "default.json").read_text())
    assert card["labels"] == ["siren", "gun_shot"]
    assert (tmp_path / "default.onnx").is_file()
    assert "default.json" in capsys.readouterr().out


def test_train_command_channels_set_the_network_width(dataset_dir: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    assert parser.parse_args([str(dataset_dir), "--out", str(tmp_path)]).channels == [16, 32, 64]
    args = parser.parse_args(
        [str(dataset_dir), "--out", str(tmp_path), "--epochs", "1", "--channels", "4", "8"]
    )
    assert run_train(args) == 0
    card = json.loads((tmp_path / "default.json").read_text())
    assert "CNN [4, 8], band-aware head on" in card["description"]


def test_train_command_takes_a_profile_file_and_labels_to_take_over(
    dataset_dir: Path, tmp_path: Path
) -> None:
    profile = tmp_path / "alarm-band.json"
    profile.write_text(json.dumps({"name": "alarm-band", "band_fmin_hz": 1500.0}))
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    out = tmp_path / "model"
    options = ["--epochs", "1", "--channels", "4", "8", "--labels", "siren", "gun_shot"]
    options += ["--profile", str(profile), "--takes-over", "siren", "--name", "specialist"]
    assert run_train(parser.parse_args([str(dataset_dir), "--out", str(out), *options])) == 0
    card = read_card(out / "specialist.json")
    assert card.takes_over == ["siren"]
    assert card.feature_profile() == FeatureProfile("alarm-band", band_fmin_hz=1500.0)
    assert load_model(out / "specialist.json").profile.num_bands == 34
    # A label to take over that the model will not have fails before any training.
    bad = parser.parse_args([str(dataset_dir), "--out", str(tmp_path / "x"), *options[:8]])
    bad.takes_over = ["dog_bark"]
    with pytest.raises(
        ConfigurationError, match="labels the model will not have: \\['dog_bark'\\]"
    ):
        run_train(bad)
    assert not (tmp_path / "x").exists()
    profile.write_text("{")
    with pytest.raises(ConfigurationError, match="cannot read the feature profile"):
        run_train(parser.parse_args([str(dataset_dir), "--out", str(out), *options]))


def test_the_band_aware_head_sees_where_in_frequency_a_pattern_lies(data: TrainingData) -> None:
    # The same spectro-temporal shape in a low and in a high band: averaging the feature map
    # over frequency gives the heads (almost) the same input for both, the projection does not.
    profile = data.profile
    shape = (1, 1, profile.num_bands, profile.window_frames)
    low, high = torch.zeros(shape), torch.zeros(shape)
    low[..., 16:24, 10:30] = 1.0
    high[..., 32:40, 10:30] = 1.0
    torch.manual_seed(0)
    aware = build_network(profile, 2).eval()
    torch.manual_seed(0)
    averaged = build_network(profile, 2, keep_frequency=False).eval()
    with torch.no_grad():
        aware_gap = (aware(low)[0] - aware(high)[0]).abs().max().item()
        averaged_gap = (averaged(low)[0] - averaged(high)[0]).abs().max().item()
    assert averaged_gap < 1e-6 < aware_gap, (averaged_gap, aware_gap)


def test_train_command_can_average_frequency_away(dataset_dir: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    options = ["--epochs", "1", "--channels", "4", "8", "--average-frequency"]
    args = parser.parse_args([str(dataset_dir), "--out", str(tmp_path), *options])
    assert run_train(args) == 0
    card = json.loads((tmp_path / "default.json").read_text())
    assert "CNN [4, 8] on" in card["description"]
    model = load_model(tmp_path / "default.json")
    profile = model.profile
    scores, _ = model.predict(np.zeros((3, profile.num_bands, profile.window_frames), np.float32))
    assert scores.shape == (3, len(card["labels"]))


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
    assert card.event_rules == tuned
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


# -- composite models (soundsentry compose) ---------------------------------------------------


@pytest.fixture(scope="module")
def specialist_path(data: TrainingData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny specialist on the band above 1.5 kHz for the data set's last two labels (the
    second one new to nobody: both are the base's labels too)."""
    folder = tmp_path_factory.mktemp("parts")
    labels = tuple(data.labels[-2:])
    band = FeatureProfile("upper", band_fmin_hz=1500.0)
    config = dataclasses.replace(TINY, profile=band, labels=labels, seed=1)
    return train(
        data.dataset_dir, folder, config, name="specialist", version="0.1.0", takes_over=labels
    )


def test_a_composite_scores_each_label_with_the_part_that_answers_for_it(
    card_path: Path, specialist_path: Path, dataset_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "combined.json"
    report = compose_cards(card_path, [specialist_path], dataset_dir, out, version="2.0.0")
    base, specialist = load_model(card_path), load_model(specialist_path)
    composite = load_model(out)
    card = composite.card
    assert card.name == "combined"
    assert card.onnx == "combined.onnx"
    assert report.onnx == tmp_path / "combined.onnx"
    assert card.labels == base.card.labels  # the specialist's labels are the base's too
    taken = specialist.card.takes_over
    assert report.sources == {
        label: "specialist" if label in taken else "tiny" for label in card.labels
    }
    assert [(c.name, c.labels) for c in card.composition] == [
        ("tiny", [label for label in card.labels if label not in taken]),
        ("specialist", list(taken)),
    ]
    assert card.composition[1].card == os.path.relpath(specialist_path, tmp_path)
    # Scores: each column is its part's, on windows of the base's profile.
    inputs, _targets = validation_set(
        load_dataset(dataset_dir, profile=base.profile, splits=("validate",))
    )
    ours, our_frames = composite.predict(inputs)
    general, general_frames = base.predict(inputs)
    rows = specialist.profile.band.start
    special, special_frames = specialist.predict(inputs[:, rows:])
    assert our_frames is not None
    assert general_frames is not None
    assert special_frames is not None
    for column, label in enumerate(card.labels):
        if label in taken:
            i = specialist.card.labels.index(label)
            expected, expected_frames = special[:, i], special_frames[:, i]
        else:
            i = base.card.labels.index(label)
            expected, expected_frames = general[:, i], general_frames[:, i]
        np.testing.assert_allclose(ours[:, column], expected, atol=1e-6)
        np.testing.assert_allclose(our_frames[:, column], expected_frames, atol=1e-6)
    assert report.largest_difference <= 1e-6
    # Thresholds and rules are tuned on the same validation windows as each part's.
    for label in card.labels:
        part = specialist if label in taken else base
        assert card.thresholds[label] == part.card.thresholds[label]
        assert card.event_rules[label] == part.card.event_rules[label]
    assert set(card.metrics["window"]["labels"]) == set(card.labels)
    assert card.licence == base.card.licence
    # Served as one model from the base's windows.
    assert [p.name for p in ModelSet.from_dir(tmp_path).profiles()] == [base.profile.name]


def test_parts_that_do_not_fit_together_are_refused(
    card_path: Path, specialist_path: Path, dataset_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "combined.json"
    with pytest.raises(ConfigurationError, match="must list takes_over"):
        compose_cards(card_path, [card_path], dataset_dir, out, version="1")
    twice = tmp_path / "twice"
    shutil.copytree(specialist_path.parent, twice)
    document = json.loads((twice / "specialist.json").read_text())
    document["name"] = "other"
    (twice / "specialist.json").write_text(json.dumps(document))
    with pytest.raises(ConfigurationError, match="'specialist' and 'other' both take over"):
        compose_cards(
            card_path, [specialist_path, twice / "specialist.json"], dataset_dir, out, version="1"
        )
    shorter = tmp_path / "shorter"
    shutil.copytree(specialist_path.parent, shorter)
    document = json.loads((shorter / "specialist.json").read_text())
    document["profile"]["standardize"] = True
    (shorter / "specialist.json").write_text(json.dumps(document))
    with pytest.raises(ConfigurationError, match="is not a band of"):
        compose_cards(card_path, [shorter / "specialist.json"], dataset_dir, out, version="1")
    beside_onnx = card_path.with_name(Path(load_model(card_path).card.onnx).stem + ".json")
    for clobber in (card_path, beside_onnx):
        with pytest.raises(ConfigurationError, match="would overwrite a part's file"):
            compose_cards(card_path, [specialist_path], dataset_dir, clobber, version="1")
    other = tmp_path / "other.json"
    other.write_text("{}")
    with pytest.raises(ConfigurationError, match="exists and is no composite's card"):
        compose_cards(card_path, [specialist_path], dataset_dir, other, version="1")
    assert not out.exists()
    assert not list(tmp_path.glob("*.onnx"))


def test_compose_command(
    card_path: Path,
    specialist_path: Path,
    dataset_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "default.json"
    argv = ["compose", str(card_path), str(specialist_path), "--dataset", str(dataset_dir)]
    assert cli_main([*argv, "--out", str(out), "--model-version", "3.0.0"]) == 0
    assert read_card(out).version == "3.0.0"
    # A composite is updated by composing again over it.
    assert cli_main([*argv, "--out", str(out), "--model-version", "3.0.1"]) == 0
    assert read_card(out).version == "3.0.1"
    printed = capsys.readouterr().out
    assert "default.json" in printed
    assert "specialist" in printed
    # The files the card's licence statement refers to come along.
    for extra in ("LICENCES.txt", "FREESOUNDCREDITS.txt"):
        source = card_path.with_name(f"{card_path.stem}.{extra}")
        if source.is_file():
            assert out.with_name(f"default.{extra}").read_bytes() == source.read_bytes()
    assert card_path.with_name(f"{card_path.stem}.LICENCES.txt").is_file()
