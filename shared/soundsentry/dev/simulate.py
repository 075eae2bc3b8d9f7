"""Load generation: many simulated microphones streaming real recordings with known events.

``soundsentry simulate`` and ``benchmarks/pipeline.py`` use it. Each sensor plays one of the
recordings in a loop, starting at its own position (so sensors do not alarm in lockstep), in
real time, either over gRPC with the client ``soundsentry push`` uses, or straight to the audio
topic as a sensor gateway would. Because every recording comes with its truth, the events each
sensor should produce are known, with their capture times: :func:`expected_events`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from aiokafka.partitioner import DefaultPartitioner

from soundsentry.audio.pcm import file_blocks, s16_chunks
from soundsentry.contracts import AudioChunk, encode, sensor_key
from soundsentry.evaluation.sed_metrics import EvalEvent, read_event_list
from soundsentry.exceptions import ConfigurationError
from soundsentry.ingest.client import PushResult, open_channel, push
from soundsentry.runtime.record_batches import Delivery, send_batches
from soundsentry.runtime.settings import MAX_MESSAGE_BYTES

__all__ = [
    "ExpectedEvent",
    "Recording",
    "SensorPlan",
    "SimulationReport",
    "expected_events",
    "load_recording",
    "plan_sensors",
    "run_grpc",
    "run_kafka",
    "sensor_chunks",
]

_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Recording:
    """A recording held in memory as int16 frames, with the events it contains."""

    name: str
    sample_rate_hz: int
    frames: npt.NDArray[np.int16]  # shape=(num_frames, channels)
    events: tuple[EvalEvent, ...]

    @property
    def duration_s(self) -> float:
        return float(self.frames.shape[0] / self.sample_rate_hz)


def load_recording(path: Path, truth: Path | None = None) -> Recording:
    """Read ``path`` and its truth (default: ``<stem>.events.tsv`` beside it; a recording
    without one is background: it should produce no events).

    Raises
    ------
    ConfigurationError
        when the audio cannot be read or the truth file is not a valid event list.
    """
    rate, blocks = file_blocks(path, block_s=10.0)
    frames = np.concatenate(list(blocks))
    if not frames.shape[0]:
        raise ConfigurationError(f"{path} holds no audio")
    truth = truth or path.with_name(f"{path.name.split('.')[0]}.events.tsv")
    events = tuple(read_event_list(truth)) if truth.exists() else ()
    return Recording(path.name, rate, frames, events)


@dataclass(frozen=True, slots=True)
class SensorPlan:
    """One simulated sensor: what it plays, from which position, and when its stream starts."""

    sensor_id: str
    recording: Recording
    start_offset_s: float  # position in the recording of the stream's first frame
    start_time_ns: int  # capture time of that frame
    stream_id: str


def plan_sensors(
    count: int,
    recordings: Sequence[Recording],
    *,
    prefix: str = "sim-",
    start_time_ns: int | None = None,
    seed: int = 0,
) -> list[SensorPlan]:
    """``count`` sensors, recordings dealt round-robin, each starting at a random position.

    Raises
    ------
    ConfigurationError
        when ``count`` < 1 or there are no recordings.
    """
    if count < 1:
        raise ConfigurationError(f"the number of sensors must be at least 1, got {count}")
    if not recordings:
        raise ConfigurationError("no recordings to play")
    rng = np.random.default_rng(seed)
    start = time.time_ns() if start_time_ns is None else start_time_ns
    width = len(str(count - 1))
    plans = []
    for i in range(count):
        recording = recordings[i % len(recordings)]
        plans.append(
            SensorPlan(
                sensor_id=f"{prefix}{i:0{width}d}",
                recording=recording,
                start_offset_s=float(rng.uniform(0.0, recording.duration_s)),
                start_time_ns=start,
                stream_id=uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | i).hex,
            )
        )
    return plans


def _chunk_frames(recording: Recording, chunk_ms: int) -> int:
    """Frames in each chunk of ``chunk_ms`` (the last of a stream may hold fewer)."""
    return max(1, recording.sample_rate_hz * chunk_ms // 1000)


def _blocks(plan: SensorPlan, duration_s: float, chunk_ms: int) -> Iterator[npt.NDArray[np.int16]]:
    frames = plan.recording.frames
    rate = plan.recording.sample_rate_hz
    total = round(duration_s * rate)
    block = _chunk_frames(plan.recording, chunk_ms)
    position = int(plan.start_offset_s * rate) % frames.shape[0]
    sent = 0
    while sent < total:
        size = min(block, total - sent)
        end = position + size
        if end <= frames.shape[0]:
            out = frames[position:end]
        else:  # the loop wraps inside this chunk
            out = np.concatenate([frames[position:], frames[: end - frames.shape[0]]])
        yield out
        position = end % frames.shape[0]
        sent += size


def sensor_chunks(plan: SensorPlan, *, duration_s: float, chunk_ms: int) -> Iterator[AudioChunk]:
    """The chunks ``plan``'s sensor sends over ``duration_s`` seconds, looping its recording."""
    return s16_chunks(
        _blocks(plan, duration_s, chunk_ms),
        sensor_id=plan.sensor_id,
        stream_id=plan.stream_id,
        sample_rate_hz=plan.recording.sample_rate_hz,
        start_time_ns=plan.start_time_ns,
    )


# Real sensors are not synchronised: their chunks arrive spread over each chunk period, and
# (booted at different times) their windows end spread over each hop. Streams start spread
# over _SPREAD_S in whole chunk periods, and over each chunk period in _PHASES steps.
_PHASES = 20
_SPREAD_S = 1.0


def _phased(
    plans: Sequence[SensorPlan], chunk_ms: int
) -> tuple[list[SensorPlan], list[float], list[int]]:
    """The plans with capture clocks starting now (set-up time must not count as audio already
    captured) plus each one's offset; each one's phase within a chunk period (s) and the chunk
    period its stream starts in."""
    now = time.time_ns()
    count = len(plans)
    period_s = chunk_ms / 1000
    periods = max(1, math.ceil(_SPREAD_S / period_s))
    phases = [(i * _PHASES // count) * period_s / _PHASES for i in range(count)]
    # Interleaved, so that every chunk phase has streams starting in every period.
    first = [i % periods for i in range(count)]
    return (
        [
            dataclasses.replace(plan, start_time_ns=now + round((phase + k * period_s) * 1e9))
            for plan, phase, k in zip(plans, phases, first, strict=True)
        ],
        phases,
        first,
    )


@dataclass(frozen=True, slots=True)
class ExpectedEvent:
    """A truth event of one sensor's stream, in stream seconds (``file_id`` is the sensor)."""

    event: EvalEvent
    onset_time_ns: int  # capture time of the onset


def expected_events(plans: Sequence[SensorPlan], *, duration_s: float) -> list[ExpectedEvent]:
    """The truth events each sensor's stream contains whole within ``duration_s``."""
    out = []
    for plan in plans:
        length = plan.recording.duration_s
        for truth in plan.recording.events:
            onset = (truth.onset_s - plan.start_offset_s) % length
            # A stream that starts inside an event has only its tail: not counted.
            while onset + truth.duration_s <= duration_s:
                event = EvalEvent(plan.sensor_id, truth.label, onset, onset + truth.duration_s)
                out.append(ExpectedEvent(event, plan.start_time_ns + round(onset * _NS)))
                onset += length
    return sorted(out, key=lambda e: e.onset_time_ns)


@dataclass(slots=True)
class SimulationReport:
    """What the sensors sent and what came back, summed over sensors."""

    sensors: int = 0
    sent: int = 0
    published: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    failed_sensors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # How far behind schedule the slowest send was: a load generator that cannot keep up
    # would understate the load.
    max_slip_s: float = 0.0

    def add(self, result: PushResult) -> None:
        self.sent += result.sent
        self.published += result.published
        for reason, count in result.rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + count


async def run_grpc(
    target: str,
    plans: Sequence[SensorPlan],
    *,
    duration_s: float,
    chunk_ms: int = 100,
    token: str | None = None,
    tls_ca: Path | None = None,
) -> SimulationReport:
    """Each sensor streams in real time over its own gRPC stream (``soundsentry push``'s
    client), on one shared channel. Capture clocks start with the call, spread over a second;
    each chunk is sent when its capture ends."""
    report = SimulationReport(sensors=len(plans))
    started = time.monotonic()
    plans, phases, first = _phased(plans, chunk_ms)
    offsets = [phase + k * chunk_ms / 1000 for phase, k in zip(phases, first, strict=True)]
    async with open_channel(target, tls_ca) as channel:

        async def one(plan: SensorPlan, phase: float) -> None:
            await asyncio.sleep(max(0.0, started + phase - time.monotonic()))
            chunks = sensor_chunks(plan, duration_s=duration_s, chunk_ms=chunk_ms)
            try:
                result = await push(target, chunks, token=token, realtime=True, channel=channel)
            except (grpc.aio.AioRpcError, ConfigurationError) as exc:
                # One sensor's failure is reported, not fatal to the others.
                report.failed_sensors.append(f"{plan.sensor_id}: {exc}")
                return
            report.add(result)
            report.max_slip_s = max(report.max_slip_s, result.seconds - duration_s)

        await asyncio.gather(*(one(p, o) for p, o in zip(plans, offsets, strict=True)))
    report.seconds = time.monotonic() - started
    return report


async def run_kafka(
    producer: Any,
    topic: str,
    plans: Sequence[SensorPlan],
    *,
    duration_s: float,
    chunk_ms: int = 100,
) -> SimulationReport:
    """A sensor gateway: each sensor's chunks to ``topic`` through ``producer`` (a started
    aiokafka producer; acks as it is configured), keyed by sensor and placed by Kafka's default
    partitioner, each sent when its capture ends. Capture clocks start with the call, spread
    over a second.

    Chunks go to Kafka as record batches, one partition's at a time (``send_batch``), as a
    gateway would send them: a send per chunk made the load generator cost as much CPU as
    the featurizer (benchmarks/pipeline.py). Each partition has a sender that takes everything
    queued for it since its last batch: a batch waits for the partition's batch before it, so
    a batch per tick would fall behind a broker more than a tick away.

    Raises
    ------
    ConfigurationError
        when a chunk is larger than a Kafka record may be (``chunk_ms`` too long).
    """
    for plan in plans:
        recording = plan.recording
        pcm_bytes = _chunk_frames(recording, chunk_ms) * recording.frames.shape[1] * 2
        if pcm_bytes > MAX_MESSAGE_BYTES - 1024:  # room for the chunk's other fields
            raise ConfigurationError(
                f"a {chunk_ms} ms chunk of {recording.name} holds {pcm_bytes} bytes of audio, "
                f"more than a Kafka record may ({MAX_MESSAGE_BYTES}): use shorter chunks"
            )
    report = SimulationReport(sensors=len(plans))
    partitions = sorted(await producer.partitions_for(topic))
    started = time.monotonic()
    plans, phases, first = _phased(plans, chunk_ms)
    # Sensors of one phase are sent together: (phase, [(chunks, key, partition, first period),
    # ...]) in phase order; a sensor's chunk k is captured by the end of period first + k + 1.
    groups: dict[float, list[tuple[Iterator[AudioChunk], bytes, int, int]]] = {}
    place = DefaultPartitioner()
    for plan, phase, k in zip(plans, phases, first, strict=True):
        chunks = sensor_chunks(plan, duration_s=duration_s, chunk_ms=chunk_ms)
        key = sensor_key(plan.sensor_id)
        groups.setdefault(phase, []).append((chunks, key, place(key, partitions, partitions), k))
    gateway = _Gateway(producer, topic, partitions)
    tick = 0
    try:
        while groups:
            tick += 1
            for phase in sorted(groups):
                # Chunk ``tick`` of these sensors has been captured by now.
                due = started + phase + tick * chunk_ms / 1000
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                report.max_slip_s = max(report.max_slip_s, time.monotonic() - due)
                live = []
                for chunks, key, partition, k in groups[phase]:
                    if tick <= k:  # its stream has not started yet
                        live.append((chunks, key, partition, k))
                        continue
                    chunk = next(chunks, None)
                    if chunk is None:
                        continue
                    live.append((chunks, key, partition, k))
                    gateway.queue(partition, key, encode(chunk))
                    report.sent += 1
                if live:
                    groups[phase] = live
                else:
                    del groups[phase]
            gateway.check()
            if sum(count for _, count in gateway.deliveries) > 10_000:
                await _settle(gateway.deliveries, report)
        await gateway.close()
    finally:
        gateway.cancel()
    await _settle(gateway.deliveries, report)
    report.seconds = time.monotonic() - started
    return report


class _Gateway:
    """One sender task per partition, each sending what was queued for its partition since its
    last batch as the next batch (more than one if it does not fit)."""

    def __init__(self, producer: Any, topic: str, partitions: Sequence[int]) -> None:
        self.producer = producer
        self.topic = topic
        self.deliveries: list[Delivery] = []
        self._queued: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in partitions}
        self._ready = {p: asyncio.Event() for p in partitions}
        self._closing = False
        self._tasks = [asyncio.create_task(self._send(p)) for p in partitions]

    def queue(self, partition: int, key: bytes, value: bytes) -> None:
        self._queued[partition].append((key, value))
        self._ready[partition].set()

    def check(self) -> None:
        """Raise what made a sender fail (a send refused outright)."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                task.result()

    async def close(self) -> None:
        """Send everything queued; return when every batch is handed to the producer."""
        self._closing = True
        for event in self._ready.values():
            event.set()
        await asyncio.gather(*self._tasks)

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _send(self, partition: int) -> None:
        while True:
            await self._ready[partition].wait()
            self._ready[partition].clear()
            records, self._queued[partition] = self._queued[partition], []
            self.deliveries += await send_batches(self.producer, self.topic, partition, records)
            if self._closing and not self._queued[partition]:
                return


async def _settle(deliveries: list[Delivery], report: SimulationReport) -> None:
    """Wait for the sent batches; count their records as published or rejected."""
    taken = deliveries[:]  # senders may add more meanwhile
    del deliveries[: len(taken)]
    outcomes = await asyncio.gather(*(future for future, _ in taken), return_exceptions=True)
    for outcome, (_, count) in zip(outcomes, taken, strict=True):
        if isinstance(outcome, BaseException):
            reason = type(outcome).__name__
            report.rejected[reason] = report.rejected.get(reason, 0) + count
        else:
            report.published += count
