"""The load generator: looped streams, their truth, and both transports (gRPC and a gateway)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import CollectorRegistry

from soundsentry.contracts import AudioChunk, decode
from soundsentry.dev.simulate import (
    Recording,
    SensorPlan,
    expected_events,
    load_recording,
    plan_sensors,
    run_grpc,
    run_kafka,
    sensor_chunks,
)
from soundsentry.evaluation.sed_metrics import EvalEvent
from soundsentry.exceptions import ConfigurationError
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import TopicLayout
from soundsentry.services.ingest.server import IngestServer
from soundsentry.services.ingest.settings import IngestSettings

RATE = 8000


def _marked_recording() -> Recording:
    """3 s of silence with a constant 'sound' where each truth event is, so that the truth of
    a stream can be checked against the samples it carries."""
    frames = np.zeros((3 * RATE, 1), dtype=np.int16)
    events = (EvalEvent("r", "a", 0.5, 1.0), EvalEvent("r", "b", 2.0, 2.9))
    for event in events:
        frames[int(event.onset_s * RATE) : int(event.offset_s * RATE)] = 1000
    return Recording("r.wav", RATE, frames, events)


def _plan(recording: Recording, offset_s: float, sensor: str = "s") -> SensorPlan:
    return SensorPlan(sensor, recording, offset_s, 1_000_000_000, "stream")


def _pcm(chunks: list[AudioChunk]) -> np.ndarray[Any, np.dtype[np.int16]]:
    return np.concatenate([np.frombuffer(c.pcm, dtype="<i2") for c in chunks])


def test_a_sensor_loops_its_recording_from_its_start_position() -> None:
    recording = _marked_recording()
    recording.frames[:, 0] = np.arange(3 * RATE) % 30_000  # every position distinct
    chunks = list(sensor_chunks(_plan(recording, 2.2), duration_s=7.35, chunk_ms=100))
    total = int(7.35 * RATE)
    positions = (int(2.2 * RATE) + np.arange(total)) % (3 * RATE)
    np.testing.assert_array_equal(_pcm(chunks), recording.frames[positions, 0])
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    assert [c.start_sample for c in chunks] == [i * RATE // 10 for i in range(len(chunks))]
    assert {c.captured_at.ToNanoseconds() for c in chunks[:1]} == {1_000_000_000}


def test_expected_events_are_where_the_stream_carries_them() -> None:
    recording = _marked_recording()
    plan = _plan(recording, 2.2)  # starts inside event b: its tail is not an event
    expected = expected_events([plan], duration_s=7.0)
    got = [(e.event.label, round(e.event.onset_s, 3), round(e.event.offset_s, 3)) for e in expected]
    assert got == [("a", 1.3, 1.8), ("b", 2.8, 3.7), ("a", 4.3, 4.8), ("b", 5.8, 6.7)]
    # The rising edges of the streamed samples are exactly these onsets.
    pcm = _pcm(list(sensor_chunks(plan, duration_s=7.0, chunk_ms=100)))
    edges = np.flatnonzero((pcm[1:] > 0) & (pcm[:-1] == 0)) + 1
    np.testing.assert_allclose(edges / RATE, [e.event.onset_s for e in expected], atol=1 / RATE)
    assert expected[0].onset_time_ns == 1_000_000_000 + 1_300_000_000


def test_plans_are_deterministic_and_named_in_order() -> None:
    recordings = [_marked_recording(), _marked_recording()]
    one = plan_sensors(12, recordings, prefix="p-", start_time_ns=5, seed=3)
    two = plan_sensors(12, recordings, prefix="p-", start_time_ns=5, seed=3)
    assert one == two
    assert [p.sensor_id for p in one][:3] == ["p-00", "p-01", "p-02"]
    assert len({p.stream_id for p in one}) == 12
    assert all(0.0 <= p.start_offset_s < 3.0 for p in one)
    with pytest.raises(ConfigurationError, match="at least 1"):
        plan_sensors(0, recordings)
    with pytest.raises(ConfigurationError, match="no recordings"):
        plan_sensors(3, [])


def test_the_example_recording_comes_with_its_truth(repo_root: Path) -> None:
    recording = load_recording(repo_root / "examples" / "audio" / "kitchen_alarms.flac")
    assert [e.label for e in recording.events] == ["smoke_alarm"] * 2 + ["co_alarm"] * 2
    assert recording.duration_s > recording.events[-1].offset_s


class _Batch:
    """aiokafka's BatchBuilder as a gateway uses it: full after ``capacity`` records."""

    def __init__(self, capacity: int) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.capacity = capacity
        self.closed = False

    def append(self, *, key: bytes, value: bytes, timestamp: None) -> object | None:
        if self.closed or len(self.records) >= self.capacity:
            self.closed = True
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True


class _Gateway:
    """An aiokafka producer's batch interface over four partitions; ``take`` sees each record
    and says whether Kafka would acknowledge it (a batch is acknowledged whole or not)."""

    def __init__(self, capacity: int = 1000, round_trip_s: float = 0.0) -> None:
        self.capacity = capacity
        self.round_trip_s = round_trip_s  # send_batch waits this long, as for a remote broker
        self.batches: list[tuple[int, list[bytes]]] = []  # (partition, keys)

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    def create_batch(self) -> _Batch:
        return _Batch(self.capacity)

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        assert topic == "audio.pcm"
        assert batch.closed
        assert batch.records
        if self.round_trip_s:
            await asyncio.sleep(self.round_trip_s)
        accepted = [self.take(key, value) for key, value in batch.records]
        self.batches.append((partition, [key for key, _ in batch.records]))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if all(accepted):
            future.set_result(None)
        else:
            future.set_exception(TimeoutError("not acknowledged"))
        return future

    def take(self, key: bytes, value: bytes) -> bool:
        raise NotImplementedError


class _Producer(_Gateway):
    """Records what a gateway sends; refuses every chunk of sequence 1 of sensor s1."""

    def __init__(self, capacity: int = 1000, round_trip_s: float = 0.0) -> None:
        super().__init__(capacity, round_trip_s)
        self.sent: dict[bytes, list[AudioChunk]] = defaultdict(list)
        self.early_ns = 0  # the most a chunk was sent before its capture ended

    def take(self, key: bytes, value: bytes) -> bool:
        chunk = decode(AudioChunk, value)
        frames = len(chunk.pcm) // 2
        captured_ns = chunk.captured_at.ToNanoseconds() + frames * 1_000_000_000 // RATE
        self.early_ns = max(self.early_ns, captured_ns - time.time_ns())
        self.sent[key].append(chunk)
        return not (key == b"s1" and chunk.sequence == 1)


def test_a_gateway_sends_every_sensor_in_order_and_counts_refusals() -> None:
    recording = _marked_recording()
    plans = [_plan(recording, 0.0, "s0"), _plan(recording, 1.0, "s1")]
    producer = _Producer()
    report = asyncio.run(run_kafka(producer, "audio.pcm", plans, duration_s=0.3, chunk_ms=100))
    assert report.sent == 6
    assert report.published == 5
    assert report.rejected == {"TimeoutError": 1}
    # As a microphone: no chunk leaves before its last sample was captured (5 ms: timer slack).
    assert producer.early_ns < 5_000_000
    for plan in plans:
        chunks = producer.sent[plan.sensor_id.encode()]
        assert [c.sequence for c in chunks] == [0, 1, 2]
        expected = list(sensor_chunks(plan, duration_s=0.3, chunk_ms=100))
        np.testing.assert_array_equal(_pcm(chunks), _pcm(expected))


@pytest.mark.parametrize("capacity", [1, 3, 1000])
def test_a_gateway_batches_by_partition_as_kafka_places_keys(capacity: int) -> None:
    recording = _marked_recording()
    plans = [_plan(recording, 0.0, f"s{i:02d}") for i in range(40)]
    producer = _Producer(capacity)
    report = asyncio.run(run_kafka(producer, "audio.pcm", plans, duration_s=0.2, chunk_ms=100))
    assert report.sent == report.published == 80
    # Each sensor's chunks in the partition Kafka's default partitioner gives its key, in order.
    place = DefaultPartitioner()
    for partition, keys in producer.batches:
        assert len(keys) <= capacity
        assert {place(key, [0, 1, 2, 3], [0, 1, 2, 3]) for key in keys} == {partition}
    # Chunks due together share a batch unless it is full.
    assert (len(producer.batches) == 80) == (capacity == 1)
    for plan in plans:
        assert [c.sequence for c in producer.sent[plan.sensor_id.encode()]] == [0, 1]


def test_gateway_streams_start_spread_over_a_second_like_sensors_booted_at_random() -> None:
    """Windows end one hop apart from each stream's start: streams that all started within one
    chunk period would finish their windows together, a burst no real fleet sends."""
    recording = _marked_recording()
    plans = [_plan(recording, 0.0, f"s{i:02d}") for i in range(40)]
    sink = _Sink()
    asyncio.run(run_kafka(sink, "audio.pcm", plans, duration_s=0.1, chunk_ms=100))
    starts = sorted(c.captured_at.ToNanoseconds() / 1e9 for c in sink.chunks if c.sequence == 0)
    assert len(starts) == len(plans)
    assert 0.85 <= starts[-1] - starts[0] < 1.0
    # Where each stream's windows of a 0.5 s hop end, in 50 ms bins: every bin is used.
    assert {int((t - starts[0]) % 0.5 * 20) for t in starts} == set(range(10))


def test_chunks_queued_behind_a_slow_batch_go_together_in_the_next() -> None:
    recording = _marked_recording()
    plans = [_plan(recording, 0.0, f"s{i:02d}") for i in range(40)]
    producer = _Producer(round_trip_s=0.2)  # 40 ticks of 5 ms
    report = asyncio.run(run_kafka(producer, "audio.pcm", plans, duration_s=0.3, chunk_ms=100))
    assert report.sent == report.published == 120
    # Without merging, about one batch per chunk: the 40 streams start spread over a second.
    assert len(producer.batches) < 120 / 3
    for plan in plans:
        assert [c.sequence for c in producer.sent[plan.sensor_id.encode()]] == [0, 1, 2]


def test_every_record_of_a_refused_batch_counts_as_rejected() -> None:
    class Refusing(_Producer):
        async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
            future = await super().send_batch(batch, topic, partition=partition)
            if partition != 0:
                return future
            refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            refused.set_exception(TimeoutError("not acknowledged"))
            return refused

    recording = _marked_recording()
    plans = [_plan(recording, 0.0, f"s{i:02d}") for i in range(40)]
    producer = Refusing(round_trip_s=0.02)
    report = asyncio.run(run_kafka(producer, "audio.pcm", plans, duration_s=0.2, chunk_ms=100))
    on_zero = sum(len(keys) for partition, keys in producer.batches if partition == 0)
    assert max(len(keys) for partition, keys in producer.batches if partition == 0) > 1
    assert report.rejected == {"TimeoutError": on_zero}
    assert report.published == report.sent - on_zero == 80 - on_zero


def test_a_chunk_too_large_for_kafka_is_refused_before_anything_is_sent() -> None:
    recording = _marked_recording()
    producer = _Producer()
    with pytest.raises(ConfigurationError, match="use shorter chunks"):
        asyncio.run(
            run_kafka(producer, "audio.pcm", [_plan(recording, 0.0)], duration_s=1, chunk_ms=70_000)
        )
    assert producer.batches == []


class _Sink(_Gateway):
    """Takes every chunk, from a gateway's batches or from ingest's sends."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[AudioChunk] = []

    def take(self, key: bytes, value: bytes) -> bool:
        self.chunks.append(decode(AudioChunk, value))
        return True

    async def send(self, topic: str, value: bytes, *, key: bytes) -> asyncio.Future[None]:
        self.chunks.append(decode(AudioChunk, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def test_grpc_sensors_share_one_channel_and_all_chunks_arrive_in_order() -> None:
    recording = _marked_recording()
    plans = plan_sensors(5, [recording], start_time_ns=1, seed=1)

    async def scenario() -> tuple[Any, _Sink]:
        sink = _Sink()
        server = IngestServer(
            IngestSettings(port=0, allow_anonymous=True, metrics_port=0, host="127.0.0.1"),
            KafkaSettings(),
            TopicLayout(),
            registry=CollectorRegistry(),
            sink=sink,
        )
        await server.start()
        try:
            report = await run_grpc(f"127.0.0.1:{server.port}", plans, duration_s=0.5, chunk_ms=100)
        finally:
            await server.stop(grace_s=1.0)
        return report, sink

    report, sink = asyncio.run(scenario())
    assert not report.failed_sensors
    assert report.sent == report.published == 25
    by_sensor: dict[str, list[int]] = defaultdict(list)
    for chunk in sink.chunks:
        by_sensor[chunk.sensor_id].append(chunk.sequence)
    assert by_sensor == {plan.sensor_id: [0, 1, 2, 3, 4] for plan in plans}


def test_a_second_ingest_on_a_taken_port_refuses_to_start() -> None:
    # gRPC's default SO_REUSEPORT would let both bind and split the sensors between them.
    def server(port: int) -> IngestServer:
        return IngestServer(
            IngestSettings(port=port, allow_anonymous=True, metrics_port=0, host="127.0.0.1"),
            KafkaSettings(),
            TopicLayout(),
            registry=CollectorRegistry(),
            sink=_Sink(),
        )

    async def scenario() -> None:
        first = server(0)
        await first.start()
        try:
            with pytest.raises(ConfigurationError, match=f"127.0.0.1:{first.port}"):
                server(first.port)
        finally:
            await first.stop(grace_s=0.1)

    asyncio.run(scenario())
