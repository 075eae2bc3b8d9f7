"""The fixes of soundsentry.runtime.faust_transport, on Faust's own consumer bookkeeping and flow
control."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from faust.types import TP
from mode.utils.queues import FlowControlQueue

from soundsentry.runtime.faust_transport import (
    FETCH_MAX_WAIT_MS,
    SCHEME,
    App,
    Consumer,
    ConsumerThread,
    FlowControl,
    first_in_flight,
    recovery_stalled_for,
)

PARTITION = TP("audio.windows", 0)
OTHER = TP("audio.windows", 1)


@dataclass
class Delivered:
    tp: TP
    offset: int
    acked: bool = False


def consumer(committed: int | None, acked: list[int], in_flight: list[Delivered]) -> Any:
    """A Consumer with just the state _new_offset reads (not started: no broker needed)."""
    subject: Any = Consumer.__new__(Consumer)
    subject._acked = {PARTITION: list(acked)}
    subject._acked_index = {PARTITION: set(acked)}
    subject._committed_offset = {PARTITION: committed}
    subject._gap = {PARTITION: []}
    subject._unacked_messages = in_flight
    subject._gap = {PARTITION: []}
    return subject


def test_first_in_flight_is_the_lowest_unacked_offset_of_each_partition() -> None:
    messages = [
        Delivered(PARTITION, 9),
        Delivered(PARTITION, 4, acked=True),
        Delivered(PARTITION, 6),
        Delivered(OTHER, 1),
    ]
    assert first_in_flight(messages) == {PARTITION: 6, OTHER: 1}


@pytest.mark.parametrize(
    ("committed", "acked", "held", "expected"),
    [
        # The case Faust itself gets wrong: one message in flight right at the committed offset.
        (15, [16, 17, 18], 15, None),
        # A fresh group (nothing committed) holding its first message.
        (None, [1, 2, 3], 0, None),
        # Acknowledged messages before the held one are committed up to it.
        (10, [10, 11, 12, 14, 15], 13, 13),
        # Nothing in flight: Faust's own rule.
        (10, [10, 11, 12], None, 13),
    ],
)
def test_commits_stop_before_the_first_message_in_flight(
    committed: int | None, acked: list[int], held: int | None, expected: int | None
) -> None:
    in_flight = [] if held is None else [Delivered(PARTITION, held)]
    subject = consumer(committed, acked, in_flight)
    assert subject._new_offset(PARTITION) == expected
    if expected is None:
        assert subject._acked[PARTITION] == acked  # kept for when the held one is done


def test_a_commit_round_reads_the_messages_in_flight_once() -> None:
    subject = consumer(15, [16, 17], [Delivered(PARTITION, 15)])
    subject._should_commit = lambda tp, offset: True
    assert subject._filter_committable_offsets([PARTITION]) == {}
    # 15 is done: everything up to 17 goes.
    subject._unacked_messages = []
    subject._acked[PARTITION] = [15, 16, 17]
    subject._acked_index[PARTITION] = {15, 16, 17}
    assert subject._filter_committable_offsets([PARTITION]) == {PARTITION: 18}


async def test_the_services_consumer_asks_the_broker_for_short_fetch_waits() -> None:
    """Faust's 1.5 s would let a partition's new records wait out another fetch's hold."""
    import faust  # noqa: PLC0415

    app = faust.App("fetch-wait", broker=f"{SCHEME}://127.0.0.1:9", web_enabled=False)
    thread = app.consumer._thread
    assert isinstance(thread, ConsumerThread)
    consumer = thread._create_worker_consumer(app.transport)  # not started: no broker needed
    try:
        assert consumer._fetch_max_wait_ms == FETCH_MAX_WAIT_MS <= 100
    finally:
        await consumer.stop()


def queued(flow: FlowControl, *items: str) -> FlowControlQueue[str]:
    """An agent's queue under ``flow`` (emptied on resume, as Faust makes them), holding
    ``items``."""
    queue: FlowControlQueue[str] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    for item in items:
        queue.force_put_nowait(item)
    return queue


async def test_resuming_suspended_flow_empties_the_queues_and_running_flow_keeps_them() -> None:
    flow = FlowControl()  # suspended until the first recovery resumes it
    queue = queued(flow, "record of the old assignment")
    flow.resume()
    assert queue.empty()
    queue.force_put_nowait("record read after the seek")
    flow.resume()  # Faust's recovery, once more after the seek
    assert queue.qsize() == 1
    flow.suspend()  # a rebalance
    flow.resume()
    assert queue.empty()


async def test_records_read_after_a_recoverys_seek_reach_the_agents() -> None:
    """Faust's table recovery, in its order: resume flow, restore the tables, resume the stream
    partitions, seek them to their committed offsets, resume flow again (faust-streaming #596:
    that last resume emptied the queues, dropping what was read after the seek)."""
    flow = FlowControl()  # suspended by the rebalance
    queue = queued(flow, "record of the old assignment")
    flow.resume()  # recovery starts: the old assignment's records go
    queue.force_put_nowait("committed record, read before the seek")
    # ...the seek to the committed offsets; the consumer reads from there again:
    queue.force_put_nowait("committed record, read after the seek")
    flow.resume()  # on_recovery_completed
    assert [queue.get_nowait() for _ in range(queue.qsize())] == [
        "committed record, read before the seek",
        "committed record, read after the seek",
    ]


def test_the_services_apps_use_this_flow_control() -> None:
    app = App("flow-control-test", broker=f"{SCHEME}://127.0.0.1:9", web_enabled=False)
    assert isinstance(app.flow_control, FlowControl)


@dataclass
class FakeRecovery:
    """The parts of Faust's Recovery that recovery_stalled_for reads."""

    in_recovery: bool = True
    remaining: int = 10
    _recovery_started_at: float | None = 100.0
    _active_events_received_at: dict[TP, float] | None = None

    def need_recovery(self) -> bool:
        return self.remaining > 0


def test_a_recovery_is_stalled_for_the_time_since_its_last_changelog_record() -> None:
    recovery = FakeRecovery(_active_events_received_at={})
    assert recovery_stalled_for(recovery, now=130.0) == 30.0  # nothing since the start
    assert recovery._active_events_received_at is not None
    recovery._active_events_received_at[TP("changelog", 0)] = 120.0
    recovery._active_events_received_at[TP("changelog", 1)] = 125.0
    assert recovery_stalled_for(recovery, now=130.0) == 5.0  # the latest record counts


@pytest.mark.parametrize(
    "recovery",
    [
        FakeRecovery(in_recovery=False, _active_events_received_at={}),
        FakeRecovery(remaining=0, _active_events_received_at={}),
        FakeRecovery(_recovery_started_at=None, _active_events_received_at={}),
    ],
)
def test_no_stall_outside_a_recovery_that_needs_records(recovery: FakeRecovery) -> None:
    assert recovery_stalled_for(recovery, now=1000.0) == 0.0


async def test_a_fetch_keeps_the_partitions_active_when_it_began() -> None:
    # Faust empties its set of active partitions during a rebalance while a fetch waits in the
    # consumer thread; aiokafka would read the emptied set as "every partition".
    active = {PARTITION, OTHER}
    seen: list[set[TP] | None] = []

    class Thread:
        async def getmany(self, active_partitions: set[TP] | None, wait_s: float) -> dict:
            active.clear()  # the rebalance, while the fetch waits
            seen.append(None if active_partitions is None else set(active_partitions))
            return {}

    subject: Any = Consumer.__new__(Consumer)
    subject._thread = Thread()
    await subject._getmany(active, 1.0)
    await subject._getmany(None, 1.0)  # a client-only app: every partition, as before
    assert seen == [{PARTITION, OTHER}, None]
