"""A stand-in for aiokafka's producer where tests need its record batches without a broker."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch


class RecordingProducer:
    """aiokafka's batch interface with its real BatchBuilder; keeps what each batch held and
    acknowledges it with its index, or with ``refuse`` raised."""

    def __init__(self, batch_bytes: int = 1 << 20, refuse: Exception | None = None) -> None:
        self.batch_bytes = batch_bytes
        self.refuse = refuse
        self.sent: list[tuple[str, int, list[tuple[bytes, bytes]]]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_bytes, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        buffer = batch._builder.build()  # the bytes a produce request would carry
        records = [(r.key, r.value) for r in _read(bytes(buffer))]
        self.sent.append((topic, partition, records))
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self.refuse is not None:
            future.set_exception(self.refuse)
        else:
            future.set_result(len(self.sent) - 1)
        return future


def _read(buffer: bytes) -> Any:
    return list(DefaultRecordBatch(buffer))
