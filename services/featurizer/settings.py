"""Featurizer service settings (prefix ``SOUNDSENTRY_FEATURIZER_``) and its profiles file.

The featurizer emits the windows its models take: the feature profiles of the model cards in
``model_dir`` (the classifier's directory), as the embedded mode derives them, so the profile is
configured once, in the cards. A profiles file, when given, is used instead (an explicit
override, e.g. to emit windows for models not deployed yet).

A profiles file is a JSON list of objects with the fields of
:class:`~soundsentry.features.featurizer.FeatureProfile`, where ``mel`` is an object with the
fields of :class:`~soundsentry.audio.mel.MelSpec`; omitted fields take their defaults::

    [
      {"name": "full-16k"},
      {"name": "alarm-band", "window_s": 0.5, "window_hop_s": 0.25,
       "band_fmin_hz": 2000, "band_fmax_hz": 4000, "standardize": true,
       "mel": {"n_mels": 64}}
    ]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from soundsentry.exceptions import ConfigurationError
from soundsentry.features.featurizer import FeatureProfile, parse_profile
from soundsentry.models.model_set import emitted_profiles, read_cards

__all__ = ["FeaturizerSettings", "load_profiles"]


class FeaturizerSettings(BaseSettings):
    """How the featurizer consumes, batches and reports. Prefix: ``SOUNDSENTRY_FEATURIZER_``."""

    model_config = SettingsConfigDict(
        env_prefix="SOUNDSENTRY_FEATURIZER_", frozen=True, extra="forbid"
    )

    app_id: str = Field(
        default="soundsentry-featurizer",
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="The Kafka consumer group of the featurizer workers.",
    )
    max_batch_chunks: int = Field(
        default=1000,
        ge=1,
        le=10_000,
        description="Most chunks (from any sensors) featurized together in one batch.",
    )
    max_batch_ms: int = Field(
        default=50,
        ge=1,
        le=60_000,
        description="How long to wait to fill a batch before processing what has arrived (ms).",
    )
    hold_idle_s: float = Field(
        default=30.0,
        gt=0.0,
        le=3600.0,
        description="A sensor silent this long lets go of the records its unfinished windows "
        "would need after a crash, so that it does not hold back the commits of its partition.",
    )
    state_idle_s: float = Field(
        default=600.0,
        gt=0.0,
        le=86_400.0,
        description="A sensor silent this long has its state released (about 18 KB a sensor): "
        "memory follows the sensors that stream, not every id ever seen. It starts afresh "
        "when it sends again, as after a gap.",
    )
    model_dir: Path = Field(
        default=Path("models"),
        description="Directory of the model cards whose feature profiles are emitted: "
        "the classifier's model directory (the model installed with the package when the "
        "default models/ does not exist). Read at start-up; the ONNX files are not loaded.",
    )
    profiles_file: Path | None = Field(
        default=None,
        description="JSON list of feature profiles to emit instead of those of the model "
        "cards (an explicit override).",
    )
    metrics_port: int = Field(
        default=9102, ge=0, le=65535, description="Prometheus /metrics port (0: disabled)."
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address /metrics binds to (it lists sensor ids: loopback unless a "
        "network policy guards the port; the container image sets 0.0.0.0).",
    )

    def feature_profiles(self) -> tuple[FeatureProfile, ...]:
        """The profiles to emit: those of ``profiles_file`` when it is set, else those of the
        cards in ``model_dir`` (:func:`~soundsentry.models.model_set.emitted_profiles`).

        Raises
        ------
        ConfigurationError
            when the file cannot be read or does not describe valid, uniquely named profiles,
            or the model directory has no valid cards.
        """
        if self.profiles_file is not None:
            return load_profiles(self.profiles_file)
        return emitted_profiles(read_cards(self.model_dir).values())


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number (use finite numbers)")


def load_profiles(path: Path) -> tuple[FeatureProfile, ...]:
    """Read feature profiles from a JSON file (see the module docstring for its form).

    Types are checked strictly (``"1.0"`` is not a number, ``1`` is not a boolean), unknown
    keys are rejected, and every profile is checked by :class:`FeatureProfile` itself.

    Raises
    ------
    ConfigurationError
        naming the file, the profile and the problem: unreadable file, bad JSON, not a
        non-empty list of objects, unknown keys, invalid values, or duplicate names.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read profiles file {path}: {exc}") from exc
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"profiles file {path} is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}"
        ) from exc
    except ValueError as exc:  # NaN / Infinity
        raise ConfigurationError(f"profiles file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, list) or not data:
        raise ConfigurationError(
            f"profiles file {path} must hold a non-empty JSON list of profile objects, "
            f"got {type(data).__name__}{'' if data else ' (empty)'}"
        )
    profiles = tuple(
        parse_profile(item, where=f"profiles file {path}: profile #{index}")
        for index, item in enumerate(data)
    )
    names = [p.name for p in profiles]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigurationError(
            f"profiles file {path}: profile names must be unique, repeated: {duplicates}"
        )
    return profiles
