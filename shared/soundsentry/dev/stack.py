"""The whole system on one machine without Docker: Kafka from its jars, the four services and
Prometheus on loopback, fed by simulated sensors (``soundsentry stack``).

The dashboard test and the pipeline benchmark start the same stack (on a broker of their own
and free ports), so what an operator tries on a laptop is what is tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from soundsentry.exceptions import ConfigurationError
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import TopicLayout, ensure_topics

if TYPE_CHECKING:
    from soundsentry.testing.kafka_broker import LocalKafka

__all__ = [
    "SERVICES",
    "LocalStack",
    "StackPorts",
    "find_prometheus",
    "prometheus_config",
    "soundsentry_command",
]

logger = logging.getLogger(__name__)

SERVICES = ("ingest", "featurizer", "classifier", "alerter")


@dataclass(frozen=True, slots=True)
class StackPorts:
    """Loopback ports of one stack; the defaults are the services' own defaults."""

    ingest: int = 50051
    metrics: Mapping[str, int] = field(
        default_factory=lambda: {
            "ingest": 9101,
            "featurizer": 9102,
            "classifier": 9103,
            "alerter": 9104,
        }
    )
    prometheus: int = 9090

    @classmethod
    def free(
        cls,
        *,
        ingest: int = 0,
        metrics: Mapping[str, int] | None = None,
        prometheus: int = 0,
    ) -> StackPorts:
        """These ports, with each 0 replaced by a free loopback port (``soundsentry stack``'s
        default: it starts beside whatever else the machine runs)."""
        from soundsentry.testing.kafka_broker import free_port  # noqa: PLC0415

        given = dict(metrics or {})
        return cls(
            ingest=ingest or free_port(),
            metrics={name: given.get(name) or free_port() for name in SERVICES},
            prometheus=prometheus or free_port(),
        )


def soundsentry_command() -> list[str]:
    """How to run ``soundsentry`` from this interpreter (its console script when installed)."""
    script = Path(sys.executable).with_name("soundsentry")
    return [str(script)] if script.exists() else [sys.executable, "-m", "soundsentry.cli"]


def find_prometheus() -> str | None:
    """The Prometheus server binary (Debian's ``prometheus`` package puts it on PATH)."""
    return shutil.which("prometheus") or (
        "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None
    )


def prometheus_config(
    targets: Mapping[str, str], *, scrape_interval_s: float = 5.0, rule_files: Sequence[Path] = ()
) -> str:
    """A Prometheus configuration scraping each service (job = service name) at ``host:port``."""
    lines = [
        "global:",
        f"  scrape_interval: {scrape_interval_s:g}s",
        f"  evaluation_interval: {scrape_interval_s:g}s",
    ]
    if rule_files:
        lines.append("rule_files:")
        lines += [f"  - {path}" for path in rule_files]
    lines.append("scrape_configs:")
    for job, target in targets.items():
        lines += [
            f"  - job_name: {job}",
            "    static_configs:",
            f"      - targets: ['{target}']",
            "        labels:",
            f"          service: {job}",
        ]
    return "\n".join(lines) + "\n"


class LocalStack:
    """Services (and optionally Prometheus) as child processes on 127.0.0.1.

    Give ``bootstrap`` to use a running broker; :meth:`start_kafka` starts one from the jars
    otherwise. Logs go to ``workdir``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        model_dir: Path,
        topics: TopicLayout | None = None,
        ports: StackPorts | None = None,
        group: str = "soundsentry",
        extra_env: Mapping[str, str] | None = None,
        bootstrap: str | None = None,
    ) -> None:
        self.workdir = workdir
        from soundsentry.models.model_set import resolve_model_dir  # noqa: PLC0415 - loads onnxruntime

        self.model_dir = resolve_model_dir(model_dir).resolve()
        self.topics = topics or TopicLayout()
        self.ports = ports or StackPorts()
        self.group = group
        self.extra_env = dict(extra_env or {})
        self.bootstrap = bootstrap
        self.broker: LocalKafka | None = None
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        workdir.mkdir(parents=True, exist_ok=True)

    def start_kafka(self, port: int = 9092) -> str:
        """Start a local broker (jars fetched from Maven Central once). Call it from the main
        thread: the broker dies with the thread that started it."""
        from soundsentry.testing.kafka_broker import LocalKafka, fetch_kafka  # noqa: PLC0415

        # Kept before it starts, so that stop_kafka() stops a broker interrupted mid-start.
        self.broker = LocalKafka(libs=fetch_kafka(), workdir=self.workdir / "kafka", port=port)
        self.bootstrap = self.broker.start()
        return self.bootstrap

    def broker_pid(self) -> int:
        """The process id of the broker :meth:`start_kafka` started."""
        if self.broker is None:
            raise ConfigurationError("no broker was started here")
        return self.broker.pid

    def stop_kafka(self) -> None:
        if self.broker is not None:
            self.broker.stop()
        self.broker = None

    def env(self) -> dict[str, str]:
        """Every service's environment: broker, topics, loopback ports, models, groups."""
        if self.bootstrap is None:
            raise ConfigurationError("no broker: pass bootstrap or call start_kafka() first")
        env = {
            **os.environ,
            "SOUNDSENTRY_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "SOUNDSENTRY_TOPICS_PREFIX": self.topics.prefix,
            "SOUNDSENTRY_TOPICS_PARTITIONS": str(self.topics.partitions),
            "SOUNDSENTRY_TOPICS_REPLICATION_FACTOR": str(self.topics.replication_factor),
            "SOUNDSENTRY_INGEST_HOST": "127.0.0.1",
            "SOUNDSENTRY_INGEST_PORT": str(self.ports.ingest),
            # Loopback only, no tokens: a development stack.
            "SOUNDSENTRY_INGEST_ALLOW_ANONYMOUS": "true",
            # A few sensors: each gets its series on the per-sensor dashboard.
            "SOUNDSENTRY_CLASSIFIER_SENSOR_METRICS": "*",
            "SOUNDSENTRY_ALERTER_SENSOR_METRICS": "*",
        }
        for service in SERVICES:
            prefix = f"SOUNDSENTRY_{service.upper()}_"
            env[prefix + "METRICS_HOST"] = "127.0.0.1"
            env[prefix + "METRICS_PORT"] = str(self.ports.metrics[service])
            if service != "ingest":
                env[prefix + "APP_ID"] = f"{self.group}-{service}"
            if service == "alerter":  # the Faust service
                env[prefix + "DATA_DIR"] = str(self.workdir / "data")
        for service in ("featurizer", "classifier", "alerter"):
            env[f"SOUNDSENTRY_{service.upper()}_MODEL_DIR"] = str(self.model_dir)
        env.update(self.extra_env)
        return env

    async def _spawn(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.processes[name] = await asyncio.create_subprocess_exec(
            *args, env=dict(env or self.env()), stdout=log, stderr=log
        )

    async def start_services(self, names: Sequence[str] = SERVICES) -> None:
        """Create the topics, then start ``names``."""
        await ensure_topics(KafkaSettings(bootstrap_servers=self.bootstrap or ""), self.topics)
        for name in names:
            await self._spawn(name, *soundsentry_command(), name)

    async def start_prometheus(
        self, *, scrape_interval_s: float = 5.0, rule_files: Sequence[Path] = ()
    ) -> str:
        """Start Prometheus scraping the services; return its URL.

        Raises
        ------
        ConfigurationError
            when no Prometheus binary is installed.
        """
        binary = find_prometheus()
        if binary is None:
            raise ConfigurationError(
                "Prometheus is not installed (Debian: apt-get install prometheus)"
            )
        targets = {s: f"127.0.0.1:{port}" for s, port in self.ports.metrics.items()}
        config = self.workdir / "prometheus.yml"
        config.write_text(
            prometheus_config(targets, scrape_interval_s=scrape_interval_s, rule_files=rule_files)
        )
        address = f"127.0.0.1:{self.ports.prometheus}"
        await self._spawn(
            "prometheus",
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'prometheus'}",
            f"--web.listen-address={address}",
            env=os.environ,
        )
        return f"http://{address}"

    async def start_simulation(self, sensors: int, duration_s: float, *args: str) -> None:
        """``soundsentry simulate`` against this stack's ingest."""
        await self._spawn(
            "simulate",
            *soundsentry_command(),
            "simulate",
            "--sensors",
            str(sensors),
            "--duration",
            str(duration_s),
            "--target",
            f"127.0.0.1:{self.ports.ingest}",
            *args,
        )

    async def print_events(self, out: TextIO) -> None:
        """Print each event published from now on as a JSON line, as ``serve`` does."""
        from aiokafka import AIOKafkaConsumer  # noqa: PLC0415

        from soundsentry.contracts import Event, decode  # noqa: PLC0415
        from soundsentry.notify.notifier import event_payload  # noqa: PLC0415
        from soundsentry.runtime.topics import EVENTS  # noqa: PLC0415

        consumer = AIOKafkaConsumer(
            self.topics.name(EVENTS),
            **KafkaSettings(bootstrap_servers=self.bootstrap or "").aiokafka_kwargs(),
            auto_offset_reset="latest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            async for record in consumer:
                event = decode(Event, record.value or b"")
                print(json.dumps(event_payload(event), sort_keys=True), file=out, flush=True)
        finally:
            await consumer.stop()

    def exited(self) -> dict[str, int]:
        """Children that have exited, with their exit codes."""
        return {
            name: process.returncode
            for name, process in self.processes.items()
            if process.returncode is not None
        }

    async def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every child (newest first), SIGKILL what is still there after ``timeout_s``."""
        for process in reversed(self.processes.values()):
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        for process in self.processes.values():
            try:
                await asyncio.wait_for(process.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


# Ctrl-C (SIGINT to the terminal's process group) and `kill`: both stop the whole stack.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Interrupted(BaseException):
    """A stop signal while the broker starts. Not an Exception, like KeyboardInterrupt, so that
    no ``except Exception`` on the way swallows it."""


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Raise :class:`_Interrupted` on a stop signal inside the block: blocking code never
    returns to the event loop, whose signal handlers would run only after it."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted

    previous = {sig: signal.signal(sig, interrupt) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _until_stopped(work: Coroutine[object, object, int], stopping: asyncio.Event) -> int:
    """``work``'s result; 0 when ``stopping`` is set first (``work`` is then cancelled and has
    finished when this returns)."""
    task = asyncio.create_task(work)
    stopped = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        task.cancel()  # a no-op when it is done
        await asyncio.wait({task})
    return 0 if task.cancelled() else task.result()


async def _serve(
    stack: LocalStack,
    stopping: asyncio.Event,
    *,
    sensors: int,
    duration_s: float,
    prometheus: bool,
    started: float,
) -> int:
    """Start the services, Prometheus and the sensors on ``stack``'s broker, then print events
    until ``stopping`` is set (0) or a service exits on its own (1)."""
    await stack.start_services()
    urls = [f"ingest gRPC 127.0.0.1:{stack.ports.ingest}"]
    urls += [f"{s} http://127.0.0.1:{p}/metrics" for s, p in stack.ports.metrics.items()]
    if prometheus:
        # Optional: the stack runs without it, whatever keeps it from starting.
        if find_prometheus() is None:
            print("Prometheus is not installed: running without it", flush=True)
        else:
            urls.append(f"Prometheus {await stack.start_prometheus()}")
    if sensors:
        await stack.start_simulation(sensors, duration_s)
        urls.append(f"{sensors} simulated sensors (log: {stack.workdir / 'simulate.log'})")
    print(f"up in {time.monotonic() - started:.1f} s:", *urls, sep="\n  ", flush=True)
    print("events follow as JSON lines; Ctrl-C stops everything", flush=True)
    events = asyncio.create_task(stack.print_events(sys.stdout))
    warned = False
    try:
        while not stopping.is_set():
            exited = stack.exited()
            if "prometheus" in exited and not warned:
                warned = True
                print(
                    f"warning: Prometheus exited with {exited['prometheus']} (running without "
                    f"it):\n{stack.log_tail('prometheus', 600)}",
                    flush=True,
                )
            crashed = {n: c for n, c in exited.items() if n not in {"simulate", "prometheus"}}
            if crashed:
                for name, code in crashed.items():
                    print(f"{name} exited with {code}:\n{stack.log_tail(name)}", flush=True)
                return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 1.0)
        return 0
    finally:
        # Its consumer must be gone before the broker is.
        events.cancel()
        await asyncio.gather(events, return_exceptions=True)


async def run_stack(
    stack: LocalStack,
    *,
    sensors: int,
    duration_s: float,
    prometheus: bool,
    kafka_port: int = 9092,
    remove_workdir: bool = False,
) -> int:
    """``soundsentry stack``: everything up, then wait for Ctrl-C (or SIGTERM) and stop it all.

    A stop signal at any moment, while Kafka starts included, stops what has started and
    returns 0; a service that exits on its own returns 1. ``remove_workdir``: delete
    ``stack.workdir`` (logs, Kafka's data) at the end, unless something failed.
    """
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    # Before anything starts: asyncio.run's own SIGINT handler would cancel the start-up
    # mid-way and end in a KeyboardInterrupt traceback.
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stopping.set)
    # The event printer's consumer retries quietly while the new topics elect leaders.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    started = time.monotonic()
    code = 1
    try:
        print(
            f"starting Kafka on 127.0.0.1:{kafka_port} (logs and data in {stack.workdir})",
            flush=True,
        )
        with _interruptible():
            stack.start_kafka(kafka_port)
        code = await _until_stopped(
            _serve(
                stack,
                stopping,
                sensors=sensors,
                duration_s=duration_s,
                prometheus=prometheus,
                started=started,
            ),
            stopping,
        )
    except _Interrupted:
        code = 0
    finally:
        # A second Ctrl-C only sets `stopping` again: the stopping itself is not interrupted.
        print("stopping", flush=True)
        await stack.stop()
        stack.stop_kafka()
        if remove_workdir and code == 0:
            shutil.rmtree(stack.workdir, ignore_errors=True)
        elif remove_workdir:
            print(f"logs kept in {stack.workdir}", flush=True)
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    return code
