"""Soak: a good sensor and a fuzzer against the four services, for as long as you like.

Run by hand, not in CI (the default is 30 minutes):

    .venv/bin/python benchmarks/soak.py [--minutes 30] [--fuzz-per-second 20] [--seed 0]

A broker from the Maven jars and the four services start on loopback (``soundsentry stack``'s
way). For ``--minutes`` the good sensor pushes the project's kitchen recording (two smoke and
two CO alarm cycles) over gRPC in real time, one stream per pass. Beside it a fuzzer sends, at
``--fuzz-per-second``, records every stage must park: random bytes and hostile field values
(no sensor id, a capture time of 10^12 s, NaN log-mel values, scores out of [0, 1]) to
``audio.pcm``, ``audio.windows`` and ``audio.scores``, and over gRPC streams of bytes that are
no AudioChunk. At the end:

- every service still runs (none was restarted: they are plain child processes);
- the good sensor's events are, pass by pass, what ``soundsentry detect`` finds in the
  recording, each started and ended exactly once;
- each topic's dead-letter count equals what the fuzzer sent to it, and ingest counted every
  malformed stream.

Last line: JSON with the counts and ``"ok"``; the exit code is 0 only when everything held.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from soundsentry.contracts import (
    AudioChunk,
    Event,
    EventKind,
    FeatureWindow,
    LabelScore,
    SampleFormat,
    WindowScores,
    decode,
    encode,
)
from soundsentry.dev.stack import LocalStack, StackPorts
from soundsentry.ingest.client import file_chunks, push
from soundsentry.models.model_set import ModelSet
from soundsentry.pipeline.detect import detect_file
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import AUDIO, EVENTS, SCORES, WINDOWS, TopicLayout
from soundsentry.testing.kafka_broker import free_port

ROOT = Path(__file__).resolve().parents[1]
RECORDING = ROOT / "examples" / "audio" / "kitchen_alarms.flac"
SENSOR = "soak/good"
FUZZED = (AUDIO, WINDOWS, SCORES)


def _bad_record(topic: str, rng: random.Random, number: int) -> tuple[bytes, bytes]:
    """A record of ``topic`` that its consumer must park: (key, value)."""
    key = f"fuzz-{number}".encode()
    if rng.random() < 0.4:  # bytes that are no protobuf of any kind (0xff is no valid tag)
        return key, b"\xff" + rng.randbytes(rng.randrange(0, 600))
    if topic == AUDIO.name:
        chunk = AudioChunk(
            sensor_id=f"fuzz-{number}",  # a new sensor each time: the chunk is checked in full
            stream_id="s",
            sample_rate_hz=16_000,
            channels=1,
            sample_format=SampleFormat.SAMPLE_FORMAT_S16LE,
            pcm=rng.randbytes(3200),
        )
        if rng.random() < 0.5:
            chunk.captured_at.seconds = 10**12  # a broken clock
        else:
            chunk.pcm = chunk.pcm[:-1]  # not whole samples
        return key, encode(chunk)
    if topic == WINDOWS.name:
        values = np.full((64, 50), np.nan if rng.random() < 0.5 else 0.0, dtype="<f4")
        window = FeatureWindow(
            window_id=f"w{number}",
            sensor_id="" if np.isfinite(values[0, 0]) else f"fuzz-{number}",
            stream_id="s",
            profile="full-16k",
            num_bands=64,
            num_frames=50,
            log_mel_db=values.tobytes(),
            sample_rate_hz=16_000,
        )
        return key, encode(window)
    scores = WindowScores(
        score_id=f"x{number}",
        sensor_id=f"fuzz-{number}",
        stream_id="s",
        model="default",
        sample_rate_hz=16_000,
        scores=[LabelScore(label="smoke_alarm", score=7.0)],  # not a probability
    )
    if rng.random() < 0.5:
        scores.sensor_id = ""
    return key, encode(scores)


async def _fuzz(
    kafka: KafkaSettings,
    topics: TopicLayout,
    target: str,
    *,
    rate: float,
    until: float,
    seed: int,
    sent: Counter[str],
) -> None:
    rng = random.Random(seed)
    producer = AIOKafkaProducer(**kafka.producer_kwargs())
    await producer.start()
    number = 0
    try:
        while time.monotonic() < until:
            number += 1
            if rng.random() < 0.1:  # a gRPC stream of garbage
                async with grpc.aio.insecure_channel(target) as channel:
                    call = channel.stream_stream(
                        "/soundsentry.v1.Ingest/StreamAudio",
                        request_serializer=lambda data: data,
                        response_deserializer=lambda data: data,
                    )

                    async def garbage(
                        data: bytes = b"\xff" + rng.randbytes(64),
                    ) -> AsyncIterator[bytes]:
                        yield data

                    with contextlib.suppress(grpc.aio.AioRpcError):
                        async for _ in call(garbage()):
                            pass
                sent["grpc_malformed"] += 1
            else:
                spec = rng.choice(FUZZED)
                key, value = _bad_record(spec.name, rng, number)
                await producer.send_and_wait(topics.name(spec), value, key=key)
                sent[spec.name] += 1
            await asyncio.sleep(rng.expovariate(rate))
    finally:
        await producer.stop()


async def _good_sensor(target: str, until: float) -> list[str]:
    """Push the recording in real time, a stream per pass, until ``until``; the stream ids."""
    streams: list[str] = []
    while time.monotonic() < until:
        stream = f"pass-{len(streams)}"
        chunks = file_chunks(RECORDING, sensor_id=SENSOR, stream_id=stream)
        result = await push(target, chunks, realtime=True)
        if not result.ok:
            raise SystemExit(f"the good sensor's pass {stream} was not all published: {result}")
        streams.append(stream)
    return streams


async def _records(kafka: KafkaSettings, topic: str, settle_s: float = 5.0) -> list[bytes]:
    """Every record of ``topic`` so far (read until nothing new comes for ``settle_s``)."""
    consumer = AIOKafkaConsumer(
        topic,
        **kafka.aiokafka_kwargs(),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=int(settle_s * 1000))
            got = [r.value for records in batch.values() for r in records]
            if not got:
                return values
            values += got
    finally:
        await consumer.stop()


def _metric(port: int, name: str, labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def soak(minutes: float, rate: float, seed: int, workdir: Path) -> dict[str, object]:
    topics = TopicLayout()
    stack = LocalStack(workdir, model_dir=ROOT / "models", ports=StackPorts.free(), group="soak")
    bootstrap = stack.start_kafka(free_port())
    try:
        await stack.start_services()
        target = f"127.0.0.1:{stack.ports.ingest}"
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        for _ in range(600):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", stack.ports.ingest)
                writer.close()
                break
            await asyncio.sleep(0.2)
        until = time.monotonic() + minutes * 60
        sent: Counter[str] = Counter()
        streams, _ = await asyncio.gather(
            _good_sensor(target, until),
            _fuzz(kafka, topics, target, rate=rate, until=until, seed=seed, sent=sent),
        )
        await asyncio.sleep(20)  # the last windows, scores and events on their way
        exited = stack.exited()
        parked = {spec.name: len(await _records(kafka, topics.dlq(spec))) for spec in FUZZED}
        events = [decode(Event, v) for v in await _records(kafka, topics.name(EVENTS))]
        malformed = _metric(
            stack.ports.metrics["ingest"],
            "soundsentry_ingest_streams_closed_total",
            'reason="malformed_message"',
        )
    finally:
        await stack.stop()
        stack.stop_kafka()
    offline = [
        (d.label, round(d.onset_s * 16_000))
        for d in detect_file(RECORDING, ModelSet.from_dir(ROOT / "models"))
    ]
    kinds = (EventKind.EVENT_KIND_STARTED, EventKind.EVENT_KIND_ENDED)
    expected = Counter(
        (s, label, onset, k) for s in streams for label, onset in offline for k in kinds
    )
    got = Counter(
        (e.stream_id, e.label, e.onset_sample, e.kind) for e in events if e.sensor_id == SENSOR
    )
    checks = {
        "services_running": not exited,
        "good_events_complete_and_once": got == expected,
        "dead_letters_equal_fuzz": all(parked[t] == sent[t] for t in parked),
        "malformed_streams_counted": malformed == sent["grpc_malformed"],
    }
    return {
        "benchmark": "soak",
        "minutes": minutes,
        "passes": len(streams),
        "good_events": sum(got.values()),
        "expected_good_events": sum(expected.values()),
        "fuzz_sent": dict(sent),
        "dead_lettered": parked,
        "malformed_streams_closed": malformed,
        "exited": exited,
        "checks": checks,
        "ok": all(checks.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--fuzz-per-second", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soundsentry-soak-") as work:
        summary = asyncio.run(soak(args.minutes, args.fuzz_per_second, args.seed, Path(work)))
    checks = summary["checks"]
    assert isinstance(checks, dict)
    for name, held in checks.items():
        print(f"{'ok  ' if held else 'FAIL'} {name}", file=sys.stderr)
    print(json.dumps(summary, separators=(",", ":")))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
