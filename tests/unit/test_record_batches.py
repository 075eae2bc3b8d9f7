"""send_batches: records into as few of aiokafka's record batches as they fit, in order."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder

from soundsentry.runtime.record_batches import send_batches
from tests.kafka_fixtures import RecordingProducer


def _records(n: int, size: int = 100) -> list[tuple[bytes, bytes]]:
    return [(f"mic-{i}".encode(), bytes([i % 256]) * size) for i in range(n)]


def _fits(batch_bytes: int, records: list[tuple[bytes, bytes]]) -> bool:
    batch = BatchBuilder(batch_bytes, 0)
    return all(batch.append(key=k, value=v, timestamp=None) is not None for k, v in records)


@pytest.mark.parametrize("batch_bytes", [1 << 20, 1000])
def test_records_go_in_order_in_as_few_batches_as_fit(batch_bytes: int) -> None:
    producer = RecordingProducer(batch_bytes)
    records = _records(300)
    deliveries = asyncio.run(send_batches(producer, "changelog", 2, records))
    batches = len(producer.sent)
    assert (batches == 1) == (batch_bytes == 1 << 20)
    # Each batch is full: the next batch's first record would not have fitted in it.
    held = [records for _, _, records in producer.sent]
    assert all(not _fits(batch_bytes, a + b[:1]) for a, b in itertools.pairwise(held))
    assert all(topic == "changelog" and partition == 2 for topic, partition, _ in producer.sent)
    assert [r for _, _, held in producer.sent for r in held] == records
    # Each delivery is its batch's acknowledgement with the batch's record count.
    assert [future.result() for future, _ in deliveries] == list(range(batches))
    assert [count for _, count in deliveries] == [len(held) for _, _, held in producer.sent]


def test_a_record_larger_than_a_batch_goes_alone_and_nothing_is_sent_for_none() -> None:
    producer = RecordingProducer(200)
    records = [(b"a", b"x" * 10), (b"big", b"y" * 1000), (b"c", b"z" * 10)]
    deliveries = asyncio.run(send_batches(producer, "t", 0, records))
    assert [held for _, _, held in producer.sent] == [[records[0]], [records[1]], [records[2]]]
    assert [count for _, count in deliveries] == [1, 1, 1]
    assert asyncio.run(send_batches(producer, "t", 0, [])) == []
