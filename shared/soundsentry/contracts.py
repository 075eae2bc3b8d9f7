"""Encoding and decoding of the wire contract (proto/soundsentry/v1/soundsentry.proto).

The generated message classes are re-exported here, so code imports them from one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, TypeVar

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from soundsentry.exceptions import ContractError
from soundsentry.v1.soundsentry_pb2 import (
    AudioChunk,
    ChunkAck,
    Event,
    EventKind,
    FeatureWindow,
    LabelScore,
    SampleFormat,
    WindowScores,
)

__all__ = [
    "EVENT_KINDS",
    "SEQUENCE_REWIND_LIMIT",
    "WINDOW_REWIND_LIMIT_S",
    "AudioChunk",
    "ChunkAck",
    "Event",
    "EventKind",
    "EventKindName",
    "FeatureWindow",
    "LabelScore",
    "SampleFormat",
    "WindowScores",
    "check_record",
    "decode",
    "encode",
    "kind_name",
    "sensor_key",
    "time_problem",
]

M = TypeVar("M", bound=Message)

# An event's kind as the trackers, payloads, metrics and logs name it, and on the wire.
EventKindName = Literal["started", "ended"]
EVENT_KINDS: Mapping[EventKindName, EventKind] = MappingProxyType(
    {"started": EventKind.EVENT_KIND_STARTED, "ended": EventKind.EVENT_KIND_ENDED}
)
_KIND_NAMES: Mapping[int, EventKindName] = MappingProxyType(
    {kind: name for name, kind in EVENT_KINDS.items()}
)

# Every record is keyed by the sensor, so one sensor's data stays in one partition, in order.
_MAX_SENSOR_ID_BYTES = 256
# Capture times must fit every stage's arithmetic: nanoseconds in an int64 end in 2262, ISO text
# in year 9999. Anything from 1970 to 2200 is accepted (replays of old recordings included).
MAX_TIME_S = 7_258_118_400  # 2200-01-01T00:00:00Z
# A record this far behind its stream's position is not a late duplicate (retries and replays
# reach back a few in-flight chunks or seconds) but a sensor that started over with the same
# ids: the stream restarts instead of refusing everything until it catches up.
SEQUENCE_REWIND_LIMIT = 10_000  # chunks
WINDOW_REWIND_LIMIT_S = 600.0  # seconds of audio


def kind_name(kind: int) -> str:
    """``"started"`` or ``"ended"`` for a wire ``EventKind``; ``"unspecified"`` for any other."""
    return _KIND_NAMES.get(kind, "unspecified")


def encode(message: Message) -> bytes:
    """Serialise a message to its wire bytes."""
    return message.SerializeToString()


def decode(message_type: type[M], data: bytes | None) -> M:
    """Parse wire bytes into ``message_type``.

    Raises
    ------
    ContractError
        ``reason="empty_value"`` for a missing or empty value, ``reason="undecodable"`` for
        bytes that are not a ``message_type``.
    """
    name = message_type.DESCRIPTOR.full_name
    if not data:
        raise ContractError("empty_value", f"empty record value, expected a {name}")
    message = message_type()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise ContractError(
            "undecodable", f"{len(data)} bytes are not a valid {name}: {exc}"
        ) from exc
    check_record(message)
    return message


def time_problem(name: str, timestamp: Timestamp) -> str | None:
    """Why ``timestamp`` is not a usable capture time, or None if it is."""
    if not 0 <= timestamp.seconds < MAX_TIME_S or not 0 <= timestamp.nanos < 1_000_000_000:
        return (
            f"{name} ({timestamp.seconds} s, {timestamp.nanos} ns) is outside "
            f"1970-01-01..2200-01-01"
        )
    return None


# The fields each record type's readers rely on, checked as it is decoded: a record that would
# crash a stage later is parked here instead, with its reason.
_TIMES: dict[str, tuple[str, ...]] = {
    "soundsentry.v1.FeatureWindow": ("start_time",),
    "soundsentry.v1.WindowScores": ("start_time",),
    "soundsentry.v1.Event": ("onset_time", "offset_time"),
}


def check_record(message: Message) -> None:
    """Check the sensor id and times of a decoded FeatureWindow, WindowScores or Event
    (audio chunks have their own rules: :func:`soundsentry.audio.pcm.validate_chunk`).

    Raises
    ------
    ContractError
        ``reason="bad_sensor_id"`` or ``reason="bad_time"``.
    """
    times = _TIMES.get(message.DESCRIPTOR.full_name)
    if times is None:
        return
    sensor_key(message.sensor_id)  # type: ignore[attr-defined]
    for field in times:
        problem = time_problem(field, getattr(message, field))
        if problem:
            raise ContractError("bad_time", problem)


def sensor_key(sensor_id: str) -> bytes:
    """The Kafka record key for a sensor: its id in UTF-8.

    Raises
    ------
    ContractError
        ``reason="bad_sensor_id"`` if the id is empty or longer than 256 bytes.
    """
    key = sensor_id.encode("utf-8")
    if not key or len(key) > _MAX_SENSOR_ID_BYTES:
        raise ContractError(
            "bad_sensor_id",
            f"sensor_id must be 1..{_MAX_SENSOR_ID_BYTES} bytes of UTF-8, got {len(key)} bytes",
        )
    return key
