from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from soundsentry.contracts import WindowScores
from soundsentry.events.tracker import EventRule
from soundsentry.exceptions import ConfigurationError
from soundsentry.features.featurizer import FeatureProfile, Featurizer
from soundsentry.models.model_set import (
    INFERENCE_SLICE,
    INPUT_NAME,
    PACKAGED_MODELS,
    ModelDirectory,
    ModelSet,
    ReloadReport,
    load_model,
    read_cards,
    resolve_model_dir,
    score_id,
    score_to_proto,
)
from soundsentry.models.trackers import event_rule_for
from soundsentry.pipeline.detect import WindowTrace, detect_file
from tests.audio_fixtures import chunks, recording
from tests.model_fixtures import expected_scores, write_model

FULL = FeatureProfile("full-16k")
BAND = FeatureProfile(
    "alarm-band", window_s=0.5, window_hop_s=0.25, band_fmin_hz=2000.0, band_fmax_hz=4000.0
)


def test_a_directory_of_models_scores_windows_of_many_sensors(tmp_path: Path) -> None:
    w_full, b_full = write_model(tmp_path, "general", FULL, ["siren", "dog_bark", "glass_break"])
    w_band, b_band = write_model(
        tmp_path, "alarms", BAND, ["smoke_alarm", "co_alarm"], seed=1, thresholds={"co_alarm": 0.7}
    )
    models = ModelSet.from_dir(tmp_path)
    assert {p.name for p in models.profiles()} == {"full-16k", "alarm-band"}

    featurizer = Featurizer(models.profiles())
    windows = []
    for sensor, name in [("a", "siren"), ("b", "dog_bark")]:
        samples, rate = recording(name)
        for chunk in chunks(samples, rate, [1600], sensor_id=sensor):
            windows += featurizer.process([chunk]).windows
    scored = models.score(windows)
    assert len(scored) == len(windows)  # one model per profile here
    for result in scored:
        window = result.window
        weights, bias = (w_full, b_full) if result.model == "general" else (w_band, b_band)
        expected = expected_scores(window.log_mel_db[None], weights, bias)[0]
        np.testing.assert_allclose(result.scores, expected, rtol=1e-4, atol=1e-6)
        assert result.model_version == "0.0.1"
        assert result.frame_scores is None
    alarms = next(m for m in models.models if m.name == "alarms")
    assert alarms.card.threshold("co_alarm") == 0.7
    assert alarms.card.threshold("smoke_alarm") == 0.5


def test_a_band_of_a_wider_profile_is_served_from_its_windows(tmp_path: Path) -> None:
    # Same mel spec and window geometry as full-16k, only a band of it: no windows of its own.
    sub = FeatureProfile("alarm-sub", band_fmin_hz=1500.0)
    write_model(tmp_path, "general", FULL, ["siren", "dog_bark"])
    w_sub, b_sub = write_model(tmp_path, "alarms", sub, ["smoke_alarm"], seed=1)
    models = ModelSet.from_dir(tmp_path)
    assert models.profiles() == [FULL]

    samples, rate = recording("siren")
    carried = []
    own = []
    both = Featurizer([FULL, sub])
    featurizer = Featurizer(models.profiles())
    for chunk in chunks(samples, rate, [1600], sensor_id="a"):
        carried += featurizer.process([chunk]).windows
        own += [w for w in both.process([chunk]).windows if w.profile == sub.name]
    assert carried
    assert len(own) == len(carried)
    scored = [r for r in models.score(carried) if r.model == "alarms"]
    assert len(scored) == len(carried)
    for result, window in zip(scored, own, strict=True):
        assert result.window.start_sample == window.start_sample
        # The same scores as from the band's own windows.
        expected = expected_scores(window.log_mel_db[None], w_sub, b_sub)[0]
        np.testing.assert_allclose(result.scores, expected, rtol=1e-4, atol=1e-6)
    # Alone in a directory, the band model is served from its own windows again.
    (tmp_path / "general.json").unlink()
    assert ModelSet.from_dir(tmp_path).profiles() == [sub]


def test_a_standardised_or_differently_cut_profile_is_not_carried(tmp_path: Path) -> None:
    write_model(tmp_path, "general", FULL, ["siren"])
    standardised = FeatureProfile("std", band_fmin_hz=1500.0, standardize=True)
    shorter = FeatureProfile("short", window_s=0.5, band_fmin_hz=1500.0)
    write_model(tmp_path, "std", standardised, ["a"])
    write_model(tmp_path, "short", shorter, ["b"])
    names = {p.name for p in ModelSet.from_dir(tmp_path).profiles()}
    assert names == {"full-16k", "std", "short"}


def test_a_card_that_takes_over_a_label_silences_the_others_for_it(tmp_path: Path) -> None:
    write_model(tmp_path, "general", FULL, ["siren", "smoke_alarm"])
    write_model(tmp_path, "alarms", FULL, ["smoke_alarm", "co_alarm"], takes_over=["smoke_alarm"])
    models = ModelSet.from_dir(tmp_path)
    assert models.reported == {
        "general": frozenset({"siren"}),
        "alarms": frozenset({"smoke_alarm", "co_alarm"}),
    }
    assert set(read_cards(tmp_path)) == {"general", "alarms"}
    # Offline detection tracks (and plots) only the reported labels.
    samples, rate = recording("siren")
    audio = tmp_path / "siren.wav"
    soundfile.write(audio, samples, rate)
    traces: list[WindowTrace] = []
    detect_file(audio, models, traces=traces)
    assert sorted((t.model, t.label) for t in traces) == [
        ("alarms", "co_alarm"),
        ("alarms", "smoke_alarm"),
        ("general", "siren"),
    ]
    assert all(t.scores for t in traces)
    # A second card taking over the same label is refused, naming both.
    write_model(tmp_path, "other", FULL, ["smoke_alarm"], takes_over=["smoke_alarm"])
    for load in (ModelSet.from_dir, read_cards):
        with pytest.raises(ConfigurationError, match="'alarms' and 'other' both take over"):
            load(tmp_path)


def test_frame_level_outputs_come_through(tmp_path: Path) -> None:
    write_model(tmp_path, "framed", FULL, ["siren"], frame_output=True)
    model = load_model(tmp_path / "framed.json")
    batch = np.random.default_rng(0).normal(-40, 10, (3, 64, FULL.window_frames)).astype(np.float32)
    scores, frames = model.predict(batch)
    assert scores.shape == (3, 1)
    assert frames is not None
    assert frames.shape == (3, 1, FULL.window_frames)


def test_a_large_batch_is_scored_in_runs_with_the_scores_of_one_run(tmp_path: Path) -> None:
    write_model(tmp_path, "framed", FULL, ["siren", "car_horn"], frame_output=True)
    model = load_model(tmp_path / "framed.json")
    count = 2 * INFERENCE_SLICE + 5  # two full runs and a short one
    rng = np.random.default_rng(1)
    batch = rng.normal(-40, 10, (count, 64, FULL.window_frames)).astype(np.float32)
    scores, frames = model.predict(batch)
    whole = model.session.run(None, {INPUT_NAME: batch[:, None]})
    assert scores.shape == (count, 2)
    assert frames is not None
    np.testing.assert_allclose(scores, whole[0], atol=1e-6)
    np.testing.assert_allclose(frames, whole[1], atol=1e-6)


def _card(tmp_path: Path, **changes: object) -> Path:
    write_model(tmp_path, "m", FULL, ["siren", "car_horn"])
    path = tmp_path / "m.json"
    document = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            document.pop(key)
        else:
            document[key] = value
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"labels": ["siren"]}, "first output shape .* does not fit 1 labels"),
        ({"onnx": "elsewhere.onnx"}, "'elsewhere.onnx' does not exist"),
        # A card may only name files in its own folder (or below it).
        ({"onnx": "../m.onnx"}, "'../m.onnx' must be a relative path inside the card's folder"),
        ({"onnx": "/etc/passwd"}, "must be a relative path inside the card's folder"),
        ({"thresholds": {"gunshot": 0.5}}, "labels the model does not have: \\['gunshot'\\]"),
        ({"thresholds": {"siren": 1.5}}, "must be in \\[0, 1\\]"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"version": None}, "version: Field required"),
        (
            {"profile": {"name": "full-16k", "window_s": 2.0}},
            "input shape .* does not fit the card's profile",
        ),
        ({"profile": {"name": "x", "mel": {"n_fft": 500}}}, "invalid model card: .*power of two"),
        ({"profile": {"name": "x", "hop": 3}}, "profile: .*unknown key\\(s\\) \\['hop'\\]"),
        ({"labels": ["siren", "siren"]}, "labels must be unique"),
        ({"takes_over": ["gunshot"]}, "takes_over must name labels of the model once each"),
        ({"takes_over": ["siren", "siren"]}, "takes_over must name labels of the model once"),
        (
            {"event_rules": {"gunshot": {"on_threshold": 0.5, "off_threshold": 0.4}}},
            "event_rules for labels the model does not have: \\['gunshot'\\]",
        ),
        (
            {"event_rules": {"siren": {"on_threshold": 0.5, "off_threshold": 0.7}}},
            "event_rules\\.siren: .*off_threshold=0.7 must be <= on_threshold=0.5",
        ),
        # A rule is checked field by field when the card is read, and the field is named.
        (
            {"event_rules": {"siren": {"on_threshold": 0.5}}},
            "event_rules\\.siren\\.off_threshold: Field required",
        ),
        (
            {"event_rules": {"siren": {"on_threshold": 0.5, "off_threshold": 0.4, "gap": 1}}},
            "event_rules\\.siren\\.gap: Extra inputs are not permitted",
        ),
        (
            {"event_rules": {"siren": {"on_threshold": 1.5, "off_threshold": 0.4}}},
            "event_rules\\.siren\\.on_threshold: Input should be less than or equal to 1",
        ),
        (
            {
                "event_rules": {
                    "siren": {"on_threshold": 0.5, "off_threshold": 0.4, "smoothing_windows": 1.5}
                }
            },
            "event_rules\\.siren\\.smoothing_windows: Input should be a valid integer",
        ),
        (
            {
                "event_rules": {
                    "siren": {
                        "on_threshold": 0.5,
                        "off_threshold": 0.4,
                        "onset_lookback_windows": -1,
                    }
                }
            },
            "event_rules\\.siren\\.onset_lookback_windows: Input should be greater than",
        ),
    ],
)
def test_cards_that_do_not_fit_are_named_at_load(
    tmp_path: Path, changes: dict[str, object], words: str
) -> None:
    path = _card(tmp_path, **changes)
    with pytest.raises(ConfigurationError, match=words) as caught:
        load_model(path)
    assert str(path) in str(caught.value)


def test_broken_files_and_empty_directories_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no model cards"):
        ModelSet.from_dir(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    write_model(tmp_path, "good", FULL, ["siren"])
    (tmp_path / "good.onnx").write_bytes(b"not a model")
    with pytest.raises(ConfigurationError) as caught:
        ModelSet.from_dir(tmp_path)
    message = str(caught.value)
    assert "bad.json: cannot read the model card" in message
    assert "good.json (good.onnx): not a loadable ONNX model" in message


def test_a_cards_event_rules_are_what_detection_uses(tmp_path: Path) -> None:
    spec = {
        "on_threshold": 0.6,
        "off_threshold": 0.3,
        "smoothing_windows": 2,
        "min_duration_s": 0.5,
        "merge_gap_s": 1.0,
        "onset_lookback_windows": 1,
    }
    model = load_model(_card(tmp_path, event_rules={"siren": spec}))
    assert event_rule_for(model.card, "siren") == EventRule(label="siren", **spec)
    # A label without a rule falls back to the threshold rule.
    fallback = event_rule_for(model.card, "car_horn")
    assert fallback.on_threshold == model.card.threshold("car_horn")
    assert fallback.off_threshold == pytest.approx(0.75 * fallback.on_threshold)


def test_windows_below_the_silence_gate_are_not_run_and_say_so(tmp_path: Path) -> None:
    weights, bias = write_model(tmp_path, "m", FULL, ["siren", "car_horn"])
    path = tmp_path / "m.json"
    document = json.loads(path.read_text())
    document["silence_gate_dbfs"] = -30.0
    path.write_text(json.dumps(document))
    models = ModelSet.from_dir(tmp_path)
    samples, rate = recording("siren")
    featurizer = Featurizer([FULL])
    windows = []
    for chunk in chunks(samples, rate, [1600], sensor_id="s"):
        windows += featurizer.process([chunk]).windows
    # Make every other window silent: its level decides, not its spectrum.
    windows = [
        dataclasses.replace(w, rms_dbfs=-80.0) if i % 2 else dataclasses.replace(w, rms_dbfs=-10.0)
        for i, w in enumerate(windows)
    ]
    (model,) = models.models
    calls: list[int] = []
    predict = model.predict

    def counting(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        calls.append(batch.shape[0])
        return predict(batch)

    model.predict = counting  # type: ignore[method-assign]
    scored = models.score(windows)
    assert calls == [len(windows[::2])]  # one batch, loud windows only
    for index, result in enumerate(scored):
        assert result.window is windows[index]
        assert result.gated == bool(index % 2)
        if result.gated:
            assert not result.scores.any()
        else:
            expected = expected_scores(result.window.log_mel_db[None], weights, bias)[0]
            np.testing.assert_allclose(result.scores, expected, rtol=1e-4, atol=1e-6)


def test_scores_on_the_wire_carry_a_deterministic_id_and_every_label(tmp_path: Path) -> None:
    write_model(tmp_path, "framed", FULL, ["siren", "car_horn"], frame_output=True)
    models = ModelSet.from_dir(tmp_path)
    samples, rate = recording("siren")
    windows = Featurizer([FULL]).process(list(chunks(samples, rate, [16000]))).windows[:2]
    first, second = models.score(windows)
    message = score_to_proto(first, ["siren", "car_horn"])
    assert message.score_id == score_id(first.window.window_id, "framed", "0.0.1")
    assert message.score_id != score_to_proto(second, ["siren", "car_horn"]).score_id
    assert message.window_id == first.window.window_id
    assert [s.label for s in message.scores] == ["siren", "car_horn"]
    assert first.frame_scores is not None
    np.testing.assert_allclose([s.score for s in message.scores], first.scores, rtol=1e-6)
    assert len(message.scores[0].frame_scores) == FULL.window_frames
    assert not message.gated
    assert WindowScores.FromString(message.SerializeToString()) == message


def _touch(path: Path, step: int) -> None:
    """Give a rewritten file a distinct modification time (coarse file-system clocks)."""
    stamp = path.stat().st_mtime_ns + step * 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


def test_a_model_directory_reloads_new_changed_broken_and_removed_cards(tmp_path: Path) -> None:
    write_model(tmp_path, "general", FULL, ["siren", "car_horn"])
    directory = ModelDirectory(tmp_path)
    assert directory.refresh() == ReloadReport()  # nothing changed

    # A new model appears.
    write_model(tmp_path, "alarms", BAND, ["smoke_alarm"], seed=1)
    report = directory.refresh()
    assert report.loaded == ("alarms.json",)
    assert {m.name for m in directory.models.models} == {"general", "alarms"}

    # A changed card is reloaded.
    card = tmp_path / "general.json"
    document = json.loads(card.read_text())
    document["thresholds"] = {"siren": 0.8}
    card.write_text(json.dumps(document))
    _touch(card, 1)
    assert directory.refresh().loaded == ("general.json",)
    general = next(m for m in directory.models.models if m.name == "general")
    assert general.card.threshold("siren") == 0.8

    # A broken card is reported once; the previous version keeps serving until it is fixed.
    card.write_text("{not json")
    _touch(card, 2)
    report = directory.refresh()
    assert report.loaded == ()
    assert [name for name, _ in report.failed] == ["general.json"]
    assert "cannot read the model card" in report.failed[0][1]
    assert directory.refresh() == ReloadReport()
    assert "general" in {m.name for m in directory.models.models}
    card.write_text(json.dumps(document))
    _touch(card, 3)
    assert directory.refresh().loaded == ("general.json",)

    # A removed card is dropped, but the last one is kept (reported once).
    (tmp_path / "alarms.json").unlink()
    assert directory.refresh().removed == ("alarms.json",)
    card.unlink()
    report = directory.refresh()
    assert [name for name, _ in report.failed] == ["*"]
    assert directory.refresh() == ReloadReport()
    assert [m.name for m in directory.models.models] == ["general"]


def test_the_default_model_is_found_outside_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The package carries the default model: `--model models` (the default) works anywhere.
    monkeypatch.chdir(tmp_path)
    assert resolve_model_dir("models") == PACKAGED_MODELS
    assert (PACKAGED_MODELS / "default.json").is_file()
    assert ModelSet.from_dir("models").models
    (tmp_path / "models").mkdir()  # a folder of the user's own wins
    assert resolve_model_dir("models") == Path("models")
    assert resolve_model_dir(tmp_path / "elsewhere") == tmp_path / "elsewhere"
