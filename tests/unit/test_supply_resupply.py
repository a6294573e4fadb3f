"""Resupply helpers: the per-arm threshold baseline (bench only), its symmetry in the arms,
initial orders, depot picks, visits due. The arm-agnostic policy: test_supply_blind_resupply.py."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supply.expiry import can_ship
from supply.resupply import (
    Order,
    ScheduledVisit,
    SiteStock,
    allocate_from_depot,
    initial_order,
    threshold_policy,
    visits_due,
)

ARMS = ("A", "P")
PROPERTY = settings(max_examples=200, deadline=None)
TODAY = date(2026, 3, 1)


def threshold(stock: dict[str, int], *, open_shipment: bool = False) -> Order | None:
    return threshold_policy(
        SiteStock(stock), trigger=4, maximum=8, open_shipment=open_shipment, arms=ARMS
    )


def test_threshold_does_not_fire_one_kit_above_the_trigger():
    assert threshold({"A": 5, "P": 5}) is None
    assert threshold({"A": 5, "P": 8}) is None


def test_threshold_fires_when_an_arm_reaches_the_trigger_and_fills_to_maximum():
    assert threshold({"A": 4, "P": 5}) == Order({"A": 4, "P": 3})
    assert threshold({"A": 0, "P": 0}) == Order({"A": 8, "P": 8})


def test_an_arm_already_at_maximum_still_gets_one_kit():
    order = threshold({"A": 8, "P": 2})
    assert order == Order({"A": 1, "P": 6})
    assert order.total == 7


def test_an_arm_missing_from_the_stock_counts_as_none_left():
    assert threshold({"A": 6}) == Order({"A": 2, "P": 8})


def test_no_resupply_while_a_shipment_to_the_site_is_open():
    assert threshold({"A": 0, "P": 0}, open_shipment=True) is None


def test_threshold_refuses_bad_settings_and_unknown_arms():
    with pytest.raises(ValueError, match="trigger"):
        threshold_policy(SiteStock({}), trigger=8, maximum=8, open_shipment=False, arms=ARMS)
    with pytest.raises(ValueError, match="arm 'X' is not one of the trial's arms"):
        threshold({"A": 1, "X": 1})
    with pytest.raises(ValueError, match="stock"):
        SiteStock({"A": -1})


STOCKS = st.dictionaries(st.sampled_from(["A", "P", "B"]), st.integers(0, 30))
LEVELS = st.tuples(st.integers(0, 20), st.integers(1, 20)).map(lambda t: (t[0], t[0] + t[1]))


def relabel(mapping: dict[str, int], swap: dict[str, str]) -> dict[str, int]:
    return {swap[arm]: n for arm, n in mapping.items()}


@PROPERTY
@given(stock=STOCKS, levels=LEVELS, order_of_arms=st.permutations(["A", "P", "B"]))
def test_threshold_is_symmetric_under_arm_relabelling(
    stock: dict[str, int], levels: tuple[int, int], order_of_arms: list[str]
):
    trigger, maximum = levels
    arms = ["A", "P", "B"]
    swap = dict(zip(arms, order_of_arms, strict=True))
    kwargs = {"trigger": trigger, "maximum": maximum, "open_shipment": False}
    plain = threshold_policy(SiteStock(stock), arms=arms, **kwargs)
    swapped = threshold_policy(SiteStock(relabel(stock, swap)), arms=order_of_arms, **kwargs)
    if plain is None:
        assert swapped is None
    else:
        assert swapped is not None
        assert dict(swapped.per_arm) == relabel(dict(plain.per_arm), swap)


@PROPERTY
@given(stock=STOCKS, levels=LEVELS)
def test_threshold_fires_exactly_at_the_trigger_with_every_arm_in_the_order(
    stock: dict[str, int], levels: tuple[int, int]
):
    trigger, maximum = levels
    arms = ["A", "P", "B"]
    order = threshold_policy(
        SiteStock(stock), trigger=trigger, maximum=maximum, open_shipment=False, arms=arms
    )
    low = any(stock.get(arm, 0) <= trigger for arm in arms)
    assert (order is not None) is low
    if order is not None:
        assert set(order.per_arm) == set(arms)
        for arm in arms:
            assert order.per_arm[arm] >= 1
            assert stock.get(arm, 0) + order.per_arm[arm] == max(maximum, stock.get(arm, 0) + 1)


@pytest.mark.parametrize(
    ("quantity", "ratio", "expected"),
    [
        (8, {"A": 1, "P": 1}, {"A": 4, "P": 4}),
        (7, {"A": 1, "P": 1}, {"A": 4, "P": 4}),
        (1, {"A": 1, "P": 1}, {"A": 1, "P": 1}),
        (8, {"A": 2, "P": 1}, {"A": 6, "P": 3}),
    ],
)
def test_initial_order_splits_by_ratio_rounding_every_arm_up(
    quantity: int, ratio: dict[str, int], expected: dict[str, int]
):
    order = initial_order(quantity, ratio=ratio, arms=ARMS)
    assert dict(order.per_arm) == expected
    assert order.total >= quantity


def test_initial_order_refuses_no_kits_and_a_missing_ratio():
    with pytest.raises(ValueError, match="quantity"):
        initial_order(0, ratio={"A": 1, "P": 1}, arms=ARMS)
    with pytest.raises(ValueError, match="ratio"):
        initial_order(8, ratio={"A": 1}, arms=ARMS)


def kits(prefix: str, *offsets: int) -> list[tuple[str, date]]:
    return [(f"{prefix}{i}", TODAY + timedelta(days=d)) for i, d in enumerate(offsets)]


def test_allocate_picks_first_expiry_shippable_kits_per_arm():
    depot = {"A": kits("A", 300, 44, 45, 100), "P": kits("P", 200, 46)}
    chosen, short = allocate_from_depot(
        Order({"A": 2, "P": 1}), depot, today=TODAY, do_not_ship_days=45
    )
    assert chosen == {"A": ["A2", "A3"], "P": ["P1"]}  # A1 expires within 45 days
    assert short == {}


def test_allocate_reports_the_shortfall_per_arm():
    depot = {"A": kits("A", 10, 20, 400), "P": []}
    chosen, short = allocate_from_depot(
        Order({"A": 3, "P": 2}), depot, today=TODAY, do_not_ship_days=45
    )
    assert chosen == {"A": ["A2"], "P": []}
    assert short == {"A": 2, "P": 2}


def test_allocate_refuses_a_kit_listed_under_two_arms():
    depot = {"A": kits("K", 100), "P": kits("K", 100)}
    with pytest.raises(ValueError, match="kit K0 is listed under more than one arm"):
        allocate_from_depot(Order({"A": 1, "P": 1}), depot, today=TODAY, do_not_ship_days=0)


DEPOT_KITS = st.lists(st.integers(-10, 400), max_size=12)


@PROPERTY
@given(
    a=DEPOT_KITS,
    p=DEPOT_KITS,
    want=st.tuples(st.integers(1, 8), st.integers(1, 8)),
    margin=st.integers(0, 60),
)
def test_allocate_never_picks_a_short_dated_kit_and_ignores_arm_labels(
    a: list[int], p: list[int], want: tuple[int, int], margin: int
):
    depot = {"A": kits("A", *a), "P": kits("P", *p)}
    expiry = dict(depot["A"] + depot["P"])
    chosen, short = allocate_from_depot(
        Order({"A": want[0], "P": want[1]}), depot, today=TODAY, do_not_ship_days=margin
    )
    for arm, picked in chosen.items():
        assert all(can_ship(expiry[k], TODAY, margin) for k in picked)
        shippable = sorted(d for k, d in depot[arm] if can_ship(d, TODAY, margin))
        assert sorted(expiry[k] for k in picked) == shippable[: len(picked)]
        assert len(picked) + short.get(arm, 0) == Order({"A": want[0], "P": want[1]}).per_arm[arm]
    # Swap which arm each kit holds (and the order): the same kit numbers leave the depot.
    swapped, swapped_short = allocate_from_depot(
        Order({"A": want[1], "P": want[0]}),
        {"A": depot["P"], "P": depot["A"]},
        today=TODAY,
        do_not_ship_days=margin,
    )
    assert sorted(swapped["A"] + swapped["P"]) == sorted(chosen["A"] + chosen["P"])
    assert sum(swapped_short.values()) == sum(short.values())


SCHEDULE = [
    ScheduledVisit(1, 0, 0, 1),
    ScheduledVisit(29, 3, 3, 1),
    ScheduledVisit(57, 3, 3, 1),
    ScheduledVisit(169, 7, 7, 0),
]
RANDOMIZED = date(2026, 1, 1)  # V2 target 29 January (window 26 January - 1 February)


@pytest.mark.parametrize(
    ("today", "horizon", "kits_due"),
    [
        (date(2026, 1, 20), 5, 0),  # through 25 January: the window opens on the 26th
        (date(2026, 1, 20), 6, 1),  # through 26 January: edge day
        (date(2026, 2, 1), 0, 1),  # last day of the window, still due
        (date(2026, 2, 2), 20, 0),  # V2 window closed (missed); V3 opens 23 February
        (date(2026, 2, 2), 21, 1),
        (date(2026, 1, 1), 60, 3),
    ],
)
def test_visits_due_counts_visits_whose_window_meets_the_horizon(
    today: date, horizon: int, kits_due: int
):
    assert visits_due(SCHEDULE, RANDOMIZED, today, horizon) == kits_due


def test_visits_due_refuses_a_negative_horizon():
    with pytest.raises(ValueError, match="horizon_days"):
        visits_due(SCHEDULE, RANDOMIZED, TODAY, -1)
