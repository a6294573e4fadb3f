"""Read-side views of randomization: results and visit schedules (never an arm) for sites,
and the statistician's unblinded list status (every view audited)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from blinding.list_mapping import ListMapping
from iwrs import audit, clock
from iwrs.audit import Actor
from iwrs.auth import Permission
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
from iwrs.services.queries import visible_subject
from iwrs.services.randomization import (
    SLOT_CONTEXT,
    RandomizationResult,
    VisitPlan,
    _result,
    list_mapping_of,
    visit_plan,
)
from iwrs.services.supply import acting_user, protocol, unseal_cached


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


BOARD_PAGE = 100  # subjects per page of the visit board


def visits_board(
    *, actor: Actor, after: str | None = None, limit: int | None = BOARD_PAGE
) -> list[VisitRow]:
    """Randomized subjects at the actor's sites (pharmacists, the operator) with their schedule
    and what was dispensed; "next" and "due" are judged on each subject's site's local date.

    Paged by screening number (keyset: the page after `after`, `limit` subjects; None: every
    subject, for services), in three statements whatever the page's size (issue 13: the
    subjects with their randomization, their sites, their dispensations)."""
    from iwrs.services.users import site_reader

    scope = site_reader(actor, Permission.DISPENSE)
    query = (
        select(Subject, Randomization)
        .join(Randomization, Randomization.subject_id == Subject.id)
        .options(joinedload(Subject.site))
        .order_by(Subject.screening_number)
    )
    if scope is not None:
        query = query.where(Subject.site_id.in_(scope))
    if after:
        query = query.where(Subject.screening_number > after)
    if limit is not None:
        query = query.limit(limit)
    found = read_session().execute(query).all()
    given = _dispensations_of_subjects(subject.id for subject, _ in found)
    rows = []
    for subject, randomization in found:
        plan = visit_plan(randomization.randomized_on)
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
    strata: list[StratumStatus]
    overall_by_arm: dict[str, int]
    mapping: ListMapping | None = None  # the column mapping of an imported file


def active_list_status(session: Session) -> ListStatus | None:
    """The active list's status by stratum and arm (unblinded), computed without recording.
    Statements: a fixed number whatever the trial's size (the arms come from `_arm_tally`)."""
    row = session.scalars(
        select(RandomizationList).where(RandomizationList.active.is_(True))
    ).first()
    if row is None:
        return None
    strata = []
    overall: Counter[str] = Counter()
    # Every arm, used or not: an arm that appears only once allocated would name the first arm.
    codes = [arm.code for arm in protocol().arms]
    positions = session.scalars(
        select(StratumPosition)
        .where(StratumPosition.list_id == row.id)
        .order_by(StratumPosition.stratum)
    ).all()
    # Slots are taken strictly in sequence, each by the randomization that advances its
    # stratum's position (services.randomization._next_slot): used = next_sequence - 1.
    tally = _arm_tally(session, row.id, sum(p.next_sequence - 1 for p in positions))
    for position in positions:
        arms = tally.get(position.stratum, Counter())
        overall.update(arms)
        strata.append(
            StratumStatus(
                position.stratum,
                sum(arms.values()),
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
        list_mapping_of(row),
    )


# Decision (issue 13, the statistician's status at 100,000 subjects): reading and unsealing every
# used slot at each view cost one unseal per randomization (80,000 at the scale world, more than
# the process's cache of opened tokens holds, so each view opened them all again). Instead each
# process keeps, per list, the arms counted by stratum and the last randomization id counted;
# a view reads and unseals only the randomizations after it (one bounded query), and checks the
# total against the strata's positions (read anyway): a randomization that committed after a
# higher id was counted (ids are taken before commit), or one committed between the two reads,
# makes them disagree, and the list is then counted again in full. The first view in a process
# counts the whole list (5.7 s at the scale world); a sealed summary kept in the database would
# spare that (a migration; not done).
# Held in memory only, like the opened tokens (services.supply): never persisted or logged, and
# served only behind SEE_ARM.
@dataclass
class _ListTally:
    last_id: int = 0
    counted: int = 0
    by_stratum: dict[str, Counter[str]] = field(default_factory=dict)


_TALLY_LOCK = threading.Lock()


def _arm_tally(session: Session, list_id: int, total: int) -> dict[str, Counter[str]]:
    """Used slots per stratum and arm of list `list_id` ({stratum: Counter(arm: n)}), `total`
    of them by the strata's positions."""
    tallies = current_app.extensions.setdefault("iwrs.arm_tallies", {})
    with _TALLY_LOCK:
        tally = tallies.setdefault(list_id, _ListTally())
        _count_after(session, tally, list_id)
        if tally.counted != total:  # a randomization committed after a higher id was counted
            tally = tallies[list_id] = _ListTally()
            _count_after(session, tally, list_id)
        return {k: Counter(v) for k, v in tally.by_stratum.items()}


def _count_after(session: Session, tally: _ListTally, list_id: int) -> None:
    """Add the randomizations of the list after `tally.last_id` to the tally."""
    rows = session.execute(
        select(
            Randomization.id,
            RandomizationSlot.id,
            RandomizationSlot.sealed_arm,
            RandomizationSlot.stratum,
            RandomizationSlot.sequence,
        )
        .join(RandomizationSlot, Randomization.slot_id == RandomizationSlot.id)
        .where(RandomizationSlot.list_id == list_id, Randomization.id > tally.last_id)
        .order_by(Randomization.id)
    )
    for randomization_id, slot_id, sealed, stratum, sequence in rows:
        context = SLOT_CONTEXT.format(list_id=list_id, stratum=stratum, sequence=sequence)
        arm = unseal_cached("randomization_slot", slot_id, sealed, context=context)
        tally.by_stratum.setdefault(stratum, Counter())[arm] += 1
        tally.counted += 1
        tally.last_id = randomization_id


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
