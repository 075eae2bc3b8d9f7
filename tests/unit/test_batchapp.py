"""The batch app's commit rule: never past a record the service still needs."""

from __future__ import annotations

from aiokafka import TopicPartition

from soundsentry.runtime.batchapp import commit_offsets

A, B, C = (TopicPartition("audio.pcm", p) for p in range(3))


def test_a_partition_commits_up_to_the_next_offset_to_read() -> None:
    assert commit_offsets({A: 120, B: 7}, {A, B}, {}) == {A: 120, B: 7}


def test_a_held_record_stops_its_partition_only() -> None:
    assert commit_offsets({A: 120, B: 7}, {A, B}, {A: 101}) == {A: 101, B: 7}


def test_a_partition_no_longer_owned_is_not_committed() -> None:
    # Revoked: its next owner decides; a held offset there changes nothing either.
    assert commit_offsets({A: 120, C: 50}, {A}, {C: 10}) == {A: 120}


def test_a_held_offset_beyond_the_position_does_not_move_the_commit_ahead() -> None:
    assert commit_offsets({A: 120}, {A}, {A: 500}) == {A: 120}
