"""The scheduled resupply run that keeps every site stocked, arm-agnostic (supply/blind_resupply).

It runs only at fixed times (`flask iwrs supply resupply`, daily and intra-day from cron), never
inside another use case's transaction: a shipment's timing must not follow a randomization or a
dispensing (issue 10). Its requests and alerts are the system's, citing the run."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from iwrs import clock
from iwrs.audit import Actor
from iwrs.db import transaction
from iwrs.errors import Busy, InvalidInput
from iwrs.models.sites import Site, SiteStatus
from iwrs.models.supply import Shipment
from iwrs.protocol import SupplyLevel
from iwrs.services import shipments
from iwrs.services.supply import (
    ShelfTreatments,
    open_alert,
    protocol,
    usable_shelf,
)
from supply import blind_resupply as blind
from supply import kit_choice, resupply

log = logging.getLogger(__name__)


def evaluate_resupply(session: Session, site: Site, *, run: str) -> Shipment | None:
    """One site's resupply decision at a scheduled run (supply/blind_resupply.py guarantee).

    The top-up reads only the site's total usable kits per kit type; its size is a function of
    that total. Only when no top-up is due does the per-arm emergency check run: a treatment
    with fewer usable kits than emergency_minimum gets the same top-up, requested as an
    emergency (own audit action and alert kind). Recorded as the system's, with the run and the
    total that crossed the trigger referenced; never a subject or an arm. The caller holds the
    site's lock (`run_resupply`, which read `site` locked): one decision at a time."""
    if site.status != SiteStatus.ACTIVE or shipments._open_shipment(session, site.id):
        return None
    today = clock.today(site)
    p = protocol()
    arms = [a.code for a in p.arms]
    shelf = usable_shelf(session, site.id, today=today)
    treatments = ShelfTreatments(shelf)
    place = next((s for s in p.sites if s.code == site.code), None)
    policy = (place.resupply_policy if place else "") or p.default_resupply_policy
    due = _visits_due_total(session, site.id, today) if policy == "predictive" else {}
    top_ups: dict[str, resupply.Order] = {}
    emergencies: dict[str, resupply.Order] = {}
    crossed: list[dict[str, object]] = []
    for level in p.resupply:
        of_type = [entry for kit, entry in shelf if kit.kit_type == level.kit_type]
        total = len(of_type)  # blinded-observable: nothing unsealed for the trigger
        levels = _levels(level, policy, due.get(level.kit_type, 0), len(arms))
        size = blind.top_up_size(total, n_arms=len(arms), levels=levels, open_shipment=False)
        rule = "total_trigger"
        # Unsealed lazily in pick order (issue 13): the emergency question stops once every
        # arm has its minimum; only a top-up's split reads the whole (then small) shelf.
        enough = None if size else levels.emergency_minimum
        per_arm = kit_choice.count_by_arm(
            of_type, arms=arms, treatment_of=treatments, enough=enough
        )
        if not size and blind.emergency_short(
            per_arm, arms=arms, levels=levels, open_shipment=False
        ):
            per_arm = kit_choice.count_by_arm(of_type, arms=arms, treatment_of=treatments)
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
    the shipping lead time: blinded-observable, read without unsealing anything.

    Two statements whatever the number of subjects (issue 13, no N+1): the site's subjects
    whose schedule can still overlap the horizon (randomized no earlier than the last dosing
    visit's window end before today: older subjects need no more kits), and their scheduled
    dispensations in one query."""
    from iwrs.models.randomization import Dispensation, Randomization
    from iwrs.models.subjects import Subject

    p = protocol()
    dosing = [v for v in p.visits if v.kits]
    if not dosing:
        return {}
    span = max(v.day - 1 + v.window_after for v in dosing)
    earliest = today - timedelta(days=span)
    subjects = dict(
        session.execute(
            select(Randomization.subject_id, Randomization.randomized_on)
            .join(Subject, Randomization.subject_id == Subject.id)
            .where(
                Randomization.site_id == site_id,
                Randomization.randomized_on >= earliest,
                Subject.treatment_discontinued_at.is_(None),
            )
        ).all()
    )
    done: dict[int, set[str]] = {subject_id: set() for subject_id in subjects}
    if subjects:
        for subject_id, visit_code in session.execute(
            select(Dispensation.subject_id, Dispensation.visit_code)
            .join(Randomization, Randomization.subject_id == Dispensation.subject_id)
            .join(Subject, Randomization.subject_id == Subject.id)
            .where(
                Randomization.site_id == site_id,
                Randomization.randomized_on >= earliest,
                Subject.treatment_discontinued_at.is_(None),
                Dispensation.kind == "scheduled",
            )
        ):
            done[subject_id].add(visit_code)
    due: dict[str, int] = {}
    for subject_id, randomized_on in subjects.items():
        for kit_type in {v.kit_type for v in dosing}:
            schedule = [
                (v.day, v.window_before, v.window_after, v.kits)
                for v in dosing
                if v.kit_type == kit_type and v.code not in done[subject_id]
            ]
            due[kit_type] = due.get(kit_type, 0) + resupply.visits_due(
                schedule, randomized_on, today, p.shipping_lead_days
            )
    return due


RESUPPLY = Actor.system("resupply")
RUN_SLOTS = ("daily", "intraday")


def run_resupply(*, slot: str = "daily", at: datetime | None = None) -> list[str]:
    """The scheduled resupply run over every active site (the `iwrs worker` jobs
    resupply_daily and resupply_intraday, or the CLI from cron at fixed times): `slot` names the
    schedule (daily job or intra-day run), `at` the run (default: now). Recorded as the
    system's; each request references this run. Returns the shipments requested, as
    "SHP-00001 to CN01".

    Decision (issue 13): one transaction per site, so the run holds one site's lock at a time
    (iwrs/locking.py) and never stalls randomization and dispensing at every site at once. The
    worker claims the run's tick first (iwrs/jobs.py); a run killed part-way leaves the sites
    not yet decided to the next run, which decides them on the same state (a site already
    topped up has its shipment in transit and is not topped up again)."""
    if slot not in RUN_SLOTS:
        raise InvalidInput(f"slot: one of {', '.join(RUN_SLOTS)}", field="slot", rule="choice")
    run = f"{slot} run at {(at or clock.now()).isoformat(timespec='seconds')}"
    with transaction() as session:
        site_ids = session.scalars(
            select(Site.id).where(Site.status == SiteStatus.ACTIVE).order_by(Site.code)
        ).all()
    made = []
    for site_id in site_ids:
        try:
            with transaction() as session:
                site = session.scalars(
                    select(Site).where(Site.id == site_id).with_for_update()
                ).one()
                row = evaluate_resupply(session, site, run=run)
                if row is not None:
                    made.append(f"{row.number} to {site.code}")
        except Busy:
            # One site held past the lock timeout (a stuck request) never stops the run for
            # the others; that site is decided by the next run, on the same state.
            log.warning("resupply %s: site %s busy, left to the next run", run, site_id)
    return made
