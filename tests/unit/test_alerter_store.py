"""The alerter's state writes (``AlerterService._store``), without a broker: each sensor's
trackers go into the table's store and, as one record batch per partition, into the changelog
partition of the sensor's scores; a refused batch fails the write."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from soundsentry.contracts import sensor_key
from soundsentry.exceptions import ConfigurationError
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import TopicLayout
from soundsentry.services.alerter.app import AlerterService, check_copartitioned, create_app
from soundsentry.services.alerter.settings import AlerterSettings
from tests.kafka_fixtures import RecordingProducer
from tests.model_fixtures import patterned_scores

# Scores partition of each sensor (as the source records would say).
PARTITIONS = {"mic-a": 2, "mic-b": 0, "mic-c": 2}


def _service(tmp_path: Path, producer: RecordingProducer) -> AlerterService:
    models = tmp_path / "models"
    models.mkdir()
    settings = AlerterSettings(
        app_id="unit", model_dir=models, data_dir=tmp_path, metrics_port=0, reload_interval_s=0
    )
    streams = {sensor: patterned_scores(models, sensor_id=sensor)[1] for sensor in PARTITIONS}
    service = create_app(KafkaSettings(), TopicLayout(), settings, registry=CollectorRegistry())
    for sensor_id, messages in streams.items():
        for message in messages[:5]:
            service.engine.process(message, lambda _: None)
        service._sensor_partitions[sensor_id] = TP("audio.scores", PARTITIONS[sensor_id])
    service.app.producer._ensure_producer = lambda: producer  # type: ignore[attr-defined]
    return service


def test_each_sensors_state_goes_to_its_scores_partition_one_batch_per_partition(
    tmp_path: Path,
) -> None:
    producer = RecordingProducer()
    service = _service(tmp_path, producer)
    # mic-gone: its partition was revoked while the batch ran (the engine forgot it).
    asyncio.run(service._store(["mic-a", "mic-b", "mic-c", "mic-gone"]))
    topic = service.table.changelog_topic.get_topic_name()
    assert sorted((t, p, [k for k, _ in held]) for t, p, held in producer.sent) == [
        (topic, 0, [b"mic-b"]),
        (topic, 2, [b"mic-a", b"mic-c"]),
    ]
    for _, _, held in producer.sent:
        for key, value in held:
            state = service.engine.encoded_state(key.decode())
            assert value == state
            assert service.table.get(key) == state  # the table reads it without the changelog
    assert service.table.get(sensor_key("mic-gone")) is None


def test_a_refused_changelog_batch_fails_the_write(tmp_path: Path) -> None:
    service = _service(tmp_path, RecordingProducer(refuse=TimeoutError("not acknowledged")))
    with pytest.raises(TimeoutError):
        asyncio.run(service._store(["mic-a", "mic-b"]))


def test_the_alerter_refuses_a_changelog_partitioned_unlike_its_scores() -> None:
    check_copartitioned("audio.scores", {0, 1, 2, 3}, "a-trackers-changelog", {0, 1, 2, 3})
    with pytest.raises(ConfigurationError, match=r"audio\.scores has 8 partitions .*-changelog 4:"):
        check_copartitioned("audio.scores", set(range(8)), "a-trackers-changelog", {0, 1, 2, 3})
