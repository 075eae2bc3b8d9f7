"""The load generator's Kafka gateway against the real broker: record batches from an idempotent
producer land whole, each sensor's chunks in order in the partition Kafka's own partitioner
gives its key (where a sensor's own producer would put them)."""

from __future__ import annotations

from collections import defaultdict

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from soundsentry.contracts import AudioChunk, decode, sensor_key
from soundsentry.dev.simulate import load_recording, plan_sensors, run_kafka, sensor_chunks
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import AUDIO, TopicLayout
from tests.integration.processes import KITCHEN
from tests.integration.topic_helpers import at_least, consume_until


async def test_gateway_batches_arrive_whole_and_in_order_per_sensor(
    kafka_settings: KafkaSettings, topic_layout: TopicLayout, consumer_group: str
) -> None:
    recording = load_recording(KITCHEN)
    plans = plan_sensors(30, [recording], start_time_ns=1, seed=3)
    topic = topic_layout.name(AUDIO)
    producer = AIOKafkaProducer(**kafka_settings.producer_kwargs())
    await producer.start()
    try:
        report = await run_kafka(producer, topic, plans, duration_s=0.5, chunk_ms=100)
    finally:
        await producer.stop()
    assert report.sent == report.published == 30 * 5
    assert report.rejected == {}

    records = await consume_until(kafka_settings, topic, consumer_group, at_least(report.sent))
    assert len(records) == report.sent
    by_sensor: dict[bytes, list[tuple[int, AudioChunk]]] = defaultdict(list)
    for record in records:
        by_sensor[record.key].append((record.partition, decode(AudioChunk, record.value)))
    place = DefaultPartitioner()
    partitions = list(range(topic_layout.partitions))
    for plan in plans:
        key = sensor_key(plan.sensor_id)
        got = by_sensor[key]
        assert {partition for partition, _ in got} == {place(key, partitions, partitions)}
        chunks = [chunk for _, chunk in got]
        expected = list(sensor_chunks(plan, duration_s=0.5, chunk_ms=100))
        assert [c.sequence for c in chunks] == [c.sequence for c in expected]
        assert [c.pcm for c in chunks] == [c.pcm for c in expected]
