"""A shipment's state after delivery, its tally before it leaves and while in transit, a site's
tally names its site, a destroyed kit's place keeps its id (found by `make mutation`)."""

from __future__ import annotations

from supply.ledger import KitEvent, reconcile
from supply.shipments import ShipmentState, deliver, request, ship, tally
from supply.states import KitAction, KitPosition, KitState, Place

KITS = ["1000001", "1000002", "1000003"]


def test_a_shipment_counts_nothing_shipped_before_it_leaves_and_all_in_transit_after():
    shipment, _ = request(shipment_id=1, depot=1, site=2, kits=KITS)
    before = tally(shipment)
    assert (before.shipped, before.in_transit) == (0, 0)
    shipped, _ = ship(shipment, courier="DHL", tracking="T1")
    delivered, events = deliver(shipped)
    assert delivered.state == ShipmentState.DELIVERED
    assert events == tuple(KitEvent(k, KitAction.DELIVER) for k in KITS)
    after = tally(delivered)
    assert (after.shipped, after.received, after.in_transit) == (3, 0, 3)


def test_each_site_tally_names_its_site():
    positions = {"1000001": KitPosition(KitState.AVAILABLE, Place.site(7))}
    result = reconcile(positions, received_at_site={"1000001": 7})
    assert result.sites[7].site == 7 and result.overall.site is None
    assert result.balanced


def test_a_destroyed_kits_place_keeps_its_id():
    assert Place.destroyed(3).id == 3
