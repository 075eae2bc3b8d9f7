"""The featurizer service against the real broker: chunks in, the same windows as offline out.

Each test builds the service with ``create_app`` (a fresh registry, its own consumer group and
topics), runs its batch app in-process, produces records with a plain producer and reads the
windows and dead letters with plain consumers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from soundsentry.contracts import (
    AudioChunk,
    SampleFormat,
    encode,
    sensor_key,
)
from soundsentry.features.featurizer import FeatureProfile, Featurizer, Window
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import AUDIO, WINDOWS, TopicLayout
from soundsentry.services.featurizer.app import create_app
from soundsentry.services.featurizer.settings import FeaturizerSettings
from soundsentry.testing.kafka_broker import free_port
from tests.audio_fixtures import chunks, recording
from tests.integration.topic_helpers import (
    WAIT_S,
    assert_nothing_committed,
    assert_same_windows,
    consume_until,
    eventually,
    produce,
    running,
    window_records_cover,
)

PROFILES_JSON = [
    {"name": "full-16k"},
    {
        "name": "alarm-band",
        "window_s": 0.5,
        "window_hop_s": 0.25,
        "band_fmin_hz": 2000.0,
        "band_fmax_hz": 4000.0,
        "standardize": True,
    },
]

Record = tuple[bytes, bytes]  # (key, value)


def random_chunks(name: str, *, sensor_id: str, stream_id: str, seed: int) -> list[AudioChunk]:
    """A real recording cut into chunks of random sizes (10 ms .. 250 ms)."""
    samples, rate = recording(name)
    sizes = np.random.default_rng(seed).integers(rate // 100, rate // 4, size=64)
    return list(chunks(samples, rate, sizes.tolist(), sensor_id=sensor_id, stream_id=stream_id))


def interleave(*streams: list[AudioChunk]) -> list[AudioChunk]:
    """Round-robin over the streams: each sensor's chunks stay in order."""
    out: list[AudioChunk] = []
    for i in range(max(len(s) for s in streams)):
        out.extend(s[i] for s in streams if i < len(s))
    return out


def offline_windows(profiles: Iterable[FeatureProfile], stream: list[AudioChunk]) -> list[Window]:
    result = Featurizer(tuple(profiles)).process(stream)
    assert not result.rejected
    return result.windows


def settings_for(consumer_group: str, tmp_path: Path, **kwargs: Any) -> FeaturizerSettings:
    profiles_file = tmp_path / "profiles.json"
    profiles_file.write_text(json.dumps(PROFILES_JSON))
    return FeaturizerSettings(
        app_id=consumer_group,
        profiles_file=profiles_file,
        metrics_port=0,
        **kwargs,
    )


def windows_by_profile(windows: Iterable[Window]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for window in windows:
        counts[window.profile] = counts.get(window.profile, 0) + 1
    return counts


async def test_two_sensors_get_the_windows_of_the_offline_featurizer(
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
) -> None:
    # A 16 kHz siren and an 8 kHz recording (resampled to the profiles' 16 kHz), both cut at
    # random sizes, interleaved as two sensors would send them.
    siren = random_chunks("siren", sensor_id="mic-a", stream_id="boot-1", seed=1)
    baby = random_chunks("baby_8k", sensor_id="mic-b", stream_id="boot-7", seed=2)
    stream = interleave(siren, baby)
    settings = settings_for(consumer_group, tmp_path, max_batch_chunks=16, max_batch_ms=20)
    expected = offline_windows(settings.feature_profiles(), stream)
    assert {w.sensor_id for w in expected} == {"mic-a", "mic-b"}

    registry = CollectorRegistry()
    service = create_app(kafka_settings, topic_layout, settings, registry=registry)
    audio = topic_layout.name(AUDIO)
    await produce(kafka_settings, audio, ((sensor_key(c.sensor_id), encode(c)) for c in stream))
    async with running(service):
        records = await consume_until(
            kafka_settings,
            topic_layout.name(WINDOWS),
            consumer_group + "-windows",
            window_records_cover(expected),
        )
        await eventually(
            lambda: (
                registry.get_sample_value(
                    "soundsentry_messages_consumed_total", {"service": "featurizer", "topic": audio}
                )
                == len(stream)
            )
        )
    assert_same_windows(records, expected)

    for profile, count in windows_by_profile(expected).items():
        assert (
            registry.get_sample_value("soundsentry_featurizer_windows_total", {"profile": profile})
            == count
        )
    assert registry.get_sample_value("soundsentry_featurizer_sensors") == 2
    assert registry.get_sample_value("soundsentry_featurizer_batch_chunks_sum") == len(stream)
    batches = registry.get_sample_value("soundsentry_featurizer_batch_chunks_count")
    assert batches is not None
    assert batches >= len(stream) / 16
    assert registry.get_sample_value("soundsentry_featurizer_batch_seconds_count") == batches
    lags = [
        registry.get_sample_value("soundsentry_featurizer_consumer_lag", {"partition": str(p)})
        for p in range(topic_layout.partitions)
    ]
    assert any(lag is not None for lag in lags)
    assert all(lag is None or lag >= 0 for lag in lags)
    assert (
        registry.get_sample_value(
            "soundsentry_messages_dead_lettered_total",
            {"service": "featurizer", "topic": audio, "reason": "undecodable"},
        )
        is None
    )

    # When its partitions are revoked, the worker drops those sensors and their lag gauges.
    service.on_partitions_revoked(
        {TopicPartition(audio, p) for p in range(topic_layout.partitions)}
    )
    assert service.featurizer.sensors == 0
    assert registry.get_sample_value("soundsentry_featurizer_sensors") == 0
    assert all(
        registry.get_sample_value("soundsentry_featurizer_consumer_lag", {"partition": str(p)})
        is None
        for p in range(topic_layout.partitions)
    )


async def test_bad_records_are_parked_and_the_good_sensor_loses_nothing(
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
) -> None:
    good = random_chunks("siren", sensor_id="mic-good", stream_id="boot-1", seed=3)
    undecodable = b"\xff\xfe not an AudioChunk"
    # A corrupted copy of a good chunk (one byte short), sent just before the real one: it is
    # rejected without disturbing the sensor's stream.
    odd = AudioChunk()
    odd.CopyFrom(good[5])
    odd.pcm = odd.pcm[:-1]
    nan_samples = np.zeros(800, dtype="<f4")
    nan_samples[123] = np.nan
    nan = AudioChunk(
        sensor_id="mic-nan",
        stream_id="boot-1",
        sequence=0,
        start_sample=0,
        sample_rate_hz=16_000,
        channels=1,
        sample_format=SampleFormat.SAMPLE_FORMAT_F32LE,
        pcm=nan_samples.tobytes(),
    )
    # A sensor with a broken clock (once a crash loop: no window time fits an int64).
    clock = AudioChunk()
    clock.CopyFrom(good[0])
    clock.sensor_id = "mic-clock"
    clock.captured_at.seconds = 10**12
    records: list[Record] = [(sensor_key(c.sensor_id), encode(c)) for c in good]
    records.insert(9, (sensor_key("mic-nan"), encode(nan)))
    records.insert(7, (sensor_key("mic-clock"), encode(clock)))
    records.insert(5, (sensor_key("mic-good"), encode(odd)))
    records.insert(2, (b"mic-bad", undecodable))
    parked_values = {
        "undecodable": undecodable,
        "odd_byte_count": encode(odd),
        "non_finite_samples": encode(nan),
        "bad_captured_at": encode(clock),
    }

    settings = settings_for(consumer_group, tmp_path, max_batch_chunks=8, max_batch_ms=20)
    expected = offline_windows(settings.feature_profiles(), good)
    registry = CollectorRegistry()
    service = create_app(kafka_settings, topic_layout, settings, registry=registry)
    audio = topic_layout.name(AUDIO)
    await produce(kafka_settings, audio, records)
    async with running(service):
        windows = await consume_until(
            kafka_settings,
            topic_layout.name(WINDOWS),
            consumer_group + "-windows",
            window_records_cover(expected),
        )
        parked = await consume_until(
            kafka_settings,
            topic_layout.dlq(AUDIO),
            consumer_group + "-dlq",
            lambda found: len(found) >= len(parked_values),
        )
        await eventually(
            lambda: (
                registry.get_sample_value(
                    "soundsentry_messages_consumed_total", {"service": "featurizer", "topic": audio}
                )
                == len(records)
            )
        )

    assert_same_windows(windows, expected)
    assert len(parked) == len(parked_values)
    for letter in parked:
        headers = dict(letter.headers)
        reason = headers["soundsentry.error.reason"].decode()
        assert letter.value == parked_values.pop(reason), reason
        assert headers["soundsentry.service"] == b"featurizer"
        assert headers["soundsentry.source.topic"] == audio.encode()
        assert headers["soundsentry.error.message"]
    assert not parked_values  # each reason exactly once
    for reason in ("undecodable", "odd_byte_count", "non_finite_samples", "bad_captured_at"):
        assert (
            registry.get_sample_value(
                "soundsentry_messages_dead_lettered_total",
                {"service": "featurizer", "topic": audio, "reason": reason},
            )
            == 1
        ), reason
    assert registry.get_sample_value(
        "soundsentry_featurizer_windows_total", {"profile": "full-16k"}
    ) == sum(1 for w in expected if w.profile == "full-16k")
    # Rejected chunks leave no state behind: only the good sensor is known.
    assert registry.get_sample_value("soundsentry_featurizer_sensors") == 1
    assert service.featurizer.sensors == 1


async def test_a_failing_batch_crashes_the_app_and_is_not_committed(
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug is not bad data: the worker crashes, and the batch is read again after a restart.

    Nothing of the failed batch may be committed, on the way down or later.
    """
    stream = random_chunks("glass", sensor_id="mic-bug", stream_id="boot-1", seed=5)[:3]
    service = create_app(
        kafka_settings,
        topic_layout,
        settings_for(consumer_group, tmp_path),
        registry=CollectorRegistry(),
    )

    def bug(chunks: Iterable[AudioChunk]) -> None:
        raise RuntimeError("a bug in the featurizer")

    monkeypatch.setattr(service.featurizer, "process", bug)
    audio = topic_layout.name(AUDIO)
    await produce(kafka_settings, audio, ((sensor_key(c.sensor_id), encode(c)) for c in stream))
    async with running(service):
        await eventually(lambda: service.app.crash_reason is not None)
    assert isinstance(service.app.crash_reason, RuntimeError)

    await assert_nothing_committed(kafka_settings, consumer_group, audio)


async def test_a_window_kafka_refuses_crashes_the_app_before_its_batch_is_committed(
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
) -> None:
    """A batch does not wait for its sends; the commit that would cover it does, so a window
    Kafka refused crashes the worker and the batch is read again after a restart."""
    stream = random_chunks("glass", sensor_id="mic-refused", stream_id="boot-1", seed=6)[:24]
    expected = offline_windows([FeatureProfile("full-16k")], stream)
    assert expected, "the stream must finish windows"
    service = create_app(
        kafka_settings,
        topic_layout,
        settings_for(consumer_group, tmp_path),
        registry=CollectorRegistry(),
    )
    audio = topic_layout.name(AUDIO)
    async with running(service):
        producer = service.app.producer
        send = producer.send

        async def refuse_windows(topic: str, value: bytes, **kwargs: Any) -> asyncio.Future[Any]:
            if topic != service.windows:
                return await send(topic, value, **kwargs)
            refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            refused.set_exception(KafkaError("refused by the test"))
            return refused

        producer.send = refuse_windows  # type: ignore[method-assign]
        await produce(kafka_settings, audio, ((sensor_key(c.sensor_id), encode(c)) for c in stream))
        await eventually(lambda: service.app.crash_reason is not None)
    assert isinstance(service.app.crash_reason, KafkaError)

    # Had the sends succeeded, the commit would have moved to the first chunk that windows to
    # come still need (well past 0: the stream finished windows).
    await assert_nothing_committed(kafka_settings, consumer_group, audio)


async def test_main_runs_a_worker_from_the_environment_until_sigterm(
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
) -> None:
    """``main()`` as the ``soundsentry featurizer`` command runs it: env in, /metrics served."""
    stream = random_chunks("dog_bark", sensor_id="mic-cli", stream_id="boot-1", seed=4)
    expected = offline_windows([FeatureProfile("full-16k")], stream)
    metrics_port = free_port()
    env = {
        **os.environ,
        "SOUNDSENTRY_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "SOUNDSENTRY_TOPICS_PREFIX": topic_layout.prefix,
        "SOUNDSENTRY_TOPICS_PARTITIONS": str(topic_layout.partitions),
        "SOUNDSENTRY_FEATURIZER_APP_ID": consumer_group,
        "SOUNDSENTRY_FEATURIZER_METRICS_PORT": str(metrics_port),
        "SOUNDSENTRY_FEATURIZER_METRICS_HOST": "127.0.0.1",
    }
    log = tmp_path / "featurizer.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; from soundsentry.services.featurizer.app import main; sys.exit(main())",
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        await produce(
            kafka_settings,
            topic_layout.name(AUDIO),
            ((sensor_key(c.sensor_id), encode(c)) for c in stream),
        )
        records = await consume_until(
            kafka_settings,
            topic_layout.name(WINDOWS),
            consumer_group + "-windows",
            window_records_cover(expected),
        )
        assert_same_windows(records, expected)
        # The counter is scraped over HTTP, as Prometheus would.
        sample = f'soundsentry_featurizer_windows_total{{profile="full-16k"}} {len(expected)}.0'

        def scrape() -> str:
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                text: str = response.read().decode()
            return text

        async with asyncio.timeout(WAIT_S):
            while sample not in await asyncio.to_thread(scrape):  # noqa: ASYNC110 - polls HTTP
                await asyncio.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT_S):
            code = await process.wait()
        assert code == 0, log.read_text(errors="replace")[-4000:]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_held_records_are_committed_once_windows_no_longer_need_them(
    kafka_settings: KafkaSettings,
    topic_layout: TopicLayout,
    consumer_group: str,
    tmp_path: Path,
) -> None:
    """Records stay uncommitted while unfinished windows need their audio, and a sensor that
    falls silent lets go of them after hold_idle_s, so its partition's commits move on."""
    samples, rate = recording("siren")
    stream = list(chunks(samples, rate, [1600], sensor_id="mic-held"))
    source = topic_layout.name(AUDIO)
    registry = CollectorRegistry()
    service = create_app(
        kafka_settings,
        topic_layout,
        FeaturizerSettings(
            app_id=consumer_group, metrics_port=0, hold_idle_s=2.0, state_idle_s=4.0
        ),
        registry=registry,
    )
    await produce(kafka_settings, source, [(sensor_key(c.sensor_id), encode(c)) for c in stream])
    admin = AIOKafkaAdminClient(**kafka_settings.aiokafka_kwargs())
    await admin.start()

    async def committed() -> int:
        offsets = await admin.list_consumer_group_offsets(consumer_group)
        return sum(max(meta.offset, 0) for tp, meta in offsets.items() if tp.topic == source)

    try:
        async with running(service):
            await eventually(
                lambda: (registry.get_sample_value("soundsentry_featurizer_held_records") or 0) > 0
            )
            held = registry.get_sample_value("soundsentry_featurizer_held_records")
            # About one window plus one hop of 100 ms records (1.5 s), never the whole stream.
            assert held is not None
            assert 0 < held <= 16 < len(stream)
            async with asyncio.timeout(WAIT_S):
                while await committed() != len(stream):  # noqa: ASYNC110 - polls the broker
                    await asyncio.sleep(0.2)
            # Silent for state_idle_s, the sensor's state is released too: memory follows the
            # sensors that stream.
            await eventually(
                lambda: registry.get_sample_value("soundsentry_featurizer_sensors") == 0
            )
            assert service.featurizer.sensors == 0
    finally:
        await admin.close()
    assert registry.get_sample_value("soundsentry_featurizer_held_records") == 0
