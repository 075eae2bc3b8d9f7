"""soundsentry.training.train: window labels, a tiny training run, the export and its model card."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from soundsentry.cli import add_train_arguments, run_train
from soundsentry.exceptions import ConfigurationError
from soundsentry.features.featurizer import FeatureProfile, Featurizer
from soundsentry.models.model_set import load_model, read_card
from soundsentry.training.calibration import (
    calibrate_thresholds,
    window_metrics,
)
from soundsentry.training.dataset import EventSpan
from soundsentry.training.examples import (
    TrainingData,
    cut_windows,
    frame_targets,
    load_dataset,
    segment_targets,
)
from soundsentry.training.train import (
    EarlyStopping,
    TrainConfig,
    TrainResult,
    _Augmenter,
    build_network,
    filter_gains,
    train_model,
)
from tests.audio_fixtures import chunks
from tests.training_fixtures import TINY

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

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


def test_config_rejects_a_filter_gain_out_of_range() -> None:
    for value in (-1.0, 30.0, math.nan):
        with pytest.raises(ConfigurationError, match="filter_augment_db"):
            TrainConfig(filter_augment_db=value)
    rng = np.random.default_rng(0)
    for count, num_bands, max_db in ((1, 1, 6.0), (-1, 8, 6.0), (1, 8, -1.0)):
        with pytest.raises(ConfigurationError, match="filter_gains needs"):
            filter_gains(rng, count=count, num_bands=num_bands, max_db=max_db)


@pytest.mark.parametrize("bands", [2, 3, 64])
def test_filter_gains_are_piecewise_linear_within_the_range(bands: int) -> None:
    gains = filter_gains(np.random.default_rng(3), count=200, num_bands=bands, max_db=6.0)
    assert gains.shape == (200, bands)
    assert gains.dtype == np.float32
    assert np.abs(gains).max() <= 6.0
    # Kinks (non-zero second differences) only at the 1..4 inner knots.
    kinks = (np.abs(np.diff(gains.astype(np.float64), n=2, axis=1)) > 1e-4).sum(axis=1)
    assert kinks.max() <= 4
    if bands == 64:
        assert kinks.min() >= 1
        assert np.unique(kinks).size > 1
        assert gains.min() < -5.0
        assert gains.max() > 5.0
        assert len({tuple(row) for row in gains.round(3)}) == 200  # each window its own
    again = filter_gains(np.random.default_rng(3), count=200, num_bands=bands, max_db=6.0)
    assert np.array_equal(gains, again)


def test_filter_augment_adds_one_gain_per_band_to_every_frame(data: TrainingData) -> None:
    plain = dict(time_shift=False, background_mix=False, specaugment=False, mixup_alpha=0.0)
    config = TrainConfig(profile=data.profile, filter_augment_db=6.0, **plain)
    band_mean = np.zeros(data.profile.num_bands, dtype=np.float32)
    augmenter = _Augmenter(data, config, np.random.default_rng(0), band_mean)
    indices, starts = data.grid("train")
    indices, starts = indices[:16], starts[:16]
    batch = augmenter.batch(indices, starts)
    reference = cut_windows(data.examples["train"], indices, starts, data.profile)
    added = batch.inputs - reference.inputs  # [windows, bands, frames]
    assert np.allclose(added, added[:, :, :1], atol=1e-3)  # the same gain in every frame
    assert np.ptp(added[:, :, 0], axis=1).min() > 0.1  # and a filter, not one gain per window
    assert 0.5 < np.abs(added).max() <= 6.0 + 1e-3
    assert np.array_equal(batch.clip, reference.clip)  # a filter leaves the labels alone
    off = _Augmenter(
        data, TrainConfig(profile=data.profile, **plain), np.random.default_rng(0), band_mean
    )
    assert np.array_equal(off.batch(indices, starts).inputs, reference.inputs)


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


def test_train_command_filter_augment_is_on_the_card(dataset_dir: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    assert parser.parse_args([str(dataset_dir), "--out", str(tmp_path)]).filter_augment_db == 0
    options = ["--epochs", "1", "--channels", "4", "8", "--filter-augment-db", "6"]
    assert run_train(parser.parse_args([str(dataset_dir), "--out", str(tmp_path), *options])) == 0
    card = json.loads((tmp_path / "default.json").read_text())
    assert "; filter augment +-6 dB;" in card["description"]


def test_config_rejects_a_margin_out_of_range_or_without_a_budget() -> None:
    for value in (-0.5, 5.5, math.nan, True):
        with pytest.raises(ConfigurationError, match="false_alarm_margin"):
            TrainConfig(false_alarm_margin=value)
    with pytest.raises(ConfigurationError, match="needs a false-alarm budget"):
        TrainConfig(false_alarm_margin=0.8, false_alarms_per_hour=None)


def test_train_command_tunes_with_the_margin_and_states_it(
    dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from soundsentry.training import train as train_module  # noqa: PLC0415

    margins: list[float] = []
    tune = train_module.tune_event_rules

    def spy(*args: Any, **kwargs: Any) -> Any:
        margins.append(kwargs["false_alarm_margin"])
        return tune(*args, **kwargs)

    monkeypatch.setattr(train_module, "tune_event_rules", spy)
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    assert parser.parse_args([str(dataset_dir), "--out", str(tmp_path)]).false_alarm_margin == 0
    options = ["--epochs", "1", "--channels", "4", "8", "--false-alarm-margin", "0.8"]
    assert run_train(parser.parse_args([str(dataset_dir), "--out", str(tmp_path), *options])) == 0
    assert margins == [0.8]
    card = json.loads((tmp_path / "default.json").read_text())
    assert card["metrics"]["false_alarm_margin_logit"] == 0.8
    assert card["false_alarm_budget_per_hour"] == TrainConfig().false_alarms_per_hour


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
    assert card.profile == FeatureProfile("alarm-band", band_fmin_hz=1500.0)
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
