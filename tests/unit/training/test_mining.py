"""soundsentry.training.mining: hard negatives from training-split background, into a data set."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile

from soundsentry.exceptions import ConfigurationError
from soundsentry.training.dataset import load_catalog, split_by_group, synthesize
from soundsentry.training.examples import load_dataset
from soundsentry.training.mining import (
    MinedNegative,
    _excerpt,
    _runs,
    add_background,
    add_to_dataset,
    background_mixtures,
    mine_hard_negatives,
)
from tests.audio_fixtures import SHARED_DATA

ROOT = Path(__file__).resolve().parents[3]


def test_runs_are_the_stretches_at_or_above_the_score() -> None:
    mask = np.array([0, 1, 1, 0, 0, 1, 0, 1], dtype=bool)
    assert _runs(mask) == [(1, 3), (5, 6), (7, 8)]
    assert _runs(np.zeros(3, dtype=bool)) == []


def test_an_excerpt_is_centred_and_stays_inside_the_recording() -> None:
    audio = np.arange(100, dtype=np.float32)
    assert _excerpt(audio, 50, 10).tolist() == list(range(45, 55))
    assert _excerpt(audio, 2, 10).tolist() == list(range(10))  # moved inside, not padded
    assert _excerpt(audio, 99, 10).tolist() == list(range(90, 100))
    short = _excerpt(audio[:4], 2, 10)
    assert short.tolist() == [0, 1, 2, 3, *[0] * 6]


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    out = tmp_path / "mix"
    synthesize(
        data_dir=SHARED_DATA,
        out_dir=out,
        examples_per_split={"train": 3, "validate": 2},
        seed=7,
    )
    return out


def test_negatives_join_the_train_split_without_labels(small_dataset: Path) -> None:
    negative = MinedNegative(
        audio=np.full(64_000, 0.01, dtype=np.float32),
        sample_rate_hz=16_000,
        label="gun_shot",
        score=0.72,
        sources=("ambience_blanket/audio/background/birds.flac#t=loop",),
        licences=("ambience_blanket: CC0",),
    )
    assert add_to_dataset(small_dataset, [negative, negative]) == 2
    with (small_dataset / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    mined = [row for row in rows if row["path"].startswith("train/mined-")]
    assert [row["path"] for row in mined] == ["train/mined-000000.flac", "train/mined-000001.flac"]
    assert all(row["labels"] == "" and row["events"] == "[]" for row in mined)
    assert mined[0]["sources"].startswith("mined:gun_shot@0.72;ambience_blanket/")
    audio, rate = soundfile.read(str(small_dataset / mined[0]["path"]), dtype="float32")
    assert rate == 16_000
    assert audio.size == 64_000
    # Training reads them as target-free examples of the train split.
    data = load_dataset(small_dataset, splits=("train",))
    assert len(data.examples["train"]) == 5


def test_mining_finds_what_the_model_scores_high_on_training_background(
    small_dataset: Path,
) -> None:
    # A threshold just above zero: every stretch the default model scores at all is kept.
    mined = mine_hard_negatives(
        model_dir=ROOT / "models",
        data_dir=SHARED_DATA,
        hours=0.02,
        seed=0,
        split_seed=7,
        min_score=0.01,
    )
    assert mined
    assert all(n.score >= 0.01 and n.audio.size == 64_000 for n in mined)
    assert all(not s.startswith("synthetic:") for n in mined for s in n.sources)
    # Nothing from the test scenes the detection benchmark uses.
    assert not any("city.flac" in s or "coffee-shop" in s for n in mined for s in n.sources)


def test_mining_refuses_bad_settings(small_dataset: Path) -> None:
    with pytest.raises(ConfigurationError, match="hours"):
        mine_hard_negatives(
            model_dir=ROOT / "models", data_dir=SHARED_DATA, hours=0, seed=0, split_seed=7
        )
    with pytest.raises(ConfigurationError, match="manifest"):
        add_to_dataset(small_dataset / "train", [])


def test_validation_background_comes_from_the_validation_material_only(
    small_dataset: Path,
) -> None:
    splits = split_by_group(load_catalog(SHARED_DATA), seed=7)
    own = {clip.ref for clip in splits["validate"]}
    first = background_mixtures(
        data_dir=SHARED_DATA, split="validate", split_seed=7, hours=0.05, seed=3
    )
    again = background_mixtures(
        data_dir=SHARED_DATA, split="validate", split_seed=7, hours=0.05, seed=3
    )
    examples = list(first)
    assert len(examples) == 6  # 3 minutes in 30 s mixtures
    for example, twin in zip(examples, again, strict=True):
        np.testing.assert_array_equal(example.audio, twin.audio)  # the same seed, the same audio
        assert example.split == "validate"
        assert not example.labels
        assert not example.events
        assert {source.split("#")[0] for source in example.sources} <= own
    added = add_background(
        small_dataset, data_dir=SHARED_DATA, split="validate", split_seed=7, hours=0.02, seed=3
    )
    assert added == 2
    data = load_dataset(small_dataset, splits=("validate",))
    long = [e for e in data.examples["validate"] if e.path.startswith("validate/background-")]
    assert [e.duration_s for e in long] == [30.0, 30.0]
    assert all(not e.window_targets.any() for e in long)


def test_background_hours_must_be_sensible() -> None:
    with pytest.raises(ConfigurationError, match="hours"):
        next(
            background_mixtures(
                data_dir=SHARED_DATA, split="validate", split_seed=7, hours=0.0, seed=0
            )
        )
