"""The committed default model (models/) and the README's example recording."""

from __future__ import annotations

from pathlib import Path

import pytest

from soundsentry.evaluation.sed_metrics import read_event_list
from soundsentry.models.model_set import ModelSet
from soundsentry.pipeline.detect import detect_file
from tests.audio_fixtures import alarm_mismatches

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
EXAMPLE = ROOT / "examples" / "audio" / "kitchen_alarms.flac"
LABELS = {
    "smoke_alarm",
    "co_alarm",
    "glass_break",
    "gun_shot",
    "siren",
    "car_horn",
    "dog_bark",
    "baby_cry",
}


@pytest.fixture(scope="module")
def models() -> ModelSet:
    return ModelSet.from_dir(MODELS)


def test_the_default_model_is_small_and_says_what_it_learned_from(models: ModelSet) -> None:
    (model,) = models.models
    card = model.card
    assert set(card.labels) >= LABELS
    assert sum(p.stat().st_size for p in MODELS.rglob("*") if p.is_file()) <= 2_000_000
    assert set(card.event_rules) == set(card.labels)
    assert set(card.metrics["window"]["labels"]) == set(card.labels)
    assert "NON-COMMERCIAL USE ONLY" in card.licence
    assert "urbansound8k_subset" in {entry["name"] for entry in card.training_data}
    assert (MODELS / f"{card.name}.FREESOUNDCREDITS.txt").is_file()


def test_the_default_model_states_its_false_alarm_budget_and_how_it_detects(
    models: ModelSet,
) -> None:
    # Calibrated to a budget of false alarms per hour, and measured on held-out long mixtures
    # and background hours (benchmarks/detection.py --record): the card says both.
    (model,) = models.models
    card = model.card
    assert card.false_alarm_budget_per_hour is not None
    assert set(card.metrics["false_alarms_per_hour"]) == set(card.labels)
    benchmark = card.metrics["detection_benchmark"]
    assert benchmark["background_hours"] >= 2.0
    assert set(benchmark["labels"]) == {*card.labels, "overall"}
    assert benchmark["command"].startswith("benchmarks/detection.py")


def test_the_readme_example_alarms_are_found_from_their_onsets(models: ModelSet) -> None:
    # Each alarm is found within 250 ms of its onset, and nothing else is found; the second
    # T3 smoke cycle, 1.5 s after the first, may continue its event (alarm_mismatches).
    reference = read_event_list(EXAMPLE.with_name("kitchen_alarms.events.tsv"))
    found = detect_file(EXAMPLE, models)
    assert len(reference) == 4
    assert found
    truth = [(e.label, e.onset_s, e.offset_s) for e in reference]
    assert alarm_mismatches(truth, [(d.label, d.onset_s, d.offset_s) for d in found]) == []


def test_alarm_mismatches_catches_what_a_worse_detector_would_do() -> None:
    truth = [
        ("smoke_alarm", 2.0, 4.5),
        ("smoke_alarm", 6.06, 8.54),
        ("co_alarm", 12.0, 12.71),
        ("co_alarm", 17.92, 18.61),
    ]
    good = [("smoke_alarm", 1.94, 8.67), ("co_alarm", 11.98, 12.73), ("co_alarm", 17.9, 18.67)]
    assert alarm_mismatches(truth, good) == []
    cycles = [("smoke_alarm", 1.92, 4.63), ("smoke_alarm", 6.0, 8.65), *good[1:]]
    assert alarm_mismatches(truth, cycles) == []  # each cycle its own event is right too
    worse = {
        "missed": good[:2],
        "spurious": [*good, ("siren", 3.0, 5.0)],
        "duplicate": [*good, ("smoke_alarm", 6.05, 8.6)],
        "CO cycles 5 s apart merged": [good[0], ("co_alarm", 11.98, 18.67)],
        "second cycle missed": [("smoke_alarm", 1.94, 6.2), *good[1:]],
        "stuck on": [("smoke_alarm", 1.94, 30.0), *good[1:]],
        "late": [("smoke_alarm", 2.5, 8.67), *good[1:]],
    }
    for what, found in worse.items():
        assert alarm_mismatches(truth, found), what
