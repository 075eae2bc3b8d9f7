"""Crash tests: while a recording with known alarms streams in real time through the four
service processes, each service in turn is killed with SIGKILL and started again. The events
that come out (ids, labels, times) equal those of the uninterrupted pipeline, which equal
``soundsentry detect``'s: nothing lost, and duplicates only as copies with the same id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from soundsentry.contracts import Event, EventKind, decode
from soundsentry.events.tracker import event_id
from soundsentry.models.model_set import ModelSet
from soundsentry.pipeline.detect import detect_file
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import EVENTS, TopicLayout
from soundsentry.testing.kafka_broker import LocalKafka
from tests.integration.processes import (
    KITCHEN,
    REPO,
    Services,
    finish_push,
    free_port,
    service_env,
    start_push,
    wait_for_port,
)
from tests.integration.topic_helpers import consume_until, eventually

RECORDING = KITCHEN
SENSOR, STREAM = "kitchen/mic-1", "crash-kitchen"
# When (seconds into the real-time stream) each service dies, and how long it stays down.
KILLS = (("featurizer", 3.0), ("classifier", 7.0), ("alerter", 11.0), ("ingest", 15.0))
DOWN_S = 1.0


async def test_killing_each_service_mid_stream_loses_and_changes_no_event(
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
    aiohttp_receiver: Any,
) -> None:
    async def kill_each(services: Services, started: float) -> None:
        for name, at in KILLS:
            await asyncio.sleep(max(0.0, started + at - asyncio.get_running_loop().time()))
            await services.kill(name)
            await asyncio.sleep(DOWN_S)
            await services.start(name)

    out = await stream_with_trouble(
        kill_each,
        kafka_settings=kafka_settings,
        topic_layout=topic_layout,
        consumer_group=consumer_group,
        tmp_path=tmp_path,
        aiohttp_receiver=aiohttp_receiver,
    )
    assert b"reconnected" in out  # the ingest restart was noticed and survived


async def test_a_broker_killed_and_restarted_mid_stream_loses_and_changes_no_event(
    local_kafka: LocalKafka,
    *,
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
    aiohttp_receiver: Any,
) -> None:
    async def restart_broker(services: Services, started: float) -> None:
        services.supervise()
        await asyncio.sleep(max(0.0, started + 8.0 - asyncio.get_running_loop().time()))
        # On this thread, not a worker thread: the broker dies with the thread that started
        # it (PR_SET_PDEATHSIG), and a worker thread ends before the session does.
        local_kafka.restart(kill=True)

    await stream_with_trouble(
        restart_broker,
        kafka_settings=kafka_settings,
        topic_layout=topic_layout,
        consumer_group=consumer_group,
        tmp_path=tmp_path,
        aiohttp_receiver=aiohttp_receiver,
    )


async def stream_with_trouble(
    trouble: Callable[[Services, float], Awaitable[None]],
    *,
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
    aiohttp_receiver: Any,
) -> bytes:
    """Stream the kitchen recording in real time through the four services while ``trouble``
    happens; check the events equal the uninterrupted run's; return push's output."""
    offline = detect_file(RECORDING, ModelSet.from_dir(REPO / "models"))
    rate = 16_000
    expected = set()
    for found in offline:
        onset = round(found.onset_s * rate)
        ident = event_id(SENSOR, STREAM, found.label, onset)
        expected |= {(ident, "started", found.label, onset, None)}
        expected |= {(ident, "ended", found.label, onset, round(found.offset_s * rate))}
    webhook = await aiohttp_receiver()
    destinations = tmp_path / "destinations.json"
    destinations.write_text(json.dumps([{"name": "ops", "type": "webhook", "url": webhook.url}]))
    port = free_port()
    env = service_env(
        kafka_settings,
        topic_layout,
        group=consumer_group,
        data_dir=tmp_path,
        ingest_port=port,
        extra={
            "SOUNDSENTRY_NOTIFY_DESTINATIONS_FILE": str(destinations),
            # A killed worker's partitions go to its restart after this long.
            "SOUNDSENTRY_KAFKA_SESSION_TIMEOUT_S": "6",
            # A table recovery stalled by the broker's restart (rare) is restarted well within
            # the test's wait.
            "SOUNDSENTRY_ALERTER_RECOVERY_STALL_S": "10",
        },
    )
    async with Services(env, tmp_path) as services:
        await asyncio.wait_for(wait_for_port(port), 120)
        push = await start_push(port, sensor=SENSOR, stream=STREAM, realtime=True)
        await trouble(services, asyncio.get_running_loop().time())
        out = await finish_push(push)
        records = await consume_until(
            kafka_settings,
            topic_layout.name(EVENTS),
            consumer_group + "-events",
            lambda got: (
                {(decode(Event, r.value).event_id, decode(Event, r.value).kind) for r in got}
                >= {(ident, kind_code(kind)) for ident, kind, *_ in expected}
            ),
            drain_s=5.0,
        )
        await eventually(lambda: len(webhook.requests) >= len(expected))

    got = set()
    for record in records:
        event = decode(Event, record.value)
        kind = "started" if event.kind == EventKind.EVENT_KIND_STARTED else "ended"
        offset = event.offset_sample if kind == "ended" else None
        got.add((event.event_id, kind, event.label, event.onset_sample, offset))
    assert got == expected
    delivered = {json.loads(body)["delivery_id"] for _, body in webhook.requests}
    assert delivered == {f"{ident}:{kind}" for ident, kind, *_ in expected}
    return out


def kind_code(kind: str) -> int:
    return EventKind.EVENT_KIND_STARTED if kind == "started" else EventKind.EVENT_KIND_ENDED
