"""End to end through the real pieces: `soundsentry push` streams a real recording over gRPC,
ingest publishes it to Kafka, the featurizer service turns it into windows, and the windows on
the window topic equal the offline windows of the same file."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import soundfile
from prometheus_client import CollectorRegistry

from soundsentry.contracts import FeatureWindow, decode
from soundsentry.features.featurizer import DEFAULT_PROFILES, Featurizer, Window, window_from_proto
from soundsentry.ingest.client import file_chunks
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import WINDOWS, TopicLayout
from soundsentry.services.featurizer.app import create_app
from soundsentry.services.featurizer.settings import FeaturizerSettings
from soundsentry.services.ingest.server import IngestServer
from soundsentry.services.ingest.settings import IngestSettings
from tests.audio_fixtures import recording
from tests.integration.topic_helpers import (
    assert_same_windows,
    consume_until,
    running,
    window_records_cover,
)


async def test_push_through_ingest_and_featurizer_gives_the_offline_windows(
    kafka_settings: KafkaSettings, topic_layout: TopicLayout, consumer_group: str, tmp_path: Path
) -> None:
    samples, rate = recording("siren")
    wav = tmp_path / "siren.wav"
    soundfile.write(wav, samples, rate, subtype="PCM_16")

    ingest = IngestServer(
        IngestSettings(host="127.0.0.1", port=0, allow_anonymous=True, metrics_port=0),
        kafka_settings,
        topic_layout,
        registry=CollectorRegistry(),
    )
    featurizer = create_app(
        kafka_settings,
        topic_layout,
        FeaturizerSettings(app_id=consumer_group, metrics_port=0),
        registry=CollectorRegistry(),
    )
    await ingest.start()
    try:
        async with running(featurizer):
            command = await asyncio.create_subprocess_exec(
                # The installed console script, next to this interpreter.
                str(Path(sys.executable).with_name("soundsentry")), "push", str(wav),
                "--sensor", "street/mic-7",
                "--target", f"127.0.0.1:{ingest.port}", "--chunk-ms", "100",
                "--stream-id", "e2e-1",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await command.communicate()
            assert command.returncode == 0, err.decode()
            assert "40/40 chunks published" in out.decode()

            # Offline: the whole file as one chunk (window ids do not depend on time).
            def offline(epoch_ns: int = 0) -> list[Window]:
                whole = file_chunks(
                    wav,
                    sensor_id="street/mic-7",
                    stream_id="e2e-1",
                    chunk_ms=10_000,
                    start_time_ns=epoch_ns,
                )
                result = Featurizer(DEFAULT_PROFILES).process(whole)
                assert result.windows
                assert not result.rejected
                return result.windows

            records = await consume_until(
                kafka_settings,
                topic_layout.name(WINDOWS),
                consumer_group + "-windows",
                window_records_cover(offline()),
            )
    finally:
        await ingest.stop(grace_s=1.0)

    # Capture times come from the sensor's clock at push time: sample 0 of the stream was
    # captured at the epoch every window's time is derived from.
    first = window_from_proto(decode(FeatureWindow, records[0].value))
    epoch = first.start_time_ns - round(first.start_sample * 1e9 / first.sample_rate_hz)
    assert_same_windows(records, offline(epoch))
