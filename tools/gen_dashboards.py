"""Write the Grafana dashboards (deploy/grafana/dashboards/*.json) from the panel lists below.

Panels are kept here as (title, unit, queries) so that every query sits in one readable list;
`make dashboards` rewrites the JSON and a test fails when it is stale. Another test runs a real
Prometheus against the services and checks that every query returns series.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generated import write_or_check

OUT = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    queries: tuple[tuple[str, str], ...]  # (PromQL, legend)
    kind: str = "timeseries"
    width: int = 12
    description: str = ""


def quantiles(metric: str, by: str = "") -> tuple[tuple[str, str], ...]:
    """p50 and p99 of a histogram, over all series (or per ``by``)."""
    group = f"le, {by}" if by else "le"
    legend = f"{{{{{by}}}}} " if by else ""
    return tuple(
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{RATE}])))",
            f"{legend}p{round(q * 100)}",
        )
        for q in (0.5, 0.99)
    )


FLEET = (
    Panel(
        "Sensors online",
        "short",
        (
            ("sum(soundsentry_featurizer_sensors)", "sensors with audio in the last 30 s"),
            ("sum(soundsentry_ingest_streams)", "open gRPC streams"),
        ),
        kind="stat",
        width=6,
        description="Sensors the featurizers hold state for (gRPC or direct Kafka producers), "
        "and open gRPC streams on ingest.",
    ),
    Panel(
        "Services up",
        "short",
        (("sum by (job) (up)", "{{job}}"),),
        kind="stat",
        width=6,
        description="Scrape targets answering, per job.",
    ),
    Panel(
        "Audio chunks",
        "cps",
        (
            (
                "sum by (result) (rate(soundsentry_ingest_chunks_total[$__rate_interval]))",
                "{{result}}",
            ),
            (
                'sum(rate(soundsentry_messages_consumed_total{service="featurizer"}'
                "[$__rate_interval]))",
                "consumed by featurizers",
            ),
        ),
        description="Chunks through gRPC ingest by result, and all chunks the featurizers read "
        "(including sensors that produce to Kafka directly).",
    ),
    Panel(
        "Rejected chunks by reason",
        "cps",
        (
            (
                "sum by (reason) (rate(soundsentry_ingest_rejects_total[$__rate_interval]))",
                "{{reason}}",
            ),
        ),
    ),
    Panel(
        "Consumer lag",
        "short",
        (
            ("sum(soundsentry_featurizer_consumer_lag)", "featurizer (audio.pcm)"),
            ("sum(soundsentry_classifier_consumer_lag)", "classifier (audio.windows)"),
            ("sum(soundsentry_alerter_consumer_lag)", "alerter (audio.scores)"),
        ),
        description="Records behind the end of each service's input topic. Growing lag: add "
        "workers (up to the partition count).",
    ),
    Panel(
        "Windows per second",
        "short",
        (
            (
                "sum by (profile) (rate(soundsentry_featurizer_windows_total[$__rate_interval]))",
                "{{profile}}",
            ),
            (
                "sum by (model) (rate(soundsentry_classifier_windows_scored_total"
                "[$__rate_interval]))",
                "scored by {{model}}",
            ),
            (
                "sum by (model) (rate(soundsentry_classifier_windows_gated_total"
                "[$__rate_interval]))",
                "gated (silence) by {{model}}",
            ),
        ),
    ),
    Panel(
        "Inference latency per batch",
        "s",
        quantiles("soundsentry_classifier_inference_seconds"),
        description="Wall-clock ONNX time per scoring batch (all models).",
    ),
    Panel(
        "Detection latency",
        "s",
        quantiles("soundsentry_detection_latency_seconds"),
        description="From a sound's onset (sensor capture clock) to its started event in "
        "Kafka. Expect about window + hop; more means a backlog or skewed sensor clocks.",
    ),
    Panel(
        "Escalations",
        "short",
        (
            (
                "sum by (backend, result) (rate(soundsentry_escalation_windows_total"
                "[$__rate_interval])) * 60",
                "{{backend}} {{result}} /min",
            ),
            (
                "sum by (reason) (rate(soundsentry_escalation_dropped_total"
                "[$__rate_interval])) * 60",
                "not escalated: {{reason}} /min",
            ),
        ),
        description="Uncertain windows sent to the second stage per minute, and those kept at "
        "their first-stage score because of the budget, the breaker or a full queue.",
    ),
    Panel(
        "Escalation breaker and queue",
        "short",
        (
            ("max by (backend) (soundsentry_escalation_breaker_state)", "breaker {{backend}}"),
            ("sum(soundsentry_escalation_pending)", "pending"),
        ),
        description="Breaker: 0 closed, 1 open, 2 half-open.",
    ),
    Panel(
        "Events per label",
        "short",
        (
            (
                'sum by (label) (increase(soundsentry_alerter_events_total{kind="started"}[5m]))',
                "{{label}}",
            ),
        ),
        description="Events started in the last 5 minutes.",
    ),
    Panel(
        "Notification failures",
        "short",
        (
            (
                "sum by (destination, outcome) (increase(soundsentry_notification_attempts_total"
                '{outcome!="ok"}[5m]))',
                "{{destination}} {{outcome}} attempts",
            ),
            (
                "sum by (destination) (increase(soundsentry_notifications_total"
                '{result="dead_lettered"}[5m]))',
                "{{destination}} dead-lettered",
            ),
        ),
        description="Failed attempts (retried) and notifications given up on (parked in "
        "audio.events.dlq) in the last 5 minutes.",
    ),
    Panel(
        "Dead-lettered records",
        "short",
        (
            (
                "sum by (service, reason) (increase(soundsentry_messages_dead_lettered_total[5m]))",
                "{{service}} {{reason}}",
            ),
        ),
        description="Records no service could process, parked in the <topic>.dlq topics.",
    ),
    Panel(
        "Featurizer batch time",
        "s",
        quantiles("soundsentry_featurizer_batch_seconds"),
        description="CPU time per featurizer batch: near a second means it cannot keep up.",
    ),
)

SENSOR_FILTER = 'sensor=~"$sensor"'
SENSOR = (
    Panel(
        "Level",
        "dB",
        ((f"soundsentry_sensor_level_dbfs{{{SENSOR_FILTER}}}", "{{sensor}} dBFS"),),
        width=24,
        description="RMS level of the latest window, dBFS. A flat line at the bottom is a dead "
        "microphone; near 0 is clipping.",
    ),
    Panel(
        "Scores per label",
        "percentunit",
        (
            (
                f"max by (sensor, label) (soundsentry_sensor_score{{{SENSOR_FILTER}}})",
                "{{sensor}} {{label}}",
            ),
        ),
        width=24,
        description="Highest score of each label over the last 20 s (peak hold).",
    ),
    Panel(
        "Events",
        "short",
        (
            (
                "sum by (sensor, label) (increase("
                f"soundsentry_sensor_events_total{{{SENSOR_FILTER}}}[$__range]))",
                "{{sensor}} {{label}}",
            ),
        ),
        kind="bargauge",
        width=24,
        description="Events started in the dashboard's time range.",
    ),
)


def _panel(index: int, panel: Panel, x: int, y: int) -> dict[str, Any]:
    targets = [
        {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
        for i, (expr, legend) in enumerate(panel.queries)
    ]
    return {
        "id": index,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": targets,
    }


def _layout(panels: tuple[Panel, ...]) -> list[dict[str, Any]]:
    out, x, y = [], 0, 0
    for index, panel in enumerate(panels, start=1):
        if x + panel.width > 24:
            x, y = 0, y + 8
        out.append(_panel(index, panel, x, y))
        x += panel.width
    return out


def _datasource_variable() -> dict[str, Any]:
    # Provisioned stacks name their data source uid "prometheus"; elsewhere pick one.
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {"text": "Prometheus", "value": "prometheus"},
        "hide": 0,
    }


def dashboard(
    uid: str, title: str, panels: tuple[Panel, ...], variables: list[Any]
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["soundsentry"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [_datasource_variable(), *variables]},
        "annotations": {"list": []},
        "panels": _layout(panels),
    }


def render() -> dict[str, dict[str, Any]]:
    sensor_variable = {
        "name": "sensor",
        "label": "Sensor",
        "type": "query",
        "datasource": DATASOURCE,
        "definition": "label_values(soundsentry_sensor_level_dbfs, sensor)",
        "query": {
            "query": "label_values(soundsentry_sensor_level_dbfs, sensor)",
            "refId": "sensors",
        },
        "refresh": 2,
        "multi": True,
        "includeAll": False,
        "sort": 1,
    }
    return {
        "fleet.json": dashboard("soundsentry-fleet", "SoundSentry / Fleet overview", FLEET, []),
        "sensor.json": dashboard(
            "soundsentry-sensor", "SoundSentry / Sensor", SENSOR, [sensor_variable]
        ),
    }


def main(argv: list[str] | None = None) -> int:
    files = {OUT / name: json.dumps(content, indent=2) + "\n" for name, content in render().items()}
    return write_or_check(files, argv, description=__doc__, command="make dashboards")


if __name__ == "__main__":
    sys.exit(main())
