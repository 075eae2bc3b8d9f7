"""Helpers for tests that read SoundSentry topics on the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from soundsentry.contracts import FeatureWindow, decode, sensor_key
from soundsentry.features.featurizer import Window, window_from_proto
from soundsentry.runtime.settings import KafkaSettings

# Bounds every wait on the broker (a guard against hangs, not an assertion about speed).
WAIT_S = 90


async def consume_until(
    kafka: KafkaSettings,
    topic: str,
    group: str,
    done: Callable[[list[Any]], bool],
    *,
    drain_s: float = 0.0,
) -> list[Any]:
    """Records of ``topic`` from the start, until ``done(records)``; then, with ``drain_s``,
    whatever else arrives within that time (so a test can see duplicates or leaks)."""
    consumer = AIOKafkaConsumer(
        topic, **kafka.aiokafka_kwargs(), group_id=group, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(WAIT_S):
            while not done(records):
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
            if drain_s:
                extra = await consumer.getmany(timeout_ms=round(drain_s * 1000))
                records.extend(r for batch in extra.values() for r in batch)
    finally:
        await consumer.stop()
    return records


def window_records_cover(expected: Iterable[Window]) -> Callable[[list[Any]], bool]:
    wanted = {w.window_id for w in expected}

    def done(records: list[Any]) -> bool:
        ids = {decode(FeatureWindow, r.value).window_id for r in records}
        return wanted <= ids

    return done


async def produce(kafka: KafkaSettings, topic: str, records: Iterable[tuple[bytes, bytes]]) -> None:
    """Send (key, value) records in order, each acknowledged by every replica."""
    producer = AIOKafkaProducer(**kafka.aiokafka_kwargs(), acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def eventually(check: Callable[[], bool]) -> None:
    """Wait (bounded) until ``check()``: metrics are updated a moment after records are sent."""
    async with asyncio.timeout(WAIT_S):
        while not check():  # noqa: ASYNC110 - polls a metric: there is no event to wait on
            await asyncio.sleep(0.05)


class _App(Protocol):
    """A Faust app or a BatchApp: both start and stop inside an event loop."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class _Service(Protocol):
    @property
    def app(self) -> _App: ...


S = TypeVar("S", bound=_Service)


@asynccontextmanager
async def running(service: S) -> AsyncIterator[S]:
    await service.app.start()
    try:
        yield service
    finally:
        await service.app.stop()


def assert_same_windows(records: list[Any], expected: list[Window]) -> None:
    got = {}
    for record in records:
        window = window_from_proto(decode(FeatureWindow, record.value))
        assert record.key == sensor_key(window.sensor_id)
        assert window.window_id not in got, "a window arrived twice"
        got[window.window_id] = window
    want = {w.window_id: w for w in expected}
    assert got.keys() == want.keys()
    for window_id, window in got.items():
        other = want[window_id]
        assert (
            window.sensor_id,
            window.stream_id,
            window.profile,
            window.start_sample,
            window.num_samples,
            window.sample_rate_hz,
            window.start_time_ns,
        ) == (
            other.sensor_id,
            other.stream_id,
            other.profile,
            other.start_sample,
            other.num_samples,
            other.sample_rate_hz,
            other.start_time_ns,
        )
        assert window.log_mel_db.shape == other.log_mel_db.shape
        assert np.abs(window.log_mel_db - other.log_mel_db).max() <= 1e-3, window_id
        assert window.rms_dbfs == pytest.approx(other.rms_dbfs, abs=1e-4)


def at_least(count: int) -> Callable[[list[Any]], bool]:
    """A ``done`` for :func:`consume_until`: ``count`` records have arrived."""
    return lambda records: len(records) >= count


async def assert_nothing_committed(kafka: KafkaSettings, group: str, topic: str) -> None:
    """No offset of ``topic`` beyond its first record is committed for ``group``."""
    admin = AIOKafkaAdminClient(**kafka.aiokafka_kwargs())
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    assert all(meta.offset <= 0 for tp, meta in committed.items() if tp.topic == topic), committed
