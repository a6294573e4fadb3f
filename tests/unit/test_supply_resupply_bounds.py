"""The arm-agnostic resupply core at each bound it names: levels, top-up size, split, emergency
and the guards accept the bound and refuse one past it (found by `make mutation`)."""

from __future__ import annotations

import pytest

from supply.blind_resupply import (
    TopUpLevels,
    block_guard,
    cap_guard,
    emergency_short,
    split_top_up,
    top_up_size,
)

LEVELS = {"maximum": 4, "total_trigger": 4, "guard": 2, "emergency_minimum": 1}


@pytest.mark.parametrize(
    "bad",
    [
        {"maximum": True},
        {"guard": 1.0},
        {"emergency_minimum": -1},
        {"maximum": 0, "emergency_minimum": 0},
        {"guard": 5},
        {"emergency_minimum": 5},
    ],
)
def test_levels_refuse_each_value_past_its_bound(bad):
    with pytest.raises(ValueError):
        TopUpLevels(**{**LEVELS, **bad})


def test_levels_take_each_bound():
    TopUpLevels(maximum=1, total_trigger=0, guard=0, emergency_minimum=1)
    TopUpLevels(maximum=4, total_trigger=2, guard=2, emergency_minimum=0)


def test_top_up_size_at_its_bounds():
    levels = TopUpLevels(**LEVELS)
    assert top_up_size(0, n_arms=1, levels=levels, open_shipment=False) == 4
    assert top_up_size(4, n_arms=1, levels=levels, open_shipment=False) == 0
    for total in (True, 1.0, -1):
        with pytest.raises(ValueError):
            top_up_size(total, n_arms=2, levels=levels, open_shipment=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        top_up_size(0, n_arms=0, levels=levels, open_shipment=False)


@pytest.mark.parametrize("arms", [["A", "A"], []])
def test_split_refuses_an_arm_twice_or_none(arms):
    with pytest.raises(ValueError):
        split_top_up(2, {}, arms=arms, maximum=4)


def test_split_counts_an_arm_missing_from_stock_as_empty_and_fills_each_to_the_maximum():
    assert split_top_up(5, {"A": 1}, arms=["A", "P"], maximum=3) == {"A": 2, "P": 3}
    assert split_top_up(9, {"A": 3, "P": 2}, arms=["A", "P"], maximum=3) == {"A": 0, "P": 1}
    assert split_top_up(4, {"A": 5, "P": 0}, arms=["A", "P"], maximum=3) == {"A": 0, "P": 3}


def test_an_arm_missing_from_stock_is_short_for_the_emergency():
    levels = TopUpLevels(**LEVELS)
    assert emergency_short({"A": 3}, arms=["A", "P"], levels=levels, open_shipment=False)
    assert not emergency_short(
        {"A": 1, "P": 1}, arms=["A", "P"], levels=levels, open_shipment=False
    )


def test_cap_guard_at_its_bounds():
    assert cap_guard(n_arms=1, maximum=4, per_arm_trigger=0) == 0
    assert cap_guard(n_arms=2, maximum=4, per_arm_trigger=3) == 1
    for n_arms, trigger in ((0, 1), (2, 4), (2, -1)):
        with pytest.raises(ValueError):
            cap_guard(n_arms=n_arms, maximum=4, per_arm_trigger=trigger)


def test_block_guard_at_its_bounds():
    assert block_guard(block_sizes=[2], n_arms=2, strata_at_site=1, doses_per_subject=1) == 2
    for sizes, strata, doses in (([], 1, 1), ([1], 1, 1), ([3], 1, 1), ([2], 0, 1), ([2], 1, 0)):
        with pytest.raises(ValueError):
            block_guard(block_sizes=sizes, n_arms=2, strata_at_site=strata, doses_per_subject=doses)


def test_the_per_arm_trigger_is_the_total_less_the_guard_shared_by_whole_kits():
    levels = TopUpLevels(maximum=6, total_trigger=9, guard=2, emergency_minimum=1)
    assert levels.per_arm_trigger(2) == 3
