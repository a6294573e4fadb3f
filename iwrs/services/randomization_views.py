"""Read-side views of randomization: results and visit schedules (never an arm) for sites,
and the statistician's unblinded list status (every view audited)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

from flask import current_app
from sqlalchemy import ColumnElement, and_, false, func, or_, select
from sqlalchemy.orm import Session, joinedload

from blinding.list_mapping import ListMapping
from iwrs import audit, clock
from iwrs.audit import Actor
from iwrs.auth import Permission
from iwrs.db import read_session, transaction
from iwrs.errors import InvalidInput, NotFound
from iwrs.models.randomization import (
    Dispensation,
    Randomization,
    RandomizationList,
    StratumPosition,
    StratumTally,
)
from iwrs.models.sites import Site
from iwrs.models.subjects import Subject
from iwrs.models.supply import Kit, KitReturn
from iwrs.services import stratum_tallies
from iwrs.services.queries import visible_subject
from iwrs.services.randomization import (
    RandomizationResult,
    VisitPlan,
    _result,
    list_mapping_of,
    visit_plan,
)
from iwrs.services.supply import acting_user, protocol


def result_of(*, actor: Actor, subject_id: int) -> RandomizationResult | None:
    """The subject's randomization (number, day-1 kit, visit plan; never the arm), or None."""
    visible_subject(actor=actor, subject_id=subject_id)
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


def dispensations_of(*, actor: Actor, subject_id: int) -> list[DispensationLine]:
    """The subject's dispensations, oldest first (a subject the actor may see)."""
    visible_subject(actor=actor, subject_id=subject_id)
    return _dispensations_of_subjects([subject_id]).get(subject_id, [])


def _dispensations_of_subjects(subject_ids: Iterable[int]) -> dict[int, list[DispensationLine]]:
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

    @property
    def due(self) -> str | None:
        """The next visit's standing at the site today: overdue (its target day passed, the
        window still open), today (the window is open), week (it opens within 7 days), None."""
        v, today = self.next_visit, self.today
        if v is None or today is None or self.subject.treatment_discontinued_at is not None:
            return None
        if v.earliest <= today <= v.latest:
            return "overdue" if v.target < today else "today"
        if v.earliest <= today + timedelta(days=WEEK - 1):
            return "week"
        return None


BOARD_PAGE = 25  # subjects per page of the visit board
WEEK = 7  # "this week": a window open at some day of the next seven, today included
DUE_FILTERS = {
    "today": "window open today",
    "week": "due this week",
    "overdue": "overdue, window still open",
    "all": "every randomized subject",
}


def _due_condition(todays: dict[date, list[int]], due: str) -> ColumnElement[bool]:
    """Subjects with a dosing visit, not yet given, that is `due` on their site's local date:
    one condition per site date and visit on the day-1 column, so the database picks the page
    (issue 15: the board lists what is due, not every subject)."""
    given = (
        select(Dispensation.id)
        .where(Dispensation.subject_id == Subject.id, Dispensation.kind == "scheduled")
        .correlate(Subject)
    )
    per_day = []
    for today, site_ids in sorted(todays.items()):
        per_visit = []
        for v in protocol().visits:
            if not v.kits:
                continue
            offset = v.day - 1
            # day1 + offset - before <= T + ahead  and  day1 + offset + after >= T
            ahead = WEEK - 1 if due == "week" else 0
            low = today - timedelta(days=offset + v.window_after)
            high = today + timedelta(days=ahead - offset + v.window_before)
            if due == "overdue":  # the target day passed: day1 + offset < T
                high = min(high, today - timedelta(days=offset + 1))
            per_visit.append(
                and_(
                    Randomization.randomized_on.between(low, high),
                    ~given.where(Dispensation.visit_code == v.code).exists(),
                )
            )
        per_day.append(and_(Subject.site_id.in_(site_ids), or_(false(), *per_visit)))
    return and_(Subject.treatment_discontinued_at.is_(None), or_(false(), *per_day))


def visits_board(
    *,
    actor: Actor,
    after: str | None = None,
    limit: int | None = BOARD_PAGE,
    due: str = "all",
    search: str = "",
    site_id: int | None = None,
) -> list[VisitRow]:
    """Randomized subjects at the actor's sites (pharmacists, the operator) with their schedule
    and what was dispensed; "next" and "due" are judged on each subject's site's local date.
    `due` (DUE_FILTERS): only subjects with a visit due today, this week or overdue ("all":
    every subject); `search`: part of the screening or randomization number; `site_id`: one
    of the actor's sites.

    Paged by screening number (keyset: the page after `after`, `limit` subjects; None: every
    subject, for services), in a fixed number of statements whatever the page's size (issue
    13: the sites' dates, the subjects with their randomization and sites, their
    dispensations)."""
    from iwrs.services.users import site_reader

    if due not in DUE_FILTERS:
        raise InvalidInput(
            f"due: must be one of {', '.join(DUE_FILTERS)}", field="due", rule="choice"
        )
    scope = site_reader(actor, Permission.DISPENSE)
    session = read_session()
    query = (
        select(Subject, Randomization)
        .join(Randomization, Randomization.subject_id == Subject.id)
        .options(joinedload(Subject.site))
        .order_by(Subject.screening_number)
    )
    if scope is not None:
        query = query.where(Subject.site_id.in_(scope))
    if site_id is not None:
        query = query.where(Subject.site_id == site_id)
    if search.strip():
        needle = search.strip().lower()
        query = query.where(
            or_(
                func.lower(Subject.screening_number).contains(needle, autoescape=True),
                func.lower(Randomization.randomization_number).contains(needle, autoescape=True),
            )
        )
    if due != "all":
        todays: dict[date, list[int]] = {}
        for site in session.scalars(
            select(Site) if scope is None else select(Site).where(Site.id.in_(scope))
        ):
            todays.setdefault(clock.today(site), []).append(site.id)
        query = query.where(_due_condition(todays, due))
    if after:
        query = query.where(Subject.screening_number > after)
    if limit is not None:
        query = query.limit(limit)
    found = session.execute(query).all()
    given = _dispensations_of_subjects(subject.id for subject, _ in found)
    return [
        _visit_row(subject, randomization, given[subject.id]) for subject, randomization in found
    ]


def _visit_row(
    subject: Subject, randomization: Randomization, lines: list[DispensationLine]
) -> VisitRow:
    plan = visit_plan(randomization.randomized_on)
    today = clock.today(subject.site)
    done = frozenset(d.visit_code for d in lines if d.kind == "scheduled")
    upcoming = [v for v in plan if v.kits and v.code not in done and v.latest >= today]
    return VisitRow(
        subject,
        randomization.randomization_number,
        plan,
        done,
        upcoming[0] if upcoming else None,
        lines,
        today,
    )


def visit_row(*, actor: Actor, subject_id: int) -> VisitRow:
    """One randomized subject's row of the board (the subject's dispensing page): NotFound
    `exists` for a subject not at the actor's sites or not randomized."""
    subject = visible_randomized_subject(actor=actor, subject_id=subject_id)
    randomization = (
        read_session()
        .scalars(select(Randomization).where(Randomization.subject_id == subject.id))
        .first()
    )
    if randomization is None:
        raise NotFound(
            f"subject {subject.screening_number} is not randomized",
            field="subject_id",
            rule="randomized",
        )
    lines = _dispensations_of_subjects([subject.id])[subject.id]
    return _visit_row(subject, randomization, lines)


@dataclass(frozen=True)
class ReturnLine:
    """A kit the subject brought back (or reported lost) and where its return stands."""

    kit_number: str
    visit_code: str
    condition: str
    units_returned: int | None
    returned_on: date
    state: str
    verified: bool
    units_verified: int | None


def returns_of(*, actor: Actor, subject_id: int) -> list[ReturnLine]:
    """The subject's returns, oldest first (a subject at the actor's dispensing sites)."""
    visible_randomized_subject(actor=actor, subject_id=subject_id)
    rows = read_session().execute(
        select(KitReturn, Kit.number, Kit.state)
        .join(Kit, KitReturn.kit_id == Kit.id)
        .where(KitReturn.subject_id == subject_id)
        .order_by(KitReturn.id)
    )
    return [
        ReturnLine(
            number,
            r.visit_code,
            str(r.condition),
            r.units_returned,
            r.returned_on,
            str(state),
            r.verified_at is not None,
            r.units_verified,
        )
        for r, number, state in rows
    ]


def visible_randomized_subject(*, actor: Actor, subject_id: int) -> Subject:
    """A subject at one of the pharmacist's sites, to dispense to (NotFound `exists` otherwise)."""
    return visible_subject(actor=actor, subject_id=subject_id, permission=Permission.DISPENSE)


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
    strata: list[StratumStatus]  # a page of them (STRATA_PAGE), or every one when unpaged
    overall_by_arm: dict[str, int]
    mapping: ListMapping | None = None  # the column mapping of an imported file
    next_after: str | None = None  # the last stratum shown when more follow it


STRATA_PAGE = 25  # strata per page of the statistician's status (the full world has 200)


# Decision (issue 13, the statistician's status at 100,000 subjects): each view read and
# unsealed every used slot (80,000 at the scale world), then a per-process tally that each
# process's first view still counted whole (4-6 s). Now the used slots by arm are a sealed row
# per stratum (`StratumTally`, services.stratum_tallies) kept by each randomization under its
# stratum's position lock: a view reads one row per stratum, opens it through the process's
# cache, and lists a page of strata (keyset by stratum: "More strata"); the overall allocation
# sums every stratum's tally (one short row each). Served only behind SEE_ARM.
def active_list_status(
    session: Session, *, after: str | None = None, limit: int | None = None
) -> ListStatus | None:
    """The active list's status by stratum and arm (unblinded), computed without recording:
    the `limit` strata after `after` (every stratum when `limit` is None) and the overall
    allocation. Statements: a fixed number whatever the trial's size."""
    row = session.scalars(
        select(RandomizationList).where(RandomizationList.active.is_(True))
    ).first()
    if row is None:
        return None
    # Every arm, used or not: an arm that appears only once allocated would name the first arm.
    codes = [arm.code for arm in protocol().arms]
    page = (
        select(StratumPosition, StratumTally.id, StratumTally.sealed_counts)
        .join(
            StratumTally,
            (StratumTally.list_id == StratumPosition.list_id)
            & (StratumTally.stratum == StratumPosition.stratum),
        )
        .where(StratumPosition.list_id == row.id)
        .order_by(StratumPosition.stratum)
    )
    if after is not None:
        page = page.where(StratumPosition.stratum > after)
    if limit is not None:
        page = page.limit(limit + 1)
    shown = session.execute(page).all()
    if any(sealed is None for *_, sealed in shown):  # a view that raced `fill_missing`
        stratum_tallies.count_missing(session, row.id)
        shown = session.execute(page).all()
    more = limit is not None and len(shown) > limit
    strata = []
    for position, tally_id, sealed in shown[:limit]:
        arms = stratum_tallies.opened(tally_id, row.id, position.stratum, sealed) or Counter()
        strata.append(
            StratumStatus(
                position.stratum,
                sum(arms.values()),
                position.last_sequence - position.next_sequence + 1,
                {code: arms[code] for code in codes},
            )
        )
    overall = _overall(session, row.id)
    return ListStatus(
        row.id,
        row.name,
        row.dummy,
        row.source,
        row.fingerprint,
        row.locked_at is not None,
        strata,
        {code: overall[code] for code in codes},
        list_mapping_of(row),
        strata[-1].stratum if more and strata else None,
    )


def _overall(session: Session, list_id: int) -> Counter[str]:
    """The list's used slots by arm over every stratum: the sum of the strata's tallies, kept
    by this process under the list's used total (the sum of its positions, one aggregate
    statement) and read again only when that total has moved. Sound because a randomization
    advances its position and its tally in one transaction, so in any snapshot the positions'
    total is the tallies' total, and the total only grows (never the same total twice with other
    counts); the total cached is the one the tallies read add up to, not the one read before
    them. In memory only, like the opened tokens; served only behind SEE_ARM."""
    used = session.scalar(
        select(func.sum(StratumPosition.next_sequence - 1)).where(
            StratumPosition.list_id == list_id
        )
    )
    cache = current_app.extensions.setdefault("iwrs.overall_allocations", {})
    known = cache.get(list_id)
    if known is not None and known[0] == used:
        return Counter(known[1])
    rows = session.execute(
        select(
            StratumTally.id, StratumTally.list_id, StratumTally.stratum, StratumTally.sealed_counts
        ).where(StratumTally.list_id == list_id)
    ).all()
    if any(sealed is None for *_, sealed in rows):
        stratum_tallies.count_missing(session, list_id)
        return _overall(session, list_id)
    overall: Counter[str] = Counter()
    for r in rows:
        overall.update(stratum_tallies.opened(*r) or Counter())
    cache[list_id] = (sum(overall.values()), Counter(overall))
    return overall


def list_status(
    *, actor: Actor, after: str | None = None, limit: int | None = STRATA_PAGE
) -> ListStatus | None:
    """The unblinded statistician's view of the active list (a page of strata after `after`);
    the viewing is audited."""
    stratum_tallies.fill_missing(actor)
    with transaction() as session:
        acting_user(session, actor, Permission.SEE_ARM)
        status = active_list_status(session, after=after, limit=limit)
        if status is not None:
            audit.record(
                session,
                actor=actor,
                action="list.status_viewed",
                entity_type="randomization_list",
                entity_id=status.list_id,
            )
        return status
