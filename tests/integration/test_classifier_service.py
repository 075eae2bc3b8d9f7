"""The classifier service against the real broker: windows in, the offline scores out.

The service is built with ``create_app`` (a fresh registry, its own consumer group and topics)
and run in-process; windows are produced with a plain producer, scores and dead letters read
with plain consumers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry

from soundsentry.contracts import WindowScores, decode, encode, sensor_key
from soundsentry.features.featurizer import FeatureProfile, Featurizer, Window, window_to_proto
from soundsentry.models.model_set import ModelSet, score_to_proto
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import SCORES, WINDOWS, TopicLayout
from soundsentry.services.classifier.app import create_app
from soundsentry.services.classifier.settings import ClassifierSettings, EscalationSettings
from tests.audio_fixtures import chunks, recording
from tests.aws_fixtures import PROJECT_VERSION_ARN, REGION, FailingEndpoint
from tests.integration.topic_helpers import consume_until, eventually, produce, running
from tests.model_fixtures import expected_scores, write_model

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
    # Records that once crash-looped the classifier or were parked a stage late.
    nameless = window_to_proto(windows[1])
    nameless.sensor_id = ""
    poisoned = window_to_proto(windows[2])
    values = np.frombuffer(poisoned.log_mel_db, dtype="<f4").copy()
    values[3] = np.nan
    poisoned.log_mel_db = values.tobytes()
    bad = [
        (b"mic-x", b"\xffnot a protobuf"),
        (b"mic-x", encode(wrong_shape)),
        (b"mic-x", encode(unknown)),
        (b"mic-a", encode(nameless)),
        (b"mic-a", encode(poisoned)),
    ]
    records[5:5] = bad  # in the middle of the good ones

    settings = ClassifierSettings(
        app_id=consumer_group,
        model_dir=model_dir,
        max_batch_windows=32,
        max_batch_ms=20,
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
            lambda got: len(got) >= 4,
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
    assert reasons == [
        "bad_sensor_id",
        "non_finite_window",
        "undecodable",
        "window_shape_mismatch",
    ]
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
        metrics_port=0,
        reload_interval_s=0,  # the test reloads by hand, at a known moment
    )
    registry = CollectorRegistry()
    service = create_app(kafka_settings, topic_layout, settings, registry=registry)
    # Only windows the first model scores: a BAND window still in flight at the reload would be
    # scored by the new alarms model, and the test could not say which model mic-a should get.
    first = [w for w in sensor_windows("siren", "mic-a") if w.profile == FULL.name]
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
            lambda got: len(got) >= len(first),
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


@pytest.mark.parametrize("backend", ["onnx", "rekognition"])
async def test_uncertain_windows_get_a_revision_from_the_second_stage(
    backend: str,
    *,
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
    model_dir: Path,
    moto_endpoint: str,
) -> None:
    windows = sensor_windows("siren", "mic-a")
    # Every siren score of the general model is uncertain under this band: all its windows go
    # (within a per-sensor budget large enough for all of them).
    bands = {"siren": (0.0, 1.0)}
    budget = {"calls_per_sensor_per_minute": 60.0}
    if backend == "onnx":
        big_dir = tmp_path / "second"
        big_dir.mkdir()
        big_weights, big_bias = write_model(big_dir, "big", FULL, ["siren", "dog_bark"], seed=5)
        escalation = EscalationSettings(
            backend="onnx", bands=bands, onnx_card=big_dir / "big.json", merge="mean", **budget
        )
        escalated_to = "onnx:big@0.0.1"

        def answer(window: Window) -> float:
            return float(expected_scores(window.log_mel_db[None], big_weights, big_bias)[0, 0])
    else:
        escalation = EscalationSettings(
            backend="rekognition",
            bands=bands,
            merge="mean",
            rekognition_project_version_arn=PROJECT_VERSION_ARN,
            rekognition_region=REGION,
            rekognition_endpoint_url=moto_endpoint,
            rekognition_label_map={"MyLogo": "siren"},  # moto's one canned label
            **budget,
        )
        escalated_to = "rekognition"

        def answer(window: Window) -> float:
            return 77.7729721069336 / 100

    offline = ModelSet.from_dir(model_dir)
    labels = {m.name: list(m.card.labels) for m in offline.models}
    expected = {}
    revised = 0
    for result in offline.score(windows):
        first = score_to_proto(result, labels[result.model])
        expected[first.score_id] = first
        if result.model == "general":
            scores = result.scores.copy()
            scores[0] = (scores[0] + answer(result.window)) / 2
            merged = dataclasses.replace(result, scores=scores)
            revision = score_to_proto(merged, labels["general"], escalated_to=escalated_to)
            expected[revision.score_id] = revision
            revised += 1

    settings = ClassifierSettings(
        app_id=consumer_group,
        model_dir=model_dir,
        metrics_port=0,
        reload_interval_s=0,
    )
    registry = CollectorRegistry()
    service = create_app(
        kafka_settings, topic_layout, settings, registry=registry, escalation=escalation
    )
    await produce(
        kafka_settings,
        topic_layout.name(WINDOWS),
        [(sensor_key(w.sensor_id), encode(window_to_proto(w))) for w in windows],
    )
    async with running(service):
        scored = await consume_until(
            kafka_settings,
            topic_layout.name(SCORES),
            consumer_group + "-scores",
            lambda got: {decode(WindowScores, r.value).score_id for r in got} >= set(expected),
        )
    got = {}
    for record in scored:
        message = decode(WindowScores, record.value)
        got[message.score_id] = message
    assert set(got) == set(expected)
    for score_id, want in expected.items():
        have = got[score_id]
        assert (have.window_id, have.model, have.escalated_to) == (
            want.window_id,
            want.model,
            want.escalated_to,
        )
        np.testing.assert_allclose(
            [s.score for s in have.scores], [s.score for s in want.scores], atol=1e-5
        )
    name = "onnx:big@0.0.1" if backend == "onnx" else "rekognition"
    sample = registry.get_sample_value
    assert (
        sample("soundsentry_escalation_windows_total", {"backend": name, "result": "revised"})
        == revised
    )
    assert sample("soundsentry_escalation_uncertain_windows_total") == revised


async def test_an_escalated_window_stays_uncommitted_until_its_escalation_ends(
    aws_credentials: None,
    *,
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
    model_dir: Path,
) -> None:
    """At least once for revisions: the held record is where a restart would resume."""
    # The alarm model's windows first (they have no band: never escalated), then the general
    # model's; with one call per sensor per minute only the first of those is escalated.
    windows = sorted(sensor_windows("siren", "mic-a"), key=lambda w: w.profile == FULL.name)
    records = [(sensor_key(w.sensor_id), encode(window_to_proto(w))) for w in windows]
    held = next(i for i, w in enumerate(windows) if w.profile == FULL.name)
    assert held > 0
    offline = ModelSet.from_dir(model_dir)
    labels = {m.name: list(m.card.labels) for m in offline.models}
    first_stage = {score_to_proto(r, labels[r.model]).score_id for r in offline.score(windows)}
    endpoint = FailingEndpoint(hold=True)
    escalation = EscalationSettings(
        backend="rekognition",
        bands={"siren": (0.0, 1.0)},
        calls_per_sensor_per_minute=1.0,
        timeout_s=120.0,
        retries=0,
        rekognition_project_version_arn=PROJECT_VERSION_ARN,
        rekognition_region=REGION,
        rekognition_endpoint_url=endpoint.url,
    )
    settings = ClassifierSettings(app_id=consumer_group, model_dir=model_dir, metrics_port=0)
    registry = CollectorRegistry()
    service = create_app(
        kafka_settings, topic_layout, settings, registry=registry, escalation=escalation
    )
    source = topic_layout.name(WINDOWS)
    await produce(kafka_settings, source, records)
    admin = AIOKafkaAdminClient(**kafka_settings.aiokafka_kwargs())
    await admin.start()

    async def committed() -> int:
        offsets = await admin.list_consumer_group_offsets(consumer_group)
        return sum(max(meta.offset, 0) for tp, meta in offsets.items() if tp.topic == source)

    try:
        async with running(service):
            # Scoring is not held back by the hanging call: every first-stage score comes out.
            await consume_until(
                kafka_settings,
                topic_layout.name(SCORES),
                consumer_group + "-scores",
                lambda got: {decode(WindowScores, r.value).score_id for r in got} >= first_stage,
            )
            assert endpoint.requests == 1
            assert service.escalator is not None
            assert service.escalator.pending == 1
            # The commit moves up to the held record and stops there while the call hangs.
            offsets = {held}
            while (offset := await committed()) != held:
                offsets.add(offset)
                await asyncio.sleep(0.2)
            await asyncio.sleep(3 * service.app.commit_interval_s)
            assert await committed() == held
            assert max(offsets) <= held
            endpoint.release()  # the call fails: the window keeps its first-stage score
            while await committed() != len(records):  # noqa: ASYNC110 - polls the broker
                await asyncio.sleep(0.2)
    finally:
        endpoint.close()
        await admin.close()
    failed = {"backend": "rekognition", "result": "failed"}
    assert registry.get_sample_value("soundsentry_escalation_windows_total", failed) == 1
