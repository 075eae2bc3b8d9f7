"""The four services as separate processes on the real broker, fed by ``soundsentry push``:
the project-made kitchen recording with known alarms goes in over gRPC; the events on the events
topic and the webhook calls match its truth (onsets within 250 ms) and equal what
``soundsentry detect`` finds in the same file."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from soundsentry.contracts import Event, EventKind, decode
from soundsentry.models.model_set import ModelSet
from soundsentry.pipeline.detect import detect_file
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import EVENTS, TopicLayout
from tests.audio_fixtures import alarm_mismatches
from tests.integration.processes import (
    KITCHEN,
    REPO,
    SOUNDSENTRY,
    Services,
    finish_push,
    free_port,
    service_env,
    start_push,
    wait_for_port,
)
from tests.integration.topic_helpers import consume_until, eventually

RECORDING = KITCHEN
TRUTH = REPO / "examples" / "audio" / "kitchen_alarms.events.tsv"
ONSET_COLLAR_S = 0.25


async def test_push_through_four_service_processes_gives_the_known_events(
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
    aiohttp_receiver: Any,
) -> None:
    truth = [line.split("\t") for line in TRUTH.read_text().splitlines() if line.strip()]
    offline = detect_file(RECORDING, ModelSet.from_dir(REPO / "models"))
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
        extra={"SOUNDSENTRY_NOTIFY_DESTINATIONS_FILE": str(destinations)},
    )
    async with Services(env, tmp_path):
        await asyncio.wait_for(wait_for_port(port), 120)
        await finish_push(await start_push(port, sensor="kitchen/mic-1", stream="e2e-kitchen"))
        records = await consume_until(
            kafka_settings,
            topic_layout.name(EVENTS),
            consumer_group + "-events",
            lambda got: (
                sum(decode(Event, r.value).kind == EventKind.EVENT_KIND_ENDED for r in got)
                >= len(offline)
            ),
            drain_s=2.0,
        )
        await eventually(lambda: len(webhook.requests) >= len(records))

    events = [decode(Event, r.value) for r in records]
    ended = sorted(
        (e for e in events if e.kind == EventKind.EVENT_KIND_ENDED),
        key=lambda e: e.onset_sample,
    )
    # Streaming through the services equals detection over the file.
    assert [(e.label, e.onset_sample / 16_000, e.offset_sample / 16_000) for e in ended] == [
        (d.label, d.onset_s, d.offset_s) for d in offline
    ]
    # And the alarms of the truth are found, each once, onsets within the collar.
    assert (
        alarm_mismatches(
            [(label, float(onset), float(offset)) for _, onset, offset, label in truth],
            [(e.label, e.onset_sample / 16_000, e.offset_sample / 16_000) for e in ended],
            collar_s=ONSET_COLLAR_S,
        )
        == []
    )
    # Every event started before it ended, under one id, and the webhook heard each once.
    started = {e.event_id for e in events if e.kind == EventKind.EVENT_KIND_STARTED}
    assert {e.event_id for e in ended} == started
    delivered = [json.loads(body)["delivery_id"] for _, body in webhook.requests]
    assert sorted(delivered) == sorted(
        f"{e.event_id}:{'started' if e.kind == EventKind.EVENT_KIND_STARTED else 'ended'}"
        for e in events
    )


async def test_serve_runs_every_stage_in_one_process_with_the_same_events(
    tmp_path: Path, aiohttp_receiver: Any
) -> None:
    """The embedded mode gives the events of detect, which the distributed test above gets
    through the four services: for the same input, the same events (ids included)."""
    offline = detect_file(RECORDING, ModelSet.from_dir(REPO / "models"))
    webhook = await aiohttp_receiver()
    destinations = tmp_path / "destinations.json"
    destinations.write_text(json.dumps([{"name": "ops", "type": "slack", "url": webhook.url}]))
    port = free_port()
    env = {
        **os.environ,
        "SOUNDSENTRY_INGEST_HOST": "127.0.0.1",
        "SOUNDSENTRY_INGEST_PORT": str(port),
        "SOUNDSENTRY_INGEST_ALLOW_ANONYMOUS": "true",
        "SOUNDSENTRY_INGEST_METRICS_PORT": "0",
        "SOUNDSENTRY_CLASSIFIER_MODEL_DIR": str(REPO / "models"),
        "SOUNDSENTRY_NOTIFY_DESTINATIONS_FILE": str(destinations),
        # No broker anywhere: serve must not need one.
        "SOUNDSENTRY_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
    }
    serve = await asyncio.create_subprocess_exec(
        SOUNDSENTRY, "serve", env=env, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=(tmp_path / "serve.log").open("wb"),
    )  # fmt: skip
    assert serve.stdout is not None
    try:
        await asyncio.wait_for(wait_for_port(port), 120)
        await finish_push(await start_push(port, sensor="kitchen/mic-1", stream="e2e-kitchen"))
        lines: list[dict[str, Any]] = []
        while sum(line["kind"] == "ended" for line in lines) < len(offline):
            lines.append(json.loads(await asyncio.wait_for(serve.stdout.readline(), 60)))
    finally:
        serve.terminate()
        await serve.wait()
        print((tmp_path / "serve.log").read_text(errors="replace")[-3000:])
    ended = sorted((line for line in lines if line["kind"] == "ended"), key=lambda e: e["onset_s"])
    assert [(e["label"], e["onset_s"], e["offset_s"]) for e in ended] == [
        (d.label, d.onset_s, d.offset_s) for d in offline
    ]
    await eventually(lambda: len(webhook.requests) >= len(lines))
    texts = [json.loads(body)["text"] for _, body in webhook.requests]
    assert all(line["event_id"] in " ".join(texts) for line in lines)
