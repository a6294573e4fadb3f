"""Which kit a subject receives: first expiry, first out by LOT across every arm.

The rule (issue 10, finding 3; the lead's decision). The shelf is the site's usable kits of ALL
arms (usable = `supply.expiry.can_dispense_kit`). Its lots are ordered by (expiry, lot code).
Walk them in that order; the first lot that holds a usable kit of the slot's arm is the lot the
kit comes from, and the kit is chosen uniformly at random (a seedable `rng_index`) among that
arm's usable kits of the lot, sorted by kit number.

What this guarantees. While every lot on the shelf holds usable kits of every arm, the chosen
lot is the shelf's first lot whatever the arm, so the shelf a blinded user sees after the choice
(kits by lot and expiry) has the same distribution for every arm of the slot; the kit number
differs, but kit numbers carry no pattern by arm (`blinding.kits`, checked at import).

What the end of a lot can still reveal. When the first lot holds usable kits of one arm only
(its other kits were all dispensed), a subject of another arm receives a kit of the next lot
while kits of the first lot stay on the shelf: a blinded reader then learns that this subject's
arm differs from that of the leftover kits, and that the subjects who later receive the leftover
kits share one arm. The window is as wide as the lot's per-arm imbalance at the site and closes
when the leftover kits are dispensed (to subjects of their arm, first) or expire. It is kept
small because lots are packed balanced (kit import refuses a lot whose treatment counts differ
by more than the protocol's `lot_balance_tolerance`), resupply ships every arm, and the choice
inside a lot is uniform, so it adds nothing to what randomization itself does to the lot's
arms. Closing it entirely would need the choice to pass over kits (waste) or to refuse.

Decision: no usable kit is ever skipped. The choice never passes over a lot that holds a usable
kit of the slot's arm, so the lot chosen is the one per-arm first-expiry-first-out would choose
(ties between lots of one expiry go to the lot code, not to chance), and the waste by expiry is
no greater than under per-arm FEFO. The waste cost of a stricter rule is for the simulation.

Treatments are read lazily through `treatment_of`, lot by lot in pick order, so a caller that
unseals on demand unseals only the lots up to the one the kit comes from. While the first lot
holds both arms, that is the whole first lot whatever the arm, so the work done (and its time)
does not depend on the arm either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import groupby

__all__ = ["ShelfKit", "arms_on_shelf", "choose_kit", "count_by_arm", "lots_in_pick_order"]


@dataclass(frozen=True)
class ShelfKit:
    """A usable kit on a site's shelf as a blinded user sees it: number, lot code, lot expiry."""

    number: str
    lot: str
    expiry: date


def lots_in_pick_order(shelf: Iterable[ShelfKit]) -> list[list[ShelfKit]]:
    """The shelf grouped by lot, lots ordered by (expiry, lot code), kits by number."""
    ordered = sorted(shelf, key=lambda kit: (kit.expiry, kit.lot, kit.number))
    return [list(kits) for _, kits in groupby(ordered, key=lambda kit: (kit.expiry, kit.lot))]


def choose_kit(
    shelf: Sequence[ShelfKit],
    *,
    arm: str,
    treatment_of: Callable[[str], str],
    rng_index: Callable[[int], int],
) -> str | None:
    """The kit number to dispense for a slot of `arm`, or None when no kit of the arm is usable.

    `shelf`: the site's usable kits of every arm; `treatment_of(number)`: the kit's treatment,
    called only for kits of the lots walked (in pick order, up to the lot chosen);
    `rng_index(n)`: an index in [0, n), cryptographic in production, seeded in tests.
    Raises ValueError when rng_index answers outside [0, n).
    """
    for lot in lots_in_pick_order(shelf):
        of_arm = [kit.number for kit in lot if treatment_of(kit.number) == arm]
        if not of_arm:
            continue
        if len(of_arm) == 1:
            return of_arm[0]
        index = rng_index(len(of_arm))
        if not 0 <= index < len(of_arm):
            raise ValueError(
                f"rng_index({len(of_arm)}) returned {index}, outside 0..{len(of_arm) - 1}"
            )
        return of_arm[index]
    return None


def arms_on_shelf(
    shelf: Sequence[ShelfKit], *, arms: Iterable[str], treatment_of: Callable[[str], str]
) -> frozenset[str]:
    """Which of `arms` have a usable kit on the shelf, reading kits in pick order and stopping
    as soon as every arm is found (so a full shelf is not unsealed for a yes)."""
    wanted, found = frozenset(arms), set[str]()
    for lot in lots_in_pick_order(shelf):
        for kit in lot:
            found.add(treatment_of(kit.number))
            if wanted <= found:
                return wanted
    return wanted & found


def count_by_arm(
    shelf: Sequence[ShelfKit],
    *,
    arms: Iterable[str],
    treatment_of: Callable[[str], str],
    enough: int | None = None,
) -> dict[str, int]:
    """Usable kits per arm on `shelf`, reading kits in pick order. With `enough`, stops as soon
    as every arm has that many: the counts are then lower bounds, each at least `enough` (what
    a "is any arm below `enough`?" question needs, without unsealing the rest of the shelf).
    Without it, every kit is read and the counts are exact. Arms not in `arms` are counted too."""
    wanted = list(arms)
    counts = dict.fromkeys(wanted, 0)

    def done() -> bool:
        return enough is not None and all(counts[arm] >= enough for arm in wanted)

    if done():
        return counts
    for lot in lots_in_pick_order(shelf):
        for kit in lot:
            arm = treatment_of(kit.number)
            counts[arm] = counts.get(arm, 0) + 1
            if done():
                return counts
    return counts
