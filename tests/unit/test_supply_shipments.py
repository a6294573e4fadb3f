"""Shipments: request, ship, deliver, receive every kit exactly once, cancel; the kit events."""

from __future__ import annotations

import pytest

from supply.ledger import KitEvent, replay
from supply.shipments import (
    Condition,
    Shipment,
    ShipmentError,
    ShipmentState,
    ShipmentStep,
    can,
    cancel,
    deliver,
    receive,
    request,
    ship,
    tally,
)
from supply.states import KitAction, KitPosition, KitState, Place

KITS = ("1000003", "1000011", "1000029")
START = {k: KitPosition(KitState.AT_DEPOT, Place.depot(1)) for k in KITS}


def requested() -> tuple[Shipment, tuple[KitEvent, ...]]:
    return request(shipment_id=7, depot=1, site=10, kits=KITS)


def shipped() -> tuple[Shipment, list[KitEvent]]:
    shipment, reserved = requested()
    shipment, sent = ship(shipment, courier="SF Express", tracking="SF123")
    return shipment, [*reserved, *sent]


def test_request_reserves_every_kit_in_the_shipment():
    shipment, events = requested()
    assert shipment.state is ShipmentState.REQUESTED
    assert events == tuple(KitEvent(k, KitAction.RESERVE, Place.shipment(7)) for k in KITS)
    positions = replay(events, START)
    assert {p.state for p in positions.values()} == {KitState.RESERVED}


def test_request_refuses_an_empty_or_repeated_manifest():
    with pytest.raises(ShipmentError, match="at least one kit"):
        request(shipment_id=7, depot=1, site=10, kits=[])
    with pytest.raises(ShipmentError, match="kit 1000011 is listed more than once") as refused:
        request(shipment_id=7, depot=1, site=10, kits=[*KITS, "1000011"])
    assert refused.value.kit == "1000011"


@pytest.mark.parametrize(
    ("courier", "tracking", "field"), [("", "SF1", "courier"), ("SF", "  ", "tracking")]
)
def test_ship_needs_a_courier_and_a_tracking_number(courier: str, tracking: str, field: str):
    shipment, _ = requested()
    with pytest.raises(ShipmentError, match=f"^{field}:") as refused:
        ship(shipment, courier=courier, tracking=tracking)
    assert refused.value.field == field


def test_ship_then_receive_all_good_makes_every_kit_available_at_the_site():
    shipment, events = shipped()
    assert shipment.state is ShipmentState.SHIPPED
    assert (shipment.courier, shipment.tracking) == ("SF Express", "SF123")
    assert tally(shipment).in_transit == 3
    received, receipt = receive(shipment, dict.fromkeys(KITS, Condition.GOOD), excursion=False)
    assert received.state is ShipmentState.RECEIVED
    assert receipt == tuple(KitEvent(k, KitAction.RECEIVE, Place.site(10)) for k in KITS)
    positions = replay([*events, *receipt], START)
    assert set(positions.values()) == {KitPosition(KitState.AVAILABLE, Place.site(10))}


def test_receipt_records_damaged_and_missing_kits_and_reconciles():
    shipment, events = shipped()
    lines = {
        KITS[0]: Condition.GOOD,
        KITS[1]: Condition.DAMAGED,
        KITS[2]: Condition.MISSING,
    }
    received, receipt = receive(shipment, lines, excursion=False)
    positions = replay([*events, *receipt], START)
    assert [positions[k].state for k in KITS] == [
        KitState.AVAILABLE,
        KitState.DAMAGED,
        KitState.MISSING,
    ]
    count = tally(received)
    assert (count.shipped, count.received, count.damaged, count.missing) == (3, 1, 1, 1)
    assert count.in_transit == 0
    assert count.balanced


def test_an_excursion_quarantines_the_good_kits_after_their_receipt():
    shipment, events = shipped()
    shipment, delivered = deliver(shipment)
    lines = [(KITS[0], Condition.GOOD), (KITS[1], Condition.DAMAGED), (KITS[2], Condition.GOOD)]
    received, receipt = receive(shipment, lines, excursion=True)
    assert received.excursion
    assert receipt[3:] == (
        KitEvent(KITS[0], KitAction.QUARANTINE),
        KitEvent(KITS[2], KitAction.QUARANTINE),
    )
    positions = replay([*events, *delivered, *receipt], START)
    assert [positions[k].state for k in KITS] == [
        KitState.QUARANTINED,
        KitState.DAMAGED,
        KitState.QUARANTINED,
    ]
    assert positions[KITS[0]].place == Place.site(10)


def test_a_receipt_that_omits_a_kit_is_refused_naming_it():
    shipment, _ = shipped()
    with pytest.raises(ShipmentError, match="kit 1000029 of shipment 7 is not in the receipt"):
        receive(shipment, {KITS[0]: Condition.GOOD, KITS[1]: Condition.GOOD}, excursion=False)


def test_a_receipt_that_adds_a_kit_is_refused_naming_it():
    shipment, _ = shipped()
    lines = {**dict.fromkeys(KITS, Condition.GOOD), "2000001": Condition.GOOD}
    with pytest.raises(ShipmentError, match="kit 2000001 is not in shipment 7") as refused:
        receive(shipment, lines, excursion=False)
    assert refused.value.kit == "2000001"
    assert refused.value.field == "lines"


def test_a_receipt_that_lists_a_kit_twice_is_refused_naming_it():
    shipment, _ = shipped()
    lines = [(k, Condition.GOOD) for k in KITS] + [(KITS[1], Condition.DAMAGED)]
    with pytest.raises(ShipmentError, match="kit 1000011 is listed more than once"):
        receive(shipment, lines, excursion=False)


def test_a_receipt_with_an_unknown_condition_is_refused():
    shipment, _ = shipped()
    lines = {**dict.fromkeys(KITS, Condition.GOOD), KITS[0]: "broken"}
    with pytest.raises(ShipmentError, match="kit 1000003: condition must be good"):
        receive(shipment, lines, excursion=False)


def test_cancel_puts_the_kits_back_into_depot_stock():
    shipment, reserved = requested()
    cancelled, events = cancel(shipment)
    assert cancelled.state is ShipmentState.CANCELLED
    assert replay([*reserved, *events], START) == START


@pytest.mark.parametrize(
    ("state", "step"),
    [
        (ShipmentState.REQUESTED, ShipmentStep.RECEIVE),
        (ShipmentState.REQUESTED, ShipmentStep.DELIVER),
        (ShipmentState.SHIPPED, ShipmentStep.CANCEL),
        (ShipmentState.SHIPPED, ShipmentStep.SHIP),
        (ShipmentState.RECEIVED, ShipmentStep.RECEIVE),
        (ShipmentState.CANCELLED, ShipmentStep.SHIP),
    ],
)
def test_steps_out_of_order_are_refused(state: ShipmentState, step: ShipmentStep):
    shipment = Shipment(id=7, depot=1, site=10, kits=KITS, state=state)
    assert not can(shipment, step)
    with pytest.raises(ShipmentError, match=f"shipment 7 is {state}; it cannot be"):
        if step is ShipmentStep.SHIP:
            ship(shipment, courier="SF", tracking="1")
        elif step is ShipmentStep.DELIVER:
            deliver(shipment)
        elif step is ShipmentStep.CANCEL:
            cancel(shipment)
        else:
            receive(shipment, dict.fromkeys(KITS, Condition.GOOD), excursion=False)
