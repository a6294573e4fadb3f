"""Each role's home page as a task list (issue 15): one read model per role, each checking its
own permission and scoped to the actor's sites, each a fixed number of statements whatever the
trial's size (tests/integration/test_no_growth.py).

- investigator: subjects needing action and visits due at my sites;
- pharmacist: visits due today and this week, shipments to receive, days of cover per site;
- supply manager: sites by days of cover, shipments in flight, open alerts;
- unblinded statistician: the list by stratum, balance by stratum and site over time (audited);
- auditor: the latest events of the trail;
- admin: users and sites, and what waits for the admin.

Days of cover are arm-blind (supply/cover.py says why and how): blinded roles read them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from blinding.schedules import stratum_levels
from iwrs import audit, clock
from iwrs.audit import Actor
from iwrs.auth import Permission
from iwrs.db import read_session, transaction
from iwrs.models.audit import AuditEvent
from iwrs.models.randomization import Dispensation, Randomization, RandomizationSlot
from iwrs.models.sites import Site, SiteStatus
from iwrs.models.subjects import Subject, SubjectStatus
from iwrs.models.supply import KitCount, Lot, Shipment, SupplyAlert
from iwrs.models.users import AccessRequestStatus, UnblindedAccessRequest, User
from iwrs.services.randomization import VisitPlan, slot_arm, visit_plan
from iwrs.services.randomization_views import ListStatus, active_list_status
from iwrs.services.supply import acting_user, protocol, usable_through
from supply import cover as cover_rule
from supply.expiry import can_dispense
from supply.shipments import ShipmentState
from supply.states import KitState

# Decision: a stratum with fewer free slots than this is flagged on the statistician's home (time
# to extend the list before a randomization is refused for an exhausted stratum).
LOW_SLOTS = 10
WEEK = 7  # "this week": a visit whose window opens within the next 7 days
# Decision: warn when the cover ends within the shipping lead time plus a week to act (a
# manual shipment asked for on the day of the warning still arrives before the stock ends).
WARN_MARGIN_DAYS = 7


def _scope(actor: Actor, permission: Permission) -> frozenset[int] | None:
    from iwrs.services.users import site_reader

    return site_reader(actor, permission)


# --- visits due ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DueVisit:
    """A dosing visit not yet given: due today (its window is open) or opening this week."""

    subject_id: int
    screening_number: str
    randomization_number: str
    site_code: str
    visit: VisitPlan
    today: date  # the site's local date

    @property
    def due_today(self) -> bool:
        return self.visit.earliest <= self.today <= self.visit.latest


@dataclass
class _OnSchedule:
    subject_id: int
    screening_number: str
    randomization_number: str
    site_id: int
    day1: date
    given: set[str] = field(default_factory=set)


def _sites(session: Session, scope: frozenset[int] | None) -> list[Site]:
    query = select(Site).order_by(Site.code)
    if scope is not None:
        query = query.where(Site.id.in_(sorted(scope)))
    return list(session.scalars(query))


def _on_schedule(session: Session, sites: list[Site]) -> list[_OnSchedule]:
    """Randomized subjects on treatment at `sites` whose dosing visits may still be to give,
    with the scheduled visits they were given: two statements whatever their number."""
    dosing = [v for v in protocol().visits if v.kits]
    if not sites or not dosing:
        return []
    span = max(v.day - 1 + v.window_after for v in dosing)
    earliest = min(clock.today(s) for s in sites) - timedelta(days=span)
    rows = session.execute(
        select(
            Subject.id,
            Subject.screening_number,
            Randomization.randomization_number,
            Subject.site_id,
            Randomization.randomized_on,
        )
        .join(Randomization, Randomization.subject_id == Subject.id)
        .where(
            Subject.site_id.in_([s.id for s in sites]),
            Subject.status == SubjectStatus.RANDOMIZED,
            Subject.treatment_discontinued_at.is_(None),
            Randomization.randomized_on >= earliest,
        )
        .order_by(Subject.screening_number)
    ).all()
    found = {row[0]: _OnSchedule(*row) for row in rows}
    if found:
        for subject_id, code in session.execute(
            select(Dispensation.subject_id, Dispensation.visit_code)
            .join(Randomization, Randomization.subject_id == Dispensation.subject_id)
            .where(
                Randomization.site_id.in_([s.id for s in sites]),
                Randomization.randomized_on >= earliest,
                Dispensation.kind == "scheduled",
            )
        ):
            if subject_id in found:
                found[subject_id].given.add(code)
    return list(found.values())


def _remaining(subject: _OnSchedule, today: date) -> list[VisitPlan]:
    """The subject's dosing visits not given whose window has not closed."""
    return [
        v
        for v in visit_plan(subject.day1)
        if v.kits and v.code not in subject.given and v.latest >= today
    ]


def _due_visits(sites: list[Site], subjects: Iterable[_OnSchedule]) -> list[DueVisit]:
    """Visits due today or opening within the week, by date then screening number."""
    by_id = {s.id: s for s in sites}
    due = []
    for subject in subjects:
        site = by_id[subject.site_id]
        today = clock.today(site)
        for v in _remaining(subject, today)[:1]:  # the next visit only
            if v.earliest <= today + timedelta(days=WEEK - 1):
                due.append(
                    DueVisit(
                        subject.subject_id,
                        subject.screening_number,
                        subject.randomization_number,
                        site.code,
                        v,
                        today,
                    )
                )
    return sorted(due, key=lambda d: (max(d.visit.earliest, d.today), d.screening_number))


# --- days of cover -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteCover:
    """A site's days of cover (supply/cover.py): the smallest over its kit types."""

    site_id: int
    site_code: str
    site_name: str
    active: bool
    usable: int  # usable kits, every treatment and kit type together
    days: int | None  # None: beyond the horizon (or nothing to give)
    warn: bool
    today: date


def _usable_by_site(session: Session, sites: list[Site]) -> dict[tuple[int, str], int]:
    """Usable kits per (site, kit type), every treatment together: from the kit_count summary
    by blinded lot (one statement), judged by each lot's expiry as randomization judges it."""
    if not sites:
        return {}
    days = {s.id: clock.today(s) for s in sites}
    usable: Counter[tuple[int, str]] = Counter()
    for site_id, kit_type, lot_expiry, n in session.execute(
        select(KitCount.place_id, Lot.kit_type, Lot.expiry, func.sum(KitCount.n))
        .join(Lot, KitCount.lot_id == Lot.id)
        .where(
            KitCount.place_kind == "site",
            KitCount.place_id.in_(sorted(days)),
            KitCount.state == KitState.AVAILABLE,
            KitCount.n > 0,
        )
        .group_by(KitCount.place_id, Lot.kit_type, Lot.expiry)
    ):
        today = days[site_id]
        if can_dispense(
            lot_expiry,
            today,
            through=usable_through(today),
            do_not_dispense_days=protocol().do_not_dispense_days,
        ):
            usable[(site_id, kit_type)] += int(n)
    return usable


def _covers(session: Session, sites: list[Site], subjects: list[_OnSchedule]) -> list[SiteCover]:
    """Each site's days of cover, in site order (arm-blind: supply/cover.py)."""
    p = protocol()
    usable = _usable_by_site(session, sites)
    demand: dict[tuple[int, str], list[tuple[int, int]]] = defaultdict(list)
    todays = {s.id: clock.today(s) for s in sites}
    types = {v.code: v.kit_type for v in p.visits}
    for subject in subjects:
        today = todays[subject.site_id]
        for v in _remaining(subject, today):
            offset = (v.earliest - today).days
            demand[(subject.site_id, types[v.code])].append((offset, v.kits))
    first = min((v for v in p.visits if v.kits), key=lambda v: v.day, default=None)
    covers = []
    for site in sites:
        active = site.status == SiteStatus.ACTIVE
        results = [
            cover_rule.days_of_cover(
                usable[(site.id, kit.code)],
                demand[(site.id, kit.code)],
                randomizations_per_week=p.predictive_randomizations_per_week if active else 0.0,
                day1_kits=first.kits if first and first.kit_type == kit.code else 0,
                warn_within=p.shipping_lead_days + WARN_MARGIN_DAYS,
            )
            for kit in p.kit_types
        ]
        known = [r.days for r in results if r.days is not None]
        covers.append(
            SiteCover(
                site.id,
                site.code,
                site.name,
                active,
                sum(usable[(site.id, kit.code)] for kit in p.kit_types),
                min(known) if known else None,
                active and any(r.warn for r in results),
                todays[site.id],
            )
        )
    return covers


def _shipments(
    session: Session, site_ids: Collection[int], states: Collection[ShipmentState]
) -> list[Shipment]:
    if not site_ids:
        return []
    return list(
        session.scalars(
            select(Shipment)
            .where(Shipment.site_id.in_(sorted(site_ids)), Shipment.state.in_(list(states)))
            .order_by(Shipment.id)
        )
    )


# --- the homes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvestigatorHome:
    to_complete: list[Subject]  # in screening: answers to record, eligibility to sign
    to_randomize: list[Subject]  # confirmed eligible, not yet randomized
    visits: list[DueVisit]


def investigator_home(*, actor: Actor) -> InvestigatorHome:
    """Subjects needing the investigator at their sites and the visits due there."""
    scope = _scope(actor, Permission.SCREEN_SUBJECTS)
    session = read_session()
    sites = _sites(session, scope)
    waiting = list(
        session.scalars(
            select(Subject)
            .where(
                Subject.site_id.in_([s.id for s in sites]),
                Subject.status.in_([SubjectStatus.SCREENING, SubjectStatus.ELIGIBLE]),
            )
            .order_by(Subject.screening_number)
        )
    )
    return InvestigatorHome(
        [s for s in waiting if s.status == SubjectStatus.SCREENING],
        [s for s in waiting if s.status == SubjectStatus.ELIGIBLE],
        _due_visits(sites, _on_schedule(session, sites)),
    )


@dataclass(frozen=True)
class PharmacistHome:
    due_today: list[DueVisit]
    due_this_week: list[DueVisit]
    to_receive: list[Shipment]
    covers: list[SiteCover]
    site_codes: dict[int, str]


def pharmacist_home(*, actor: Actor) -> PharmacistHome:
    """Visits due today and this week, shipments to receive, days of cover per site."""
    scope = _scope(actor, Permission.DISPENSE)
    session = read_session()
    sites = _sites(session, scope)
    subjects = _on_schedule(session, sites)
    due = _due_visits(sites, subjects)
    return PharmacistHome(
        [d for d in due if d.due_today],
        [d for d in due if not d.due_today],
        _shipments(session, [s.id for s in sites], [ShipmentState.SHIPPED]),
        _covers(session, sites, subjects),
        {s.id: s.code for s in sites},
    )


@dataclass(frozen=True)
class SupplyHome:
    covers: list[SiteCover]  # the sites by days of cover, fewest first
    in_flight: list[Shipment]
    alerts: list[SupplyAlert]
    site_codes: dict[int, str]
    people: dict[int, str]  # user id -> name, for who acknowledged or resolved
    resolved: list[SupplyAlert] = field(default_factory=list)  # the latest resolved ones


RECENTLY_RESOLVED = 5


def supply_home(*, actor: Actor) -> SupplyHome:
    """Sites by days of cover, shipments requested or on their way, open alerts and the latest
    resolved ones (who, when, why)."""
    from iwrs.services.users import require

    require(actor, Permission.MANAGE_SUPPLY)
    session = read_session()
    sites = _sites(session, None)
    covers = _covers(session, sites, _on_schedule(session, sites))
    covers.sort(key=lambda c: (not c.active, c.days is None, c.days or 0, c.site_code))
    alerts = list(
        session.scalars(
            select(SupplyAlert)
            .where(SupplyAlert.resolved_at.is_(None))
            .order_by(SupplyAlert.id.desc())
        )
    )
    resolved = list(
        session.scalars(
            select(SupplyAlert)
            .where(SupplyAlert.resolved_at.is_not(None))
            .order_by(SupplyAlert.resolved_at.desc(), SupplyAlert.id.desc())
            .limit(RECENTLY_RESOLVED)
        )
    )
    ackers = {
        user_id
        for a in alerts + resolved
        for user_id in (a.acknowledged_by_id, a.resolved_by_id)
        if user_id is not None
    }
    people = (
        {
            user_id: name
            for user_id, name in session.execute(
                select(User.id, User.full_name).where(User.id.in_(sorted(ackers)))
            )
        }
        if ackers
        else {}
    )
    return SupplyHome(
        covers,
        _shipments(
            session, [s.id for s in sites], (ShipmentState.REQUESTED, ShipmentState.SHIPPED)
        ),
        alerts,
        {s.id: s.code for s in sites},
        people,
        resolved,
    )


@dataclass(frozen=True)
class BalancePoint:
    """Cumulative randomizations per arm in one group (a stratum or a site) up to a week."""

    week: date  # the Monday of the week (site's local date of day 1)
    by_arm: dict[str, int]


@dataclass(frozen=True)
class Balance:
    group: str  # a stratum key or a site code
    points: list[BalancePoint]
    label: str = ""  # the group in words ("Underlying disease: RA")

    @property
    def final(self) -> dict[str, int]:
        return self.points[-1].by_arm if self.points else {}

    @property
    def peak(self) -> int:
        """The largest cumulative count of any arm (at least 1: the chart's scale)."""
        return max([1, *(n for p in self.points for n in p.by_arm.values())])

    @property
    def slug(self) -> str:
        """The group as an HTML id fragment."""
        return "".join(c if c.isalnum() else "-" for c in self.group)

    @property
    def imbalance(self) -> int:
        counts = list(self.final.values())
        return max(counts) - min(counts) if counts else 0


@dataclass(frozen=True)
class StatisticianHome:
    arms: list[str]
    by_stratum: list[Balance]
    by_site: list[Balance]
    randomized: int
    lists: ListStatus | None  # the active list: slots used and remaining per stratum
    stratum_labels: dict[str, str]  # each stratum key of the list in words
    low_slots: int = 0  # a stratum with fewer slots remaining is flagged (LOW_SLOTS)


def statistician_home(*, actor: Actor) -> StatisticianHome:
    """The active list's slots used and remaining per stratum, and the balance by stratum and
    by site over time (cumulative per week), unblinded; the viewing is audited
    (`balance.viewed`). One read of the randomizations with their slots; the arms are opened
    through the bounded cache of opened tokens (CPU grows with the randomizations, the
    statements do not)."""
    arms = [a.code for a in protocol().arms]
    with transaction() as session:
        acting_user(session, actor, Permission.SEE_ARM)
        rows = session.execute(
            select(Randomization.randomized_on, Site.code, RandomizationSlot)
            .join(Site, Randomization.site_id == Site.id)
            .join(RandomizationSlot, Randomization.slot_id == RandomizationSlot.id)
            .order_by(Randomization.randomized_on, Randomization.id)
        ).all()
        events = [(day, site, slot.stratum, slot_arm(slot)) for day, site, slot in rows]
        lists = active_list_status(session)
        audit.record(
            session,
            actor=actor,
            action="balance.viewed",
            entity_type="randomization",
            after={"subjects": len(events)},
        )
    return StatisticianHome(
        arms,
        _balances(((stratum, day, arm) for day, _, stratum, arm in events), arms, _stratum_label),
        _balances(((site, day, arm) for day, site, _, arm in events), arms, str),
        len(events),
        lists,
        {st.stratum: _stratum_label(st.stratum) for st in (lists.strata if lists else [])},
        LOW_SLOTS,
    )


def _stratum_label(key: str) -> str:
    """A stratum key in words: "disease=RA" -> "Underlying disease: RA"."""
    labels = {f.factor: f.label for f in protocol().stratification}
    levels = stratum_levels(key)
    return "; ".join(f"{labels.get(k, k)}: {v}" for k, v in levels.items()) or "all subjects"


def _balances(
    events: Iterable[tuple[str, date, str]], arms: list[str], label: Callable[[str], str]
) -> list[Balance]:
    """Per group, the cumulative counts per arm at the end of every week of the trial's
    randomizations (Monday-dated), from a zero week before the first: one time axis shared by
    every group, so their charts compare."""
    weeks: dict[str, dict[date, Counter[str]]] = defaultdict(dict)
    running: dict[str, Counter[str]] = defaultdict(Counter)
    for group, day, arm in events:
        running[group][arm] += 1
        weeks[group][day - timedelta(days=day.weekday())] = Counter(running[group])
    mondays = sorted({week for by_week in weeks.values() for week in by_week})
    if not mondays:
        return []
    axis = [mondays[0] - timedelta(days=WEEK)]
    while axis[-1] < mondays[-1]:
        axis.append(axis[-1] + timedelta(days=WEEK))
    balances = []
    for group in sorted(weeks):
        counts: Counter[str] = Counter()
        points = []
        for week in axis:
            counts = weeks[group].get(week, counts)
            points.append(BalancePoint(week, {a: counts[a] for a in arms}))
        balances.append(Balance(group, points, label(group)))
    return balances


RECENT_EVENTS = 10


def auditor_home(*, actor: Actor) -> list[AuditEvent]:
    """The latest events of the trail (newest first)."""
    from iwrs.services.users import require

    require(actor, Permission.VIEW_AUDIT)
    return list(
        read_session().scalars(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(10))
    )


@dataclass(frozen=True)
class AdminHome:
    users_by_role: dict[str, int]  # active accounts per role
    inactive: int
    locked: list[User]  # sign-in or e-signature locked now
    without_site: list[User]  # active site-role accounts with no site
    temporary_password: int  # accounts still to change a temporary password
    pending_requests: int  # unblinded access requests awaiting approval
    sites_by_status: dict[str, int]
    inactive_sites: list[Site]


def admin_home(*, actor: Actor) -> AdminHome:
    """Users and sites, and what waits for the admin."""
    from iwrs.services.users import require

    require(actor, Permission.MANAGE_USERS)
    session = read_session()
    now = clock.now()
    people = list(session.scalars(select(User).order_by(User.username)))
    sites = list(session.scalars(select(Site).order_by(Site.code)))
    pending = session.scalar(
        select(func.count())
        .select_from(UnblindedAccessRequest)
        .where(UnblindedAccessRequest.status == AccessRequestStatus.PENDING)
    )
    active = [u for u in people if u.active]
    return AdminHome(
        dict(sorted(Counter(str(u.role) for u in active).items())),
        len(people) - len(active),
        [u for u in active if _locked(u, now)],
        [u for u in active if u.role.site_scoped and not u.site_links],
        sum(1 for u in active if u.password_temporary),
        int(pending or 0),
        dict(sorted(Counter(str(s.status) for s in sites).items())),
        [s for s in sites if s.status == SiteStatus.INACTIVE],
    )


def _locked(user: User, now: datetime) -> bool:
    return any(
        until is not None and clock.as_utc(until) > now
        for until in (user.locked_until, user.sign_in_locked_until)
    )
