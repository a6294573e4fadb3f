"""The kit-event ledger: replaying it, checking it against current positions, reconciling counts.

The service saves every kit state change as one insert-only kit event (kit, action, destination).
Replaying the events from the kits' starting positions (as imported at the depot) through
supply.states.transition must give the current positions; `mismatches` names every kit where it
does not. `reconcile` checks the accountability identity of each site:

    received = available + dispensed + damaged + missing + expired + quarantined + returned
               + destroyed

where "received" counts every kit of the shipments receipted at the site, whatever the
pharmacist found it to be (good, damaged or missing): from the receipt on, the site accounts for
it. A kit is accounted only while its position is one a received kit can have: one of those
states, held at that same site, with its subject (dispensed) or at a destruction record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from supply.states import IllegalTransition, KitAction, KitPosition, KitState, Place, PlaceKind
from supply.states import transition as _transition

__all__ = [
    "ACCOUNTED",
    "RECEIPT_ACTIONS",
    "KitEvent",
    "LedgerError",
    "Reconciliation",
    "SiteTally",
    "mismatches",
    "received_at_site",
    "reconcile",
    "replay",
]

# The states a kit received at a site may be in afterwards (the right-hand side of the identity).
ACCOUNTED: tuple[KitState, ...] = (
    KitState.AVAILABLE,
    KitState.DISPENSED,
    KitState.DAMAGED,
    KitState.MISSING,
    KitState.EXPIRED,
    KitState.QUARANTINED,
    KitState.RETURNED,
    KitState.PENDING_DESTRUCTION,
    KitState.DESTROYED,
)
RECEIPT_ACTIONS = frozenset(
    {KitAction.RECEIVE, KitAction.RECEIVE_DAMAGED, KitAction.RECEIVE_MISSING}
)


@dataclass(frozen=True)
class KitEvent:
    """One row of the kit ledger: `action` applied to kit number `kit`, moving it `to` a place."""

    kit: str
    action: KitAction
    to: Place | None = None


class LedgerError(Exception):
    """An event the ledger cannot place: it names a kit with no starting position."""

    def __init__(self, message: str, *, kit: str, index: int) -> None:
        super().__init__(message)
        self.message = message
        self.kit = kit
        self.index = index


def replay(events: Iterable[KitEvent], start: Mapping[str, KitPosition]) -> dict[str, KitPosition]:
    """The positions after applying `events` in order to `start` (kit number -> position)."""
    positions = dict(start)
    for index, event in enumerate(events):
        if event.kit not in positions:
            raise LedgerError(
                f"event {index}: kit {event.kit} has no starting position",
                kit=event.kit,
                index=index,
            )
        try:
            positions[event.kit] = _transition(
                positions[event.kit], event.action, to=event.to, kit=event.kit
            )
        except IllegalTransition as refused:
            raise IllegalTransition(
                f"event {index}: {refused.message}",
                state=refused.state,
                action=refused.action,
                kit=refused.kit,
                field=refused.field,
                index=index,
            ) from refused
    return positions


def mismatches(
    expected: Mapping[str, KitPosition], actual: Mapping[str, KitPosition]
) -> tuple[str, ...]:
    """Kit numbers whose position differs between the two (or that only one of them has)."""
    kits = set(expected) | set(actual)
    return tuple(sorted(k for k in kits if expected.get(k) != actual.get(k)))


def received_at_site(events: Iterable[KitEvent]) -> dict[str, int]:
    """Kit number -> the site whose receipt accounted for it (good, damaged or missing)."""
    receipts: dict[str, int] = {}
    for event in events:
        if event.action in RECEIPT_ACTIONS and event.to is not None:
            receipts[event.kit] = event.to.id
    return receipts


@dataclass(frozen=True)
class SiteTally:
    """One site's identity (or the trial's, summed): kits received, and where they are now."""

    site: int | None  # None for the overall tally
    received: int
    by_state: Mapping[KitState, int]  # accounted kits by state, every ACCOUNTED state present
    unaccounted: tuple[str, ...] = ()  # received here, but in a position that breaks the identity
    strays: tuple[str, ...] = ()  # held at this site, but no receipt here accounts for them
    accounted: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "accounted", sum(self.by_state.values()))

    @property
    def balanced(self) -> bool:
        """received equals the sum of the accounted states, and no kit is there unaccounted."""
        return self.received == self.accounted and not self.strays

    @property
    def differences(self) -> tuple[str, ...]:
        """The kit numbers that break the identity, sorted."""
        return tuple(sorted(set(self.unaccounted) | set(self.strays)))


@dataclass(frozen=True)
class Reconciliation:
    """Every site's tally and the overall one."""

    sites: Mapping[int, SiteTally]
    overall: SiteTally

    @property
    def balanced(self) -> bool:
        return self.overall.balanced and all(t.balanced for t in self.sites.values())

    @property
    def differences(self) -> tuple[str, ...]:
        return self.overall.differences


def _accounted_at(position: KitPosition | None, site: int) -> bool:
    """Whether a kit received at `site` is in a position the identity counts."""
    if position is None or position.state not in ACCOUNTED:
        return False
    place = position.place
    if place.kind == PlaceKind.SITE:
        return place.id == site
    return place.kind in (PlaceKind.SUBJECT, PlaceKind.DESTROYED)


def reconcile(
    positions: Mapping[str, KitPosition], *, received_at_site: Mapping[str, int]
) -> Reconciliation:
    """Each site's and the overall tally of the identity; `received_at_site`: kit -> site."""
    received_by_site: dict[int, list[str]] = {}
    for kit, site in received_at_site.items():
        received_by_site.setdefault(site, []).append(kit)
    held_by_site: dict[int, list[str]] = {}
    for kit, position in positions.items():
        if position.place.kind == PlaceKind.SITE:
            held_by_site.setdefault(position.place.id, []).append(kit)
    tallies: dict[int, SiteTally] = {}
    for site in sorted(set(received_by_site) | set(held_by_site)):
        received = received_by_site.get(site, [])
        counts: Counter[KitState] = Counter()
        unaccounted: list[str] = []
        for kit in received:
            held = positions.get(kit)
            if held is not None and _accounted_at(held, site):
                counts[held.state] += 1
            else:
                unaccounted.append(kit)
        strays = [k for k in held_by_site.get(site, []) if received_at_site.get(k) != site]
        tallies[site] = SiteTally(
            site=site,
            received=len(received),
            by_state={state: counts[state] for state in ACCOUNTED},
            unaccounted=tuple(sorted(unaccounted)),
            strays=tuple(sorted(strays)),
        )
    overall = SiteTally(
        site=None,
        received=sum(t.received for t in tallies.values()),
        by_state={s: sum(t.by_state[s] for t in tallies.values()) for s in ACCOUNTED},
        unaccounted=tuple(sorted(k for t in tallies.values() for k in t.unaccounted)),
        strays=tuple(sorted(k for t in tallies.values() for k in t.strays)),
    )
    return Reconciliation(sites=tallies, overall=overall)
