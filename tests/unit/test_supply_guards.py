"""Each guard of the supply core refuses exactly the values it names, and a refusal carries the
kit, event and field it is about (found by `make mutation`; tests/MUTATION.md)."""

from __future__ import annotations

import math
from datetime import date

import pytest

from supply.blind_resupply import predictive_total_need
from supply.ledger import KitEvent, LedgerError, replay
from supply.resupply import Order, SiteStock, allocate_from_depot, initial_order
from supply.shipments import ShipmentError, request
from supply.states import KitAction

NEED = {"visits_due": 2, "expected_randomizations": 1.5, "n_arms": 2, "safety_stock": 1, "guard": 1}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("visits_due", -1),
        ("safety_stock", -1),
        ("guard", -1),
        ("n_arms", 0),
        ("expected_randomizations", -0.5),
        ("expected_randomizations", math.nan),
        ("expected_randomizations", math.inf),
    ],
)
def test_predictive_need_refuses_each_value_out_of_range(field, value):
    with pytest.raises(ValueError):
        predictive_total_need(**{**NEED, field: value})


def test_predictive_need_takes_each_lower_bound():
    zero = {"visits_due": 0, "expected_randomizations": 0.0, "safety_stock": 0, "guard": 0}
    assert predictive_total_need(**{**NEED, **zero, "n_arms": 1}) == 0
    assert predictive_total_need(**NEED) == 2 + 2 * 2 + 2 * 1 + 1


@pytest.mark.parametrize("weight", [True, 1.5, 0])
def test_initial_order_refuses_a_ratio_that_is_not_a_whole_number_of_one_or_more(weight):
    with pytest.raises(ValueError):
        initial_order(4, ratio={"A": weight, "P": 1}, arms=["A", "P"])


def test_initial_order_refuses_a_ratio_naming_an_arm_the_trial_does_not_have():
    with pytest.raises(ValueError):
        initial_order(4, ratio={"A": 1, "P": 1, "X": 1}, arms=["A", "P"])


def test_a_ledger_refusal_names_the_kit_and_the_event():
    events = [KitEvent("1000001", KitAction.RESERVE), KitEvent("1000002", KitAction.RESERVE)]
    with pytest.raises(LedgerError) as refused:
        replay(events[1:], start={})
    assert (refused.value.kit, refused.value.index) == ("1000002", 0)
    assert refused.value.message == str(refused.value)


def test_a_shipment_refusal_not_about_one_kit_names_no_kit():
    with pytest.raises(ShipmentError) as refused:
        request(shipment_id=1, depot=1, site=1, kits=[])
    assert (refused.value.field, refused.value.kit) == ("kits", "")
    assert refused.value.message == str(refused.value)


def test_site_stock_keeps_its_own_copy_of_the_counts():
    counts = {"A": 2, "P": 3}
    stock = SiteStock(counts)
    counts["A"] = 0
    assert dict(stock.per_arm) == {"A": 2, "P": 3}


def test_an_arm_the_depot_holds_no_kit_of_is_short_by_the_whole_order():
    chosen, short = allocate_from_depot(
        Order({"A": 2, "P": 1}),
        {"A": [("1000001", date(2027, 1, 1)), ("1000002", date(2027, 1, 1))]},
        today=date(2026, 1, 1),
        do_not_ship_days=30,
    )
    assert chosen == {"A": ["1000001", "1000002"], "P": []}
    assert short == {"P": 1}


@pytest.mark.parametrize("count", [True, 1.5, -1])
def test_an_order_refuses_a_count_that_is_not_a_whole_number_of_zero_or_more(count):
    with pytest.raises(ValueError):
        Order({"A": count})


def test_an_order_keeps_its_own_copy_of_the_counts():
    counts = {"A": 2}
    order = Order(counts)
    counts["A"] = 0
    assert dict(order.per_arm) == {"A": 2}
