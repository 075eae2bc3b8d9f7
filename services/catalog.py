"""Every settings class of the services, and the environment variables they read.

The one list behind the README's configuration reference (``tools/gen_config_docs.py``) and the
deployment tests that check each variable a manifest sets is one the services know.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings

from soundsentry.services.alerter.settings import AlerterSettings, NotifySettings
from soundsentry.services.classifier.settings import ClassifierSettings, EscalationSettings
from soundsentry.services.featurizer.settings import FeaturizerSettings
from soundsentry.services.ingest.settings import IngestSettings
from soundsentry.settings import KafkaSettings, TopicSettings

__all__ = ["SETTINGS", "environment_variables"]

SETTINGS: tuple[type[BaseSettings], ...] = (
    KafkaSettings,
    TopicSettings,
    IngestSettings,
    FeaturizerSettings,
    ClassifierSettings,
    EscalationSettings,
    AlerterSettings,
    NotifySettings,
)


def environment_variables() -> dict[str, type[BaseSettings]]:
    """Each environment variable the settings read, mapped to the class that reads it."""
    return {
        f"{cls.model_config.get('env_prefix', '')}{name.upper()}": cls
        for cls in SETTINGS
        for name in cls.model_fields
    }
