"""The whole pipeline through the real broker: how many live sensors one machine keeps up with,
and how fast an alert arrives.

A local Kafka broker (from its jars) and the four services run as processes on loopback (the
stack of ``soundsentry stack``). For each step of the ramp, N new sensors stream the project's
kitchen recording (known alarms) in real time, through ``soundsentry simulate`` (a separate
process: gRPC to ingest, or a Kafka gateway). A step is sustained when:

- the load generator kept its real-time schedule and every chunk was stored;
- no stage fell behind: at the end of the step each service's consumer lag is under
  ``--max-lag-s`` seconds of its input, and the lag drains once the sensors stop.

Detection latency is the time from a truth onset in the audio (its capture time) to the
started event's record on the events topic (the alerter's send time); events are matched to the
truth by sensor, label and onset (within a 0.5 s collar). CPU is each process's use over the step
(drain included), in cores and in milliseconds per second of one sensor's audio (1000 / that is
the sensors one core keeps up with); RSS is resident memory at the end. Broker bytes per sensor
are the topics' log sizes on disk over all the audio sent.

Last line: one JSON object with max_realtime_sensors, latency_p50_s and latency_p99_s (of the
largest sustained step), events_expected, events_detected, and per-step figures.

    .venv/bin/python benchmarks/pipeline.py [--sensors 100,250,500,750,1000] [--step-s 45]
        [--transport kafka|grpc] [--chunk-ms 100] [--partitions 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from soundsentry.contracts import Event, EventKind, decode
from soundsentry.dev.stack import SERVICES, LocalStack, StackPorts, soundsentry_command
from soundsentry.evaluation.sed_metrics import read_event_list
from soundsentry.models.model_set import ModelCard, read_cards
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import EVENTS, TopicLayout
from soundsentry.testing.kafka_broker import free_port

REPO = Path(__file__).resolve().parents[1]
KITCHEN = REPO / "examples" / "audio" / "kitchen_alarms.flac"
COLLAR_S = 0.5
LAG_METRIC = {
    "featurizer": "soundsentry_featurizer_consumer_lag",
    "classifier": "soundsentry_classifier_consumer_lag",
    "alerter": "soundsentry_alerter_consumer_lag",
}


@dataclass
class Step:
    sensors: int
    sustained: bool = False
    why_not: list[str] = field(default_factory=list)
    sent: int = 0
    published: int = 0
    generator_slip_s: float = 0.0
    lag_s: dict[str, float] = field(default_factory=dict)
    drain_s: float = 0.0
    events_expected: int = 0
    events_detected: int = 0
    false_events: int = 0
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    # The alerter's own histogram (bucket bounds): a cross-check of the figures above.
    alerter_latency_p50_le_s: float | None = None
    alerter_latency_p99_le_s: float | None = None
    # Per label (p50, p99): the model's own decision time differs by label (its event rules).
    latency_by_label: dict[str, tuple[float, float]] = field(default_factory=dict)
    cpu_cores: dict[str, float] = field(default_factory=dict)
    # CPU per second of one sensor's audio: 1000 / this = sensors one core keeps up with.
    cpu_ms_per_sensor_s: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)


def _families(port: int) -> list[Any]:
    """The metric families a service serves on its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return list(text_string_to_metric_families(response.read().decode()))


def _scrape(port: int) -> dict[str, float]:
    """Sum of each metric's samples on a service's /metrics."""
    totals: dict[str, float] = defaultdict(float)
    for family in _families(port):
        for sample in family.samples:
            totals[sample.name] += sample.value
    return totals


def _latency_buckets(port: int) -> dict[float, float]:
    """The alerter's cumulative detection-latency buckets (all labels): upper bound -> count."""
    buckets: dict[float, float] = defaultdict(float)
    for family in _families(port):
        if family.name == "soundsentry_detection_latency_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    buckets[float(sample.labels["le"])] += sample.value
    return buckets


def _bucket_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """The bucket bound below which a share ``q`` of the step's observations fall."""
    counts = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = counts[-1][1] if counts else 0.0
    for le, count in counts:
        if total and count >= q * total:
            return le
    return float("nan")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class EventLog:
    """Started events on the events topic with the time each was sent."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.started: list[tuple[Event, float]] = []
        self._consumer = AIOKafkaConsumer(
            topic, **kafka.aiokafka_kwargs(), auto_offset_reset="latest", enable_auto_commit=False
        )

    async def run(self) -> None:
        await self._consumer.start()
        try:
            async for record in self._consumer:
                event = decode(Event, record.value or b"")
                if event.kind == EventKind.EVENT_KIND_STARTED:
                    self.started.append((event, record.timestamp / 1000))
        finally:
            await self._consumer.stop()


def _match(
    truth_path: Path, started: list[tuple[Event, float]], step: Step
) -> list[tuple[str, float]]:
    """Match started events to the truth; fill the step's counts; return (label, latency s)."""
    truth = read_event_list(truth_path)
    step.events_expected = len(truth)
    by_sensor: dict[str, list[tuple[Event, float]]] = defaultdict(list)
    for event, sent_at in started:
        by_sensor[event.sensor_id].append((event, sent_at))
    used: set[str] = set()
    latencies = []
    for expected in truth:
        for event, sent_at in by_sensor.get(expected.file_id, []):
            onset_s = event.onset_sample / event.sample_rate_hz
            if (
                event.event_id not in used
                and event.label == expected.label
                and abs(onset_s - expected.onset_s) <= COLLAR_S
            ):
                used.add(event.event_id)
                stream_start = event.onset_time.ToNanoseconds() / 1e9 - onset_s
                latencies.append((event.label, sent_at - (stream_start + expected.onset_s)))
                break
    step.events_detected = len(latencies)
    step.false_events = sum(
        1 for sensor in by_sensor.values() for e, _ in sensor if e.event_id not in used
    )
    return latencies


async def run_step(
    stack: LocalStack,
    events: EventLog,
    sensors: int,
    args: argparse.Namespace,
    workdir: Path,
    *,
    prefix: str | None = None,
) -> Step:
    step = Step(sensors)
    truth = workdir / f"truth-{prefix or sensors}.tsv"
    command = [*soundsentry_command(), "simulate", "--sensors", str(sensors)]
    command += ["--duration", str(args.step_s), "--chunk-ms", str(args.chunk_ms)]
    command += ["--prefix", prefix or f"n{sensors}-", "--file", str(KITCHEN), "--truth", str(truth)]
    if args.transport == "kafka":
        command.append("--kafka")
    else:
        command += ["--target", f"127.0.0.1:{stack.ports.ingest}"]
    pids = {name: process.pid for name, process in stack.processes.items()}
    pids["kafka"] = stack.broker_pid()
    cpu_before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    buckets_before = _latency_buckets(stack.ports.metrics["alerter"])
    started_at = time.monotonic()
    seen = len(events.started)
    generator = await asyncio.create_subprocess_exec(
        *command, env=stack.env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    # Lag near the end of the step, while audio still arrives: what real time looks like.
    await asyncio.sleep(max(1.0, args.step_s - 5.0))
    lag_records = {s: _scrape(stack.ports.metrics[s]).get(m, 0.0) for s, m in LAG_METRIC.items()}
    out, err = await generator.communicate()
    generator_cpu = _cpu_seconds_of_children()
    report = out.decode().strip().splitlines()[-1] if out else err.decode()[-500:]
    step.sent, step.published, step.generator_slip_s = _parse_report(report)
    # Records per second into each stage: chunks, then windows (one per hop) and scores.
    chunk_rate = sensors * 1000 / args.chunk_ms
    window_rate = sensors / 0.5
    rates = {"featurizer": chunk_rate, "classifier": window_rate, "alerter": window_rate}
    step.lag_s = {s: round(lag_records[s] / rates[s], 2) for s in LAG_METRIC}
    drain_started = time.monotonic()
    while any(_scrape(stack.ports.metrics[s]).get(m, 0.0) > 0 for s, m in LAG_METRIC.items()):
        if time.monotonic() - drain_started > 60:
            step.why_not.append("lag did not drain within 60 s")
            break
        await asyncio.sleep(0.5)
    step.drain_s = round(time.monotonic() - drain_started, 1)
    await asyncio.sleep(3.0)  # the last events of the step
    # Over the whole step, drain included: the CPU the step's audio cost each process.
    busy = time.monotonic() - started_at
    cpu = {name: _cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    cpu["simulate"] = generator_cpu
    step.cpu_cores = {name: round(seconds / busy, 2) for name, seconds in cpu.items()}
    audio_s = sensors * args.step_s
    step.cpu_ms_per_sensor_s = {name: round(1000 * s / audio_s, 3) for name, s in cpu.items()}
    step.rss_mb = {name: round(_rss_mb(pid)) for name, pid in pids.items()}
    latencies = _match(truth, events.started[seen:], step)
    buckets = _latency_buckets(stack.ports.metrics["alerter"])
    step.alerter_latency_p50_le_s = _bucket_quantile(0.5, buckets_before, buckets)
    step.alerter_latency_p99_le_s = _bucket_quantile(0.99, buckets_before, buckets)
    _percentiles(step, latencies)
    _judge(step, args.max_lag_s)
    return step


def _percentiles(step: Step, latencies: list[tuple[str, float]]) -> None:
    if not latencies:
        return
    values = [latency for _, latency in latencies]
    step.latency_p50_s = round(float(np.percentile(values, 50)), 3)
    step.latency_p99_s = round(float(np.percentile(values, 99)), 3)
    by_label: dict[str, list[float]] = defaultdict(list)
    for label, latency in latencies:
        by_label[label].append(latency)
    step.latency_by_label = {
        label: (round(float(np.percentile(v, 50)), 2), round(float(np.percentile(v, 99)), 2))
        for label, v in sorted(by_label.items())
    }


def _judge(step: Step, max_lag_s: float) -> None:
    """Sustained: every chunk stored, the generator on time, no stage behind."""
    if step.published != step.sent or step.sent == 0:
        step.why_not.append(f"stored {step.published} of {step.sent} chunks")
    if step.generator_slip_s > 1.0:
        step.why_not.append(f"the load generator fell {step.generator_slip_s:.1f} s behind")
    step.why_not += [f"{s} {lag:.1f} s behind" for s, lag in step.lag_s.items() if lag > max_lag_s]
    step.sustained = not step.why_not


_children_cpu_seen = 0.0


def _cpu_seconds_of_children() -> float:
    """CPU of waited-for children since the last call (the load generator)."""
    global _children_cpu_seen
    usage = os.times()
    total = usage.children_user + usage.children_system
    delta, _children_cpu_seen = total - _children_cpu_seen, total
    return delta


def _parse_report(line: str) -> tuple[int, int, float]:
    """``<published>/<sent> chunks ...; slowest send <s> s behind schedule`` (simulate)."""
    try:
        published, sent = line.split(" chunks", 1)[0].split("/")
        slip = float(line.split("slowest send ", 1)[1].split(" s", 1)[0])
    except (IndexError, ValueError):
        print(f"unexpected simulate output: {line}", file=sys.stderr)
        return 0, 0, float("inf")
    return int(sent), int(published), slip


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="soundsentry-pipeline-"))
    ports = StackPorts(
        ingest=free_port(),
        metrics={name: free_port() for name in SERVICES},
        prometheus=free_port(),
    )
    topics = TopicLayout(prefix="bench.", partitions=args.partitions, replication_factor=1)
    stack = LocalStack(
        workdir,
        model_dir=args.model_dir,
        topics=topics,
        ports=ports,
        group="bench",
        extra_env={
            # Per-sensor series are for dashboards; a benchmark of thousands needs none.
            "SOUNDSENTRY_CLASSIFIER_SENSOR_METRICS": "",
            "SOUNDSENTRY_ALERTER_SENSOR_METRICS": "",
        },
    )
    stack.start_kafka(free_port())
    kafka = KafkaSettings(bootstrap_servers=stack.bootstrap or "")
    steps: list[Step] = []
    try:
        await stack.start_services()
        for port in ports.metrics.values():
            await _wait_http(port)
        events = EventLog(kafka, topics.name(EVENTS))
        follower = asyncio.create_task(events.run())
        await asyncio.sleep(5.0)  # groups settle, partitions assigned
        # Warm-up, not reported: the first audio pays for JIT compilation and connections.
        warmup = argparse.Namespace(**{**vars(args), "step_s": 15.0})
        # Sensors of its own: a step of 20 sensors must not continue the warm-up's streams.
        await run_step(stack, events, 20, warmup, workdir, prefix="warmup-")
        for sensors in args.sensors:
            step = await run_step(stack, events, sensors, args, workdir)
            steps.append(step)
            print(_describe(step), flush=True)
            if not step.sustained and args.stop_at_first_failure:
                break
        follower.cancel()
    finally:
        await stack.stop()
        stack.stop_kafka()
    audio_s = sum(s.sensors * args.step_s for s in steps)
    broker = _topic_bytes(workdir / "kafka" / "data", topics.prefix)
    bytes_per_sensor_s = {t: round(b / audio_s) for t, b in broker.items()} if audio_s else {}
    print(f"broker bytes per sensor-second, by topic: {bytes_per_sensor_s}")
    # The broker's logs are gigabytes after a ramp; a full disk slows the next run.
    shutil.rmtree(workdir, ignore_errors=True)
    best = max((s for s in steps if s.sustained), key=lambda s: s.sensors, default=None)
    # The target: onset to event within window + hop + 0.5 s (default model: 2.0 s).
    cards = read_cards(args.model_dir)
    target = _latency_target_s(cards.values())
    return {
        "benchmark": "pipeline",
        "models": {name: card.version for name, card in cards.items()},
        "latency_target_s": target,
        "latency_target_met": best is not None
        and best.latency_p99_s is not None
        and best.latency_p99_s <= target,
        "transport": args.transport,
        "chunk_ms": args.chunk_ms,
        "partitions": args.partitions,
        "step_s": args.step_s,
        "cpus": os.cpu_count(),
        "max_realtime_sensors": best.sensors if best else 0,
        "latency_p50_s": best.latency_p50_s if best else None,
        "latency_p99_s": best.latency_p99_s if best else None,
        "events_expected": best.events_expected if best else 0,
        "events_detected": best.events_detected if best else 0,
        "broker_bytes_per_sensor_s": bytes_per_sensor_s,
        "steps": [asdict(s) for s in steps],
    }


def _latency_target_s(cards: Iterable[ModelCard]) -> float:
    """The issue's target, window + hop + 0.5 s, for the slowest of the models' profiles."""
    profiles = [card.profile for card in cards]
    return max(p.window_s + p.window_hop_s for p in profiles) + 0.5


def _topic_bytes(data: Path, prefix: str) -> dict[str, int]:
    """Bytes on disk per topic (all partitions) in the broker's log directory."""
    sizes: dict[str, int] = defaultdict(int)
    for directory in data.glob("*-*"):
        if directory.name.startswith("__") or not directory.is_dir():
            continue  # Kafka's own topics
        topic = directory.name.rsplit("-", 1)[0].removeprefix(prefix)
        sizes[topic] += sum(f.stat().st_size for f in directory.glob("*.log"))
    return dict(sizes)


async def _wait_http(port: int) -> None:
    async with asyncio.timeout(120):
        while True:
            try:
                _scrape(port)
            except OSError:
                await asyncio.sleep(0.5)
            else:
                return


def _describe(step: Step) -> str:
    verdict = "sustained" if step.sustained else "NOT sustained: " + "; ".join(step.why_not)
    cpu = ", ".join(f"{k} {v:.2f}" for k, v in step.cpu_cores.items())
    rss = ", ".join(f"{k} {v:.0f}" for k, v in step.rss_mb.items())
    per_sensor = ", ".join(f"{k} {v:.2f}" for k, v in step.cpu_ms_per_sensor_s.items())
    lag = ", ".join(f"{k} {v:.1f} s" for k, v in step.lag_s.items())
    labels = ", ".join(f"{k} {p50}/{p99}" for k, (p50, p99) in step.latency_by_label.items())
    return (
        f"{step.sensors:5d} sensors: {verdict}\n"
        f"      chunks {step.published}/{step.sent}, generator slip {step.generator_slip_s:.2f} s, "
        f"lag {lag}, drained in {step.drain_s:.1f} s\n"
        f"      events {step.events_detected}/{step.events_expected} detected "
        f"({step.false_events} others), latency p50 {step.latency_p50_s} s "
        f"p99 {step.latency_p99_s} s (alerter's histogram: p50 <= "
        f"{step.alerter_latency_p50_le_s} s, p99 <= {step.alerter_latency_p99_le_s} s)\n"
        f"      latency p50/p99 by label (s): {labels}\n"
        f"      CPU (cores, drain included): {cpu}\n"
        f"      CPU ms per sensor-second: {per_sensor}\n      RSS (MB): {rss}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sensors",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[100, 250, 500, 750, 1000],
        help="comma-separated ramp of sensor counts",
    )
    parser.add_argument("--step-s", type=float, default=45.0, help="seconds of audio per step")
    parser.add_argument("--transport", choices=["kafka", "grpc"], default="kafka")
    parser.add_argument("--chunk-ms", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--max-lag-s", type=float, default=1.0, help="sustained: lag under this")
    parser.add_argument("--stop-at-first-failure", action="store_true")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=REPO / "models",
        help="the model cards the stack runs (default: models/)",
    )
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    print(
        f"max sensors in real time: {result['max_realtime_sensors']} "
        f"({args.transport}, {args.chunk_ms} ms chunks, {args.partitions} partitions, "
        f"{result['cpus']} CPUs); latency p50 {result['latency_p50_s']} s, "
        f"p99 {result['latency_p99_s']} s (target p99 <= {result['latency_target_s']} s)"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
