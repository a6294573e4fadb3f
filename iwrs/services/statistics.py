"""The unblinded statistician's read-only workspace: allocations per subject with arm, and CSV
exports of allocations and list status. Every view and export is audited; nothing changes
subject or kit data."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from sqlalchemy import select

from iwrs import audit
from iwrs.audit import Actor
from iwrs.auth import Permission
from iwrs.db import transaction
from iwrs.models.randomization import (
    Randomization,
    RandomizationSlot,
)
from iwrs.models.sites import Site
from iwrs.models.subjects import Subject
from iwrs.services.randomization import slot_arm
from iwrs.services.randomization_views import active_list_status
from iwrs.services.supply import acting_user


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
                slot.block,
                slot_arm(slot),
                r.randomized_on,
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
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "randomization_number",
            "screening_number",
            "site",
            "stratum",
            "sequence",
            "block",
            "arm",
            "randomized_on",
            "unblinded",
        ]
    )
    for a in allocations(actor=actor, export=True):
        writer.writerow(
            [
                a.randomization_number,
                a.screening_number,
                a.site,
                a.stratum,
                a.sequence,
                a.block,
                a.arm,
                a.randomized_on,
                a.unblinded,
            ]
        )
    return buffer.getvalue()


def list_status_csv(*, actor: Actor) -> str:
    """The list status as CSV: one audited event ("list_status.exported"), not a view too."""
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
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    arms = sorted({arm for s in status.strata for arm in s.by_arm}) if status else []
    writer.writerow(["list", "stratum", "used", "remaining", *[f"used_{a}" for a in arms]])
    for s in status.strata if status else []:
        writer.writerow(
            [
                status.name if status else "",
                s.stratum,
                s.used,
                s.remaining,
                *[s.by_arm.get(a, 0) for a in arms],
            ]
        )
    return buffer.getvalue()
