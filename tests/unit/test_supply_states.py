"""The kit state machine: every legal row, every illegal pair refused, destinations, the ledger."""

from __future__ import annotations

import itertools

import pytest

from supply.ledger import (
    ACCOUNTED,
    KitEvent,
    LedgerError,
    mismatches,
    received_at_site,
    reconcile,
    replay,
)
from supply.states import (
    DESTINATION,
    LEGAL,
    PLACES,
    USABLE_AT,
    IllegalTransition,
    KitAction,
    KitPosition,
    KitState,
    Place,
    PlaceKind,
    can,
    transition,
)

S, A = KitState, KitAction
DEPOT, SITE, OTHER_SITE = Place.depot(1), Place.site(10), Place.site(11)
SAMPLE_PLACES = {
    PlaceKind.DEPOT: DEPOT,
    PlaceKind.SHIPMENT: Place.shipment(5),
    PlaceKind.SITE: SITE,
    PlaceKind.SUBJECT: Place.subject(42),
    PlaceKind.DESTROYED: Place.destroyed(7),
}
DESTINATIONS = {
    PlaceKind.DEPOT: Place.depot(2),
    PlaceKind.SHIPMENT: Place.shipment(6),
    PlaceKind.SITE: OTHER_SITE,
    PlaceKind.SUBJECT: Place.subject(43),
    PlaceKind.DESTROYED: Place.destroyed(8),
}


def positions_of(state: KitState) -> list[KitPosition]:
    """One position per kind of place the state may be held at."""
    return [KitPosition(state, SAMPLE_PLACES[kind]) for kind in sorted(PLACES[state])]


LEGAL_CASES = [
    pytest.param(position, action, id=f"{position.state}@{position.place.kind}-{action}")
    for (state, action) in LEGAL
    for position in positions_of(state)
]


@pytest.mark.parametrize(("position", "action"), LEGAL_CASES)
def test_every_legal_row_gives_its_state_at_its_destination(
    position: KitPosition, action: KitAction
):
    wanted = DESTINATION[action]
    to = DESTINATIONS[wanted] if wanted is not None else None
    after = transition(position, action, to=to, kit="1234567")
    expected = (
        USABLE_AT[position.place.kind] if action is A.RELEASE else LEGAL[position.state, action]
    )
    assert after.state is expected
    assert after.place == (to if to is not None else position.place)
    assert can(position, action)


def test_release_returns_a_kit_to_the_usable_state_of_its_place():
    assert transition(KitPosition(S.QUARANTINED, DEPOT), A.RELEASE) == KitPosition(
        S.AT_DEPOT, DEPOT
    )
    assert transition(KitPosition(S.QUARANTINED, SITE), A.RELEASE) == KitPosition(S.AVAILABLE, SITE)


ILLEGAL_CASES = [
    pytest.param(position, action, id=f"{position.state}@{position.place.kind}-{action}")
    for state, action in itertools.product(KitState, KitAction)
    if (state, action) not in LEGAL
    for position in positions_of(state)
]


@pytest.mark.parametrize(("position", "action"), ILLEGAL_CASES)
def test_every_pair_not_in_the_table_is_refused(position: KitPosition, action: KitAction):
    assert not can(position, action)
    wanted = DESTINATION[action]
    with pytest.raises(IllegalTransition) as refused:
        transition(position, action, to=DESTINATIONS[wanted] if wanted else None, kit="K1")
    assert refused.value.state is position.state
    assert refused.value.action is action
    assert refused.value.field == "action"
    assert refused.value.kit == "K1"


@pytest.mark.parametrize(
    ("state", "place", "action", "message"),
    [
        (S.DISPENSED, Place.subject(3), A.SHIP, "kit 1234567 is dispensed; it cannot be shipped"),
        (
            S.QUARANTINED,
            SITE,
            A.DISPENSE,
            "kit 1234567 is quarantined; it cannot be dispensed",
        ),
        (S.EXPIRED, SITE, A.DISPENSE, "kit 1234567 is expired; it cannot be dispensed"),
        (
            S.IN_TRANSIT,
            Place.shipment(4),
            A.DISPENSE,
            "kit 1234567 is in transit; it cannot be dispensed",
        ),
        (
            S.AWAITING_RECEIPT,
            Place.shipment(4),
            A.DISPENSE,
            "kit 1234567 is awaiting receipt; it cannot be dispensed",
        ),
        (S.DAMAGED, SITE, A.RELEASE, "kit 1234567 is damaged; it cannot be released"),
        (S.MISSING, SITE, A.DESTROY, "kit 1234567 is missing; it cannot be destroyed"),
        (
            S.RETURNED,
            SITE,
            A.DESTROY,
            "kit 1234567 is returned \\(not yet verified\\); it cannot be destroyed",
        ),
        (S.AVAILABLE, SITE, A.VERIFY_RETURN, "kit 1234567 is available; it cannot be verified"),
        (
            S.RESERVED,
            Place.shipment(4),
            A.EXPIRE,
            "kit 1234567 is reserved for a shipment; it cannot be expired",
        ),
        (S.DESTROYED, Place.destroyed(2), A.RETURN, "kit 1234567 is destroyed; it cannot be"),
    ],
)
def test_illegal_pairs_are_refused_with_a_clear_message(
    state: KitState, place: Place, action: KitAction, message: str
):
    with pytest.raises(IllegalTransition, match=message):
        transition(KitPosition(state, place), action, to=Place.site(10), kit="1234567")


@pytest.mark.parametrize(
    ("position", "action", "to", "message"),
    [
        (KitPosition(S.AT_DEPOT, DEPOT), A.RESERVE, None, "to a shipment; none was given"),
        (KitPosition(S.AT_DEPOT, DEPOT), A.RESERVE, SITE, "to a shipment; not site 10"),
        (KitPosition(S.AVAILABLE, SITE), A.DISPENSE, None, "to a subject; none was given"),
        (KitPosition(S.AVAILABLE, SITE), A.DISPENSE, OTHER_SITE, "to a subject; not site 11"),
        (KitPosition(S.IN_TRANSIT, Place.shipment(4)), A.RECEIVE, DEPOT, "to a site; not depot"),
        (KitPosition(S.RESERVED, Place.shipment(4)), A.SHIP, SITE, "no destination"),
        (KitPosition(S.RESERVED, Place.shipment(4)), A.UNRESERVE, SITE, "to a depot"),
        (KitPosition(S.DISPENSED, Place.subject(3)), A.RETURN, None, "to a site"),
        (KitPosition(S.EXPIRED, SITE), A.DESTROY, DEPOT, "to a destroyed"),
        (KitPosition(S.QUARANTINED, SITE), A.RELEASE, DEPOT, "no destination"),
    ],
)
def test_wrong_or_missing_destinations_are_refused(
    position: KitPosition, action: KitAction, to: Place | None, message: str
):
    with pytest.raises(IllegalTransition, match=message) as refused:
        transition(position, action, to=to, kit="K9")
    assert refused.value.field == "to"


def test_a_position_at_a_place_its_state_is_never_at_cannot_be_built():
    with pytest.raises(ValueError, match="available can only be at a site, not at depot 1"):
        KitPosition(S.AVAILABLE, DEPOT)
    with pytest.raises(ValueError, match="dispensed can only be at a subject"):
        KitPosition(S.DISPENSED, SITE)
    with pytest.raises(ValueError):
        Place("warehouse", 1)  # type: ignore[arg-type]


def test_every_state_is_reachable_from_the_depot():
    reached = {S.AT_DEPOT}
    while True:
        more = {after for (before, _), after in LEGAL.items() if before in reached} | {
            USABLE_AT[k] for k in PLACES[S.QUARANTINED] if S.QUARANTINED in reached
        }
        if more <= reached:
            break
        reached |= more
    assert reached == set(KitState)


# --- the ledger ---------------------------------------------------------------------------------

START = {k: KitPosition(S.AT_DEPOT, DEPOT) for k in ("K1", "K2", "K3", "K4")}
SHIPMENT = Place.shipment(4)
EVENTS = [
    *(KitEvent(k, A.RESERVE, SHIPMENT) for k in ("K1", "K2", "K3")),
    *(KitEvent(k, A.SHIP) for k in ("K1", "K2", "K3")),
    KitEvent("K1", A.RECEIVE, SITE),
    KitEvent("K2", A.RECEIVE_DAMAGED, SITE),
    KitEvent("K3", A.RECEIVE_MISSING, SITE),
    KitEvent("K1", A.DISPENSE, Place.subject(9)),
    KitEvent("K4", A.REPORT_DAMAGED),
]


def test_replay_reproduces_positions():
    positions = replay(EVENTS, START)
    assert positions == {
        "K1": KitPosition(S.DISPENSED, Place.subject(9)),
        "K2": KitPosition(S.DAMAGED, SITE),
        "K3": KitPosition(S.MISSING, SITE),
        "K4": KitPosition(S.DAMAGED, DEPOT),
    }
    assert START["K1"].state is S.AT_DEPOT  # the start is not changed
    assert mismatches(positions, positions) == ()


def test_replay_names_the_event_and_kit_of_an_illegal_transition():
    with pytest.raises(IllegalTransition, match="^event 11: kit K1 is dispensed") as refused:
        replay([*EVENTS, KitEvent("K1", A.SHIP)], START)
    assert refused.value.index == 11
    assert refused.value.kit == "K1"
    with pytest.raises(LedgerError, match="event 0: kit K7 has no starting position"):
        replay([KitEvent("K7", A.RESERVE, SHIPMENT)], START)


def test_mismatches_name_every_kit_that_differs():
    positions = replay(EVENTS, START)
    drifted = {**positions, "K2": KitPosition(S.AVAILABLE, SITE)}
    del drifted["K4"]
    assert mismatches(positions, drifted) == ("K2", "K4")


def test_reconcile_balances_received_kits_per_site():
    positions = replay(EVENTS, START)
    result = reconcile(positions, received_at_site=received_at_site(EVENTS))
    assert result.balanced
    tally = result.sites[10]
    assert tally.received == 3 == tally.accounted
    assert tally.by_state[S.DISPENSED] == tally.by_state[S.DAMAGED] == 1
    assert set(tally.by_state) == set(ACCOUNTED)
    assert result.overall.received == 3
    assert result.differences == ()


def test_reconcile_lists_the_kits_that_break_the_identity():
    positions = replay(EVENTS, START)
    receipts = received_at_site(EVENTS)
    # K1 back at the depot without an event, K4 appears at the site with no receipt.
    positions["K1"] = KitPosition(S.AT_DEPOT, DEPOT)
    positions["K4"] = KitPosition(S.AVAILABLE, SITE)
    # K2 turns up at another site.
    positions["K2"] = KitPosition(S.DAMAGED, OTHER_SITE)
    result = reconcile(positions, received_at_site=receipts)
    assert not result.balanced
    assert result.sites[10].received == 3
    assert result.sites[10].accounted == 1
    assert result.sites[10].differences == ("K1", "K2", "K4")
    assert result.sites[11].strays == ("K2",)
    assert result.differences == ("K1", "K2", "K4")


def test_a_return_is_verified_before_it_is_pending_destruction_then_destroyed():
    """Issue 15: dispensed -> returned (at the site) -> pending destruction -> destroyed; a kit
    the subject lost is missing at the site that dispensed it."""
    given = KitPosition(S.DISPENSED, Place.subject(3))
    back = transition(given, A.RETURN, to=SITE)
    assert back == KitPosition(S.RETURNED, SITE)
    verified = transition(back, A.VERIFY_RETURN)
    assert verified == KitPosition(S.PENDING_DESTRUCTION, SITE)
    assert transition(verified, A.DESTROY, to=Place.destroyed(2)).state is S.DESTROYED
    assert transition(given, A.RETURN_LOST, to=SITE) == KitPosition(S.MISSING, SITE)
