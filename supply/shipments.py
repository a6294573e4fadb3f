"""The shipment state machine, and the kit events each of its steps asks the ledger to record.

    REQUESTED --ship(courier, tracking)--> SHIPPED --deliver--> DELIVERED
        |                                     |                     |
        +--cancel--> CANCELLED                +------receive--------+--> RECEIVED

A shipment is requested with the kits picked for it (they become RESERVED in it); `cancel` puts
them back into depot stock; `ship` needs a courier and a tracking number; `deliver` records the
courier's proof of delivery (optional); `receive` needs the pharmacist's condition for EVERY kit
of the shipment, exactly once: good, damaged or missing. With a temperature excursion, the good
kits are received and then quarantined in the same receipt, so none is ever dispensable.

Each step returns the new shipment and the kit events to apply (supply.ledger.KitEvent); the
service applies them through supply.states.transition and saves both. Shipments name kits by
number only: a manifest never says which treatment a kit holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType

from supply.ledger import KitEvent
from supply.states import KitAction, Place

__all__ = [
    "CONDITION_ACTIONS",
    "STEPS",
    "Condition",
    "Shipment",
    "ShipmentError",
    "ShipmentState",
    "ShipmentStep",
    "ShipmentTally",
    "can",
    "cancel",
    "deliver",
    "receive",
    "request",
    "ship",
    "tally",
]


class ShipmentState(StrEnum):
    """Where a shipment is in its life."""

    REQUESTED = "requested"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    RECEIVED = "received"
    CANCELLED = "cancelled"


class ShipmentStep(StrEnum):
    """What may happen to a shipment after it is requested."""

    SHIP = "ship"
    DELIVER = "deliver"
    RECEIVE = "receive"
    CANCEL = "cancel"


class Condition(StrEnum):
    """The pharmacist's finding for one kit of a received shipment."""

    GOOD = "good"
    DAMAGED = "damaged"
    MISSING = "missing"


St = ShipmentState
STEPS: Mapping[tuple[ShipmentState, ShipmentStep], ShipmentState] = MappingProxyType(
    {
        (St.REQUESTED, ShipmentStep.SHIP): St.SHIPPED,
        (St.REQUESTED, ShipmentStep.CANCEL): St.CANCELLED,
        (St.SHIPPED, ShipmentStep.DELIVER): St.DELIVERED,
        (St.SHIPPED, ShipmentStep.RECEIVE): St.RECEIVED,
        (St.DELIVERED, ShipmentStep.RECEIVE): St.RECEIVED,
    }
)

CONDITION_ACTIONS: Mapping[Condition, KitAction] = MappingProxyType(
    {
        Condition.GOOD: KitAction.RECEIVE,
        Condition.DAMAGED: KitAction.RECEIVE_DAMAGED,
        Condition.MISSING: KitAction.RECEIVE_MISSING,
    }
)


class ShipmentError(Exception):
    """A refused shipment step: the field at fault and a message naming the rule (and kit)."""

    def __init__(self, message: str, *, field: str, kit: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.kit = kit


@dataclass(frozen=True)
class Shipment:
    """A shipment from a depot to a site of the listed kits (in manifest order)."""

    id: int
    depot: int
    site: int
    kits: tuple[str, ...]
    state: ShipmentState = ShipmentState.REQUESTED
    courier: str = ""
    tracking: str = ""
    excursion: bool = False
    conditions: tuple[tuple[str, Condition], ...] = ()  # the receipt, in manifest order

    @property
    def place(self) -> Place:
        return Place.shipment(self.id)


@dataclass(frozen=True)
class ShipmentTally:
    """shipped = received (good) + damaged + missing, once the shipment is received."""

    shipped: int
    received: int
    damaged: int
    missing: int
    in_transit: int  # shipped and not yet receipted

    @property
    def balanced(self) -> bool:
        return self.shipped == self.received + self.damaged + self.missing + self.in_transit


def can(shipment: Shipment, step: ShipmentStep) -> bool:
    """Whether `step` is legal for the shipment in its current state."""
    return (shipment.state, step) in STEPS


def _step(shipment: Shipment, step: ShipmentStep) -> ShipmentState:
    if not can(shipment, step):
        raise ShipmentError(
            f"shipment {shipment.id} is {shipment.state}; it cannot be {_PAST[step]}",
            field="state",
        )
    return STEPS[shipment.state, step]


_PAST: Mapping[ShipmentStep, str] = {
    ShipmentStep.SHIP: "shipped",
    ShipmentStep.DELIVER: "delivered",
    ShipmentStep.RECEIVE: "received",
    ShipmentStep.CANCEL: "cancelled",
}


def request(
    *, shipment_id: int, depot: int, site: int, kits: Iterable[str]
) -> tuple[Shipment, tuple[KitEvent, ...]]:
    """A new shipment of `kits`, and the RESERVE events that put them in it."""
    manifest = tuple(kits)
    if not manifest:
        raise ShipmentError("a shipment must contain at least one kit", field="kits")
    twice = sorted(k for k, n in Counter(manifest).items() if n > 1)
    if twice:
        raise ShipmentError(
            f"kit {twice[0]} is listed more than once in shipment {shipment_id}",
            field="kits",
            kit=twice[0],
        )
    shipment = Shipment(id=shipment_id, depot=depot, site=site, kits=manifest)
    return shipment, tuple(KitEvent(k, KitAction.RESERVE, shipment.place) for k in manifest)


def ship(
    shipment: Shipment, *, courier: str, tracking: str
) -> tuple[Shipment, tuple[KitEvent, ...]]:
    """The shipment handed to `courier` under `tracking`, and the SHIP events of its kits."""
    state = _step(shipment, ShipmentStep.SHIP)
    if not courier.strip():
        raise ShipmentError("courier: a shipment cannot leave without a courier", field="courier")
    if not tracking.strip():
        raise ShipmentError(
            "tracking: a shipment cannot leave without a tracking number", field="tracking"
        )
    shipped = replace(shipment, state=state, courier=courier.strip(), tracking=tracking.strip())
    return shipped, tuple(KitEvent(k, KitAction.SHIP) for k in shipment.kits)


def deliver(shipment: Shipment) -> tuple[Shipment, tuple[KitEvent, ...]]:
    """The courier's delivery recorded; the kits await the pharmacist's receipt."""
    state = _step(shipment, ShipmentStep.DELIVER)
    return replace(shipment, state=state), tuple(
        KitEvent(k, KitAction.DELIVER) for k in shipment.kits
    )


def cancel(shipment: Shipment) -> tuple[Shipment, tuple[KitEvent, ...]]:
    """A requested shipment cancelled; its kits go back into the depot's stock."""
    state = _step(shipment, ShipmentStep.CANCEL)
    depot = Place.depot(shipment.depot)
    return replace(shipment, state=state), tuple(
        KitEvent(k, KitAction.UNRESERVE, depot) for k in shipment.kits
    )


def receive(
    shipment: Shipment,
    lines: Mapping[str, Condition | str] | Iterable[tuple[str, Condition | str]],
    *,
    excursion: bool,
) -> tuple[Shipment, tuple[KitEvent, ...]]:
    """The pharmacist's receipt: every kit of the shipment exactly once, with its condition.

    A condition may be given as its value ("good", "damaged", "missing"); any other is refused.
    Returns the received shipment and the events: one receipt event per kit (manifest order),
    then, after a temperature excursion, QUARANTINE for each good kit.
    """
    state = _step(shipment, ShipmentStep.RECEIVE)
    pairs = list(lines.items()) if isinstance(lines, Mapping) else list(lines)
    in_shipment = set(shipment.kits)
    found: dict[str, Condition] = {}
    for kit, condition in pairs:
        if kit not in in_shipment:
            raise ShipmentError(
                f"kit {kit} is not in shipment {shipment.id}", field="lines", kit=kit
            )
        if kit in found:
            raise ShipmentError(
                f"kit {kit} is listed more than once in the receipt", field="lines", kit=kit
            )
        try:
            found[kit] = Condition(condition)
        except ValueError:
            raise ShipmentError(
                f"kit {kit}: condition must be good, damaged or missing, not {condition!r}",
                field="lines",
                kit=kit,
            ) from None
    for kit in shipment.kits:
        if kit not in found:
            raise ShipmentError(
                f"kit {kit} of shipment {shipment.id} is not in the receipt; every kit must be "
                "confirmed as good, damaged or missing",
                field="lines",
                kit=kit,
            )
    site = Place.site(shipment.site)
    events = [KitEvent(k, CONDITION_ACTIONS[found[k]], site) for k in shipment.kits]
    if excursion:
        events += [
            KitEvent(k, KitAction.QUARANTINE) for k in shipment.kits if found[k] is Condition.GOOD
        ]
    received = replace(
        shipment,
        state=state,
        excursion=excursion,
        conditions=tuple((k, found[k]) for k in shipment.kits),
    )
    return received, tuple(events)


def tally(shipment: Shipment) -> ShipmentTally:
    """The shipment's counts: shipped, received good, damaged, missing, still in transit."""
    shipped = len(shipment.kits) if shipment.state in (St.SHIPPED, St.DELIVERED, St.RECEIVED) else 0
    found = Counter(condition for _, condition in shipment.conditions)
    receipted = sum(found.values())
    return ShipmentTally(
        shipped=shipped,
        received=found[Condition.GOOD],
        damaged=found[Condition.DAMAGED],
        missing=found[Condition.MISSING],
        in_transit=shipped - receipted if shipment.state != St.RECEIVED else 0,
    )
