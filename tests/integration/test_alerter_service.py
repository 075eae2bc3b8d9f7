"""The alerter service against the real broker: scores in, the engine's events out, bad records
parked, and a restarted alerter continuing its open events from the changelog."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from soundsentry.alerting.engine import AlertEngine
from soundsentry.contracts import Event, EventKind, WindowScores, decode, encode, sensor_key
from soundsentry.notify.settings import NotifySettings
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import EVENTS, SCORES, TopicLayout
from soundsentry.services.alerter.app import AlerterService, create_app
from soundsentry.services.alerter.settings import AlerterSettings
from tests.integration.topic_helpers import (
    assert_nothing_committed,
    consume_until,
    eventually,
    produce,
    running,
)
from tests.model_fixtures import patterned_scores


def offline_events(card: Any, messages: list[WindowScores]) -> list[tuple[str, int]]:
    engine = AlertEngine({card.name: card})
    store: dict[str, Any] = {}
    out = []
    for message in messages:
        out += [(e.event_id, e.kind) for e in engine.process(message, store.get).events]
        store[message.sensor_id] = engine.state_of(message.sensor_id)
    return out


def records(messages: list[WindowScores]) -> list[tuple[bytes, bytes]]:
    return [(sensor_key(m.sensor_id), encode(m)) for m in messages]


def alerter(
    kafka: KafkaSettings,
    topics: TopicLayout,
    group: str,
    tmp_path: Path,
    models: Path,
    **settings_: Any,
) -> tuple[AlerterService, CollectorRegistry]:
    registry = CollectorRegistry()
    settings = AlerterSettings(
        app_id=group,
        model_dir=models,
        data_dir=tmp_path,
        metrics_port=0,
        reload_interval_s=0,
        sensor_metrics="*",
        **settings_,
    )
    return create_app(kafka, topics, settings, registry=registry), registry


async def test_scores_become_the_engines_events_and_bad_records_are_parked(
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    card, messages = patterned_scores(models, sensor_id="mic-a")
    # Two sensors whose keys Kafka puts in different partitions of the test's two.
    _, other = patterned_scores(tmp_path, sensor_id="mic-d")
    expected = offline_events(card, messages) + offline_events(card, other)
    revision = WindowScores()
    revision.CopyFrom(messages[3])
    revision.escalated_to = "rekognition"
    bad = WindowScores()
    bad.CopyFrom(messages[4])
    bad.scores[0].score = 7.0
    # Records that once crash-looped the alerter: no sensor id, a time no clock can hold.
    nameless = WindowScores()
    nameless.CopyFrom(messages[5])
    nameless.sensor_id = ""
    far = WindowScores()
    far.CopyFrom(messages[6])
    far.start_time.seconds = 10**12
    # Two sensors interleaved, with a revision, a bad score, poison and an undecodable record.
    mixed = [m for pair in zip(messages, other, strict=True) for m in pair]
    payload = records(mixed)
    payload[10:10] = [
        *records([revision, bad, far]),
        (b"mic-a", encode(nameless)),
        (b"mic-x", b"\xffnot protobuf"),
    ]
    service, registry = alerter(kafka_settings, topic_layout, consumer_group, tmp_path, models)
    await produce(kafka_settings, topic_layout.name(SCORES), payload)
    async with running(service):
        got = await consume_until(
            kafka_settings,
            topic_layout.name(EVENTS),
            consumer_group + "-events",
            lambda got: len(got) >= len(expected),
        )
        letters = await consume_until(
            kafka_settings,
            topic_layout.dlq(SCORES),
            consumer_group + "-dlq",
            lambda got: len(got) >= 4,
        )
        # Each sensor's state is in the changelog partition of its scores.
        changelog = await consume_until(
            kafka_settings,
            service.table.changelog_topic.get_topic_name(),
            consumer_group + "-changelog",
            lambda got: {r.key for r in got} >= {b"mic-a", b"mic-d"},
        )
    sources = await consume_until(
        kafka_settings,
        topic_layout.name(SCORES),
        consumer_group + "-scores",
        lambda got: len(got) >= len(payload),
    )
    partition_of = {r.key: r.partition for r in sources if r.key in (b"mic-a", b"mic-d")}
    assert len(set(partition_of.values())) == 2
    assert {(r.key, r.partition) for r in changelog} == set(partition_of.items())
    events = [decode(Event, r.value) for r in got]
    assert all(r.key == sensor_key(e.sensor_id) for r, e in zip(got, events, strict=True))
    by_sensor = {
        sensor: [(e.event_id, e.kind) for e in events if e.sensor_id == sensor]
        for sensor in ("mic-a", "mic-d")
    }
    assert by_sensor["mic-a"] == offline_events(card, messages)
    assert by_sensor["mic-d"] == offline_events(card, other)
    reasons = sorted(dict(r.headers)["soundsentry.error.reason"].decode() for r in letters)
    assert reasons == ["bad_score", "bad_sensor_id", "bad_time", "undecodable"]
    sample = registry.get_sample_value
    assert sample("soundsentry_alerter_scores_skipped_total", {"reason": "revision"}) == 1
    started = sum(1 for _, kind in expected if kind == EventKind.EVENT_KIND_STARTED)
    assert started > 2
    assert (
        sum(
            sample("soundsentry_alerter_events_total", {"label": label, "kind": "started"}) or 0
            for label in card.labels
        )
        == started
    )
    # Per sensor too, and each start's delay from its onset is observed.
    assert (
        sum(
            sample("soundsentry_sensor_events_total", {"sensor": sensor, "label": label}) or 0
            for label in card.labels
            for sensor in ("mic-a", "mic-d")
        )
        == started
    )
    assert (
        sum(
            sample("soundsentry_detection_latency_seconds_count", {"label": label}) or 0
            for label in card.labels
        )
        == started
    )


def _event(record: Any) -> Event:
    return decode(Event, record.value)


async def test_a_silent_sensor_leaves_memory_and_comes_back_from_the_table(
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    card, messages = patterned_scores(models, sensor_id="mic-a")
    expected = offline_events(card, messages)
    cut = len(messages) // 2
    source, sink = topic_layout.name(SCORES), topic_layout.name(EVENTS)
    service, registry = alerter(
        kafka_settings, topic_layout, consumer_group, tmp_path, models, state_idle_s=1.0
    )
    await produce(kafka_settings, source, records(messages[:cut]))
    async with running(service):
        await eventually(lambda: service.engine.sensors == 1)
        # Silent for state_idle_s: its trackers leave memory (memory follows the streaming).
        await eventually(lambda: service.engine.sensors == 0)
        assert registry.get_sample_value("soundsentry_alerter_sensors") == 0
        await produce(kafka_settings, source, records(messages[cut:]))
        got = await consume_until(
            kafka_settings, sink, consumer_group + "-events", lambda got: len(got) >= len(expected)
        )
    # Its state came back from the table: the events are those of one uninterrupted stream.
    assert list(dict.fromkeys((e.event_id, e.kind) for e in map(_event, got))) == expected


async def test_a_restarted_alerter_continues_open_events_from_its_changelog(
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    card, messages = patterned_scores(models, sensor_id="mic-a")
    expected = offline_events(card, messages)
    # Cut the stream where an event has started and not ended.
    engine, store, cut = AlertEngine({card.name: card}), {}, 0
    open_events: set[str] = set()
    while not open_events or cut < 8:
        for event in engine.process(messages[cut], store.get).events:
            if event.kind == EventKind.EVENT_KIND_STARTED:
                open_events.add(event.event_id)
            else:
                open_events.discard(event.event_id)
        cut += 1
    first_half = offline_events(card, messages[:cut])
    source, sink = topic_layout.name(SCORES), topic_layout.name(EVENTS)

    first, _ = alerter(kafka_settings, topic_layout, consumer_group, tmp_path, models)
    await produce(kafka_settings, source, records(messages[:cut]))
    async with running(first):
        await consume_until(
            kafka_settings, sink, consumer_group + "-1", lambda got: len(got) >= len(first_half)
        )
    # A new process: nothing in memory, the trackers come back from the changelog.
    second, _registry = alerter(kafka_settings, topic_layout, consumer_group, tmp_path, models)
    await produce(kafka_settings, source, records(messages[cut:]))
    async with running(second):
        got = await consume_until(
            kafka_settings,
            sink,
            consumer_group + "-2",
            lambda got: len(got) >= len(expected),
            drain_s=2.0,
        )
        await eventually(lambda: second.engine.sensors == 1)
    # At least once: a worker stopped before its last commit went through (a loaded machine)
    # has its last records read again, and their events published again with the same ids;
    # receivers drop those by id, as here.
    delivered = list(dict.fromkeys((e.event_id, e.kind) for e in map(_event, got)))
    assert delivered == expected
    # The event open at the cut was started by the first alerter and ended by the second.
    assert open_events <= {event_id for event_id, _ in delivered[len(first_half) :]}


async def test_events_are_notified_and_a_failing_destination_is_dead_lettered(
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
    aiohttp_receiver: Any,
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    card, messages = patterned_scores(models, sensor_id="mic-a")
    expected = offline_events(card, messages)
    good = await aiohttp_receiver()
    bad = await aiohttp_receiver(status=404)
    destinations = tmp_path / "destinations.json"
    destinations.write_text(
        json.dumps(
            [
                {"name": "ops", "type": "webhook", "url": good.url, "secret_env": "OPS_SECRET"},
                {"name": "gone", "type": "webhook", "url": bad.url},
            ]
        )
    )
    registry = CollectorRegistry()
    settings = AlerterSettings(
        app_id=consumer_group, model_dir=models, data_dir=tmp_path, metrics_port=0
    )
    service = create_app(
        kafka_settings,
        topic_layout,
        settings,
        registry=registry,
        notify=NotifySettings(destinations_file=destinations, retries=1, backoff_base_s=0.01),
        secrets={"OPS_SECRET": "s3cret"},
    )
    await produce(kafka_settings, topic_layout.name(SCORES), records(messages))
    async with running(service):
        await eventually(lambda: len(good.requests) >= len(expected))
        letters = await consume_until(
            kafka_settings,
            topic_layout.dlq(EVENTS),
            consumer_group + "-dlq",
            lambda got: len(got) >= len(expected),
        )
    delivered = [json.loads(body) for _, body in good.requests]
    assert [(d["event_id"], d["kind"]) for d in delivered] == [
        (event_id, "started" if kind == EventKind.EVENT_KIND_STARTED else "ended")
        for event_id, kind in expected
    ]
    for headers, body in good.requests:
        stamp = headers["X-SoundSentry-Timestamp"]
        digest = hmac.new(b"s3cret", stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert headers["X-SoundSentry-Signature"] == f"sha256={digest}"
    assert len(bad.requests) == len(expected)  # a 404 is a refusal: not retried
    for letter in letters:
        headers = dict(letter.headers)
        assert headers["soundsentry.error.reason"] == b"notification_failed"
        assert headers["soundsentry.error.message"].startswith(b"gone: refused: ")
    assert {decode(Event, r.value).event_id for r in letters} == {e for e, _ in expected}


async def test_a_changelog_batch_kafka_refuses_crashes_the_alerter_before_its_batch_is_committed(
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
) -> None:
    """State Kafka did not store must not be committed past: the worker crashes and the
    restarted one reads the batch again."""
    models = tmp_path / "models"
    models.mkdir()
    _, messages = patterned_scores(models, sensor_id="mic-a")
    service, _ = alerter(kafka_settings, topic_layout, consumer_group, tmp_path, models)
    source = topic_layout.name(SCORES)
    async with running(service):
        producer = service.app.producer._ensure_producer()
        send_batch = producer.send_batch
        changelog = service.table.changelog_topic.get_topic_name()

        async def refuse_state(batch: Any, topic: str, *, partition: int) -> Any:
            if topic != changelog:
                return await send_batch(batch, topic, partition=partition)
            refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            refused.set_exception(KafkaError("refused by the test"))
            return refused

        producer.send_batch = refuse_state
        await produce(kafka_settings, source, records(messages))
        await eventually(lambda: service.app.crash_reason is not None)
    assert isinstance(service.app.crash_reason, KafkaError)
    await assert_nothing_committed(kafka_settings, consumer_group, source)
