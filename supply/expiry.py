"""Expiry rules: when a kit is expired, may be shipped, may be dispensed (which kit goes first:
`supply.kit_choice`).

The rule of the day: a kit is usable through its expiry date and expired from the next day on.
The shipping and dispensing rules use the same reading: a kit passes when it is still usable on
the edge day (its expiry date is on or after the edge day), so with N = 0 each rule reduces to
"not expired". With the protocol's do_not_ship_days = 45 and today 1 March:

    expiry 14 April (= today + 44)  not shipped      it expires within 45 days
    expiry 15 April (= today + 45)  shipped          usable through the edge day
    expiry 16 April (= today + 46)  shipped

Dispensing (issue 12, finding 5): a kit dispensed at a visit must stay usable through the LAST
day of the window of the next dosing visit after that visit, plus do_not_dispense_days, so the
subject never holds an expired kit before the next one can be dispensed, however late in its
window that next visit is done. The date depends on the subject's schedule (day 1 and the
protocol's visit days and windows), never on when in the current window the kit is dispensed:
done early, on target or late, the same kits pass (`must_last_through`). With the shipped
protocol (V2 on day 29 +/- 3, V3 on day 57 +/- 3, buffer 7) and day 1 = 1 March:

    at randomization (V1)  through V2's window end 1 April (day 32)  expiry >= 8 April
    at V2 (day 26..32)     through V3's window end 29 April (day 60)  expiry >= 6 May

Decisions where the protocol is silent:
- The last dosing visit: its kit must last through the window end of the next visit of the
  schedule (the end-of-treatment visit, where unused kits come back); with no later visit at
  all, through the visit's own window end.
- An unscheduled or replacement kit is requested for a dosing visit and serves that visit's
  dosing interval: it must last exactly as long as that visit's scheduled kit.
- A kit is never dispensed unless usable on the dispensing day + the buffer either, so a visit
  done after the next visit's window has closed still gets a kit that will not expire in hand.

Usable stock (finding 6) is the same rule applied to a site's shelf (`usable_kits`): the kits
that could serve the next randomization today (dispensed at V1 of a subject whose day 1 is
today). Randomization, dispensing, resupply (threshold and predictive) and the daily run all
read stock through it. "today" is always passed in: no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TypeVar

from supply.states import KitAction, KitPosition, can

__all__ = [
    "ScheduleVisit",
    "can_dispense",
    "can_dispense_kit",
    "can_ship",
    "is_expired",
    "must_last_through",
    "usable_kits",
]

K = TypeVar("K")


@dataclass(frozen=True)
class ScheduleVisit:
    """A visit of the protocol's schedule: its code, target day (day 1 = randomization), window
    in days before and after the target, and whether kits are dispensed at it."""

    code: str
    day: int
    window_before: int
    window_after: int
    doses: bool


def must_last_through(schedule: Sequence[ScheduleVisit], *, day1: date, dispensed: str) -> date:
    """The date a kit dispensed at visit `dispensed` must stay usable through, before the
    do-not-dispense buffer: the last day of the window of the next dosing visit after it (or,
    after the last dosing visit, of the next visit; with none, of the visit itself).

    `schedule`: the protocol's visits (any order; ordered by day here); `day1`: the subject's
    randomization date. Raises ValueError when `dispensed` is not a dosing visit of it."""
    ordered = sorted(schedule, key=lambda visit: visit.day)
    index = next((i for i, v in enumerate(ordered) if v.code == dispensed and v.doses), None)
    if index is None:
        raise ValueError(f"{dispensed!r} is not a dosing visit of the schedule")
    later = ordered[index + 1 :]
    serves = next((v for v in later if v.doses), later[0] if later else ordered[index])
    return day1 + timedelta(days=serves.day - 1 + serves.window_after)


def is_expired(expiry: date, today: date) -> bool:
    """Whether a kit with this expiry date is expired today (usable through its expiry date)."""
    return today > expiry


def can_ship(expiry: date, today: date, do_not_ship_days: int) -> bool:
    """Whether a kit may leave the depot today: usable through today + do_not_ship_days."""
    if do_not_ship_days < 0:
        raise ValueError("do_not_ship_days: must be 0 or more")
    return expiry >= today + timedelta(days=do_not_ship_days)


def can_dispense(
    expiry: date, today: date, *, through: date | None, do_not_dispense_days: int
) -> bool:
    """Whether a kit may be dispensed today: not expired, and usable through `through` (from
    `must_last_through`) + do_not_dispense_days; never less than today + the buffer (an
    overdue visit, or `through` None for no schedule)."""
    if do_not_dispense_days < 0:
        raise ValueError("do_not_dispense_days: must be 0 or more")
    if is_expired(expiry, today):
        return False
    reference = today if through is None else max(today, through)
    return expiry >= reference + timedelta(days=do_not_dispense_days)


def usable_kits(
    kits: Iterable[tuple[K, date]], *, today: date, through: date | None, do_not_dispense_days: int
) -> list[K]:
    """The one definition of usable stock: of `kits` (each a kit and its lot's expiry, all
    available at a site), those that may be dispensed today for a visit whose kit must last
    through `through` (`can_dispense`), in the order given."""
    return [
        kit
        for kit, expiry in kits
        if can_dispense(expiry, today, through=through, do_not_dispense_days=do_not_dispense_days)
    ]


def can_dispense_kit(
    position: KitPosition,
    expiry: date,
    *,
    today: date,
    through: date | None,
    do_not_dispense_days: int,
) -> bool:
    """The whole dispensing guard: the kit is AVAILABLE at a site and its expiry allows it.

    Expired, quarantined, damaged, missing and not-yet-received kits are never available.
    """
    return can(position, KitAction.DISPENSE) and can_dispense(
        expiry, today, through=through, do_not_dispense_days=do_not_dispense_days
    )
