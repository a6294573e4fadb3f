"""Expiry rules at their edges: the day on the edge, the day before, the day after; FEFO."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supply.expiry import can_dispense, can_dispense_kit, can_ship, is_expired
from supply.states import PLACES, KitPosition, KitState, Place

TODAY = date(2026, 3, 1)
DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("expiry", "expired"),
    [(TODAY - DAY, True), (TODAY, False), (TODAY + DAY, False)],
    ids=["expired-yesterday", "last-usable-day", "tomorrow"],
)
def test_a_kit_is_usable_through_its_expiry_date(expiry: date, expired: bool):
    assert is_expired(expiry, TODAY) is expired


@pytest.mark.parametrize(
    ("offset", "shippable"),
    [(44, False), (45, True), (46, True)],
    ids=["day-before-edge", "edge", "day-after-edge"],
)
def test_never_ship_a_kit_expiring_within_do_not_ship_days(offset: int, shippable: bool):
    assert can_ship(TODAY + timedelta(days=offset), TODAY, 45) is shippable


def test_with_no_margin_shipping_only_refuses_expired_kits():
    assert can_ship(TODAY, TODAY, 0)
    assert not can_ship(TODAY - DAY, TODAY, 0)
    with pytest.raises(ValueError, match="do_not_ship_days"):
        can_ship(TODAY, TODAY, -1)


NEXT_VISIT = TODAY + timedelta(days=28)


@pytest.mark.parametrize(
    ("offset", "dispensable"),
    [(34, False), (35, True), (36, True)],
    ids=["day-before-edge", "edge", "day-after-edge"],
)
def test_dispense_only_a_kit_usable_through_next_visit_plus_margin(offset: int, dispensable: bool):
    # edge = next visit (today + 28) + 7 days
    expiry = TODAY + timedelta(days=offset)
    assert can_dispense(expiry, TODAY, through=NEXT_VISIT, do_not_dispense_days=7) is (dispensable)


@pytest.mark.parametrize(
    ("offset", "dispensable"),
    [(6, False), (7, True), (8, True)],
    ids=["day-before-edge", "edge", "day-after-edge"],
)
def test_without_a_next_visit_the_margin_counts_from_today(offset: int, dispensable: bool):
    expiry = TODAY + timedelta(days=offset)
    assert can_dispense(expiry, TODAY, through=None, do_not_dispense_days=7) is dispensable


def test_an_overdue_next_visit_counts_from_today():
    expiry = TODAY + timedelta(days=7)
    overdue = TODAY - timedelta(days=3)
    assert can_dispense(expiry, TODAY, through=overdue, do_not_dispense_days=7)
    assert not can_dispense(expiry - DAY, TODAY, through=overdue, do_not_dispense_days=7)


@settings(max_examples=300, deadline=None)
@given(
    expiry=st.dates(date(2025, 1, 1), date(2028, 1, 1)),
    today=st.dates(date(2025, 1, 1), date(2028, 1, 1)),
    gap=st.one_of(st.none(), st.integers(-10, 200)),
    margin=st.integers(0, 60),
)
def test_an_expired_kit_is_never_dispensable(
    expiry: date, today: date, gap: int | None, margin: int
):
    next_visit = None if gap is None else today + timedelta(days=gap)
    ok = can_dispense(expiry, today, through=next_visit, do_not_dispense_days=margin)
    if is_expired(expiry, today):
        assert not ok
    if ok:
        assert expiry >= today + timedelta(days=margin)


@pytest.mark.parametrize(
    "state", [s for s in KitState if s is not KitState.AVAILABLE], ids=lambda s: str(s)
)
def test_only_an_available_kit_passes_the_dispensing_guard(state: KitState):
    for place_kind in PLACES[state]:
        position = KitPosition(state, Place(place_kind, 1))
        assert not can_dispense_kit(
            position, date(2030, 1, 1), today=TODAY, through=None, do_not_dispense_days=7
        )
    available = KitPosition(KitState.AVAILABLE, Place.site(1))
    assert can_dispense_kit(
        available, date(2030, 1, 1), today=TODAY, through=None, do_not_dispense_days=7
    )
    assert not can_dispense_kit(
        available, TODAY + DAY, today=TODAY, through=None, do_not_dispense_days=7
    )
