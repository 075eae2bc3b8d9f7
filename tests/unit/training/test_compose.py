"""soundsentry.training.compose: a general model and specialists in one graph (soundsentry
compose)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from soundsentry.cli import main as cli_main
from soundsentry.exceptions import ConfigurationError
from soundsentry.features.featurizer import FeatureProfile
from soundsentry.models.model_set import ModelSet, load_model, read_card
from soundsentry.training.compose import compose_cards
from soundsentry.training.examples import TrainingData, load_dataset, validation_set
from soundsentry.training.train import train
from tests.training_fixtures import TINY

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")  # the parts are trained with PyTorch


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


def test_a_composite_keeps_the_strictest_margin_of_its_parts(
    card_path: Path, specialist_path: Path, dataset_dir: Path, tmp_path: Path
) -> None:
    parts = tmp_path / "parts"
    shutil.copytree(specialist_path.parent, parts)
    specialist = parts / specialist_path.name
    document = json.loads(specialist.read_text(encoding="utf-8"))
    assert document["false_alarm_budget_per_hour"] is not None
    document["metrics"]["false_alarm_margin_logit"] = 0.8
    specialist.write_text(json.dumps(document), encoding="utf-8")
    out = tmp_path / "combined.json"
    compose_cards(card_path, [specialist], dataset_dir, out, version="2.0.0")
    composite = read_card(out)
    assert composite.metrics["false_alarm_margin_logit"] == 0.8
    assert composite.false_alarm_budget_per_hour == document["false_alarm_budget_per_hour"]
