"""``soundsentry serve``: every stage in one process, no Kafka (the embedded mode).

gRPC ingest (``SOUNDSENTRY_INGEST_*``: port, tokens, TLS) hands accepted chunks to the
:class:`~soundsentry.pipeline.embedded.EmbeddedPipeline`: the featurizer, the classifier's models
(``SOUNDSENTRY_CLASSIFIER_MODEL_DIR``), the alerter's event logic and rules
(``SOUNDSENTRY_ALERTER_RULES_FILE``) and the notifications (``SOUNDSENTRY_NOTIFY_*``). Every
event is also printed to standard output as one JSON line; /metrics is served on the ingest's
metrics port. What it shares with the alerter service (rules, notifier, the events metric) comes
from the library, so it imports no module of the alerter service.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import TextIO

from prometheus_client import CollectorRegistry, start_http_server

from soundsentry.alerting.engine import AlertEngine, NotificationPolicy
from soundsentry.alerting.metrics import events_counter
from soundsentry.alerting.settings import AlertRulesSettings
from soundsentry.contracts import Event, kind_name
from soundsentry.models.model_set import ModelSet
from soundsentry.notify.notifier import event_payload as payload_of
from soundsentry.notify.settings import NotifySettings, build_notifier
from soundsentry.pipeline.embedded import EmbeddedPipeline
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import TopicLayout
from soundsentry.services.classifier.settings import ClassifierSettings
from soundsentry.services.ingest.server import IngestServer
from soundsentry.services.ingest.settings import IngestSettings

__all__ = ["build", "main"]

logger = logging.getLogger(__name__)


async def _log_given_up(event: Event, destination: str, problem: str) -> None:
    # No dead-letter topic without Kafka: the log is where a person finds it.
    logger.error("notification %s to %s given up: %s", event.event_id, destination, problem)


def build(
    *,
    ingest: IngestSettings,
    classifier: ClassifierSettings,
    alerter: AlertRulesSettings,
    notify: NotifySettings,
    registry: CollectorRegistry,
    out: TextIO,
    secrets: Mapping[str, str],
) -> tuple[IngestServer, EmbeddedPipeline]:
    """The ingest server and the pipeline behind it (call inside the running loop).

    Raises
    ------
    ConfigurationError
        for unusable models, rules or destinations.
    """
    models = ModelSet.from_dir(classifier.model_dir, threads=classifier.inference_threads)
    rules = alerter.alert_rules()
    engine = AlertEngine({m.name: m.card for m in models.models}, rules)
    notifier = build_notifier(notify, dead_letter=_log_given_up, registry=registry, secrets=secrets)
    counter = events_counter(registry)

    def on_event(event: Event) -> None:
        counter.labels(event.label, kind_name(event.kind)).inc()
        out.write(json.dumps(payload_of(event), sort_keys=True) + "\n")
        out.flush()

    pipeline = EmbeddedPipeline(
        models,
        engine,
        notifier=notifier,
        policy=NotificationPolicy(rules),
        on_event=on_event,
        max_batch=classifier.max_batch_windows,
    )
    server = IngestServer(ingest, KafkaSettings(), TopicLayout(), registry=registry, sink=pipeline)
    return server, pipeline


async def _serve(registry: CollectorRegistry) -> None:
    server, pipeline = build(
        ingest=IngestSettings(),
        classifier=ClassifierSettings(),
        alerter=AlertRulesSettings(),
        notify=NotifySettings(),
        registry=registry,
        out=sys.stdout,
        secrets=os.environ,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    logger.info("serving gRPC on port %d: every stage in this process", server.port)
    try:
        await stop.wait()
    finally:
        await server.stop()
        await pipeline.stop()


def main() -> int:
    """``soundsentry serve``: settings from the environment, serve until SIGTERM or Ctrl-C."""
    registry = CollectorRegistry()
    ingest = IngestSettings()
    if ingest.metrics_port:
        start_http_server(ingest.metrics_port, ingest.metrics_host, registry=registry)
    asyncio.run(_serve(registry))
    return 0
