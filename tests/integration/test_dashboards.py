"""Every Grafana panel shows real data: the four services run on the test broker (the stack of
``soundsentry stack``), simulated sensors stream the kitchen recording through them, Debian's
Prometheus scrapes them, and each query of each dashboard must return series."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from soundsentry.dev.simulate import (
    Recording,
    load_recording,
    plan_sensors,
    run_grpc,
    sensor_chunks,
)
from soundsentry.dev.stack import LocalStack, StackPorts, find_prometheus
from soundsentry.ingest.client import push
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import AUDIO, TopicLayout
from tests.integration.processes import KITCHEN, REPO, free_port, wait_for_port
from tests.integration.topic_helpers import produce

DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
SENSORS = 4
# Every uncertain window is escalated (to the default model itself, as a second ONNX stage),
# so the escalation panels have windows revised and windows refused by the budget.
BANDS = {
    label: [0.02, 0.98]
    for label in json.loads((REPO / "models" / "default.json").read_text())["labels"]
}

pytestmark = pytest.mark.skipif(
    find_prometheus() is None, reason="Prometheus is not installed (make test installs it)"
)


def _queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel, expr) of every target of every dashboard."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            out += [(path.name, panel["title"], t["expr"]) for t in panel["targets"]]
    return out


def _grafana_variables(expr: str, sensors: list[str]) -> str:
    """What Grafana substitutes before sending a query (1 s scrapes here)."""
    expr = expr.replace("$__rate_interval", "15s").replace("$__range", "5m")
    return expr.replace("$sensor", "|".join(sensors))  # plain ids: nothing to escape


async def _query(session: aiohttp.ClientSession, url: str, expr: str) -> list[Any]:
    async with session.get(f"{url}/api/v1/query", params={"query": expr}) as response:
        body = await response.json()
    assert body["status"] == "success", (expr, body)
    result: list[Any] = body["data"]["result"]
    return result


async def _until_series(session: aiohttp.ClientSession, url: str, expr: str) -> list[Any]:
    async with asyncio.timeout(120):
        # Polls Prometheus: there is no event to wait on.
        while not (result := await _query(session, url, expr)):  # noqa: ASYNC110
            await asyncio.sleep(0.5)
    return result


async def test_every_dashboard_query_returns_series(
    kafka_settings: KafkaSettings, topic_layout: TopicLayout, consumer_group: str, tmp_path: Path
) -> None:
    queries = _queries()
    assert len(queries) > 20
    destinations = tmp_path / "destinations.json"
    # Nothing listens there: every notification fails and is dead-lettered.
    dead_end = f"http://127.0.0.1:{free_port()}/hook"
    destinations.write_text(json.dumps([{"name": "ops", "type": "webhook", "url": dead_end}]))
    ports = StackPorts(
        ingest=free_port(),
        metrics={name: free_port() for name in ("ingest", "featurizer", "classifier", "alerter")},
        prometheus=free_port(),
    )
    stack = LocalStack(
        tmp_path,
        model_dir=REPO / "models",
        topics=topic_layout,
        ports=ports,
        group=consumer_group,
        bootstrap=kafka_settings.bootstrap_servers,
        extra_env={
            "SOUNDSENTRY_ESCALATION_BACKEND": "onnx",
            "SOUNDSENTRY_ESCALATION_ONNX_CARD": str(REPO / "models" / "default.json"),
            "SOUNDSENTRY_ESCALATION_BANDS": json.dumps(BANDS),
            "SOUNDSENTRY_NOTIFY_DESTINATIONS_FILE": str(destinations),
            "SOUNDSENTRY_NOTIFY_RETRIES": "1",
            "SOUNDSENTRY_NOTIFY_BACKOFF_BASE_S": "0.05",
        },
    )
    try:
        await stack.start_services()
        url = await stack.start_prometheus(scrape_interval_s=1.0)
        await asyncio.wait_for(wait_for_port(ports.ingest), 120)
        await asyncio.wait_for(wait_for_port(ports.prometheus), 60)

        recording = load_recording(KITCHEN)
        # A dead microphone beside the kitchens: its windows are gated as silence.
        silence = Recording("silence", recording.sample_rate_hz, 0 * recording.frames, ())
        plans = plan_sensors(SENSORS, [recording, silence], prefix="mic-", seed=7)
        report = await run_grpc(
            f"127.0.0.1:{ports.ingest}", plans, duration_s=recording.duration_s, chunk_ms=100
        )
        assert report.published == report.sent > 0, report
        # Bad input for the reject and dead-letter panels: an odd byte count over gRPC, and
        # a record no featurizer can decode straight on the audio topic.
        bad = next(sensor_chunks(plans[0], duration_s=0.1, chunk_ms=100))
        bad.pcm = bad.pcm[:-1]
        bad.stream_id = "bad-stream"
        rejected = await push(f"127.0.0.1:{ports.ingest}", [bad])
        assert rejected.rejected, rejected
        await produce(kafka_settings, topic_layout.name(AUDIO), [(b"mic-0", b"\xff garbage")])

        async with aiohttp.ClientSession() as session:
            # The last things to happen: a dead letter counted and events scraped.
            await _until_series(session, url, "soundsentry_messages_dead_lettered_total")
            await _until_series(
                session, url, 'soundsentry_notifications_total{result="dead_lettered"}'
            )
            sensors = [
                series["metric"]["sensor"]
                for series in await _until_series(session, url, "soundsentry_sensor_level_dbfs")
            ]
            assert sorted(sensors) == sorted(p.sensor_id for p in plans)
            await asyncio.sleep(3.0)  # a few more scrapes, so that every rate has two samples
            empty = [
                f"{board} / {panel}: {expr}"
                for board, panel, expr in queries
                if not await _query(session, url, _grafana_variables(expr, sensors[:1]))
            ]
    finally:
        await stack.stop()
        for name in stack.processes:
            print(f"--- {name} ---\n{stack.log_tail(name)}")
    assert not empty, "queries without series:\n" + "\n".join(empty)
