"""Arm-agnostic resupply: decided from what a blinded role can observe, so it reveals nothing.

The guarantee (issue 10, README rule 2). For one kit type at one site:
- The top-up TRIGGER reads one number only: the site's TOTAL usable stock (kits of every
  treatment that could serve the next randomization: dispensable through the next dosing visit
  plus the do-not-dispense buffer). It fires when total <= total_trigger and no shipment to the
  site is open. The runs happen at fixed times (daily job, scheduled intra-day run), never
  inside a randomization or dispensing, so a shipment's timing depends on the clock and the
  total, never on which arm the last subjects got.
- The top-up SIZE is a function of the total alone: sum(maxima) - total. When every treatment is
  at or below its maximum (always so unless a manual shipment overfilled it) that brings every
  treatment exactly to its maximum. Decision: when some treatment is above its maximum, the size
  stays sum(maxima) - total and is spread over the treatments below their maximum, one kit at a
  time to the one furthest below (ties by the protocol's arm order) - the size still reveals
  nothing, and those arms end as close to their maximum as the size allows.
- The split of the size over treatments is decided inside the service, from sealed data, and no
  blinded role sees it: manifests list kit numbers, which carry no pattern by arm.
- The imbalance GUARD: total_trigger = n_arms * per-arm trigger + guard, where the guard covers
  the per-arm stock imbalance the site can accumulate. An arm is <= the per-arm trigger t while
  the total is above total_trigger only if the imbalance exceeds the guard. Two exact guards:
  * cap_guard: every arm <= its maximum gives min arm >= total - sum(other maxima), so
    guard = max_a(t + sum_{b != a} M_b) - n*t = (n-1)(M-t) for equal maxima. Exact whatever
    the design; costly when the maximum is large (the site reorders after n*M - T kits).
  * block_guard: with blocks kept per site (site among the stratification factors), equal
    ratio, and each subject's doses given in randomization order, the stock imbalance since the
    last top-up is a sum over the dosing visits of contiguous stretches of a permuted-block
    sequence: guard = n * strata_at_site * doses_per_subject * 2h, h = max_b b(n-1)/n^2 (the
    largest deviation of one arm's count from its share inside a block). Lead time does not
    enter: it is covered by the per-arm trigger t (the demand over a run interval + lead time).
  exact_guard() takes the smaller. With an exact guard the policy fires whenever the per-arm
  threshold policy (trigger t, maximum M) would, so no arm runs out while another is stocked.
- When the design does not bound a site's imbalance (the shipped protocol stratifies by disease
  only: a site's subjects are a scattered subset of two block sequences) the guard is either the
  cap guard (exact; the shipped choice, as its maximum is small) or a quantile of the imbalance
  measured by bench/bench_resupply_blind.py. Either way the per-arm EMERGENCY resupply
  (emergency_short) remains as the fallback, for a quantile guard's misses and for a treatment
  overfilled by a manual shipment: the only arm-dependent supply event; it is audited under its
  own action and alert kind, and its rate is reported by the bench.
Pure: plain values in and out; the arms' stocks (unblinded) never leave the service.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "POLICIES",
    "TopUpLevels",
    "block_guard",
    "cap_guard",
    "emergency_short",
    "exact_guard",
    "predictive_levels",
    "predictive_total_need",
    "split_top_up",
    "threshold_levels",
    "top_up_size",
]


@dataclass(frozen=True)
class TopUpLevels:
    """One kit type's arm-agnostic levels: kits per treatment (maximum, emergency minimum) and
    kits of all treatments together (total trigger, of which `guard` covers imbalance)."""

    maximum: int
    total_trigger: int
    guard: int
    emergency_minimum: int

    def __post_init__(self) -> None:
        for name in ("maximum", "total_trigger", "guard", "emergency_minimum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: must be a whole number, 0 or more")
        if self.maximum < 1:
            raise ValueError("maximum: at least one kit per treatment")
        if self.guard > self.total_trigger:
            raise ValueError("guard: must not exceed total_trigger")
        if self.emergency_minimum > self.maximum:
            raise ValueError("emergency_minimum: must not exceed maximum")

    def per_arm_trigger(self, n_arms: int) -> int:
        """The per-arm trigger t the total trigger stands for: (total_trigger - guard) // n."""
        return (self.total_trigger - self.guard) // n_arms


def top_up_size(total: int, *, n_arms: int, levels: TopUpLevels, open_shipment: bool) -> int:
    """Kits to ship (all treatments together), 0 when no top-up is due.

    Fires when `total` (usable kits of every treatment at the site) <= levels.total_trigger and
    no shipment to the site is open; the size is n_arms * maximum - total. A function of the
    total alone: this is the whole of what the decision reads.
    """
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise ValueError("total: must be a whole number, 0 or more")
    if n_arms < 1:
        raise ValueError("n_arms: at least one arm")
    if open_shipment or total > levels.total_trigger:
        return 0
    return max(n_arms * levels.maximum - total, 0)


def split_top_up(
    size: int, stock: Mapping[str, int], *, arms: Sequence[str], maximum: int
) -> dict[str, int]:
    """Inside the service only: how the `size` kits of a top-up divide over the treatments.

    Every arm at or below `maximum`: each gets maximum - stock (they sum to size exactly).
    Otherwise kits go one at a time to the arm furthest below its maximum (ties: arm order).
    """
    listed = list(arms)
    if len(set(listed)) != len(listed) or not listed:
        raise ValueError("arms: each arm once, at least one")
    if set(stock) - set(listed):
        raise ValueError(f"arm {sorted(set(stock) - set(listed))[0]!r} is not one of the arms")
    level = {arm: stock.get(arm, 0) for arm in listed}
    order = dict.fromkeys(listed, 0)
    for _ in range(size):
        arm = max(listed, key=lambda a: (maximum - level[a] - order[a], -listed.index(a)))
        if maximum - level[arm] - order[arm] <= 0:
            break  # every arm is full: the rest of the size cannot be placed without overfilling
        order[arm] += 1
    return order


def emergency_short(
    stock: Mapping[str, int], *, arms: Sequence[str], levels: TopUpLevels, open_shipment: bool
) -> bool:
    """Inside the service only: the per-arm fallback. True when some arm's usable stock is below
    the emergency minimum (what the next randomization or visit of that arm needs) and no
    shipment to the site is open. The only arm-dependent supply decision; audited as such."""
    if open_shipment:
        return False
    return any(stock.get(arm, 0) < levels.emergency_minimum for arm in arms)


def cap_guard(*, n_arms: int, maximum: int, per_arm_trigger: int) -> int:
    """The guard that is exact for any design: (n - 1) * (maximum - t), valid while no arm is
    above its maximum (top-ups never overfill; only a manual shipment can)."""
    if n_arms < 1 or not 0 <= per_arm_trigger < maximum:
        raise ValueError("per_arm_trigger: must be 0 or more and below maximum")
    return (n_arms - 1) * (maximum - per_arm_trigger)


def block_guard(
    *, block_sizes: Sequence[int], n_arms: int, strata_at_site: int, doses_per_subject: int
) -> int:
    """The guard when blocks are kept per site (equal ratio): n * S * V * 2h, rounded up, with
    h = max block size * (n - 1) / n^2. Assumes each dosing visit's kits are given in the
    subjects' randomization order (the model of tests/unit/test_supply_blind_resupply.py)."""
    if not block_sizes or any(b < n_arms or b % n_arms for b in block_sizes):
        raise ValueError("block_sizes: each a positive multiple of the number of arms")
    if strata_at_site < 1 or doses_per_subject < 1:
        raise ValueError("strata_at_site, doses_per_subject: at least 1")
    h = Fraction(max(block_sizes) * (n_arms - 1), n_arms * n_arms)
    return math.ceil(n_arms * strata_at_site * doses_per_subject * 2 * h)


def exact_guard(
    *,
    n_arms: int,
    maximum: int,
    per_arm_trigger: int,
    block_sizes: Sequence[int] | None = None,
    strata_at_site: int = 1,
    doses_per_subject: int = 1,
) -> int:
    """The smaller exact guard: cap_guard, or block_guard when blocks are kept per site."""
    guard = cap_guard(n_arms=n_arms, maximum=maximum, per_arm_trigger=per_arm_trigger)
    if block_sizes:
        guard = min(
            guard,
            block_guard(
                block_sizes=block_sizes,
                n_arms=n_arms,
                strata_at_site=strata_at_site,
                doses_per_subject=doses_per_subject,
            ),
        )
    return guard


def predictive_total_need(
    *, visits_due: int, expected_randomizations: float, n_arms: int, safety_stock: int, guard: int
) -> int:
    """The predictive policy's total trigger, from blinded-observable counts only.

    visits_due: kits the site's subjects (all arms together) may need over the lead time;
    each expected randomization needs a kit of whichever arm it gets, so it counts once per arm
    (rounded up); safety_stock is per treatment; guard as for the threshold policy.
    """
    if visits_due < 0 or safety_stock < 0 or guard < 0 or n_arms < 1:
        raise ValueError("visits_due, safety_stock, guard: 0 or more")
    if not math.isfinite(expected_randomizations) or expected_randomizations < 0:
        raise ValueError("expected_randomizations: must be a finite number, 0 or more")
    new = math.ceil(Fraction(expected_randomizations)) * n_arms
    return visits_due + new + n_arms * safety_stock + guard


def threshold_levels(levels: TopUpLevels, **_: object) -> TopUpLevels:
    """The threshold policy: the protocol's levels as they are."""
    return levels


def predictive_levels(
    levels: TopUpLevels,
    *,
    visits_due: int,
    expected_randomizations: float,
    n_arms: int,
    safety_stock: int,
) -> TopUpLevels:
    """The predictive policy: total trigger = predictive_total_need (blinded-observable counts),
    maximum per treatment raised so that a top-up leaves the site above that trigger."""
    need = predictive_total_need(
        visits_due=visits_due,
        expected_randomizations=expected_randomizations,
        n_arms=n_arms,
        safety_stock=safety_stock,
        guard=levels.guard,
    )
    return TopUpLevels(
        maximum=max(levels.maximum, -(-need // n_arms) + 1),
        total_trigger=need,
        guard=levels.guard,
        emergency_minimum=levels.emergency_minimum,
    )


# Looked up by the name the protocol file uses (supply.default_policy, sites[].resupply_policy).
POLICIES: dict[str, Callable[..., TopUpLevels]] = {
    "threshold": threshold_levels,
    "predictive": predictive_levels,
}
