"""The classifier service against the real broker: windows in, the offline scores out.

The service is built with ``create_app`` (a fresh registry, its own consumer group and topics)
and run in-process; windows are produced with a plain producer, scores and dead letters read
with plain consumers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from soundsentry.contracts import WindowScores, decode, encode, sensor_key
from soundsentry.features import FeatureProfile, Featurizer, Window, window_to_proto
from soundsentry.models import ModelSet, score_to_proto
from soundsentry.services.classifier.app import create_app
from soundsentry.services.classifier.settings import ClassifierSettings
from soundsentry.settings import KafkaSettings
from soundsentry.topics import SCORES, WINDOWS, TopicLayout
from tests.audio_fixtures import chunks, recording
from tests.integration.topic_helpers import consume_until, eventually, produce, running
from tests.model_fixtures import write_model

FULL = FeatureProfile("full-16k")
BAND = FeatureProfile(
    "alarm-band", window_s=0.5, window_hop_s=0.25, band_fmin_hz=2000.0, band_fmax_hz=4000.0
)
GATE_DBFS = -60.0


def sensor_windows(name: str, sensor_id: str, *, gain: float = 1.0) -> list[Window]:
    samples, rate = recording(name)
    stream = chunks(samples * gain, rate, [1600], sensor_id=sensor_id)
    return Featurizer([FULL, BAND]).process(list(stream)).windows


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    write_model(folder, "general", FULL, ["siren", "dog_bark"], frame_output=True)
    write_model(
        folder, "alarms", BAND, ["smoke_alarm", "co_alarm"], seed=1, silence_gate_dbfs=GATE_DBFS
    )
    return folder


async def test_windows_of_many_sensors_get_the_offline_scores_and_bad_ones_are_parked(
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
    model_dir: Path,
) -> None:
    # Two sensors, one of them so quiet that the alarm model's silence gate skips its windows.
    windows = sensor_windows("siren", "mic-a") + sensor_windows("dog_bark", "mic-b", gain=1e-3)
    expected = {}
    offline = ModelSet.from_dir(model_dir)
    labels = {m.name: list(m.card.labels) for m in offline.models}
    for result in offline.score(windows):
        message = score_to_proto(result, labels[result.model])
        expected[message.score_id] = message
    gated = sum(1 for m in expected.values() if m.gated)
    assert 0 < gated < sum(1 for m in expected.values() if m.model == "alarms")

    records = [(sensor_key(w.sensor_id), encode(window_to_proto(w))) for w in windows]
    unknown = window_to_proto(windows[0])
    unknown.profile = "not-loaded"
    wrong_shape = window_to_proto(windows[0])
    wrong_shape.num_bands, wrong_shape.num_frames = 1, len(wrong_shape.log_mel_db) // 4
    bad = [
        (b"mic-x", b"\xffnot a protobuf"),
        (b"mic-x", encode(wrong_shape)),
        (b"mic-x", encode(unknown)),
    ]
    records[5:5] = bad  # in the middle of the good ones

    settings = ClassifierSettings(
        app_id=consumer_group,
        model_dir=model_dir,
        max_batch_windows=32,
        max_batch_ms=20,
        data_dir=tmp_path,
        metrics_port=0,
    )
    registry = CollectorRegistry()
    service = create_app(kafka_settings, topic_layout, settings, registry=registry)
    source = topic_layout.name(WINDOWS)
    await produce(kafka_settings, source, records)
    async with running(service):
        scored = await consume_until(
            kafka_settings,
            topic_layout.name(SCORES),
            consumer_group + "-scores",
            lambda got: {decode(WindowScores, r.value).score_id for r in got} >= set(expected),
        )
        letters = await consume_until(
            kafka_settings,
            topic_layout.dlq(WINDOWS),
            consumer_group + "-dlq",
            lambda got: len(got) >= 2,
        )
        await eventually(
            lambda: (
                registry.get_sample_value(
                    "soundsentry_messages_consumed_total",
                    {"service": "classifier", "topic": source},
                )
                == len(records)
            )
        )

    got = {}
    for record in scored:
        message = decode(WindowScores, record.value)
        assert record.key == sensor_key(message.sensor_id)
        got[message.score_id] = message
    assert set(got) == set(expected)  # nothing for the parked or unmatched windows
    for score_id, want in expected.items():
        have = got[score_id]
        assert (have.window_id, have.model, have.gated) == (want.window_id, want.model, want.gated)
        assert [s.label for s in have.scores] == [s.label for s in want.scores]
        np.testing.assert_allclose(
            [s.score for s in have.scores], [s.score for s in want.scores], atol=1e-5
        )
        for h, w in zip(have.scores, want.scores, strict=True):
            np.testing.assert_allclose(h.frame_scores, w.frame_scores, atol=1e-5)

    reasons = sorted(
        dict(letter.headers)["soundsentry.error.reason"].decode() for letter in letters
    )
    assert reasons == ["undecodable", "window_shape_mismatch"]
    sample = registry.get_sample_value
    assert sample("soundsentry_classifier_windows_gated_total", {"model": "alarms"}) == gated
    for model in ("general", "alarms"):
        ran = sum(1 for m in expected.values() if m.model == model and not m.gated)
        assert sample("soundsentry_classifier_windows_scored_total", {"model": model}) == ran
    assert sample("soundsentry_classifier_windows_unmatched_total", {"profile": "not-loaded"}) == 1
    assert sample("soundsentry_classifier_batch_windows_sum") == len(records)
    assert sample("soundsentry_classifier_inference_seconds_count") == sample(
        "soundsentry_classifier_batch_windows_count"
    )


async def test_models_are_hot_reloaded_and_a_broken_card_does_not_stop_scoring(
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    write_model(folder, "general", FULL, ["siren", "dog_bark"])
    settings = ClassifierSettings(
        app_id=consumer_group,
        model_dir=folder,
        data_dir=tmp_path,
        metrics_port=0,
        reload_interval_s=0,  # the test reloads by hand, at a known moment
    )
    registry = CollectorRegistry()
    service = create_app(kafka_settings, topic_layout, settings, registry=registry)
    first = sensor_windows("siren", "mic-a")
    second = sensor_windows("dog_bark", "mic-b")
    source, scores = topic_layout.name(WINDOWS), topic_layout.name(SCORES)

    def models_of(records: list[Any], sensor: str) -> set[tuple[str, str]]:
        messages = [decode(WindowScores, r.value) for r in records]
        return {(m.model, m.model_version) for m in messages if m.sensor_id == sensor}

    async with running(service):
        await produce(
            kafka_settings,
            source,
            [(sensor_key(w.sensor_id), encode(window_to_proto(w))) for w in first],
        )
        await consume_until(
            kafka_settings,
            scores,
            consumer_group + "-1",
            lambda got: len(got) >= sum(w.profile == FULL.name for w in first),
        )
        # A new model, a new version of the old one, and a broken card.
        write_model(folder, "alarms", BAND, ["smoke_alarm"], seed=1)
        card = folder / "general.json"
        document = json.loads(card.read_text())
        document["version"] = "2.0.0"
        card.write_text(json.dumps(document))
        (folder / "broken.json").write_text("{not json")
        report = service.reload_models()
        assert sorted(report.loaded) == ["alarms.json", "general.json"]
        assert [name for name, _ in report.failed] == ["broken.json"]

        await produce(
            kafka_settings,
            source,
            [(sensor_key(w.sensor_id), encode(window_to_proto(w))) for w in second],
        )
        records = await consume_until(
            kafka_settings,
            scores,
            consumer_group + "-2",
            lambda got: models_of(got, "mic-b") == {("general", "2.0.0"), ("alarms", "0.0.1")},
        )
    assert models_of(records, "mic-a") == {("general", "0.0.1")}
    sample = registry.get_sample_value
    assert sample("soundsentry_classifier_models_loaded") == 2
    assert (
        sample(
            "soundsentry_classifier_model_reloads_total",
            {"card": "broken.json", "result": "failed"},
        )
        == 1
    )
