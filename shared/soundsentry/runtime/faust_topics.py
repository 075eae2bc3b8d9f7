"""Faust topics of a :class:`~soundsentry.runtime.topics.TopicLayout`, and the Faust codec of
their protobuf values.

Apart from :mod:`soundsentry.runtime.topics` because they import Faust, which only the services
that run a Faust app (the alerter) should load.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.serializers import codecs
from google.protobuf.message import Message

from soundsentry.contracts import decode, encode
from soundsentry.runtime.topics import TopicLayout, TopicSpec

__all__ = ["ProtobufCodec", "faust_raw_topic", "faust_topic"]


def faust_topic(app: faust.App, layout: TopicLayout, spec: TopicSpec[Any]) -> faust.TopicT:
    """``spec``'s topic in ``layout`` as a Faust topic whose values are encoded with the spec's
    protobuf codec.

    Source topics of agents use :func:`faust_raw_topic` instead and decode each value
    themselves, so that a bad message is parked rather than dropped inside Faust.
    """
    return app.topic(
        layout.name(spec),
        key_type=bytes,
        key_serializer="raw",
        value_serializer=ProtobufCodec(message_type=spec.message_type),
        partitions=layout.partitions,
        replicas=layout.replication_factor,
        internal=False,
    )


def faust_raw_topic(
    app: faust.App, layout: TopicLayout, name: str, *, partitions: int | None = None
) -> Any:
    """A Faust topic of raw bytes (keys and values), e.g. a source or a dead-letter topic, sized
    as ``layout`` says unless ``partitions`` is given."""
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions or layout.partitions,
        replicas=layout.replication_factor,
    )


class ProtobufCodec(codecs.Codec):
    """Faust codec for one protobuf message type: ``ProtobufCodec(message_type=AudioChunk)``.

    Decoding errors raise :class:`~soundsentry.exceptions.ContractError` naming the problem.
    """

    def __init__(self, children: tuple[Any, ...] | None = None, **kwargs: Any) -> None:
        if not isinstance(kwargs.get("message_type"), type):
            raise TypeError("ProtobufCodec needs message_type=<a protobuf message class>")
        super().__init__(children, **kwargs)
        self.message_type: type[Message] = kwargs["message_type"]

    def _dumps(self, obj: Any) -> bytes:
        if not isinstance(obj, self.message_type):
            raise TypeError(
                f"expected {self.message_type.DESCRIPTOR.full_name}, got {type(obj).__name__}"
            )
        return encode(obj)

    def _loads(self, s: bytes) -> Any:
        return decode(self.message_type, s)
