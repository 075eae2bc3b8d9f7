"""Topics, their partition counts and retention, and their creation: the one place for them.

Every main topic carries one message type of the wire contract, is keyed by sensor id, and has a
dead-letter twin (``<name>.dlq``) where messages that can never be processed are parked. Nothing
here imports Faust (its topics and codec are :mod:`soundsentry.runtime.faust_topics`), so the
services without a Faust app read the table without loading it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from soundsentry.contracts import AudioChunk, Event, FeatureWindow, WindowScores
from soundsentry.exceptions import ConfigurationError
from soundsentry.runtime.settings import KafkaSettings, TopicSettings

__all__ = [
    "ALL_TOPICS",
    "AUDIO",
    "EVENTS",
    "SCORES",
    "WINDOWS",
    "TopicLayout",
    "TopicSpec",
    "ensure_topics",
]

M = TypeVar("M", bound=Message)

_HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class TopicSpec(Generic[M]):
    """A logical topic: its base name, the message type its values hold, and how long they live."""

    name: str
    message_type: type[M]
    retention_ms: int
    description: str


AUDIO: TopicSpec[AudioChunk] = TopicSpec(
    "audio.pcm", AudioChunk, 24 * _HOUR_MS, "PCM chunks from the microphones"
)
WINDOWS: TopicSpec[FeatureWindow] = TopicSpec(
    "audio.windows", FeatureWindow, 6 * _HOUR_MS, "log-mel windows per feature profile"
)
SCORES: TopicSpec[WindowScores] = TopicSpec(
    "audio.scores", WindowScores, 24 * _HOUR_MS, "per-label scores of each window and model"
)
EVENTS: TopicSpec[Event] = TopicSpec(
    "audio.events", Event, 30 * 24 * _HOUR_MS, "timed events (started / ended)"
)
ALL_TOPICS: tuple[TopicSpec[Any], ...] = (AUDIO, WINDOWS, SCORES, EVENTS)

# Dead letters are rare and read by people: one partition each, kept for a week.
DLQ_PARTITIONS = 1
DLQ_RETENTION_MS = 7 * 24 * _HOUR_MS


@dataclass(frozen=True, slots=True)
class PhysicalTopic:
    """A topic as created on the cluster."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]


@dataclass(frozen=True, slots=True)
class TopicLayout:
    """The physical names and sizes of the topics of one deployment."""

    prefix: str = ""
    partitions: int = 12
    replication_factor: int = 1
    # (base topic name, retention in ms) replacing the spec's own retention
    retention_ms: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_settings(cls, settings: TopicSettings) -> TopicLayout:
        """The layout the settings describe.

        Raises
        ------
        ConfigurationError
            when ``retention_hours`` names a topic that is not one of the main topics.
        """
        known = {spec.name for spec in ALL_TOPICS}
        unknown = sorted(set(settings.retention_hours) - known)
        if unknown:
            raise ConfigurationError(
                f"retention_hours names unknown topics {unknown}; known: {sorted(known)}"
            )
        retention = tuple(
            (name, round(hours * _HOUR_MS)) for name, hours in settings.retention_hours.items()
        )
        return cls(settings.prefix, settings.partitions, settings.replication_factor, retention)

    def retention(self, spec: TopicSpec[Any]) -> int:
        """Milliseconds records of ``spec``'s topic are kept."""
        return dict(self.retention_ms).get(spec.name, spec.retention_ms)

    def name(self, spec: TopicSpec[Any]) -> str:
        return f"{self.prefix}{spec.name}"

    def dlq(self, spec: TopicSpec[Any]) -> str:
        return f"{self.prefix}{spec.name}.dlq"

    def physical_topics(self) -> Iterator[PhysicalTopic]:
        """Every topic this deployment needs: the main topics and their dead-letter twins."""
        for spec in ALL_TOPICS:
            yield PhysicalTopic(
                self.name(spec),
                self.partitions,
                self.replication_factor,
                {"retention.ms": str(self.retention(spec))},
            )
            yield PhysicalTopic(
                self.dlq(spec),
                DLQ_PARTITIONS,
                self.replication_factor,
                {"retention.ms": str(DLQ_RETENTION_MS)},
            )


_TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code


async def ensure_topics(kafka: KafkaSettings, layout: TopicLayout) -> list[str]:
    """Create every topic of ``layout`` that does not exist yet; return the names created.

    Existing topics are left as they are (their partition count is never changed here:
    repartitioning moves sensors between partitions and is an operator's decision).

    Raises
    ------
    ConfigurationError
        when the cluster refuses to create a topic, naming the topic and Kafka's reason.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415 - admin only here

    wanted = list(layout.physical_topics())
    admin = AIOKafkaAdminClient(**kafka.aiokafka_kwargs())
    await admin.start()
    try:
        response = await admin.create_topics(
            [
                NewTopic(t.name, t.partitions, t.replication_factor, topic_configs=t.config)
                for t in wanted
            ]
        )
    finally:
        await admin.close()
    created: list[str] = []
    for name, error_code, error_message in response.topic_errors:
        if error_code == 0:
            created.append(name)
        elif error_code != _TOPIC_ALREADY_EXISTS:
            raise ConfigurationError(
                f"cannot create topic {name!r}: Kafka error {error_code}: {error_message}"
            )
    return created
