"""Read-side views of randomization: results and visit schedules (never an arm) for sites,
and the statistician's unblinded list status (every view audited)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from iwrs import audit, clock
from iwrs.audit import Actor
from iwrs.auth import Permission, not_found, require_site, site_scope
from iwrs.db import read_session, transaction
from iwrs.models.randomization import (
    Dispensation,
    Randomization,
    RandomizationList,
    RandomizationSlot,
    StratumPosition,
)
from iwrs.models.subjects import Subject
from iwrs.models.supply import Kit
from iwrs.models.users import User
from iwrs.services.randomization import (
    RandomizationResult,
    VisitPlan,
    _result,
    slot_arm,
    visit_plan,
)
from iwrs.services.supply import acting_user, protocol


def result_of(subject_id: int) -> RandomizationResult | None:
    row = (
        read_session()
        .scalars(select(Randomization).where(Randomization.subject_id == subject_id))
        .first()
    )
    return _result(read_session(), row) if row else None


@dataclass(frozen=True)
class DispensationLine:
    id: int
    visit_code: str
    kind: str
    kit_number: str
    dispensed_at: object
    confirmed: bool
    out_of_window: bool
    reason: str | None
    visit_date: date | None = None  # the visit's date at the site (None before issue 12)


def dispensations_of(subject_id: int) -> list[DispensationLine]:
    return dispensations_of_subjects([subject_id]).get(subject_id, [])


def dispensations_of_subjects(subject_ids: Iterable[int]) -> dict[int, list[DispensationLine]]:
    """The dispensations of several subjects in one statement (no query per subject)."""
    wanted = sorted(set(subject_ids))
    lines: dict[int, list[DispensationLine]] = {subject_id: [] for subject_id in wanted}
    if not wanted:
        return lines
    rows = read_session().execute(
        select(Dispensation, Kit.number)
        .join(Kit, Dispensation.kit_id == Kit.id)
        .where(Dispensation.subject_id.in_(wanted))
        .order_by(Dispensation.id)
    )
    for d, number in rows:
        lines[d.subject_id].append(
            DispensationLine(
                d.id,
                d.visit_code,
                d.kind,
                number,
                d.dispensed_at,
                d.confirmed_at is not None,
                d.out_of_window,
                d.reason,
                d.visit_date,
            )
        )
    return lines


@dataclass(frozen=True)
class VisitRow:
    subject: Subject
    randomization_number: str
    visits: tuple[VisitPlan, ...]
    done: frozenset[str]
    next_visit: VisitPlan | None
    dispensations: list[DispensationLine] = field(default_factory=list)
    today: date | None = None  # the subject's site's local date


BOARD_PAGE = 100  # subjects per page of the visit board


def visits_board(
    user: User, *, after: str | None = None, limit: int | None = BOARD_PAGE
) -> list[VisitRow]:
    """Randomized subjects at the user's sites with their schedule and what was dispensed;
    "next" and "due" are judged on each subject's site's local date.

    Paged by screening number (keyset: the page after `after`, `limit` subjects; None: every
    subject, for services), in three statements whatever the page's size (issue 13: the
    subjects with their randomization, their sites, their dispensations)."""
    query = (
        select(Subject, Randomization)
        .join(Randomization, Randomization.subject_id == Subject.id)
        .options(joinedload(Subject.site))
        .order_by(Subject.screening_number)
    )
    scope = site_scope(user)
    if scope is not None:
        query = query.where(Subject.site_id.in_(scope))
    if after:
        query = query.where(Subject.screening_number > after)
    if limit is not None:
        query = query.limit(limit)
    found = read_session().execute(query).all()
    given = dispensations_of_subjects(subject.id for subject, _ in found)
    rows = []
    for subject, randomization in found:
        plan = visit_plan(date.fromisoformat(randomization.randomized_on))
        lines = given[subject.id]
        today = clock.today(subject.site)
        done = frozenset(d.visit_code for d in lines if d.kind == "scheduled")
        upcoming = [v for v in plan if v.kits and v.code not in done and v.latest >= today]
        rows.append(
            VisitRow(
                subject,
                randomization.randomization_number,
                plan,
                done,
                upcoming[0] if upcoming else None,
                lines,
                today,
            )
        )
    return rows


def visible_randomized_subject(user: User, subject_id: int) -> Subject:
    from iwrs.errors import NotFound

    subject = read_session().get(Subject, subject_id)
    if subject is None:
        raise NotFound(f"subject {subject_id} does not exist", field="subject_id", rule="exists")
    require_site(user, subject.site_id, not_found("subject", subject_id, field="subject_id"))
    return subject


@dataclass(frozen=True)
class StratumStatus:
    stratum: str
    used: int
    remaining: int
    by_arm: dict[str, int]  # used slots per arm (unblinded)


@dataclass(frozen=True)
class ListStatus:
    list_id: int
    name: str
    dummy: bool
    source: str
    fingerprint: str
    locked: bool
    strata: list[StratumStatus]
    overall_by_arm: dict[str, int]


def active_list_status(session: Session) -> ListStatus | None:
    """The active list's status by stratum and arm (unblinded), computed without recording."""
    row = session.scalars(
        select(RandomizationList).where(RandomizationList.active.is_(True))
    ).first()
    if row is None:
        return None
    strata = []
    overall: Counter[str] = Counter()
    # Every arm, used or not: an arm that appears only once allocated would name the first arm.
    codes = [arm.code for arm in protocol().arms]
    for position in session.scalars(
        select(StratumPosition)
        .where(StratumPosition.list_id == row.id)
        .order_by(StratumPosition.stratum)
    ):
        used = session.scalars(
            select(RandomizationSlot).where(
                RandomizationSlot.list_id == row.id,
                RandomizationSlot.stratum == position.stratum,
                RandomizationSlot.subject_id.is_not(None),
            )
        ).all()
        arms = Counter(slot_arm(s) for s in used)
        overall.update(arms)
        strata.append(
            StratumStatus(
                position.stratum,
                len(used),
                position.last_sequence - position.next_sequence + 1,
                {code: arms[code] for code in codes},
            )
        )
    return ListStatus(
        row.id,
        row.name,
        row.dummy,
        row.source,
        row.fingerprint,
        row.locked_at is not None,
        strata,
        {code: overall[code] for code in codes},
    )


def list_status(*, actor: Actor) -> ListStatus | None:
    """The unblinded statistician's view of the active list; the viewing is audited."""
    with transaction() as session:
        acting_user(session, actor, Permission.SEE_ARM)
        status = active_list_status(session)
        if status is not None:
            audit.record(
                session,
                actor=actor,
                action="list.status_viewed",
                entity_type="randomization_list",
                entity_id=status.list_id,
            )
        return status
