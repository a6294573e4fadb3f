"""count_by_arm counts a kit of an arm outside `arms` exactly too (found by `make mutation`)."""

from __future__ import annotations

from datetime import date

from supply.kit_choice import ShelfKit, count_by_arm


def test_count_by_arm_counts_an_arm_it_was_not_asked_about_from_zero():
    shelf = [ShelfKit(str(1_000_000 + n), "L1", date(2027, 1, 1)) for n in range(3)]
    treatment = {"1000000": "A", "1000001": "X", "1000002": "X"}
    counts = count_by_arm(shelf, arms=["A", "P"], treatment_of=treatment.__getitem__)
    assert counts == {"A": 1, "P": 0, "X": 2}
