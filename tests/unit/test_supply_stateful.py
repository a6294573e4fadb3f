"""A stateful model of trial supply: a depot, two sites, shipments, subjects and time.

Hypothesis drives random sequences of every kit and shipment step (legal ones and attempts at
illegal ones) through the pure core, applying each use case's kit events all together or not at
all, as the service does in one transaction. After every step the rules of README rule 7 must
hold: one position per kit, the ledger replays to it, counts reconcile per site and per shipment,
and nothing expired, quarantined or unreceived is ever dispensable.
"""

from __future__ import annotations

import itertools
from datetime import date, timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from supply.expiry import can_dispense, can_dispense_kit, can_ship, is_expired
from supply.kit_choice import ShelfKit, choose_kit
from supply.ledger import KitEvent, mismatches, received_at_site, reconcile, replay
from supply.shipments import Condition, Shipment, ShipmentError, ShipmentState, tally
from supply.shipments import cancel as cancel_shipment
from supply.shipments import deliver as deliver_shipment
from supply.shipments import receive as receive_shipment
from supply.shipments import request as request_shipment
from supply.shipments import ship as ship_shipment
from supply.states import (
    DESTINATION,
    IllegalTransition,
    KitAction,
    KitPosition,
    KitState,
    Place,
    PlaceKind,
    can,
    transition,
)

DEPOT = 1
SITES = (10, 11)
KITS = tuple(f"K{n:02d}" for n in range(1, 13))
DO_NOT_SHIP_DAYS = 20
DO_NOT_DISPENSE_DAYS = 7
DOSING_INTERVAL = 28
# States in which a date-expired kit is swept to EXPIRED (the daily expiry job).
SWEPT = (KitState.AT_DEPOT, KitState.AVAILABLE, KitState.QUARANTINED)
# Actions the model's site and depot users take directly on one kit (the rest belong to
# shipments, dispensing and the expiry sweep, which have their own rules).
DIRECT = (
    KitAction.QUARANTINE,
    KitAction.RELEASE,
    KitAction.REJECT,
    KitAction.REPORT_DAMAGED,
    KitAction.REPORT_LOST,
    KitAction.RETURN,
    KitAction.RETURN_LOST,
    KitAction.VERIFY_RETURN,
    KitAction.DESTROY,
)
ANY_PLACE = st.builds(Place, st.sampled_from(PlaceKind), st.integers(1, 12))


class SupplyModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.today = date(2026, 3, 1)
        self.start: dict[str, KitPosition] = {}
        self.positions: dict[str, KitPosition] = {}
        self.expiry: dict[str, date] = {}
        self.events: list[KitEvent] = []
        self.shipments: dict[int, Shipment] = {}
        self.dispensed_at: dict[str, int] = {}  # kit -> site of the subject it went to
        self.ids = itertools.count(1)

    # --- the service's shell: all of a use case's events, or none ------------------------------

    def apply(self, events: tuple[KitEvent, ...] | list[KitEvent]) -> None:
        after = dict(self.positions)
        for event in events:
            after[event.kit] = transition(
                after[event.kit], event.action, to=event.to, kit=event.kit
            )
        self.positions = after
        self.events.extend(events)

    def refused(self, events: list[KitEvent]) -> None:
        before, logged = dict(self.positions), len(self.events)
        try:
            self.apply(events)
        except IllegalTransition:
            assert self.positions == before
            assert len(self.events) == logged
        else:
            raise AssertionError(f"{events} should have been refused")

    def sweep(self) -> None:
        self.apply(
            [
                KitEvent(k, KitAction.EXPIRE)
                for k, p in sorted(self.positions.items())
                if p.state in SWEPT and is_expired(self.expiry[k], self.today)
            ]
        )

    def shipment_in(self, data: st.DataObject, *states: ShipmentState) -> Shipment | None:
        candidates = sorted(i for i, s in self.shipments.items() if s.state in states)
        if not candidates:
            return None
        return self.shipments[data.draw(st.sampled_from(candidates))]

    # --- rules ----------------------------------------------------------------------------------

    @initialize(days=st.lists(st.integers(0, 400), min_size=len(KITS), max_size=len(KITS)))
    def stock_the_depot(self, days: list[int]) -> None:
        for kit, d in zip(KITS, days, strict=True):
            self.expiry[kit] = self.today + timedelta(days=d)
            self.start[kit] = KitPosition(KitState.AT_DEPOT, Place.depot(DEPOT))
        self.positions = dict(self.start)
        self.sweep()

    def open_shipment(self, site: int, size: int) -> Shipment | None:
        """Request a shipment of up to `size` shippable depot kits, first expiry first."""
        shippable = sorted(
            (self.expiry[k], k)
            for k, p in self.positions.items()
            if p.state is KitState.AT_DEPOT
            and can_ship(self.expiry[k], self.today, DO_NOT_SHIP_DAYS)
        )
        if not shippable:
            return None
        shipment, events = request_shipment(
            shipment_id=next(self.ids),
            depot=DEPOT,
            site=site,
            kits=[k for _, k in shippable][:size],
        )
        self.apply(events)
        self.shipments[shipment.id] = shipment
        return shipment

    @rule(site=st.sampled_from(SITES), size=st.integers(1, 4))
    def request(self, site: int, size: int) -> None:
        self.open_shipment(site, size)

    @rule(
        site=st.sampled_from(SITES),
        size=st.integers(1, 4),
        found=st.lists(st.sampled_from([Condition.GOOD] * 4 + list(Condition)), max_size=4),
        excursion=st.booleans(),
    )
    def resupply_a_site(
        self, site: int, size: int, found: list[Condition], excursion: bool
    ) -> None:
        """The common path in one step: request, ship and receive a shipment."""
        shipment = self.open_shipment(site, size)
        if shipment is None:
            return
        shipped, sent = ship_shipment(shipment, courier="EMS", tracking="E1")
        self.apply(sent)
        lines = {
            k: (found[i] if i < len(found) else Condition.GOOD) for i, k in enumerate(shipped.kits)
        }
        received, receipt = receive_shipment(shipped, lines, excursion=excursion)
        self.apply(receipt)
        self.shipments[shipment.id] = received
        self.sweep()

    @rule(data=st.data())
    def ship(self, data: st.DataObject) -> None:
        shipment = self.shipment_in(data, ShipmentState.REQUESTED)
        if shipment is not None:
            shipped, events = ship_shipment(shipment, courier="SF Express", tracking="SF1")
            self.apply(events)
            self.shipments[shipment.id] = shipped

    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        shipment = self.shipment_in(data, ShipmentState.SHIPPED)
        if shipment is not None:
            delivered, events = deliver_shipment(shipment)
            self.apply(events)
            self.shipments[shipment.id] = delivered

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        shipment = self.shipment_in(data, ShipmentState.REQUESTED)
        if shipment is not None:
            cancelled, events = cancel_shipment(shipment)
            self.apply(events)
            self.shipments[shipment.id] = cancelled
            self.sweep()

    @rule(data=st.data(), excursion=st.booleans(), flaw=st.sampled_from(["", "", "omit", "add"]))
    def receive(self, data: st.DataObject, excursion: bool, flaw: str) -> None:
        shipment = self.shipment_in(data, ShipmentState.SHIPPED, ShipmentState.DELIVERED)
        if shipment is None:
            return
        conditions = data.draw(
            st.lists(
                st.sampled_from(Condition), min_size=len(shipment.kits), max_size=len(shipment.kits)
            )
        )
        lines = dict(zip(shipment.kits, conditions, strict=True))
        if flaw:
            kit = data.draw(st.sampled_from(shipment.kits if flaw == "omit" else KITS + ("X1",)))
            if flaw == "omit":
                del lines[kit]
            elif kit not in lines:
                lines[kit] = Condition.GOOD
            else:
                return
            before = dict(self.positions)
            try:
                receive_shipment(shipment, lines, excursion=excursion)
            except ShipmentError as refused:
                assert refused.kit == kit
                assert kit in refused.message
            else:
                raise AssertionError(f"a receipt that {flaw}s kit {kit} was accepted")
            assert self.positions == before
            return
        received, events = receive_shipment(shipment, lines, excursion=excursion)
        self.apply(events)
        self.shipments[shipment.id] = received
        self.sweep()

    @rule(site=st.sampled_from(SITES), data=st.data())
    def dispense(self, site: int, data: st.DataObject) -> None:
        next_visit = self.today + timedelta(days=DOSING_INTERVAL)
        candidates = [
            ShelfKit(k, f"L{self.expiry[k]:%Y%m%d}", self.expiry[k])
            for k, p in sorted(self.positions.items())
            if p.place == Place.site(site)
            and can_dispense_kit(
                p,
                self.expiry[k],
                today=self.today,
                through=next_visit,
                do_not_dispense_days=DO_NOT_DISPENSE_DAYS,
            )
        ]
        if not candidates:
            return
        kit = choose_kit(
            candidates,
            arm="A",
            treatment_of=lambda number: "A",
            rng_index=lambda n: data.draw(st.integers(0, n - 1)),
        )
        assert kit is not None
        assert self.positions[kit].state is KitState.AVAILABLE
        assert not is_expired(self.expiry[kit], self.today)
        self.apply([KitEvent(kit, KitAction.DISPENSE, Place.subject(next(self.ids)))])
        self.dispensed_at[kit] = site

    @rule(data=st.data())
    def subject_returns_a_kit(self, data: st.DataObject) -> None:
        dispensed = [k for k in KITS if self.positions[k].state is KitState.DISPENSED]
        if dispensed:
            kit = data.draw(st.sampled_from(dispensed))
            self.apply([KitEvent(kit, KitAction.RETURN, Place.site(self.dispensed_at[kit]))])

    @rule(data=st.data())
    def act_on_a_kit(self, data: st.DataObject) -> None:
        """A pharmacist or supply manager quarantines, releases, rejects, reports, returns or
        destroys a kit for which the table allows it."""
        choices = [(k, a) for k in KITS for a in DIRECT if can(self.positions[k], a)]
        if not choices:
            return
        kit, action = data.draw(st.sampled_from(choices))
        to: Place | None = None
        if action in (KitAction.RETURN, KitAction.RETURN_LOST):
            to = Place.site(self.dispensed_at[kit])  # back to the site that dispensed it
        elif action is KitAction.DESTROY:
            to = Place.destroyed(next(self.ids))
        self.apply([KitEvent(kit, action, to)])
        self.sweep()

    @rule(kit=st.sampled_from(KITS), action=st.sampled_from(KitAction), to=st.none() | ANY_PLACE)
    def attempt_anything(self, kit: str, action: KitAction, to: Place | None) -> None:
        """Any action, any destination: what the table refuses changes nothing."""
        wanted = DESTINATION[action]
        fits = (to is None) if wanted is None else (to is not None and to.kind == wanted)
        if not (can(self.positions[kit], action) and fits):
            self.refused([KitEvent(kit, action, to)])

    @rule(kit=st.sampled_from(KITS), other=st.sampled_from(KITS))
    def a_batch_with_one_illegal_event_is_refused_whole(self, kit: str, other: str) -> None:
        position = self.positions[kit]
        legal = [a for a in DIRECT if can(position, a) and DESTINATION[a] is None]
        if legal and kit != other:
            bad = KitEvent(other, KitAction.DESTROY, Place.site(10))  # DESTROY never goes to a site
            self.refused([KitEvent(kit, legal[0]), bad])

    @rule(days=st.integers(1, 45))
    def time_passes(self, days: int) -> None:
        self.today += timedelta(days=days)
        self.sweep()

    # --- invariants -----------------------------------------------------------------------------

    @invariant()
    def every_kit_has_exactly_one_position(self) -> None:
        assert set(self.positions) == set(self.start)
        assert all(isinstance(p, KitPosition) for p in self.positions.values())

    @invariant()
    def the_ledger_replays_to_the_current_positions(self) -> None:
        assert mismatches(replay(self.events, self.start), self.positions) == ()

    @invariant()
    def site_counts_reconcile(self) -> None:
        result = reconcile(self.positions, received_at_site=received_at_site(self.events))
        assert result.balanced, result
        for site in result.sites.values():
            assert site.received == sum(site.by_state.values())

    @invariant()
    def shipment_counts_reconcile(self) -> None:
        receipts = received_at_site(self.events)
        for shipment in self.shipments.values():
            count = tally(shipment)
            assert count.balanced
            states = {self.positions[k].state for k in shipment.kits}
            if shipment.state is ShipmentState.RECEIVED:
                assert count.shipped == count.received + count.damaged + count.missing
                assert all(receipts.get(k) == shipment.site for k in shipment.kits)
            elif shipment.state is ShipmentState.REQUESTED:
                assert states == {KitState.RESERVED}
            elif shipment.state is not ShipmentState.CANCELLED:
                assert states <= {KitState.IN_TRANSIT, KitState.AWAITING_RECEIPT}
                assert count.in_transit == count.shipped == len(shipment.kits)

    @invariant()
    def nothing_unusable_is_dispensable(self) -> None:
        next_visit = self.today + timedelta(days=DOSING_INTERVAL)
        for kit, position in self.positions.items():
            expired = is_expired(self.expiry[kit], self.today)
            dispensable = can_dispense_kit(
                position,
                self.expiry[kit],
                today=self.today,
                through=next_visit,
                do_not_dispense_days=DO_NOT_DISPENSE_DAYS,
            )
            if position.state is not KitState.AVAILABLE:
                assert not can(position, KitAction.DISPENSE)
                assert not dispensable
            if expired:
                assert position.state not in SWEPT  # swept: never AVAILABLE once expired
                assert not can_dispense(
                    self.expiry[kit],
                    self.today,
                    through=next_visit,
                    do_not_dispense_days=DO_NOT_DISPENSE_DAYS,
                )
                assert not dispensable


SupplyModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestSupplyModel = SupplyModel.TestCase
