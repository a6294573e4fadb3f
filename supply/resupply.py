"""Orders per arm, initial orders, depot picks, visits due; and the PER-ARM baseline policy.

The service's resupply decision is arm-agnostic (supply/blind_resupply.py, its guarantee and
POLICIES); this module holds what that decision and the initial/manual shipments share. Orders
are per arm for the service only (unblinded, never shown): what leaves the service is the
manifest (kit numbers) and totals. Initial and manual orders hold at least one kit of every arm
and round every arm's share up, so no arm is favoured by its position in a list. The shortfall
returned by allocate_from_depot is per arm for the service only: an alert to the (blinded)
supply manager gives the kit type and total, never the arms.

threshold_policy is the per-arm policy the service used before issue 10: it fires when some
arm's dispensable count is <= trigger, so its timing and size tell who shares an arm. It is kept
only as the baseline bench/bench_resupply_blind.py measures the guard's stock cost against.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction
from typing import NamedTuple

from supply.expiry import can_ship

__all__ = [
    "Order",
    "ScheduledVisit",
    "SiteStock",
    "allocate_from_depot",
    "initial_order",
    "threshold_policy",
    "visits_due",
]


def _counts(per_arm: Mapping[str, int], what: str) -> dict[str, int]:
    counts = dict(per_arm)
    for arm, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{what}[{arm!r}]: must be a whole number, 0 or more")
    return counts


@dataclass(frozen=True)
class SiteStock:
    """Dispensable kits of one kit type at one site, per arm (unblinded: inside the service)."""

    per_arm: Mapping[str, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_arm", _counts(self.per_arm, "stock"))


@dataclass(frozen=True)
class Order:
    """Kits of one kit type to send, per arm (unblinded: inside the service)."""

    per_arm: Mapping[str, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_arm", _counts(self.per_arm, "order"))

    @property
    def total(self) -> int:
        return sum(self.per_arm.values())


def _arm_list(arms: Sequence[str], *named: Mapping[str, object]) -> list[str]:
    listed = list(arms)
    if not listed:
        raise ValueError("arms: at least one arm is needed")
    if len(set(listed)) != len(listed):
        raise ValueError("arms: each arm must be listed once")
    for mapping in named:
        unknown = sorted(set(mapping) - set(listed))
        if unknown:
            raise ValueError(f"arm {unknown[0]!r} is not one of the trial's arms")
    return listed


def threshold_policy(
    stock: SiteStock, *, trigger: int, maximum: int, open_shipment: bool, arms: Sequence[str]
) -> Order | None:
    """Baseline only (reveals the split): fill every arm up to `maximum` when some arm is down
    to `trigger` kits or fewer."""
    listed = _arm_list(arms, stock.per_arm)
    if not 0 <= trigger < maximum:
        raise ValueError("trigger: must be 0 or more and below maximum")
    if open_shipment:
        return None
    counts = {arm: stock.per_arm.get(arm, 0) for arm in listed}
    if all(count > trigger for count in counts.values()):
        return None
    return Order({arm: max(maximum - count, 1) for arm, count in counts.items()})


def _shares(total: float | int, ratio: Mapping[str, int], arms: list[str]) -> dict[str, int]:
    """`total` split by ratio, each share rounded up (so no arm is favoured by its position)."""
    weights = {arm: ratio.get(arm, 0) for arm in arms}
    if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in weights.values()):
        raise ValueError("ratio: every arm needs a whole-number ratio of 1 or more")
    whole = sum(weights.values())
    return {arm: math.ceil(Fraction(total) * w / whole) for arm, w in weights.items()}


def initial_order(quantity: int, *, ratio: Mapping[str, int], arms: Sequence[str]) -> Order:
    """A new site's first shipment of one kit type: the protocol quantity split by ratio.

    Each arm's share is rounded up, so every arm gets at least one kit and no arm gets more
    because of where it is listed; the order may exceed `quantity` by less than one kit per arm
    (quantity 7 at 1:1 gives 4 + 4).
    """
    listed = _arm_list(arms, ratio)
    if isinstance(quantity, bool) or quantity < 1:
        raise ValueError("quantity: an initial shipment needs at least one kit")
    return Order({arm: max(share, 1) for arm, share in _shares(quantity, ratio, listed).items()})


def allocate_from_depot(
    order: Order,
    depot: Mapping[str, Sequence[tuple[str, date]]],
    *,
    today: date,
    do_not_ship_days: int,
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Depot kits to ship for `order`: per arm, shippable kits first-expiry-first-out.

    `depot` maps each arm to its kits at the depot, as (kit number, expiry). Kits expiring within
    do_not_ship_days are never picked; ties in expiry go by kit number, so the manifest depends
    only on the set of kits, not on which arm a kit belongs to. Returns the kit numbers chosen
    per arm and the shortfall per arm (only arms that are short), for the service's alert.
    """
    owner: dict[str, str] = {}
    for arm, kits in depot.items():
        for kit, _ in kits:
            if owner.setdefault(kit, arm) != arm:
                raise ValueError(f"kit {kit} is listed under more than one arm")
    chosen: dict[str, list[str]] = {}
    shortfall: dict[str, int] = {}
    for arm in sorted(order.per_arm):
        wanted = order.per_arm[arm]
        shippable = sorted(
            (expiry, kit)
            for kit, expiry in depot.get(arm, ())
            if can_ship(expiry, today, do_not_ship_days)
        )
        chosen[arm] = [kit for _, kit in shippable[:wanted]]
        if len(chosen[arm]) < wanted:
            shortfall[arm] = wanted - len(chosen[arm])
    return chosen, shortfall


class ScheduledVisit(NamedTuple):
    """A dosing visit of the protocol: target day (day 1 = randomization), window, kits."""

    day: int
    window_before: int
    window_after: int
    kits: int


def visits_due(
    schedule: Iterable[tuple[int, int, int, int]],
    randomized_on: date,
    today: date,
    horizon_days: int,
) -> int:
    """Kits one subject may need from today through today + horizon_days.

    `schedule` is the visits the subject has not had yet, as (day, window_before, window_after,
    kits). A visit counts when its window (target - before .. target + after, target = the
    randomization date + day - 1) overlaps today .. today + horizon_days: a visit whose window is
    open but not yet attended counts; one whose window closed before today was missed.
    """
    if horizon_days < 0:
        raise ValueError("horizon_days: must be 0 or more")
    last = today + timedelta(days=horizon_days)
    total = 0
    for day, before, after, kits in schedule:
        target = randomized_on + timedelta(days=day - 1)
        opens, closes = target - timedelta(days=before), target + timedelta(days=after)
        if opens <= last and closes >= today:
            total += kits
    return total
