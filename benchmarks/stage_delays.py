"""Where the detection latency goes: how long after its audio was captured each stage's output
reaches Kafka.

Starts the broker, the featurizer, the classifier and the alerter on loopback (the stack of
``soundsentry stack``), streams N sensors of the kitchen recording in real time through a Kafka
gateway (``soundsentry simulate --kafka``), then reads every topic back and reports, per record:

- audio: the chunk's append time minus the capture time of its last sample;
- windows, scores: the append time minus the capture time of the window's last sample;
- started events: the append time minus the capture time of the onset (the detection latency,
  which includes the model's own decision time: the rules want the sound to last a while).

The difference between two rows is what a stage adds. Append times are the producers' clocks,
on the same machine.

Last line: one JSON object with p50/p90/p99 seconds per topic.

    .venv/bin/python benchmarks/stage_delays.py [--sensors 200] [--duration 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer

from soundsentry.contracts import AudioChunk, Event, EventKind, FeatureWindow, WindowScores, decode
from soundsentry.dev.stack import SERVICES, LocalStack, StackPorts, soundsentry_command
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import AUDIO, EVENTS, SCORES, WINDOWS, TopicLayout
from soundsentry.testing.kafka_broker import free_port

REPO = Path(__file__).resolve().parents[1]
KITCHEN = REPO / "examples" / "audio" / "kitchen_alarms.flac"


def _end_of_capture(message: Any) -> float | None:
    """Capture time (s) that the record's delay is measured from, or None to skip it."""
    if isinstance(message, AudioChunk):
        if not message.HasField("captured_at") or not message.sample_rate_hz:
            return None
        frames = len(message.pcm) // 2 // max(message.channels, 1)
        return float(message.captured_at.ToNanoseconds() / 1e9 + frames / message.sample_rate_hz)
    if isinstance(message, Event):
        if message.kind != EventKind.EVENT_KIND_STARTED:
            return None
        return float(message.onset_time.ToNanoseconds() / 1e9)
    start = message.start_time.ToNanoseconds() / 1e9
    return float(start + message.num_samples / message.sample_rate_hz)


async def _delays(kafka: KafkaSettings, topic: str, message_type: type[Any]) -> list[float]:
    consumer = AIOKafkaConsumer(
        topic,
        **kafka.aiokafka_kwargs(),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    delays: list[float] = []
    try:
        end = await consumer.end_offsets(list(consumer.assignment()) or [])
        while not end:  # assignment arrives with the first metadata
            await asyncio.sleep(0.1)
            end = await consumer.end_offsets(list(consumer.assignment()))
        while [tp for tp, offset in end.items() if await consumer.position(tp) < offset]:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    captured = _end_of_capture(decode(message_type, record.value))
                    if captured is not None:
                        delays.append(record.timestamp / 1000 - captured)
    finally:
        await consumer.stop()
    return delays


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="stage-delays-"))
    ports = StackPorts(
        ingest=free_port(), metrics={name: free_port() for name in SERVICES}, prometheus=0
    )
    topics = TopicLayout(prefix="", partitions=args.partitions)
    stack = LocalStack(work, model_dir=REPO / "models", topics=topics, ports=ports, group="delays")
    stack.start_kafka(free_port())
    kafka = KafkaSettings(bootstrap_servers=stack.bootstrap or "")
    try:
        await stack.start_services(["featurizer", "classifier", "alerter"])
        await asyncio.sleep(8.0)  # groups settle, partitions assigned
        command = [*soundsentry_command(), "simulate", "--sensors", str(args.sensors)]
        command += ["--duration", str(args.duration), "--chunk-ms", "100", "--kafka"]
        command += ["--file", str(KITCHEN)]
        generator = await asyncio.create_subprocess_exec(*command, env=stack.env())
        await generator.wait()
        await asyncio.sleep(5.0)  # the last windows, scores and events
        result: dict[str, Any] = {
            "benchmark": "stage_delays",
            "sensors": args.sensors,
            "duration_s": args.duration,
        }
        for name, spec_name, message_type in (
            ("audio", AUDIO, AudioChunk),
            ("windows", WINDOWS, FeatureWindow),
            ("scores", SCORES, WindowScores),
            ("started_events", EVENTS, Event),
        ):
            delays = await _delays(kafka, topics.name(spec_name), message_type)
            p50, p90, p99 = (round(float(np.percentile(delays, q)), 3) for q in (50, 90, 99))
            result[name] = {"records": len(delays), "p50_s": p50, "p90_s": p90, "p99_s": p99}
            print(
                f"{name:15s} {len(delays):7d} records  p50 {p50:.3f} s  p90 {p90:.3f} s  "
                f"p99 {p99:.3f} s",
                flush=True,
            )
        return result
    finally:
        await stack.stop()
        stack.stop_kafka()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=200)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of audio")
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    started = time.monotonic()
    result = asyncio.run(run(args))
    result["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
