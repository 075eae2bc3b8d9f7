"""The harness's broker is a real Kafka: records go through it with aiokafka."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from soundsentry.contracts import AudioChunk, SampleFormat, decode, encode, sensor_key
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import ALL_TOPICS, TopicLayout, ensure_topics
from soundsentry.testing.pytest_kafka import TopicFactory


async def test_idempotent_producer_to_consumer_round_trip_keeps_each_sensors_order(
    kafka_settings: KafkaSettings, topic_factory: TopicFactory, consumer_group: str
) -> None:
    topic = await topic_factory(partitions=3)
    sent: dict[str, list[AudioChunk]] = defaultdict(list)
    producer = AIOKafkaProducer(
        **kafka_settings.aiokafka_kwargs(), acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for sequence in range(20):
            for sensor in ("mic-a", "mic-b", "mic-c", "mic-d"):
                chunk = AudioChunk(
                    sensor_id=sensor,
                    stream_id="s1",
                    sequence=sequence,
                    start_sample=sequence * 1600,
                    sample_rate_hz=16_000,
                    sample_format=SampleFormat.SAMPLE_FORMAT_S16LE,
                    pcm=bytes([sequence]) * 3200,
                )
                metadata = await producer.send_and_wait(
                    topic, encode(chunk), key=sensor_key(sensor)
                )
                assert metadata.offset >= 0  # acknowledged by the broker
                sent[sensor].append(chunk)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        **kafka_settings.aiokafka_kwargs(),
        group_id=consumer_group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: dict[str, list[AudioChunk]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    try:
        async with asyncio.timeout(60):
            while sum(map(len, received.values())) < 80:
                batch = await consumer.getmany(timeout_ms=1000)
                for tp, records in batch.items():
                    for record in records:
                        chunk = decode(AudioChunk, record.value)
                        assert record.key == sensor_key(chunk.sensor_id)
                        received[chunk.sensor_id].append(chunk)
                        partitions[chunk.sensor_id].add(tp.partition)
    finally:
        await consumer.stop()

    assert received == sent
    # Keyed by sensor: each sensor's chunks live in exactly one partition.
    assert all(len(p) == 1 for p in partitions.values())


async def test_ensure_topics_creates_every_topic_once_with_its_size(
    kafka_settings: KafkaSettings,
) -> None:
    layout = TopicLayout(prefix="ensure-test.", partitions=3)
    names = [t.name for t in layout.physical_topics()]
    admin = AIOKafkaAdminClient(**kafka_settings.aiokafka_kwargs())
    await admin.start()
    try:
        assert sorted(await ensure_topics(kafka_settings, layout)) == sorted(names)
        assert await ensure_topics(kafka_settings, layout) == []  # idempotent
        described = {d["topic"]: d for d in await admin.describe_topics(names)}
        assert len(described) == 2 * len(ALL_TOPICS)
        assert len(described["ensure-test.audio.pcm"]["partitions"]) == 3
        assert len(described["ensure-test.audio.pcm.dlq"]["partitions"]) == 1
    finally:
        await admin.delete_topics(names)
        await admin.close()
