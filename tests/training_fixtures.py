"""A small mixed data set and a tiny model trained on it, made once per session: the training,
quantization and composition tests (tests/unit/training) all start from them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from soundsentry.training.dataset import MixSpec, synthesize
from soundsentry.training.examples import TrainingData, load_dataset
from soundsentry.training.train import TrainConfig, TrainResult, export_model, train_model
from tests.audio_fixtures import SHARED_DATA

__all__ = ["TINY", "card_path", "data", "dataset_dir", "result"]

TINY = TrainConfig(epochs=2, channels=(4, 8), batch_size=16, seed=0)


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def data(dataset_dir: Path) -> TrainingData:
    return load_dataset(dataset_dir)


@pytest.fixture(scope="session")
def result(data: TrainingData) -> TrainResult:
    return train_model(data, TINY)


@pytest.fixture(scope="session")
def card_path(result: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_model(result, tmp_path_factory.mktemp("model"), name="tiny", version="0.0.1")
