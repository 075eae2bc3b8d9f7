"""Every settings class of the services, and the environment variables they read.

The one list behind the configuration reference (docs/configuration.md, written by
``tools/gen_config_docs.py``) and the deployment tests that check each variable a manifest sets
is one the services know.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from pydantic_settings import BaseSettings

from soundsentry.notify.settings import NotifySettings
from soundsentry.runtime.settings import KafkaSettings, TopicSettings
from soundsentry.services.alerter.settings import AlerterSettings
from soundsentry.services.classifier.settings import ClassifierSettings, EscalationSettings
from soundsentry.services.featurizer.settings import FeaturizerSettings
from soundsentry.services.ingest.settings import IngestSettings

__all__ = [
    "OTHER_VARIABLES",
    "SETTINGS",
    "default_text",
    "environment_variables",
    "settings_help",
    "unknown_variables",
]

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


# Read by the command line and the test harness, under a settings prefix but not by a class.
OTHER_VARIABLES = frozenset({"SOUNDSENTRY_KAFKA_CACHE"})


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A line for each variable under a settings prefix (``SOUNDSENTRY_KAFKA_`` ...) that no
    setting reads, with the nearest known name: a misspelling would otherwise leave the default
    in force without a word. Other ``SOUNDSENTRY_*`` names (a secret a destinations file names)
    are the user's."""
    known = set(environment_variables()) | OTHER_VARIABLES
    prefixes = tuple({str(cls.model_config.get("env_prefix", "")) for cls in SETTINGS})
    problems = []
    for name in sorted(environ):
        if name.startswith(prefixes) and name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            problems.append(f"{name} is not a setting{hint}")
    return problems


def settings_help(prefixes: tuple[str, ...]) -> str:
    """Lines ``NAME (default): description`` for the settings under ``prefixes``, for --help."""
    lines = []
    for cls in SETTINGS:
        prefix = str(cls.model_config.get("env_prefix", ""))
        if prefix not in prefixes:
            continue
        for name, field in cls.model_fields.items():
            default = (
                "required"
                if field.is_required()
                else default_text(field.get_default(call_default_factory=True))
            )
            lines.append(f"  {prefix}{name.upper()} ({default})")
            if field.description:
                lines.append(f"      {field.description}")
    return "\n".join(lines)


def default_text(value: object) -> str:
    """A setting's default as people write it: ``none``, ``empty``, ``true``, ``models``."""
    if value is None:
        return "none"
    if value in ("", {}):
        return "empty"
    return str(value).lower() if isinstance(value, bool) else str(value)
