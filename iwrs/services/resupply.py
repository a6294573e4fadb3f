"""The scheduled resupply run that keeps every site stocked, arm-agnostic (supply/blind_resupply).

It runs only at fixed times (`flask iwrs supply resupply`, daily and intra-day from cron), never
inside another use case's transaction: a shipment's timing must not follow a randomization or a
dispensing (issue 10). Its requests and alerts are the system's, citing the run."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from iwrs import clock
from iwrs.audit import Actor
from iwrs.db import transaction
from iwrs.errors import InvalidInput
from iwrs.models.sites import Site, SiteStatus
from iwrs.models.supply import Shipment
from iwrs.protocol import SupplyLevel
from iwrs.services import shipments
from iwrs.services.supply import lock_sites, open_alert, protocol, usable_by_arm
from supply import blind_resupply as blind
from supply import resupply


def evaluate_resupply(session: Session, site: Site, *, run: str) -> Shipment | None:
    """One site's resupply decision at a scheduled run (supply/blind_resupply.py guarantee).

    The top-up reads only the site's total usable kits per kit type; its size is a function of
    that total. Only when no top-up is due does the per-arm emergency check run: a treatment
    with fewer usable kits than emergency_minimum gets the same top-up, requested as an
    emergency (own audit action and alert kind). Recorded as the system's, with the run and the
    total that crossed the trigger referenced; never a subject or an arm. The caller holds the
    site's lock (taken again here, a no-op then): one decision at a time."""
    lock_sites(session, [site.id])
    if site.status != SiteStatus.ACTIVE or shipments._open_shipment(session, site.id):
        return None
    today = clock.today(site)
    p = protocol()
    arms = [a.code for a in p.arms]
    stock = usable_by_arm(session, site.id, today=today)
    place = next((s for s in p.sites if s.code == site.code), None)
    policy = (place.resupply_policy if place else "") or p.default_resupply_policy
    due = _visits_due_total(session, site.id, today) if policy == "predictive" else {}
    top_ups: dict[str, resupply.Order] = {}
    emergencies: dict[str, resupply.Order] = {}
    crossed: list[dict[str, object]] = []
    for level in p.resupply:
        per_arm = {
            arm: sum(1 for kit, _ in kits if kit.kit_type == level.kit_type)
            for arm, kits in stock.items()
        }
        total = sum(per_arm.values())
        levels = _levels(level, policy, due.get(level.kit_type, 0), len(arms))
        size = blind.top_up_size(total, n_arms=len(arms), levels=levels, open_shipment=False)
        rule = "total_trigger"
        if not size and blind.emergency_short(
            per_arm, arms=arms, levels=levels, open_shipment=False
        ):
            # Decision: the same top-up (every treatment to its maximum); only when a manual
            # shipment overfilled a treatment does it exceed n x maximum - total.
            size = max(
                len(arms) * levels.maximum - total,
                sum(max(levels.maximum - count, 0) for count in per_arm.values()),
            )
            rule = "emergency_minimum"
        if size <= 0:
            continue
        split = blind.split_top_up(size, per_arm, arms=arms, maximum=levels.maximum)
        (top_ups if rule == "total_trigger" else emergencies)[level.kit_type] = resupply.Order(
            split
        )
        crossed.append(
            {"kit_type": level.kit_type, "total_usable": total, "rule": rule}
            | ({"total_trigger": levels.total_trigger} if rule == "total_trigger" else {})
        )
    if not top_ups and not emergencies:
        return None
    kind = "emergency" if emergencies else "resupply"
    trigger = {"run": run, "policy": policy, "levels": crossed}
    if kind == "emergency":
        open_alert(
            session,
            kind="emergency_resupply",
            site_id=site.id,
            actor=RESUPPLY,
            trigger=trigger,
            message=f"Site {site.code}: a treatment has fewer usable kits than its emergency "
            "minimum; an emergency resupply was requested. Expedite it.",
        )
    return shipments._request(
        session, site, top_ups | emergencies, kind=kind, actor=RESUPPLY, trigger=trigger
    )


def _levels(level: SupplyLevel, policy: str, visits_due: int, n_arms: int) -> blind.TopUpLevels:
    """The site's levels for one kit type under its policy (blind.POLICIES)."""
    p = protocol()
    return blind.POLICIES[policy](
        blind.TopUpLevels(
            maximum=level.maximum,
            total_trigger=level.total_trigger,
            guard=level.guard,
            emergency_minimum=level.emergency_minimum,
        ),
        visits_due=visits_due,
        expected_randomizations=p.predictive_randomizations_per_week * p.shipping_lead_days / 7,
        n_arms=n_arms,
        safety_stock=p.predictive_safety_stock,
    )


def _visits_due_total(session: Session, site_id: int, today: date) -> dict[str, int]:
    """Kits per kit type the site's subjects on treatment (all arms together) may need within
    the shipping lead time: blinded-observable, read without unsealing anything."""
    from iwrs.models.randomization import Dispensation, Randomization
    from iwrs.models.subjects import Subject

    p = protocol()
    due: dict[str, int] = {}
    rows = session.execute(
        select(Randomization)
        .join(Subject, Randomization.subject_id == Subject.id)
        .where(Randomization.site_id == site_id, Subject.treatment_discontinued_at.is_(None))
    ).scalars()
    for randomization in rows:
        done = set(
            session.scalars(
                select(Dispensation.visit_code).where(
                    Dispensation.subject_id == randomization.subject_id,
                    Dispensation.kind == "scheduled",
                )
            )
        )
        for kit_type in {v.kit_type for v in p.visits if v.kits}:
            schedule = [
                (v.day, v.window_before, v.window_after, v.kits)
                for v in p.visits
                if v.kits and v.kit_type == kit_type and v.code not in done
            ]
            due[kit_type] = due.get(kit_type, 0) + resupply.visits_due(
                schedule,
                date.fromisoformat(randomization.randomized_on),
                today,
                p.shipping_lead_days,
            )
    return due


RESUPPLY = Actor.system("resupply")
RUN_SLOTS = ("daily", "intraday")


def run_resupply(*, slot: str = "daily") -> list[str]:
    """The scheduled resupply run over every active site (the `iwrs worker` jobs
    resupply_daily and resupply_intraday, or the CLI from cron at fixed times): `slot` names the
    schedule (daily job or intra-day run). Recorded as the system's; each request references
    this run. Returns the shipments requested, as "SHP-00001 to CN01"."""
    with transaction() as session:
        return resupply_sites(session, slot=slot)


def resupply_sites(session: Session, *, slot: str, at: datetime | None = None) -> list[str]:
    """The run's decisions in the caller's transaction (a job's, iwrs/jobs.py): every active
    site locked, then decided in code order. `at` names the run (default: now)."""
    if slot not in RUN_SLOTS:
        raise InvalidInput(f"slot: one of {', '.join(RUN_SLOTS)}", field="slot", rule="choice")
    run = f"{slot} run at {(at or clock.now()).isoformat(timespec='seconds')}"
    made = []
    for site in session.scalars(
        select(Site).where(Site.status == SiteStatus.ACTIVE).order_by(Site.code).with_for_update()
    ):
        row = evaluate_resupply(session, site, run=run)
        if row is not None:
            made.append(f"{row.number} to {site.code}")
    return made
