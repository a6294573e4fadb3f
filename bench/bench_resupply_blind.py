"""Seeded simulation of the shipped design: how often the per-arm emergency fallback fires under
the arm-agnostic resupply, and what each guard costs against the per-arm threshold policy.

    PYTHONPATH=. python bench/bench_resupply_blind.py --seed 20261129 --trials 2000

Model (every value an assumption of the shipped protocol file or stated here):
- 4 sites activated on day 0 with the initial shipment (4 + 4 kits); 30 subjects randomized on
  days drawn uniformly over a 12-month recruitment period, at a uniformly drawn site; disease
  RA or SSc with probability 1/2; one central list per disease stratum (permuted blocks of 4 and
  6, drawn at random), NOT kept per site: a site's subjects are a scattered subset of it.
- 6 doses (day 1, then every 28 days) each of one kit; later visits land uniformly within their
  +-3-day window; 10 % of subjects stop treatment after a uniformly drawn dose.
- Resupply runs twice a day (daily job, intra-day run); a day's events fall before or after the
  intra-day run at random. A shipment requested on day d is received on day d + 5 (lead time)
  before the day's first run. No expiry, damage or loss (usable = available).
- A randomization is refused (and retried the next day) when some arm has no kit; a visit whose
  arm has no kit is a missed dose. Both are counted as stockouts.
- The fallback fires at a run when no top-up is due, no shipment is open and some arm has fewer
  than emergency_minimum (1) kits. A site-month is a 30-day stretch from activation to the
  site's last dose.
Policies: the per-arm threshold baseline (trigger 2, maximum 4 per treatment: reveals the split;
"per_arm" as shipped before issue 10, at least one kit of every arm, so it can overfill;
"per_arm_fill" fills each arm exactly to 4) and the arm-agnostic top-up with total trigger
2 x 2 + guard, for guard 0, 1 and 2 (2 is the exact cap guard (n-1)(M-t): with it no arm can
be at or below 2 while the total is above the trigger).
Prints a table, then the same numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from supply.blind_resupply import TopUpLevels, emergency_short, split_top_up, top_up_size  # noqa: E402
from supply.resupply import SiteStock, initial_order, threshold_policy  # noqa: E402

ARMS = ("A", "P")
SITES = 4
SUBJECTS = 30
RECRUITMENT_DAYS = 365
DOSES = 6
INTERVAL = 28
WINDOW = 3
STOP_RATE = 0.10
LEAD = 5
PER_ARM_TRIGGER = 2
MAXIMUM = 4
EMERGENCY_MINIMUM = 1
BLOCKS = (4, 6)


@dataclass
class Site:
    stock: dict[str, int]
    arrivals: list[tuple[int, dict[str, int]]] = field(default_factory=list)
    dirty: bool = True


@dataclass
class Tally:
    site_months: int = 0
    emergency_months: int = 0
    emergencies: int = 0
    shipments: int = 0
    stockouts: int = 0
    kit_days: float = 0.0
    imbalance: list[int] = field(default_factory=list)


def _list(rng: random.Random, length: int) -> list[str]:
    arms: list[str] = []
    while len(arms) < length:
        size = rng.choice(BLOCKS)
        block = [ARMS[i % 2] for i in range(size)]
        rng.shuffle(block)
        arms += block
    return arms


def _trial(rng: random.Random) -> tuple[list[tuple[int, int, str, int]], int]:
    """Subjects as (day, site, arm, doses taken); and the last day of the trial."""
    lists = {"RA": _list(rng, SUBJECTS), "SSc": _list(rng, SUBJECTS)}
    used = {"RA": 0, "SSc": 0}
    subjects = []
    for day in sorted(rng.randrange(RECRUITMENT_DAYS) for _ in range(SUBJECTS)):
        stratum = rng.choice(("RA", "SSc"))
        arm = lists[stratum][used[stratum]]
        used[stratum] += 1
        doses = rng.randint(1, DOSES) if rng.random() < STOP_RATE else DOSES
        subjects.append((day, rng.randrange(SITES), arm, doses))
    return subjects, RECRUITMENT_DAYS + DOSES * INTERVAL + 30


def _decide(policy: str, guard: int, site: Site) -> tuple[dict[str, int] | None, bool]:
    """(order per arm or None, whether it is an emergency) at one run."""
    if site.arrivals:
        return None, False
    if policy == "per_arm":
        order = threshold_policy(
            SiteStock(site.stock),
            trigger=PER_ARM_TRIGGER,
            maximum=MAXIMUM,
            open_shipment=False,
            arms=ARMS,
        )
        return (dict(order.per_arm) if order else None), False
    if policy == "per_arm_fill":
        if all(count > PER_ARM_TRIGGER for count in site.stock.values()):
            return None, False
        return {arm: MAXIMUM - count for arm, count in site.stock.items()}, False
    levels = TopUpLevels(
        maximum=MAXIMUM,
        total_trigger=len(ARMS) * PER_ARM_TRIGGER + guard,
        guard=guard,
        emergency_minimum=EMERGENCY_MINIMUM,
    )
    total = sum(site.stock.values())
    size = top_up_size(total, n_arms=len(ARMS), levels=levels, open_shipment=False)
    if size:
        return split_top_up(size, site.stock, arms=ARMS, maximum=MAXIMUM), False
    if emergency_short(site.stock, arms=ARMS, levels=levels, open_shipment=False):
        size = len(ARMS) * MAXIMUM - total
        return split_top_up(size, site.stock, arms=ARMS, maximum=MAXIMUM), True
    return None, False


def simulate(policy: str, guard: int, seed: int, trials: int) -> Tally:
    """Run `trials` seeded trials of the model under one policy; the same seed gives every
    policy the same subjects, sites, visits and stops."""
    rng = random.Random(seed)
    tally = Tally()
    first = initial_order(2 * MAXIMUM, ratio={a: 1 for a in ARMS}, arms=ARMS).per_arm
    for _ in range(trials):
        subjects, last_day = _trial(rng)
        # events per day: (site, arm, subject index for a randomization, -1 for a visit)
        visits: dict[int, list[tuple[int, str, int]]] = {}
        for i, (day, site, arm, _) in enumerate(subjects):
            visits.setdefault(day, []).append((site, arm, i))
        sites = [Site(dict(first)) for _ in range(SITES)]
        ends = [0] * SITES
        emergency_month: set[tuple[int, int]] = set()
        for today in range(last_day):
            for site in sites:
                for when, kits in [a for a in site.arrivals if a[0] == today]:
                    for arm, count in kits.items():
                        site.stock[arm] += count
                    site.arrivals.remove((when, kits))
                    site.dirty = True
            events = visits.pop(today, [])
            rng.shuffle(events)
            split = rng.randint(0, len(events))
            for half in (events[:split], events[split:]):
                _runs(policy, guard, sites, today, tally, emergency_month)
                for site_no, arm, subject in half:
                    stock = sites[site_no].stock
                    if subject >= 0 and any(stock[a] < 1 for a in ARMS):
                        tally.stockouts += 1
                        visits.setdefault(today + 1, []).append((site_no, arm, subject))
                        continue
                    if stock[arm] < 1:
                        tally.stockouts += 1
                        continue
                    stock[arm] -= 1
                    sites[site_no].dirty = True
                    for dose in range(1, subjects[subject][3] if subject >= 0 else 0):
                        day = today + dose * INTERVAL + rng.randint(-WINDOW, WINDOW)
                        visits.setdefault(day, []).append((site_no, arm, -1))
                    ends[site_no] = max(ends[site_no], today)
            for site in sites:
                tally.kit_days += sum(site.stock.values())
        for site_no in range(SITES):
            months = ends[site_no] // 30 + 1
            tally.site_months += months
            tally.emergency_months += sum(1 for s, _ in emergency_month if s == site_no)
    return tally


def _runs(policy, guard, sites, today, tally, emergency_month) -> None:  # type: ignore[no-untyped-def]
    for site_no, site in enumerate(sites):
        if not site.dirty:
            continue
        site.dirty = False
        tally.imbalance.append(abs(site.stock["A"] - site.stock["P"]))
        order, emergency = _decide(policy, guard, site)
        if order is None or not sum(order.values()):
            continue
        site.arrivals.append((today + LEAD, order))
        tally.shipments += 1
        if emergency:
            tally.emergencies += 1
            emergency_month.add((site_no, today // 30))


def quantile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--trials", type=int, default=2000)
    args = parser.parse_args()
    rows = []
    policies = (("per_arm", 0), ("per_arm_fill", 0), ("total", 0), ("total", 1), ("total", 2))
    for policy, guard in policies:
        t = simulate(policy, guard, args.seed, args.trials)
        site_days = t.kit_days / (args.trials * SITES * (RECRUITMENT_DAYS + DOSES * INTERVAL + 30))
        rows.append(
            {
                "policy": policy if policy != "total" else f"total, guard {guard}",
                "total_trigger": None if policy != "total" else 2 * PER_ARM_TRIGGER + guard,
                "site_months": t.site_months,
                "fallback_site_month_rate": round(t.emergency_months / t.site_months, 5),
                "fallbacks": t.emergencies,
                "shipments_per_site_month": round(t.shipments / t.site_months, 4),
                "stockouts_per_trial": round(t.stockouts / args.trials, 4),
                "mean_kits_on_hand_per_site": round(site_days, 3),
                "imbalance_q99_at_runs": quantile(t.imbalance, 0.99),
            }
        )
    # the fair per-arm comparison: per-arm triggers filling each arm exactly to its maximum
    base = rows[1]["mean_kits_on_hand_per_site"]
    for row in rows:
        row["extra_kits_on_hand_vs_per_arm_fill"] = round(
            row["mean_kits_on_hand_per_site"] - base, 3
        )
    header = (
        f"{'policy':<16}{'trigger':>8}{'fallback/site-mo':>18}{'ship/site-mo':>14}"
        f"{'stockouts/trial':>17}{'kits on hand':>14}{'extra':>8}{'imb q99':>9}"
    )
    print(f"seed {args.seed}, {args.trials} trials")
    print(header)
    for r in rows:
        print(
            f"{r['policy']:<16}{str(r['total_trigger'] or '-'):>8}"
            f"{r['fallback_site_month_rate']:>18.3%}{r['shipments_per_site_month']:>14.3f}"
            f"{r['stockouts_per_trial']:>17.3f}{r['mean_kits_on_hand_per_site']:>14.2f}"
            f"{r['extra_kits_on_hand_vs_per_arm_fill']:>8.2f}{r['imbalance_q99_at_runs']:>9}"
        )
    print(json.dumps({"seed": args.seed, "trials": args.trials, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
