"""Faust's aiokafka transport with two fixes: never commit past a message that is still in
flight, and never drop the records a recovery seeks back to.

faust-streaming 0.15 decides what to commit from the run of acknowledged offsets after the last
commit, and treats a single missing offset at its head as a gap left by compaction. When that
offset is a message still being processed (the classifier holds the record of an escalated
window until its revision is published), Faust commits past it, and a crash then loses it
(faust-streaming issue #606). This consumer withholds the commit while any delivered,
unacknowledged message of the partition lies before the acknowledged run.

Faust's table recovery resumes the app's flow control (which empties the agents' queues) when
it starts, and again after it has sought the stream partitions to their committed offsets: that
second resume emptied the queues of records read after the seek, and the worker went on from
the next ones (faust-streaming issue #596; the alerter skipped a window after a restart and
split an open event in two). Here resuming flow that already runs keeps the queues
(:class:`FlowControl`, the flow control of :class:`App`): records queued since the first resume
belong to the current assignment, and those read before the seek are read again after it (at
least once), never skipped. Resuming suspended flow still empties them (records of the old
assignment).

Faust's table recovery can also wait forever for changelog records that never come (seen once
in a few runs after the broker was killed and restarted mid-stream: "No event received for
active tp ... since recovery start", repeated until the worker is stopped; faust-streaming
issues #155 and #176 report the same symptom). The likely cause: Faust hands the consumer
thread its live set of active partitions, which a rebalance empties and recovery refills while
a fetch is still waiting, and aiokafka reads an empty set as "every partition". A fetch begun
before the rebalance could then take the changelog records recovery had just sought to, and
Faust dropped them (the partition was not active yet) without seeking back. Here each fetch
gets a copy of the set as it was when the fetch began (:meth:`Consumer._getmany`). As a
backstop, :func:`recovery_stalled_for` measures how long a recovery has gone without a
changelog record while it still needs some; the alerter crashes when that passes its limit,
so that its supervisor restarts it and a fresh consumer recovers.

Services select it with the ``soundsentry://`` broker scheme (``KafkaSettings.faust_broker_url``),
registered as a ``faust.transports`` entry point in pyproject.toml.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from soundsentry.exceptions import SoundSentryError

__all__ = [
    "FETCH_MAX_WAIT_MS",
    "SCHEME",
    "App",
    "Consumer",
    "ConsumerThread",
    "FlowControl",
    "RecoveryStalledError",
    "Transport",
    "first_in_flight",
    "recovery_stalled_for",
]

SCHEME = "soundsentry"


class RecoveryStalledError(SoundSentryError):
    """Table recovery received no changelog record for too long while it still needed some."""


def recovery_stalled_for(recovery: Any, now: float) -> float:
    """Seconds since Faust's table ``recovery`` last made progress: since it started or since
    its last changelog record, whichever is later; 0.0 when it is not recovering or needs no
    more records. ``now`` is ``time.monotonic()`` (Faust's clock for these times)."""
    if not recovery.in_recovery or not recovery.need_recovery():
        return 0.0
    started = recovery._recovery_started_at  # Faust keeps no public copy
    if started is None:
        return 0.0
    received = recovery._active_events_received_at
    last = max([float(started), *(float(at) for at in received.values())])
    return max(0.0, now - last)


def first_in_flight(messages: Any) -> dict[Any, int]:
    """The lowest offset per partition among ``messages`` not acknowledged yet (one pass)."""
    lowest: dict[Any, int] = {}
    for message in messages:
        if not message.acked:
            offset = lowest.get(message.tp)
            if offset is None or message.offset < offset:
                lowest[message.tp] = message.offset
    return lowest


# Faust asks the broker to hold a fetch up to 1.5 s when it has nothing new for the fetch's
# partitions. aiokafka leaves partitions whose records are still buffered out of the next
# fetch, so new records of those could wait out that hold: records reached the featurizer
# 0.5-1.7 s after they were in Kafka (benchmarks/pipeline.py, 200 sensors).
FETCH_MAX_WAIT_MS = 50


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread with a short fetch wait (``FETCH_MAX_WAIT_MS``)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when its fetcher starts
        return consumer


class FlowControl(FlowControlEvent):
    """Faust's flow control of the agents' queues, whose resume empties them only when the flow
    was suspended: records queued while it runs belong to the current assignment."""

    def resume(self) -> None:
        if not self.is_active():
            super().resume()


class App(faust.App):
    """A Faust app with :class:`FlowControl` (use it with this transport)."""

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return FlowControl(loop=self.loop)


class Consumer(faust_aiokafka.Consumer):
    """The aiokafka consumer whose commits stop before the first message still in flight."""

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(
        self,
        active_partitions: set[Any] | None,
        timeout: float,  # noqa: ASYNC109 - Faust's signature
    ) -> Any:
        # A copy: Faust changes its set during a rebalance while this fetch waits in the
        # consumer thread, and aiokafka fetches every partition for an empty one (module
        # docstring). Faust skips the fetch when the set is empty as it begins.
        partitions = None if active_partitions is None else set(active_partitions)
        return await super()._getmany(partitions, timeout)

    _held: dict[Any, int] | None = None

    def _filter_committable_offsets(self, tps: Any) -> Any:
        # One pass over the messages in flight per commit, not one per partition (a
        # featurizer holds some 15 records per sensor).
        self._held = first_in_flight(self._unacked_messages)
        try:
            return super()._filter_committable_offsets(tps)
        finally:
            self._held = None

    def _new_offset(self, tp: Any) -> int | None:
        acked = self._acked[tp]
        held = (
            self._held if self._held is not None else first_in_flight(self._unacked_messages)
        ).get(tp)
        if held is not None and acked and min(acked) > held:
            # Everything acknowledged lies beyond a message still being processed: nothing
            # can be committed until it is done (the acknowledged offsets stay recorded).
            return None
        offset: int | None = super()._new_offset(tp)
        return offset


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with :class:`Consumer`."""

    Consumer = Consumer
