"""A Faust app reads protobuf AudioChunks from one topic and writes them to another.

It uses the project's topic layout, codec and per-message error policy, against the real
broker: a record that is not an AudioChunk is parked in the dead-letter topic with headers
saying why, is counted, and the records around it flow on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import faust
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from soundsentry.contracts import AudioChunk, decode, encode, sensor_key
from soundsentry.runtime.faust_topics import ProtobufCodec, faust_raw_topic
from soundsentry.runtime.metrics import StreamMetrics
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.streaming import decode_or_park
from soundsentry.runtime.topics import AUDIO, TopicLayout
from soundsentry.testing.pytest_kafka import TopicFactory
from tests.integration.topic_helpers import at_least, consume_until


async def test_faust_agent_copies_chunks_and_parks_a_bad_record(
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    topic_factory: TopicFactory,
    consumer_group: str,
    tmp_path: Path,
) -> None:
    output = await topic_factory(partitions=2)
    registry = CollectorRegistry()
    metrics = StreamMetrics.create(registry)
    app = faust.App(
        consumer_group,
        broker=kafka_settings.faust_broker_url(),
        store="memory://",
        web_enabled=False,
        topic_replication_factor=1,
        topic_partitions=topic_layout.partitions,
        producer_acks=-1,
        datadir=tmp_path / "faust-data",
    )
    source = faust_raw_topic(app, topic_layout, topic_layout.name(AUDIO))
    dlq = faust_raw_topic(app, topic_layout, topic_layout.dlq(AUDIO), partitions=1)
    sink = app.topic(
        output,
        key_serializer="raw",
        value_serializer=ProtobufCodec(message_type=AudioChunk),
    )

    @app.agent(source)
    async def copy(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            chunk = await decode_or_park(
                event, AUDIO, dlq=dlq, metrics=metrics, service="faust-test"
            )
            if chunk is not None:
                chunk.sequence += 1000  # proves the agent, not a mirror, wrote it
                await sink.send(key=sensor_key(chunk.sensor_id), value=chunk)
            yield None

    chunks = [
        AudioChunk(sensor_id=f"mic-{i % 3}", stream_id="s", sequence=i, pcm=b"\0\0" * 160)
        for i in range(9)
    ]
    await app.start()
    try:
        producer = AIOKafkaProducer(**kafka_settings.aiokafka_kwargs(), acks="all")
        await producer.start()
        try:
            for i, chunk in enumerate(chunks):
                if i == 4:
                    await producer.send_and_wait(
                        topic_layout.name(AUDIO), b"\xff\xfenot protobuf", key=b"mic-1"
                    )
                await producer.send_and_wait(
                    topic_layout.name(AUDIO), encode(chunk), key=sensor_key(chunk.sensor_id)
                )
        finally:
            await producer.stop()
        copied = await consume_until(
            kafka_settings, output, consumer_group + "-out", at_least(len(chunks))
        )
        parked = await consume_until(
            kafka_settings, topic_layout.dlq(AUDIO), consumer_group + "-dlq", at_least(1)
        )
    finally:
        await app.stop()

    out = sorted((decode(AudioChunk, r.value) for r in copied), key=lambda c: c.sequence)
    assert [c.sequence for c in out] == [1000 + i for i in range(9)]
    assert all(r.key == sensor_key(decode(AudioChunk, r.value).sensor_id) for r in copied)

    (letter,) = parked
    headers = dict(letter.headers)
    assert letter.value == b"\xff\xfenot protobuf"
    assert letter.key == b"mic-1"
    assert headers["soundsentry.error.reason"] == b"undecodable"
    assert headers["soundsentry.source.topic"] == topic_layout.name(AUDIO).encode()
    assert headers["soundsentry.service"] == b"faust-test"
    labels = {"service": "faust-test", "topic": topic_layout.name(AUDIO)}
    assert (
        registry.get_sample_value(
            "soundsentry_messages_dead_lettered_total", {**labels, "reason": "undecodable"}
        )
        == 1
    )
    assert registry.get_sample_value("soundsentry_messages_consumed_total", labels) == 10
