"""Encoding and decoding of the wire contract (proto/soundsentry/v1/soundsentry.proto).

The generated message classes are re-exported here, so code imports them from one place.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

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
    "AudioChunk",
    "ChunkAck",
    "Event",
    "EventKind",
    "FeatureWindow",
    "LabelScore",
    "SampleFormat",
    "WindowScores",
    "decode",
    "encode",
    "sensor_key",
]

M = TypeVar("M", bound=Message)

# Every record is keyed by the sensor, so one sensor's data stays in one partition, in order.
_MAX_SENSOR_ID_BYTES = 256


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
    return message


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
