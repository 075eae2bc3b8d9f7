"""The session's tiny model and its data set (tests/training_fixtures.py) for the tests of
soundsentry.training."""

from tests.training_fixtures import card_path, data, dataset_dir, result

__all__ = ["card_path", "data", "dataset_dir", "result"]
