"""Days of cover: how long a site's stock lasts at its expected consumption, read arm-blind.

THE BLIND. A blinded pharmacist or supply manager sees every site's cover and warning, so they
are computed only from figures that are the same whatever any subject's arm:
- the stock is the site's TOTAL usable kits of a kit type (every treatment together: the number
  the resupply trigger reads, supply/blind_resupply.py), never a per-treatment count;
- the consumption is the kits the site's subjects' remaining dosing visits need, every subject
  counted whatever their arm (each visit needs one kit of the subject's arm, so the total
  demand is arm-free), plus the expected new randomizations (each needs a day-1 kit).
Decision: cover is NOT the minimum over treatments. Which treatment runs out first depends on
who shares an arm, so a per-treatment cover (or its warning firing earlier for one site's mix)
would tell a blinded reader that two subjects share an arm. The per-treatment shortfall the
total cannot see is covered by the resupply guard (a top-up fires while every treatment still
holds its per-arm trigger) and, failing that, the audited per-arm emergency resupply.
So cover is a function of what the site's inventory (kits by state, lot and expiry) and its visit
board (who had which visit) already show a blinded reader, and of the protocol: it adds nothing
they could not compute themselves; the mirror-world test of it is
tests/integration/test_homes.py (two subjects' arms swapped, then every arm).
Across kit types the site's cover is the minimum (kit types are blinded labels, the same for
every arm).
Pure: plain values in and out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Cover", "days_of_cover"]


@dataclass(frozen=True)
class Cover:
    """`total`: the usable kits read; `days`: whole days from today the stock lasts (the first
    day it is short; None: beyond the horizon); `warn`: that day is within the warning horizon."""

    total: int
    days: int | None
    warn: bool


def days_of_cover(
    total: int,
    demand: Iterable[tuple[int, int]],
    *,
    randomizations_per_week: float,
    day1_kits: int,
    warn_within: int,
    horizon: int = 182,
) -> Cover:
    """The days `total` usable kits last: the first day (0 = today) on which the kits needed
    from today through that day exceed `total`, or None when that is beyond `horizon`.

    `demand` holds (day offset from today, kits) of the visits still to give (a visit whose
    window is already open counts on day 0); expected randomizations add `day1_kits` each time
    `randomizations_per_week` x days / 7 reaches a whole number. `warn` when the cover ends
    within `warn_within` days (the shipping lead time and a margin to act)."""
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise ValueError("total: must be a whole number, 0 or more")
    if horizon < 0 or warn_within < 0 or day1_kits < 0:
        raise ValueError("horizon, warn_within, day1_kits: 0 or more")
    if not math.isfinite(randomizations_per_week) or randomizations_per_week < 0:
        raise ValueError("randomizations_per_week: a finite number, 0 or more")
    by_day = [0] * (horizon + 1)
    for offset, kits in demand:
        if kits < 0:
            raise ValueError("demand: kits must be 0 or more")
        if offset <= horizon:
            by_day[max(offset, 0)] += kits
    needed = 0
    for day in range(horizon + 1):
        new = math.floor(randomizations_per_week * day / 7 + 1e-9)
        needed += by_day[day]
        if needed + new * day1_kits > total:
            return Cover(total, day, day <= warn_within)
    return Cover(total, None, False)
