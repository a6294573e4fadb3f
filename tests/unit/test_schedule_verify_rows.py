"""Verifying a list reports each bad slot by row, field and rule, and keeps checking the slots
after it; a block of size 1 is a block (found by `make mutation`; tests/MUTATION.md)."""

from __future__ import annotations

import pytest

from blinding.schedules import Slot, verify_schedule


def faults(slots: list[Slot], arms: list[tuple[str, int]]) -> list[tuple[int, str, str]]:
    errors = verify_schedule(slots, arms=arms, strata=["all"], block_sizes=None)
    return sorted((e.row, e.field, e.rule) for e in errors)


def numbered(*slots: tuple[int, int, int, str]) -> list[Slot]:
    return [
        Slot("all", seq, block, size, arm, source_row=row)
        for row, (seq, block, size, arm) in enumerate(slots, start=2)
    ]


def test_a_sequence_below_one_is_reported_and_the_rest_still_checked():
    slots = numbered((0, 1, 2, "A"), (1, 1, 2, "P"), (3, 2, 2, "A"), (4, 2, 2, "P"))
    found = faults(slots, [("A", 1), ("P", 1)])
    assert (2, "sequence", "sequence_positive") in found
    assert (4, "sequence", "sequence_contiguous") in found


def test_an_unknown_block_after_a_known_one_is_reported_and_the_rest_still_checked():
    slots = numbered((1, 1, 2, "A"), (2, 1, 2, "P"), (3, 0, 0, "A"), (4, 3, 2, "P"), (5, 3, 2, "A"))
    found = faults(slots, [("A", 1), ("P", 1)])
    assert (4, "block", "block_contiguous") in found
    assert (5, "block", "block_contiguous") in found


def test_blocks_of_size_one_are_known_blocks():
    slots = numbered((1, 1, 1, "A"), (2, 2, 1, "A"))
    assert faults(slots, [("A", 1)]) == []


ONE_TO_ONE = [("A", 1), ("P", 1)]


@pytest.mark.parametrize(
    ("slots", "fault"),
    [
        # a block stated without its size, then the rest of the list still checked
        (((1, 1, 0, "A"), (2, 2, 2, "P"), (3, 2, 2, "A")), (2, "block", "block_known")),
        (((1, 1, 0, "A"), (2, 3, 2, "P"), (3, 3, 2, "A")), (3, "block", "block_contiguous")),
        # the first block is not block 1
        (((1, 2, 2, "A"), (2, 2, 2, "P")), (2, "block", "block_contiguous")),
        # the second slot of a block states another size
        (((1, 1, 2, "A"), (2, 1, 4, "P")), (3, "block_size", "block_size_consistent")),
        (((1, 1, 4, "A"), (2, 1, 4, "P")), (2, "block", "block_complete")),
        (((1, 1, 3, "A"), (2, 1, 3, "P"), (3, 1, 3, "A")), (2, "block", "block_balance")),
    ],
)
def test_each_block_fault_is_reported_by_row_field_and_rule(slots, fault):
    assert fault in faults(numbered(*slots), ONE_TO_ONE)


def test_a_block_size_not_allowed_is_reported_by_block_size_also_for_size_one():
    slots = numbered((1, 1, 1, "A"), (2, 2, 1, "A"))
    errors = verify_schedule(slots, arms=[("A", 1)], strata=["all"], block_sizes=[2])
    assert [(e.row, e.field, e.rule) for e in errors] == [
        (2, "block_size", "block_size_allowed"),
        (3, "block_size", "block_size_allowed"),
    ]


def test_a_list_in_any_row_order_is_verified_in_sequence_order():
    slots = numbered((3, 2, 2, "A"), (4, 2, 2, "P"), (1, 1, 2, "P"), (2, 1, 2, "A"))
    assert faults(slots, ONE_TO_ONE) == []


def test_a_repeated_sequence_is_reported_at_its_later_row():
    slots = numbered((1, 1, 2, "P"), (1, 1, 2, "A"), (2, 1, 2, "A"))
    assert (3, "sequence", "sequence_unique") in faults(slots, ONE_TO_ONE)
    assert (2, "sequence", "sequence_unique") not in faults(slots, ONE_TO_ONE)
