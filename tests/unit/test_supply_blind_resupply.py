"""The arm-agnostic resupply (supply/blind_resupply.py): boundaries, size a function of the total,
and the guarantee that with site-bounded blocks and an exact guard no arm runs out."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supply.blind_resupply import (
    POLICIES,
    TopUpLevels,
    block_guard,
    cap_guard,
    emergency_short,
    exact_guard,
    predictive_levels,
    split_top_up,
    threshold_levels,
    top_up_size,
)

ARMS = ("A", "P")
SHIPPED = TopUpLevels(maximum=4, total_trigger=6, guard=2, emergency_minimum=1)


def size(total: int, levels: TopUpLevels = SHIPPED, *, open_shipment: bool = False) -> int:
    return top_up_size(total, n_arms=2, levels=levels, open_shipment=open_shipment)


def test_top_up_fires_at_the_total_trigger_and_below_not_just_above():
    assert size(7) == 0  # just above
    assert size(6) == 2  # at: 2 x 4 - 6
    assert size(5) == 3  # just below
    assert size(0) == 8


def test_no_top_up_while_a_shipment_to_the_site_is_open():
    assert size(0, open_shipment=True) == 0


@given(
    st.tuples(st.integers(0, 4), st.integers(0, 4)),
    st.tuples(st.integers(0, 4), st.integers(0, 4)),
)
def test_two_stocks_with_the_same_total_get_the_same_shipment_size(one, other):
    if sum(one) != sum(other):
        return
    assert size(sum(one)) == size(sum(other))
    for stock in (one, other):
        split = split_top_up(
            size(sum(stock)), dict(zip(ARMS, stock, strict=True)), arms=ARMS, maximum=4
        )
        assert sum(split.values()) == size(sum(stock))
        if size(sum(stock)):  # a top-up brings every treatment to its maximum
            assert all(stock[i] + split[arm] == 4 for i, arm in enumerate(ARMS))


def test_an_arm_above_its_maximum_keeps_the_size_and_fills_the_others_lowest_first():
    split = split_top_up(size(6), {"A": 6, "P": 0}, arms=ARMS, maximum=4)
    assert split == {"A": 0, "P": 2}  # size 8 - 6 = 2, all to the arm furthest below
    three = split_top_up(7, {"A": 5, "B": 0, "C": 0}, arms=("A", "B", "C"), maximum=4)
    assert three == {"A": 0, "B": 4, "C": 3}  # tie broken by arm order, size unchanged


def test_emergency_fires_only_below_the_minimum_and_never_with_a_shipment_open():
    assert emergency_short({"A": 0, "P": 9}, arms=ARMS, levels=SHIPPED, open_shipment=False)
    assert not emergency_short({"A": 1, "P": 9}, arms=ARMS, levels=SHIPPED, open_shipment=False)
    assert not emergency_short({"A": 0, "P": 9}, arms=ARMS, levels=SHIPPED, open_shipment=True)


def test_levels_refuse_inconsistent_values():
    with pytest.raises(ValueError, match="^guard:"):
        TopUpLevels(maximum=4, total_trigger=1, guard=2, emergency_minimum=1)
    with pytest.raises(ValueError, match="^emergency_minimum:"):
        TopUpLevels(maximum=4, total_trigger=6, guard=2, emergency_minimum=5)
    with pytest.raises(ValueError, match="^total:"):
        size(-1)


def test_exact_guards_cap_and_blocks():
    assert cap_guard(n_arms=2, maximum=4, per_arm_trigger=2) == 2
    assert cap_guard(n_arms=3, maximum=10, per_arm_trigger=2) == 16
    # blocks of 4 and 6, one stratum at the site, one dose: a stretch can be AAA|AAA = 6 apart
    assert block_guard(block_sizes=[4, 6], n_arms=2, strata_at_site=1, doses_per_subject=1) == 6
    assert exact_guard(n_arms=2, maximum=40, per_arm_trigger=2, block_sizes=[2]) == 2
    assert exact_guard(n_arms=2, maximum=4, per_arm_trigger=2, block_sizes=[2]) == 2


def test_predictive_levels_read_only_totals_and_are_registered():
    levels = predictive_levels(
        SHIPPED, visits_due=3, expected_randomizations=0.4, n_arms=2, safety_stock=1
    )
    assert (
        levels.total_trigger == 3 + 2 + 2 + 2
    )  # visits + 1 randomization x 2 arms + safety + guard
    assert levels.maximum == 6  # ceil(9 / 2) + 1: a top-up leaves the site above the trigger
    assert size(8, levels) > 0 and size(10, levels) == 0
    assert {"threshold": threshold_levels, "predictive": predictive_levels} == POLICIES


@st.composite
def site_bounded_designs(draw):
    """A site with its own permuted blocks (per site x stratum), a dosing schedule in run
    intervals, a lead time, a bound on randomizations per interval, and levels set so that the
    per-arm trigger covers one arm's demand over a run interval plus the lead time."""
    blocks = draw(st.lists(st.sampled_from([2, 4, 6]), min_size=1, max_size=2, unique=True))
    strata = draw(st.integers(1, 2))
    gaps = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))
    offsets = [0]
    for gap in gaps:
        offsets.append(offsets[-1] + gap)
    lead = draw(st.integers(1, 3))
    per_interval = draw(st.integers(1, 2))
    demand = per_interval * len(offsets)  # kits of one arm in one interval, at most
    trigger = demand * (lead + 1)
    maximum = max(trigger + 1, 2 * demand * lead) + draw(st.integers(0, 40))
    guard = exact_guard(
        n_arms=2,
        maximum=maximum,
        per_arm_trigger=trigger,
        block_sizes=blocks,
        strata_at_site=strata,
        doses_per_subject=len(offsets),
    )
    levels = TopUpLevels(
        maximum=maximum, total_trigger=2 * trigger + guard, guard=guard, emergency_minimum=1
    )
    return blocks, strata, offsets, lead, per_interval, trigger, levels


@settings(max_examples=300, deadline=None)
@given(design=site_bounded_designs(), data=st.data())
def test_site_bounded_blocks_with_an_exact_guard_never_let_an_arm_run_out(design, data):
    """Model: run intervals 0..N-1. At the start of an interval the shipments due arrive, then
    the resupply run decides from the total alone (no order while a shipment is open), then the
    interval's events: the visits of earlier subjects (visit v of a subject randomized in
    interval i falls in interval i + offsets[v], in randomization order) and up to
    `per_interval` randomizations, each taking the next slot of its stratum's block sequence
    kept for this site (any permutation of each block, any stratum: hypothesis chooses). A
    randomization needs a kit of every arm; a visit a kit of its subject's arm. A shipment
    ordered at interval k arrives at the start of k + lead. Every arm starts at its maximum.

    Claims: no randomization or visit ever finds its arm empty (so no arm runs out while the
    other is stocked); whenever an arm is at or below the per-arm trigger at a run with no
    shipment open, the arm-agnostic top-up fires (it dominates the per-arm policy); the
    emergency fallback never fires; every top-up has size 2 x maximum - total."""
    blocks, strata, offsets, lead, per_interval, trigger, levels = design
    maximum = levels.maximum
    stock = dict.fromkeys(ARMS, maximum)
    sequences: dict[int, list[str]] = {s: [] for s in range(strata)}
    subjects: list[tuple[int, str]] = []  # (interval randomized, arm)
    arrivals: dict[int, dict[str, int]] = {}
    intervals = data.draw(st.integers(5, 40), label="intervals")
    for now in range(intervals):
        for arm, count in arrivals.pop(now, {}).items():
            stock[arm] += count
        total = sum(stock.values())
        open_shipment = bool(arrivals)
        ordered = top_up_size(total, n_arms=2, levels=levels, open_shipment=open_shipment)
        if not open_shipment and min(stock.values()) <= trigger:
            assert ordered, "an arm reached the per-arm trigger unseen by the total"
        assert not (
            not ordered
            and emergency_short(stock, arms=ARMS, levels=levels, open_shipment=open_shipment)
        )
        if ordered:
            assert ordered == 2 * maximum - total
            arrivals[now + lead] = split_top_up(ordered, stock, arms=ARMS, maximum=maximum)
        for randomized, arm in subjects:
            if now - randomized in offsets[1:]:
                assert stock[arm] >= 1, "a visit found its arm empty"
                stock[arm] -= 1
        for _ in range(data.draw(st.integers(0, per_interval), label="randomizations")):
            stratum = data.draw(st.integers(0, strata - 1), label="stratum")
            if not sequences[stratum]:
                size_ = data.draw(st.sampled_from(blocks), label="block")
                block = data.draw(st.permutations(["A", "P"] * (size_ // 2)), label="order")
                sequences[stratum] = list(block)
            arm = sequences[stratum].pop(0)
            assert all(count >= 1 for count in stock.values()), "randomization refused"
            stock[arm] -= 1
            subjects.append((now, arm))
        assert all(0 <= count <= maximum for count in stock.values())
