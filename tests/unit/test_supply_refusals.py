"""Every refusal of the supply core names its field and kit; places and positions normalise their
kind and state; can_dispense_kit honours `through` (found by `make mutation`; tests/MUTATION.md)."""

from __future__ import annotations

from datetime import date

import pytest

from supply.expiry import can_dispense_kit
from supply.ledger import KitEvent, replay
from supply.shipments import ShipmentError, deliver, receive, request, ship
from supply.states import (
    IllegalTransition,
    KitAction,
    KitPosition,
    KitState,
    Place,
    PlaceKind,
    transition,
)

KITS = ["1000001", "1000002"]


def refusal(call) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(ShipmentError) as refused:
        call()
    return refused.value.field, refused.value.kit


def delivered():  # type: ignore[no-untyped-def]
    shipment, _ = request(shipment_id=1, depot=1, site=2, kits=KITS)
    shipped, _ = ship(shipment, courier="DHL", tracking="T1")
    return deliver(shipped)[0]


def test_shipment_refusals_name_their_field_and_kit():
    shipment, _ = request(shipment_id=1, depot=1, site=2, kits=KITS)
    assert refusal(lambda: request(shipment_id=1, depot=1, site=2, kits=KITS * 2)) == (
        "kits",
        KITS[0],
    )
    assert refusal(lambda: deliver(shipment)) == ("state", "")
    arrived = delivered()
    twice = [(KITS[0], "good"), (KITS[0], "good"), (KITS[1], "good")]
    assert refusal(lambda: receive(arrived, twice, excursion=False)) == ("lines", KITS[0])
    bad = {KITS[0]: "good", KITS[1]: "broken"}
    assert refusal(lambda: receive(arrived, bad, excursion=False)) == ("lines", KITS[1])
    short = {KITS[0]: "good"}
    assert refusal(lambda: receive(arrived, short, excursion=False)) == ("lines", KITS[1])


def test_a_replayed_refusal_keeps_the_state_action_field_and_kit_it_was_refused_for():
    start = {KITS[0]: KitPosition(KitState.AT_DEPOT, Place.depot(1))}
    with pytest.raises(IllegalTransition) as refused:
        replay([KitEvent(KITS[0], KitAction.DISPENSE)], start)
    error = refused.value
    assert (error.state, error.action, error.field, error.kit, error.index) == (
        KitState.AT_DEPOT,
        KitAction.DISPENSE,
        "action",
        KITS[0],
        0,
    )


def test_an_unnamed_kit_is_refused_without_a_name():
    with pytest.raises(IllegalTransition) as refused:
        transition(KitPosition(KitState.AT_DEPOT, Place.depot(1)), KitAction.DISPENSE)
    assert refused.value.kit == ""


def test_places_and_positions_normalise_their_kind_and_state():
    place = Place("site", 4)  # type: ignore[arg-type]
    assert type(place.kind) is PlaceKind and Place.shipment(9).id == 9
    position = KitPosition("available", place)  # type: ignore[arg-type]
    assert type(position.state) is KitState


def test_a_kit_must_last_through_the_next_visit_to_be_dispensed():
    at_site = KitPosition(KitState.AVAILABLE, Place.site(1))
    options = {"today": date(2026, 1, 1), "do_not_dispense_days": 0}
    assert can_dispense_kit(at_site, date(2026, 1, 20), through=None, **options)
    assert not can_dispense_kit(at_site, date(2026, 1, 20), through=date(2026, 2, 1), **options)


@pytest.mark.parametrize(
    ("position", "action", "to"),
    [
        # an action that keeps the kit in place, given a destination
        (KitPosition(KitState.AVAILABLE, Place.site(1)), KitAction.QUARANTINE, Place.site(2)),
        # an action that moves the kit, given none
        (KitPosition(KitState.AT_DEPOT, Place.depot(1)), KitAction.RESERVE, None),
    ],
)
def test_a_wrong_destination_is_refused_by_to_naming_the_state_action_and_kit(position, action, to):
    with pytest.raises(IllegalTransition) as refused:
        transition(position, action, to=to, kit=KITS[0])
    error = refused.value
    assert (error.state, error.action, error.field, error.kit) == (
        position.state,
        action,
        "to",
        KITS[0],
    )


def test_a_replayed_wrong_destination_is_refused_by_to():
    start = {KITS[0]: KitPosition(KitState.AT_DEPOT, Place.depot(1))}
    with pytest.raises(IllegalTransition) as refused:
        replay([KitEvent(KITS[0], KitAction.RESERVE)], start)
    assert (refused.value.field, refused.value.index) == ("to", 0)
