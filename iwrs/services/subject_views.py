"""The subject list as the place an investigator works from (issue 15, Oracle Clinical One's
subject list): search, filters, paging, each subject's status (with "unblinded"), its next
visit and window, and one menu of actions, each either open or saying what is missing.

Decisions (issue 15 left them open):
- Search is by screening number or randomization number (any part, any case). Initials are not
  searchable: they are stored only inside a keyed hash with date of birth and sex
  (`persons.person_key`), never as text.
- "Unblinded" is shown to those who see the list: the investigators of the subject's site. They
  are the people who break the blind in an emergency and care for the subject, so they must know
  that it happened; the list never says, and cannot say, the arm (it reads only
  `Subject.unblinded_at`, never a slot). Pharmacists, the sponsor roles and the auditor do not
  see this list.
- Paging is by keyset (newest first, the page of subjects with an id below `before`): a fixed
  number of statements whatever the trial's size or the page (three: the subjects with their
  randomization and site, their dispensations, their re-screenings).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, or_, select
from sqlalchemy.orm import contains_eager

from iwrs import clock, validation
from iwrs.audit import Actor
from iwrs.auth import Permission
from iwrs.db import read_session
from iwrs.errors import InvalidInput
from iwrs.models.randomization import Randomization
from iwrs.models.sites import Site, SiteStatus
from iwrs.models.subjects import Subject, SubjectStatus
from iwrs.services.randomization import VisitPlan, visit_plan

UNBLINDED = "unblinded"
STATUS_FILTERS = (*(s.value for s in SubjectStatus), UNBLINDED)
PAGE = 50  # subjects per page of the list


@dataclass(frozen=True)
class Filters:
    """What the list is narrowed to: a search text, a status (or "unblinded"), a site code."""

    search: str = ""
    status: str = ""
    site_code: str = ""


@dataclass(frozen=True)
class SubjectAction:
    """One entry of a subject's actions menu: `missing` (words) and `rule` (a code) say why it
    is not open now; both None when it is."""

    name: str
    label: str
    missing: str | None = None
    rule: str | None = None

    @property
    def enabled(self) -> bool:
        return self.missing is None


@dataclass(frozen=True)
class SubjectLine:
    """A row of the list: never an arm."""

    subject: Subject
    randomization_number: str | None
    unblinded: bool
    next_visit: VisitPlan | None
    due: bool  # the next visit's window is open today at the subject's site
    actions: tuple[SubjectAction, ...]


@dataclass(frozen=True)
class SubjectPage:
    lines: list[SubjectLine]
    next_before: int | None  # the key of the next (older) page, if there is one


def _check_filters(filters: Filters) -> Filters:
    """The filters, checked: a known status (rule choice), typed text within its limits."""
    if filters.status and filters.status not in STATUS_FILTERS:
        raise InvalidInput(
            f"status: must be one of {', '.join(STATUS_FILTERS)}", field="status", rule="choice"
        )
    search = validation.text(filters.search, field="search", kind="code", required=False)
    site_code = validation.text(filters.site_code, field="site_code", kind="code", required=False)
    return Filters(search, filters.status, site_code)


def subject_list(
    *, actor: Actor, filters: Filters = Filters(), before: int | None = None, limit: int = PAGE
) -> SubjectPage:
    """One page of the subjects at the actor's sites (investigators; the operator), newest first,
    narrowed by `filters`, each with its next visit and its actions."""
    from iwrs.services.randomization_views import _dispensations_of_subjects
    from iwrs.services.users import may, site_reader

    filters = _check_filters(filters)
    scope = site_reader(actor, Permission.SCREEN_SUBJECTS)
    query = (
        select(Subject, Randomization)
        .join(Subject.site)
        .outerjoin(Randomization, Randomization.subject_id == Subject.id)
        .options(contains_eager(Subject.site))
        .order_by(Subject.id.desc())
        .limit(limit + 1)
    )
    if scope is not None:
        query = query.where(Subject.site_id.in_(scope))
    if before is not None:
        query = query.where(Subject.id < before)
    if filters.site_code:
        query = query.where(func.upper(Site.code) == filters.site_code.upper())
    if filters.status == UNBLINDED:
        query = query.where(Subject.unblinded_at.is_not(None))
    elif filters.status:
        query = query.where(Subject.status == filters.status)
    if filters.search:
        wanted = filters.search.upper()
        query = query.where(
            or_(
                func.upper(Subject.screening_number).contains(wanted, autoescape=True),
                func.upper(Randomization.randomization_number).contains(wanted, autoescape=True),
            )
        )
    found = read_session().execute(query).all()
    more = len(found) > limit
    found = found[:limit]
    ids = [subject.id for subject, _ in found]
    given = _dispensations_of_subjects(ids)
    rescreened = _rescreened(ids)
    may_unblind = may(actor, Permission.EMERGENCY_UNBLIND)
    may_randomize = may(actor, Permission.RANDOMIZE)
    lines = []
    for subject, randomization in found:
        next_visit, due = None, False
        if randomization is not None and _on_treatment(subject):
            today = clock.today(subject.site)
            done = {d.visit_code for d in given[subject.id] if d.kind == "scheduled"}
            next_visit = _next_visit_of(randomization.randomized_on, done, today)
            due = next_visit is not None and next_visit.earliest <= today
        lines.append(
            SubjectLine(
                subject,
                randomization.randomization_number if randomization else None,
                subject.unblinded_at is not None,
                next_visit,
                due,
                _actions_of(
                    subject,
                    randomized=randomization is not None,
                    rescreened=subject.id in rescreened,
                    may_randomize=may_randomize,
                    may_unblind=may_unblind,
                ),
            )
        )
    return SubjectPage(lines, ids[-1] if more else None)


def _on_treatment(subject: Subject) -> bool:
    return subject.status == SubjectStatus.RANDOMIZED and subject.treatment_discontinued_at is None


def _rescreened(subject_ids: list[int]) -> set[int]:
    """Which of the subjects were re-screened (one statement)."""
    if not subject_ids:
        return set()
    return set(
        read_session().scalars(
            select(Subject.rescreen_of_id).where(Subject.rescreen_of_id.in_(subject_ids))
        )
    )


def _actions_of(
    subject: Subject,
    *,
    randomized: bool,
    rescreened: bool,
    may_randomize: bool,
    may_unblind: bool,
) -> tuple[SubjectAction, ...]:
    """The subject's actions menu, in the order of the trial: each open, or with what is missing
    (pure: from the subject's row and the facts given)."""
    status = subject.status
    closed = {
        SubjectStatus.WITHDRAWN: ("withdrawn", "status"),
        SubjectStatus.SCREEN_FAILED: ("screen failure", "status"),
        SubjectStatus.RANDOMIZED: ("already randomized", "already_randomized"),
    }
    eligibility: tuple[str, str] | None = None  # the form is open while in screening only
    if status == SubjectStatus.ELIGIBLE:
        eligibility = ("eligibility already confirmed", "eligibility_confirmed")
    elif status != SubjectStatus.SCREENING:
        eligibility = closed[status]
    randomize: tuple[str, str] | None = None
    if status == SubjectStatus.SCREENING:
        randomize = ("eligibility not confirmed", "eligibility_not_confirmed")
    elif status != SubjectStatus.ELIGIBLE:
        randomize = closed[status]
    elif subject.site.status != SiteStatus.ACTIVE:
        randomize = (f"site {subject.site.code} is not active", "site_active")
    elif not may_randomize:
        randomize = ("your role may not randomize", "permission")
    unblind: tuple[str, str] | None = None
    if not randomized:
        unblind = ("not randomized", "randomized")
    elif subject.unblinded_at is not None:
        unblind = ("already unblinded", "already_unblinded")
    elif not may_unblind:
        unblind = ("your role may not unblind", "permission")
    withdraw = (
        closed[status] if status in (SubjectStatus.WITHDRAWN, SubjectStatus.SCREEN_FAILED) else None
    )
    rescreen: tuple[str, str] | None = None
    if status != SubjectStatus.SCREEN_FAILED:
        rescreen = ("only a screen failure is re-screened", "status")
    elif rescreened:
        rescreen = ("already re-screened", "rescreen_limit")
    menu = (
        ("open", "Open the subject", None),
        ("eligibility", "Enter eligibility", eligibility),
        ("randomize", "Randomize", randomize),
        ("visits", "Visit schedule", None if randomized else ("not randomized", "randomized")),
        ("unblind", "Emergency unblinding", unblind),
        ("rescreen", "Re-screen", rescreen),
        ("withdraw", "Withdraw", withdraw),
    )
    return tuple(
        SubjectAction(name, label, *(why if why else (None, None))) for name, label, why in menu
    )


def _next_visit_of(randomized_on: date, done: set[str], today: date) -> VisitPlan | None:
    """The first visit with kits not yet given whose window has not closed (pure)."""
    upcoming = [
        v for v in visit_plan(randomized_on) if v.kits and v.code not in done and v.latest >= today
    ]
    return upcoming[0] if upcoming else None
