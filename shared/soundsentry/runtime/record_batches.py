"""Many small records to one Kafka partition as whole record batches (aiokafka's ``send_batch``).

``AIOKafkaProducer.send`` pays per record for a future, the partitioner and the accumulator's
bookkeeping, and Faust's producer adds its own buffer and future on top; a record batch pays
them once. Used where hundreds of small records go out together: the load generator's gateway
(``soundsentry simulate``) and the alerter's state changelog.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["Delivery", "send_batches"]

# A sent batch's acknowledgement (RecordMetadata, or the send's error) and its record count.
Delivery = tuple["asyncio.Future[Any]", int]


async def send_batches(
    producer: Any, topic: str, partition: int, records: Iterable[tuple[bytes, bytes]]
) -> list[Delivery]:
    """Send ``(key, value)`` records to ``topic``'s ``partition`` in as few batches as they fit.

    Returns once every batch is handed to the producer (each waits for the partition's batch
    before it), with each batch's acknowledgement and record count; the records of one call
    keep their order. A record too large for Kafka fails its batch's acknowledgement.
    """
    deliveries: list[Delivery] = []
    batch, count = producer.create_batch(), 0
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None) is None:  # full
            deliveries.append(await _submit(producer, batch, topic, partition, count))
            batch, count = producer.create_batch(), 0
            batch.append(key=key, value=value, timestamp=None)  # a first record always fits
        count += 1
    if count:
        deliveries.append(await _submit(producer, batch, topic, partition, count))
    return deliveries


async def _submit(producer: Any, batch: Any, topic: str, partition: int, count: int) -> Delivery:
    batch.close()
    return await producer.send_batch(batch, topic, partition=partition), count
