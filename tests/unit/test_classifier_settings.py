"""Classifier settings and start-up: a bad model directory fails at start, naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from soundsentry.exceptions import ConfigurationError
from soundsentry.runtime.settings import KafkaSettings, TopicSettings
from soundsentry.runtime.topics import TopicLayout
from soundsentry.services.classifier.app import create_app
from soundsentry.services.classifier.settings import ClassifierSettings


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOUNDSENTRY_CLASSIFIER_MODEL_DIR", "/srv/models")
    monkeypatch.setenv("SOUNDSENTRY_CLASSIFIER_MAX_BATCH_WINDOWS", "64")
    settings = ClassifierSettings()
    assert settings.model_dir == Path("/srv/models")
    assert settings.max_batch_windows == 64
    assert settings.max_batch_ms == 20


def test_an_empty_model_directory_stops_the_service_at_start(tmp_path: Path) -> None:
    settings = ClassifierSettings(model_dir=tmp_path, metrics_port=0)
    with pytest.raises(ConfigurationError, match=str(tmp_path)):
        create_app(
            KafkaSettings(),
            TopicLayout.from_settings(TopicSettings()),
            settings,
            registry=CollectorRegistry(),
        )
