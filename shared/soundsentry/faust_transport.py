"""Faust's aiokafka transport with one fix: never commit past a message that is still in flight.

faust-streaming 0.15 decides what to commit from the run of acknowledged offsets after the last
commit, and treats a single missing offset at its head as a gap left by compaction. When that
offset is a message still being processed (the classifier holds the record of an escalated
window until its revision is published), Faust commits past it, and a crash then loses it
(faust-streaming issue #606). This consumer withholds the commit while any delivered,
unacknowledged message of the partition lies before the acknowledged run.

Services select it with the ``soundsentry://`` broker scheme (``KafkaSettings.faust_broker_url``),
registered as a ``faust.transports`` entry point in pyproject.toml.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ["SCHEME", "Consumer", "Transport", "first_in_flight"]

SCHEME = "soundsentry"


def first_in_flight(messages: Any, tp: Any) -> int | None:
    """Lowest offset of ``tp`` among ``messages`` not acknowledged yet, or None."""
    offsets = [m.offset for m in messages if m.tp == tp and not m.acked]
    return min(offsets) if offsets else None


class Consumer(faust_aiokafka.Consumer):
    """The aiokafka consumer whose commits stop before the first message still in flight."""

    def _new_offset(self, tp: Any) -> int | None:
        acked = self._acked[tp]
        held = first_in_flight(self._unacked_messages, tp)
        if held is not None and acked and min(acked) > held:
            # Everything acknowledged lies beyond a message still being processed: nothing
            # can be committed until it is done (the acknowledged offsets stay recorded).
            return None
        offset: int | None = super()._new_offset(tp)
        return offset


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with :class:`Consumer`."""

    Consumer = Consumer
