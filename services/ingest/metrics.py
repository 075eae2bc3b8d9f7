"""Prometheus metrics of the ingest service."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["IngestMetrics"]

# Kafka acks=all on a healthy cluster take milliseconds; seconds mean trouble.
_PUBLISH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class IngestMetrics:
    chunks: Counter
    audio_bytes: Counter
    rejects: Counter
    gaps: Counter
    publish_seconds: Histogram
    streams: Gauge
    streams_closed: Counter
    throttled_seconds: Counter
    in_flight: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> IngestMetrics:
        return cls(
            chunks=Counter(
                "soundsentry_ingest_chunks_total",
                "Chunks received, by result (published, rejected, failed).",
                ["result"],
                registry=registry,
            ),
            audio_bytes=Counter(
                "soundsentry_ingest_audio_bytes_total",
                "PCM bytes published to Kafka.",
                registry=registry,
            ),
            rejects=Counter(
                "soundsentry_ingest_rejects_total",
                "Chunks rejected, by reason.",
                ["reason"],
                registry=registry,
            ),
            gaps=Counter(
                "soundsentry_ingest_sequence_gaps_total",
                "Chunks that arrived after skipped sequence numbers (lost chunks).",
                registry=registry,
            ),
            publish_seconds=Histogram(
                "soundsentry_ingest_publish_seconds",
                "Time from handing a chunk to the producer to Kafka's acknowledgement.",
                buckets=_PUBLISH_BUCKETS,
                registry=registry,
            ),
            streams=Gauge("soundsentry_ingest_streams", "Open sensor streams.", registry=registry),
            streams_closed=Counter(
                "soundsentry_ingest_streams_closed_total",
                "Streams the server closed, by reason (missing_token, auth_timeout, "
                "idle_timeout, malformed_message).",
                ["reason"],
                registry=registry,
            ),
            throttled_seconds=Counter(
                "soundsentry_ingest_throttled_seconds_total",
                "Seconds streams were held back for sending audio faster than MAX_AUDIO_RATE.",
                registry=registry,
            ),
            in_flight=Gauge(
                "soundsentry_ingest_in_flight_chunks",
                "Chunks published and waiting for Kafka's acknowledgement.",
                registry=registry,
            ),
        )
