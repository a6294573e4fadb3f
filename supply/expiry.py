"""Expiry rules: when a kit is expired, may be shipped, may be dispensed (which kit goes first:
`supply.kit_choice`).

The rule of the day: a kit is usable through its expiry date and expired from the next day on.
The shipping and dispensing rules use the same reading: a kit passes when it is still usable on
the edge day (its expiry date is on or after the edge day), so with N = 0 each rule reduces to
"not expired". With the protocol's do_not_ship_days = 45 and today 1 March:

    expiry 14 April (= today + 44)  not shipped      it expires within 45 days
    expiry 15 April (= today + 45)  shipped          usable through the edge day
    expiry 16 April (= today + 46)  shipped

Dispensing: the kit must stay usable through the next dosing visit + do_not_dispense_days (or
today + do_not_dispense_days when the subject has no further dosing visit), so the subject never
holds an expired kit before the next one is dispensed. "today" is always passed in: no clock.
"""

from __future__ import annotations

from datetime import date, timedelta

from supply.states import KitAction, KitPosition, can

__all__ = ["can_dispense", "can_dispense_kit", "can_ship", "is_expired"]


def is_expired(expiry: date, today: date) -> bool:
    """Whether a kit with this expiry date is expired today (usable through its expiry date)."""
    return today > expiry


def can_ship(expiry: date, today: date, do_not_ship_days: int) -> bool:
    """Whether a kit may leave the depot today: usable through today + do_not_ship_days."""
    if do_not_ship_days < 0:
        raise ValueError("do_not_ship_days: must be 0 or more")
    return expiry >= today + timedelta(days=do_not_ship_days)


def can_dispense(
    expiry: date, today: date, *, next_visit: date | None, do_not_dispense_days: int
) -> bool:
    """Whether a kit may be dispensed today: not expired, and usable through the next dosing
    visit + do_not_dispense_days (today + do_not_dispense_days when there is no next visit)."""
    if do_not_dispense_days < 0:
        raise ValueError("do_not_dispense_days: must be 0 or more")
    if is_expired(expiry, today):
        return False
    # An overdue next visit (planned before today) still needs the kit usable from today on.
    reference = today if next_visit is None else max(today, next_visit)
    return expiry >= reference + timedelta(days=do_not_dispense_days)


def can_dispense_kit(
    position: KitPosition,
    expiry: date,
    *,
    today: date,
    next_visit: date | None,
    do_not_dispense_days: int,
) -> bool:
    """The whole dispensing guard: the kit is AVAILABLE at a site and its expiry allows it.

    Expired, quarantined, damaged, missing and not-yet-received kits are never available.
    """
    return can(position, KitAction.DISPENSE) and can_dispense(
        expiry, today, next_visit=next_visit, do_not_dispense_days=do_not_dispense_days
    )
