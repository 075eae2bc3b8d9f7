from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from soundsentry.audio.mel import MelSpec
from soundsentry.exceptions import ConfigurationError
from soundsentry.features.featurizer import DEFAULT_PROFILES, FeatureProfile, Featurizer
from soundsentry.models.model_set import ModelSet
from soundsentry.services.featurizer.settings import FeaturizerSettings, load_profiles
from tests.model_fixtures import write_model


def write(tmp_path: Path, content: Any) -> Path:
    path = tmp_path / "profiles.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_a_good_file_gives_the_profiles_it_describes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            {"name": "full-16k"},
            {
                "name": "alarm-band",
                "window_s": 0.5,
                "window_hop_s": 0.25,
                "band_fmin_hz": 2000,
                "band_fmax_hz": 4000.0,
                "standardize": True,
            },
            {
                "name": "coarse",
                "mel": {"n_fft": 1024, "hop_length": 512, "n_mels": 40},
                "window_s": 2,
                "window_hop_s": 1,
            },
        ],
    )
    profiles = load_profiles(path)
    assert profiles == (
        FeatureProfile("full-16k"),
        FeatureProfile(
            "alarm-band",
            window_s=0.5,
            window_hop_s=0.25,
            band_fmin_hz=2000.0,
            band_fmax_hz=4000.0,
            standardize=True,
        ),
        FeatureProfile(
            "coarse",
            mel=MelSpec(n_fft=1024, hop_length=512, n_mels=40),
            window_s=2.0,
            window_hop_s=1.0,
        ),
    )
    assert isinstance(profiles[2].mel, MelSpec)
    assert Featurizer(profiles).profiles == profiles
    assert FeaturizerSettings(profiles_file=path).feature_profiles() == profiles


def test_without_a_file_the_default_models_profiles_are_used() -> None:
    # The default model directory (models/, else the model installed with the package).
    assert FeaturizerSettings().feature_profiles() == DEFAULT_PROFILES


def test_without_a_file_the_profiles_come_from_the_model_cards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = FeatureProfile("full-16k")
    band = FeatureProfile("alarm-band", band_fmin_hz=1500.0)  # rows of full-16k's windows
    coarse = FeatureProfile("coarse", window_s=2.0, window_hop_s=1.0)
    write_model(tmp_path, "general", full, ["siren", "dog_bark"])
    write_model(tmp_path, "alarms", band, ["smoke_alarm"])
    write_model(tmp_path, "slow", coarse, ["rain"])
    monkeypatch.setenv("SOUNDSENTRY_FEATURIZER_MODEL_DIR", str(tmp_path))
    settings = FeaturizerSettings()
    assert settings.model_dir == tmp_path
    # What the classifier's models take, as the embedded mode derives it: the band is served
    # from full-16k's windows, so it is not emitted on its own.
    assert settings.feature_profiles() == tuple(ModelSet.from_dir(tmp_path).profiles())
    assert set(settings.feature_profiles()) == {full, coarse}
    # A profiles file is an explicit override.
    override = tmp_path / "override"
    override.mkdir()
    path = write(override, [{"name": "only-this"}])
    assert FeaturizerSettings(profiles_file=path).feature_profiles() == (
        FeatureProfile("only-this"),
    )


def test_a_model_card_that_does_not_validate_stops_the_featurizer(tmp_path: Path) -> None:
    write_model(tmp_path, "general", FeatureProfile("full-16k"), ["siren"])
    card = tmp_path / "general.json"
    document = json.loads(card.read_text())
    document["event_rules"] = {"siren": {"on_threshold": 0.0, "off_threshold": 0.0}}
    card.write_text(json.dumps(document))
    with pytest.raises(ConfigurationError, match="event_rules\\.siren\\.on_threshold: ") as caught:
        FeaturizerSettings(model_dir=tmp_path).feature_profiles()
    assert str(card) in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[{"name": "a",}]', r"profiles\.json is not valid JSON: .* line 1 column"),
        ('[{"name": "a", "window_s": NaN}]', "not valid JSON: NaN is not a number"),
        ("", "not valid JSON"),
        ("{}", "must hold a non-empty JSON list of profile objects, got dict"),
        ("[]", "non-empty JSON list .*empty"),
        ('["full"]', "profile #0 must be a JSON object, got str"),
    ],
)
def test_bad_json_is_named(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_profiles(write(tmp_path, content))


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({"name": "a", "window": 1.0}, r"profile #1 \('a'\): unknown key\(s\) \['window'\]"),
        (
            {"name": "a", "mel": {"nfft": 512}},
            r"profile #1 \('a'\) mel: unknown key\(s\) \['nfft'\]",
        ),
    ],
)
def test_unknown_keys_are_rejected(tmp_path: Path, profile: dict[str, Any], message: str) -> None:
    path = write(tmp_path, [{"name": "ok"}, profile])
    with pytest.raises(ConfigurationError, match=message) as info:
        load_profiles(path)
    assert "known keys are" in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        # a band above the mel spec's fmax holds no mel band
        (
            {"name": "high", "band_fmin_hz": 9000.0, "band_fmax_hz": 12000.0},
            r"profile #0 \('high'\): no mel band .* in 9000.0..12000.0 Hz",
        ),
        ({"name": "a", "window_s": "1.0"}, r"profile #0 \('a'\): window_s: .*valid number"),
        ({"name": "a", "standardize": 1}, r"standardize: .*valid boolean"),
        ({"name": "a", "mel": {"n_fft": 500}}, "n_fft=500 must be a power of two"),
        ({"name": "a", "mel": {"n_mels": 32.5}}, r"mel\.n_mels: .*valid integer"),
        ({"name": "a", "mel": 64}, r"mel: .*object"),
        ({"name": "a", "window_s": 0.01}, "shorter than one FFT frame"),
        ({"name": "has space"}, "must be non-empty letters"),
        ({"window_s": 1.0}, r"profile #0: name: Field required"),
    ],
)
def test_invalid_values_are_rejected(tmp_path: Path, profile: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_profiles(write(tmp_path, [profile]))


def test_duplicate_names_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, [{"name": "a"}, {"name": "b"}, {"name": "a", "window_s": 2.0}])
    with pytest.raises(ConfigurationError, match=r"unique, repeated: \['a'\]"):
        load_profiles(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"cannot read profiles file .*nope\.json"):
        load_profiles(tmp_path / "nope.json")


def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(tmp_path, [{"name": "full-16k"}])
    monkeypatch.setenv("SOUNDSENTRY_FEATURIZER_APP_ID", "featurizer-city-a")
    monkeypatch.setenv("SOUNDSENTRY_FEATURIZER_MAX_BATCH_CHUNKS", "250")
    monkeypatch.setenv("SOUNDSENTRY_FEATURIZER_MAX_BATCH_MS", "20")
    monkeypatch.setenv("SOUNDSENTRY_FEATURIZER_PROFILES_FILE", str(path))
    monkeypatch.setenv("SOUNDSENTRY_FEATURIZER_METRICS_PORT", "0")
    settings = FeaturizerSettings()
    assert settings.app_id == "featurizer-city-a"
    assert settings.max_batch_chunks == 250
    assert settings.max_batch_ms == 20
    assert settings.profiles_file == path
    assert settings.metrics_port == 0
    assert settings.metrics_host == "127.0.0.1"  # loopback unless told (the image sets 0.0.0.0)
    assert settings.feature_profiles() == (FeatureProfile("full-16k"),)


def test_defaults() -> None:
    settings = FeaturizerSettings()
    assert (settings.app_id, settings.max_batch_chunks, settings.max_batch_ms) == (
        "soundsentry-featurizer",
        1000,
        50,
    )
    assert (settings.profiles_file, settings.metrics_port) == (None, 9102)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_batch_chunks": 0},
        {"max_batch_ms": 0},
        {"metrics_port": 70000},
        {"app_id": ""},
        {"app_id": "has space"},
        {"unknown": 1},
    ],
)
def test_settings_reject_values_that_cannot_work(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FeaturizerSettings(**kwargs)  # type: ignore[arg-type]


def test_settings_are_frozen_and_every_field_is_documented() -> None:
    settings = FeaturizerSettings()
    with pytest.raises(ValidationError):
        settings.max_batch_chunks = 3  # type: ignore[misc]
    assert all(field.description for field in FeaturizerSettings.model_fields.values())
