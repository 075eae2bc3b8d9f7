from __future__ import annotations

import random

import pytest

from soundsentry.features.slots import SlotTable


def test_rows_are_handed_out_lowest_first_and_reused() -> None:
    table = SlotTable(min_capacity=4)
    assert [table.acquire() for _ in range(3)] == [0, 1, 2]
    assert table.release(1) == []
    assert table.acquire() == 1
    assert table.acquire() == 3
    assert (table.used, table.capacity) == (4, 4)


def test_a_full_table_doubles() -> None:
    table = SlotTable(min_capacity=2)
    rows = [table.acquire() for _ in range(5)]
    assert rows == [0, 1, 2, 3, 4]
    assert table.capacity == 8


def test_a_quarter_full_table_halves_and_moves_the_rows_above_down() -> None:
    table = SlotTable(min_capacity=2)
    for _ in range(8):
        table.acquire()
    for row in (0, 1, 2, 3, 4, 6):
        moves = table.release(row)
        if row != 6:
            assert moves == []
    # Rows 5 and 7 are left in a table of 8: it halves to 4 and moves them under 4.
    assert table.capacity == 4
    assert moves == [(5, 0), (7, 1)]
    assert table.used == 2
    assert table.acquire() == 2


def test_the_table_never_shrinks_below_its_minimum() -> None:
    table = SlotTable(min_capacity=4)
    rows = [table.acquire() for _ in range(4)]
    for row in rows:
        assert table.release(row) == []
    assert table.capacity == 4


def test_releasing_a_free_row_is_an_error() -> None:
    table = SlotTable()
    with pytest.raises(KeyError):
        table.release(0)
    with pytest.raises(ValueError, match="min_capacity"):
        SlotTable(min_capacity=0)


def test_random_use_keeps_every_row_unique_and_inside_the_table() -> None:
    rng = random.Random(7)
    table = SlotTable(min_capacity=2)
    owners: dict[int, str] = {}  # row -> key, updated by the moves like a caller would
    for step in range(3000):
        if owners and rng.random() < 0.5:
            row = rng.choice(sorted(owners))
            del owners[row]
            for source, target in table.release(row):
                assert target not in owners
                owners[target] = owners.pop(source)
        else:
            row = table.acquire()
            assert row not in owners
            owners[row] = f"key-{step}"
        assert table.used == len(owners)
        assert all(0 <= row < table.capacity for row in owners)
        # Grown only when full, halved as soon as a quarter full.
        assert table.capacity == 2 or 4 * table.used > table.capacity
