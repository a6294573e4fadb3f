"""The kit state machine: one state and one place per kit, and the one pure transition function.

A kit moves depot -> shipment -> site -> subject. Its position is a state and a place; each state
may only be held at certain kinds of place (PLACES), so a position such as "available at a depot"
cannot even be built. `transition` is the only way to compute a new position: it refuses a
(state, action) pair that is not a row of LEGAL, and a destination of the wrong kind.

Decisions (the rules of trial supply this module fixes):
- Quarantine never moves a kit. It is legal at a depot (AT_DEPOT) and at a site (AVAILABLE), and
  for a MISSING kit that turns up again (its integrity is unknown until the supply manager looks).
  An excursion in transit is declared at receipt: the shipment receipt records the good kits as
  received and then quarantines them, in the same transaction (see supply.shipments.receive).
- RELEASE returns a quarantined kit to the usable state of its place: AT_DEPOT at a depot,
  AVAILABLE at a site. REJECT turns it DAMAGED where it is.
- EXPIRE is legal for kits that are still usable or on hold (AT_DEPOT, AVAILABLE, QUARANTINED).
  A RESERVED kit must be unreserved first (the shipment is cancelled or re-planned); a kit in
  transit is received first and expired by the next expiry sweep. DAMAGED, RETURNED and MISSING
  kits keep their state: it says more than "expired" does.
- A return has two steps (issue 15): RETURN records the kit the subject brought back at a visit
  (RETURNED, at the site, unverified); VERIFY_RETURN is the pharmacist's check of the kit in hand,
  which puts it PENDING_DESTRUCTION. A kit the subject reports lost is RETURN_LOST: MISSING at the
  site that dispensed it (the site stays accountable for it, as for a kit missing at receipt).
- DESTROY takes PENDING_DESTRUCTION (verified returns), DAMAGED or EXPIRED kits to a destruction
  record (a place of kind DESTROYED whose id is that record); a RETURNED kit is verified first. A
  MISSING kit is never destroyed: it is written off as missing; if it is found it is quarantined,
  and only then rejected and destroyed or released.
- RECEIVE, RECEIVE_DAMAGED and RECEIVE_MISSING all take the kit to the shipment's destination
  site: the site is accountable for every kit of a received shipment, including the missing ones.
  That the site is the shipment's own destination is checked by supply.shipments, which knows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "DESTINATION",
    "LEGAL",
    "PLACES",
    "USABLE_AT",
    "IllegalTransition",
    "KitAction",
    "KitPosition",
    "KitState",
    "Place",
    "PlaceKind",
    "can",
    "transition",
]


class KitState(StrEnum):
    """Where a kit is in its life; exactly one per kit."""

    AT_DEPOT = "at_depot"
    RESERVED = "reserved"  # picked for a shipment that has not left the depot
    IN_TRANSIT = "in_transit"
    AWAITING_RECEIPT = "awaiting_receipt"  # delivered by the courier, not yet confirmed
    AVAILABLE = "available"  # at a site, dispensable if its expiry allows
    DISPENSED = "dispensed"
    RETURNED = "returned"  # brought back by the subject, not yet verified
    PENDING_DESTRUCTION = "pending_destruction"  # a verified return, waiting to be destroyed
    DAMAGED = "damaged"
    MISSING = "missing"
    QUARANTINED = "quarantined"
    EXPIRED = "expired"
    DESTROYED = "destroyed"


class KitAction(StrEnum):
    """What may happen to a kit; each is recorded as one kit event."""

    RESERVE = "reserve"
    UNRESERVE = "unreserve"
    SHIP = "ship"
    DELIVER = "deliver"
    RECEIVE = "receive"
    RECEIVE_DAMAGED = "receive_damaged"
    RECEIVE_MISSING = "receive_missing"
    QUARANTINE = "quarantine"
    RELEASE = "release"
    REJECT = "reject"
    DISPENSE = "dispense"
    REPORT_DAMAGED = "report_damaged"
    REPORT_LOST = "report_lost"
    RETURN = "return"
    RETURN_LOST = "return_lost"  # the subject says the dispensed kit is lost
    VERIFY_RETURN = "verify_return"
    EXPIRE = "expire"
    DESTROY = "destroy"


class PlaceKind(StrEnum):
    """The kinds of place a kit can be in."""

    DEPOT = "depot"
    SHIPMENT = "shipment"
    SITE = "site"
    SUBJECT = "subject"
    DESTROYED = "destroyed"  # the id is the destruction record


# Which kinds of place each state may be held in.
PLACES: Mapping[KitState, frozenset[PlaceKind]] = MappingProxyType(
    {
        KitState.AT_DEPOT: frozenset({PlaceKind.DEPOT}),
        KitState.RESERVED: frozenset({PlaceKind.SHIPMENT}),
        KitState.IN_TRANSIT: frozenset({PlaceKind.SHIPMENT}),
        KitState.AWAITING_RECEIPT: frozenset({PlaceKind.SHIPMENT}),
        KitState.AVAILABLE: frozenset({PlaceKind.SITE}),
        KitState.DISPENSED: frozenset({PlaceKind.SUBJECT}),
        KitState.RETURNED: frozenset({PlaceKind.SITE}),
        KitState.PENDING_DESTRUCTION: frozenset({PlaceKind.SITE}),
        KitState.DAMAGED: frozenset({PlaceKind.DEPOT, PlaceKind.SITE}),
        KitState.MISSING: frozenset({PlaceKind.DEPOT, PlaceKind.SITE}),
        KitState.QUARANTINED: frozenset({PlaceKind.DEPOT, PlaceKind.SITE}),
        KitState.EXPIRED: frozenset({PlaceKind.DEPOT, PlaceKind.SITE}),
        KitState.DESTROYED: frozenset({PlaceKind.DESTROYED}),
    }
)


@dataclass(frozen=True)
class Place:
    """A depot, shipment, site, subject or destruction record, by its row id."""

    kind: PlaceKind
    id: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", PlaceKind(self.kind))  # refuses an unknown kind

    @classmethod
    def depot(cls, id: int) -> Place:
        return cls(PlaceKind.DEPOT, id)

    @classmethod
    def shipment(cls, id: int) -> Place:
        return cls(PlaceKind.SHIPMENT, id)

    @classmethod
    def site(cls, id: int) -> Place:
        return cls(PlaceKind.SITE, id)

    @classmethod
    def subject(cls, id: int) -> Place:
        return cls(PlaceKind.SUBJECT, id)

    @classmethod
    def destroyed(cls, id: int) -> Place:
        return cls(PlaceKind.DESTROYED, id)

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"


@dataclass(frozen=True)
class KitPosition:
    """A kit's state and place; a state held at a kind of place it never is at is refused."""

    state: KitState
    place: Place

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", KitState(self.state))  # refuses an unknown state
        if self.place.kind not in PLACES[self.state]:
            allowed = " or ".join(sorted(PLACES[self.state]))
            raise ValueError(
                f"a kit in state {self.state} can only be at a {allowed}, not at {self.place}"
            )


S, A = KitState, KitAction

# The legal transitions: (state, action) -> next state. Any pair not listed is refused.
# RELEASE is the one action whose result depends on the place: USABLE_AT[place kind], i.e.
# AVAILABLE at a site (the value listed) and AT_DEPOT at a depot.
LEGAL: Mapping[tuple[KitState, KitAction], KitState] = MappingProxyType(
    {
        # depot and shipment
        (S.AT_DEPOT, A.RESERVE): S.RESERVED,
        (S.RESERVED, A.UNRESERVE): S.AT_DEPOT,
        (S.RESERVED, A.SHIP): S.IN_TRANSIT,
        (S.IN_TRANSIT, A.DELIVER): S.AWAITING_RECEIPT,
        # receipt at the site, with or without the courier's delivery recorded first
        (S.IN_TRANSIT, A.RECEIVE): S.AVAILABLE,
        (S.IN_TRANSIT, A.RECEIVE_DAMAGED): S.DAMAGED,
        (S.IN_TRANSIT, A.RECEIVE_MISSING): S.MISSING,
        (S.AWAITING_RECEIPT, A.RECEIVE): S.AVAILABLE,
        (S.AWAITING_RECEIPT, A.RECEIVE_DAMAGED): S.DAMAGED,
        (S.AWAITING_RECEIPT, A.RECEIVE_MISSING): S.MISSING,
        # quarantine (temperature excursion, supply-manager hold, a missing kit found)
        (S.AT_DEPOT, A.QUARANTINE): S.QUARANTINED,
        (S.AVAILABLE, A.QUARANTINE): S.QUARANTINED,
        (S.MISSING, A.QUARANTINE): S.QUARANTINED,
        (S.QUARANTINED, A.RELEASE): S.AVAILABLE,
        (S.QUARANTINED, A.REJECT): S.DAMAGED,
        # the subject
        (S.AVAILABLE, A.DISPENSE): S.DISPENSED,
        (S.DISPENSED, A.RETURN): S.RETURNED,
        (S.DISPENSED, A.RETURN_LOST): S.MISSING,
        (S.RETURNED, A.VERIFY_RETURN): S.PENDING_DESTRUCTION,
        # damage and loss where the kit is held
        (S.AT_DEPOT, A.REPORT_DAMAGED): S.DAMAGED,
        (S.AVAILABLE, A.REPORT_DAMAGED): S.DAMAGED,
        (S.AT_DEPOT, A.REPORT_LOST): S.MISSING,
        (S.AVAILABLE, A.REPORT_LOST): S.MISSING,
        (S.QUARANTINED, A.REPORT_LOST): S.MISSING,
        (S.DAMAGED, A.REPORT_LOST): S.MISSING,
        (S.EXPIRED, A.REPORT_LOST): S.MISSING,
        (S.RETURNED, A.REPORT_LOST): S.MISSING,
        (S.PENDING_DESTRUCTION, A.REPORT_LOST): S.MISSING,
        # expiry and destruction
        (S.AT_DEPOT, A.EXPIRE): S.EXPIRED,
        (S.AVAILABLE, A.EXPIRE): S.EXPIRED,
        (S.QUARANTINED, A.EXPIRE): S.EXPIRED,
        (S.PENDING_DESTRUCTION, A.DESTROY): S.DESTROYED,
        (S.DAMAGED, A.DESTROY): S.DESTROYED,
        (S.EXPIRED, A.DESTROY): S.DESTROYED,
    }
)

# What RELEASE gives, by the kind of place the quarantined kit is at.
USABLE_AT: Mapping[PlaceKind, KitState] = MappingProxyType(
    {PlaceKind.DEPOT: S.AT_DEPOT, PlaceKind.SITE: S.AVAILABLE}
)

# The kind of place an action moves the kit to; None: the kit stays where it is (and `to` must be
# omitted). SHIP and DELIVER keep the shipment place.
DESTINATION: Mapping[KitAction, PlaceKind | None] = MappingProxyType(
    {
        A.RESERVE: PlaceKind.SHIPMENT,
        A.UNRESERVE: PlaceKind.DEPOT,
        A.SHIP: None,
        A.DELIVER: None,
        A.RECEIVE: PlaceKind.SITE,
        A.RECEIVE_DAMAGED: PlaceKind.SITE,
        A.RECEIVE_MISSING: PlaceKind.SITE,
        A.QUARANTINE: None,
        A.RELEASE: None,
        A.REJECT: None,
        A.DISPENSE: PlaceKind.SUBJECT,
        A.REPORT_DAMAGED: None,
        A.REPORT_LOST: None,
        A.RETURN: PlaceKind.SITE,
        A.RETURN_LOST: PlaceKind.SITE,
        A.VERIFY_RETURN: None,
        A.EXPIRE: None,
        A.DESTROY: PlaceKind.DESTROYED,
    }
)

_STATE_WORDS: Mapping[KitState, str] = {
    S.AT_DEPOT: "at the depot",
    S.RESERVED: "reserved for a shipment",
    S.IN_TRANSIT: "in transit",
    S.AWAITING_RECEIPT: "awaiting receipt",
    S.AVAILABLE: "available",
    S.DISPENSED: "dispensed",
    S.RETURNED: "returned (not yet verified)",
    S.PENDING_DESTRUCTION: "pending destruction",
    S.DAMAGED: "damaged",
    S.MISSING: "missing",
    S.QUARANTINED: "quarantined",
    S.EXPIRED: "expired",
    S.DESTROYED: "destroyed",
}

_ACTION_WORDS: Mapping[KitAction, str] = {
    A.RESERVE: "reserved for a shipment",
    A.UNRESERVE: "put back into depot stock",
    A.SHIP: "shipped",
    A.DELIVER: "delivered",
    A.RECEIVE: "received",
    A.RECEIVE_DAMAGED: "received as damaged",
    A.RECEIVE_MISSING: "received as missing",
    A.QUARANTINE: "quarantined",
    A.RELEASE: "released from quarantine",
    A.REJECT: "rejected",
    A.DISPENSE: "dispensed",
    A.REPORT_DAMAGED: "reported damaged",
    A.REPORT_LOST: "reported lost",
    A.RETURN: "returned",
    A.RETURN_LOST: "reported lost by the subject",
    A.VERIFY_RETURN: "verified as returned",
    A.EXPIRE: "expired",
    A.DESTROY: "destroyed",
}


class IllegalTransition(Exception):
    """A refused kit action: the state, the action, the kit and why (field "action" or "to").

    `index` is the position of the event in a replayed ledger (supply.ledger.replay), if any.
    """

    def __init__(
        self,
        message: str,
        *,
        state: KitState,
        action: KitAction,
        kit: str = "",
        field: str = "action",
        index: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.state = state
        self.action = action
        self.kit = kit
        self.field = field
        self.index = index


def can(position: KitPosition, action: KitAction) -> bool:
    """Whether `action` is legal for a kit in this position (the destination aside)."""
    return (position.state, action) in LEGAL


def transition(
    position: KitPosition, action: KitAction, *, to: Place | None = None, kit: str = ""
) -> KitPosition:
    """The kit's next position after `action`, or IllegalTransition; `kit` only names it."""
    name = f"kit {kit}" if kit else "the kit"
    state = position.state
    if not can(position, action):
        raise IllegalTransition(
            f"{name} is {_STATE_WORDS[state]}; it cannot be {_ACTION_WORDS[action]}",
            state=state,
            action=action,
            kit=kit,
        )
    wanted = DESTINATION[action]
    if wanted is None:
        if to is not None:
            raise IllegalTransition(
                f"{name} stays where it is when {_ACTION_WORDS[action]}; no destination "
                f"({to}) may be given",
                state=state,
                action=action,
                kit=kit,
                field="to",
            )
        if action == A.RELEASE:
            return KitPosition(USABLE_AT[position.place.kind], position.place)
        return KitPosition(LEGAL[state, action], position.place)
    if to is None or to.kind != wanted:
        given = f"not {to}" if to is not None else "none was given"
        raise IllegalTransition(
            f"{name} can only be {_ACTION_WORDS[action]} to a {wanted}; {given}",
            state=state,
            action=action,
            kit=kit,
            field="to",
        )
    return KitPosition(LEGAL[state, action], to)
