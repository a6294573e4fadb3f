"""The unblinded statistician's read-only workspace: allocations per subject with arm, and CSV
exports of allocations and list status. Every view and export is audited; nothing changes
subject or kit data."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from iwrs import audit, padding
from iwrs.audit import Actor
from iwrs.auth import Permission
from iwrs.csv_export import rows_csv
from iwrs.db import transaction
from iwrs.models.randomization import (
    Randomization,
    RandomizationSlot,
)
from iwrs.models.sites import Site
from iwrs.models.subjects import Subject
from iwrs.services import stratum_tallies
from iwrs.services.randomization import slot_arm, slot_block
from iwrs.services.randomization_views import active_list_status
from iwrs.services.supply import acting_user, protocol


@dataclass(frozen=True)
class Allocation:
    randomization_number: str
    screening_number: str
    site: str
    stratum: str
    sequence: int
    block: int
    arm: str
    randomized_on: str
    unblinded: bool


def allocations(*, actor: Actor, export: bool = False) -> list[Allocation]:
    """Every randomized subject with its arm, in randomization order (audited)."""
    with transaction() as session:
        acting_user(session, actor, Permission.SEE_ARM)
        rows = session.execute(
            select(Randomization, Subject, Site, RandomizationSlot)
            .join(Subject, Randomization.subject_id == Subject.id)
            .join(Site, Randomization.site_id == Site.id)
            .join(RandomizationSlot, Randomization.slot_id == RandomizationSlot.id)
            .order_by(Randomization.id)
        ).all()
        result = [
            Allocation(
                r.randomization_number,
                s.screening_number,
                site.code,
                r.stratum,
                slot.sequence,
                slot_block(slot)[0],
                slot_arm(slot),
                r.randomized_on.isoformat(),
                s.unblinded_at is not None,
            )
            for r, s, site, slot in rows
        ]
        audit.record(
            session,
            actor=actor,
            action="allocations.exported" if export else "allocations.viewed",
            entity_type="randomization",
            after={"subjects": len(result)},
        )
    return result


def allocations_csv(*, actor: Actor) -> str:
    """Every allocation as CSV (audited as an export). The last column, `padding`, holds spaces
    that make each row's length independent of its arm (iwrs/padding.py); ignore it."""
    header = (
        "randomization_number",
        "screening_number",
        "site",
        "stratum",
        "sequence",
        "block",
        "arm",
        "randomized_on",
        "unblinded",
        "padding",
    )
    return rows_csv(
        header,
        (
            (
                a.randomization_number,
                a.screening_number,
                a.site,
                a.stratum,
                a.sequence,
                a.block,
                a.arm,
                a.randomized_on,
                a.unblinded,
                padding.csv_padding(labels=[(a.arm, padding.CODE)]),
            )
            for a in allocations(actor=actor, export=True)
        ),
    )


def list_status_csv(*, actor: Actor) -> str:
    """The list status as CSV: one audited event ("list_status.exported"), not a view too. The
    last column, `padding`, makes each row's length independent of its counts by arm."""
    stratum_tallies.fill_missing(actor)
    with transaction() as session:
        acting_user(session, actor, Permission.SEE_ARM)
        status = active_list_status(session)
        audit.record(
            session,
            actor=actor,
            action="list_status.exported",
            entity_type="randomization_list",
            entity_id=status.list_id if status else None,
        )
    # Every arm of the protocol, in its order, whether used yet or not: a column that appears
    # only once an arm is allocated would say which arm the first subjects got.
    arms = [arm.code for arm in protocol().arms]
    header = ["list", "stratum", "used", "remaining", *[f"used_{a}" for a in arms], "padding"]
    rows = []
    for s in status.strata if status else []:
        counts = [s.by_arm.get(a, 0) for a in arms]
        rows.append(
            [
                status.name if status else "",
                s.stratum,
                s.used,
                s.remaining,
                *counts,
                padding.csv_padding(counts=[(n, s.used) for n in counts]),
            ]
        )
    return rows_csv(header, rows)
