"""Use cases for dispensing at visits: the visit schedule drives which kit a subject receives;
the pharmacist confirms the number of the kit in hand; replacements and unscheduled kits keep
the subject's treatment; a discontinued subject receives nothing more."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, lazyload

from blinding.kits import is_valid_kit_number
from iwrs import audit, clock, locking, signatures, validation
from iwrs.audit import Actor
from iwrs.auth import Permission, not_found, require_site
from iwrs.db import read_session, transaction
from iwrs.errors import Conflict, InvalidInput, NotFound
from iwrs.models.randomization import (
    Dispensation,
    DispensationKind,
    KitRequest,
    KitRequestKind,
    Randomization,
    RandomizationSlot,
)
from iwrs.models.sites import Site, SiteStatus
from iwrs.models.subjects import Subject, SubjectStatus
from iwrs.models.supply import Kit
from iwrs.services.coded_reasons import coded_reason
from iwrs.services.randomization import (
    REPICKS,
    VisitPlan,
    slot_arm,
    tie_break,
    visit_plan,
)
from iwrs.services.stated_dates import REASON_FIELD, StatedDate, stated_date
from iwrs.services.supply import (
    ShelfTreatments,
    _apply,
    acting_user,
    dispensable_shelf,
    kit_check,
    kit_through,
    lock_dispensable,
    open_alert,
    protocol,
)
from iwrs.services.users import confirm_signature, sign
from supply.states import KitAction, Place

KINDS = tuple(k.value for k in DispensationKind)
EXTRA_KINDS = tuple(k.value for k in KitRequestKind)
NO_KIT = (
    "no dispensable kit for subject {subject} at site {site}: nothing was dispensed; the supply "
    "manager has been alerted"
)


@dataclass(frozen=True)
class DispenseResult:
    dispensation_id: int
    subject: str
    visit_code: str
    kit_number: str
    out_of_window: bool
    visit_date: date | None = None  # the site's local date of the visit
    dispensed_at: datetime | None = None  # the moment of entry, UTC


def _subject(
    session: Session, actor: Actor, subject_id: int
) -> tuple[Subject, Randomization, RandomizationSlot]:
    """The subject (locked), its randomization and the randomization's slot."""
    user = acting_user(session, actor, Permission.DISPENSE)
    # The site is read once, locked, by _lock_active_site (not also by the relationship's
    # selectin load here): `subject.site` then comes from the session's identity map.
    subject = session.scalars(
        select(Subject)
        .where(Subject.id == subject_id)
        .options(lazyload(Subject.site))
        .with_for_update()
    ).first()
    if subject is None:
        raise NotFound(f"subject {subject_id} does not exist", field="subject_id", rule="exists")
    require_site(user, subject.site_id, not_found("subject", subject_id, field="subject_id"))
    # Its slot comes in the same statement (the kit choice needs its arm).
    found = session.execute(
        select(Randomization, RandomizationSlot)
        .join(RandomizationSlot, RandomizationSlot.id == Randomization.slot_id)
        .where(Randomization.subject_id == subject.id)
    ).first()
    randomization, slot = found if found is not None else (None, None)
    if randomization is None or subject.status != SubjectStatus.RANDOMIZED:
        raise Conflict(
            f"subject {subject.screening_number} is {subject.status}; kits go only "
            "to randomized subjects",
            field="subject_id",
            rule="randomized",
        )
    if subject.treatment_discontinued_at is not None:
        raise Conflict(
            f"subject {subject.screening_number} has discontinued study treatment; "
            "no kit is dispensed",
            field="subject_id",
            rule="discontinued",
        )
    assert slot is not None
    return subject, randomization, slot


def _open_request(session: Session, subject: Subject, visit_code: str, kind: str) -> KitRequest:
    """The investigator's signed request an unscheduled or replacement kit fulfils (oldest)."""
    request = session.scalars(
        select(KitRequest)
        .where(
            KitRequest.subject_id == subject.id,
            KitRequest.visit_code == visit_code,
            KitRequest.kind == kind,
            KitRequest.dispensation_id.is_(None),
        )
        .order_by(KitRequest.id)
        .with_for_update()
    ).first()
    if request is None:
        raise Conflict(
            f"kind: a {kind} kit for {subject.screening_number} at {visit_code} needs the "
            "investigator's signed request first",
            field="kind",
            rule="investigator_request",
        )
    return request


def _refuse_for_stock(session: Session, site: Site, subject: Subject) -> Conflict:
    """No kit of the subject's arm: alert and refuse in words, field and rule that are the
    same whatever the arm (the refusal must not tell which arm is short). The alert is the
    system's; resupply is left to the scheduled run, whose emergency check serves this case."""
    open_alert(
        session,
        kind="site_stock_dispensing",
        site_id=site.id,
        actor=Actor.system("stock-check"),
        trigger={"event": "dispensing refused for stock", "site": site.code},
        message=f"Site {site.code} could not dispense a kit at a visit; ship kits to the site.",
    )
    return Conflict(
        NO_KIT.format(subject=subject.screening_number, site=site.code),
        field="site",
        rule="site_stock",
    )


def dispense(
    *,
    actor: Actor,
    subject_id: int,
    visit_code: str,
    kind: str = "scheduled",
    reason: str = "",
    visit_date: object = None,
    backdate_reason: str | None = None,
    settle: Callable[[Session, DispenseResult], None] | None = None,
) -> DispenseResult:
    """Pick a dispensable kit of the subject's treatment at the site (first expiry first out
    by lot, `supply.kit_choice`) and record it dispensed at the visit; the pharmacist then
    confirms the kit number. An unscheduled or replacement kit fulfils the investigator's
    signed request (`request_extra_kit`), whose reason it carries; `reason` is the
    pharmacist's for a scheduled kit out of its window. `visit_date` (stated, `stated_dates`;
    default the site's local today) is not before day 1 or an earlier visit, and decides the
    window; the kit is judged usable on the site's local today, when it is handed over, again
    once it is locked (`_pick_kit`), and its own sealed treatment must be the slot's arm (rule
    kit_check, the same refusal whatever the arm).
    For an unblinded subject both reasons are coded (rule coded_reason_after_unblinding).
    `settle(session, result)` is called in the transaction, after the dispensation: an
    idempotency key's outcome commits with it (iwrs.services.keyed_dispensing)."""
    reason = validation.reason(reason, required=False)
    if kind not in KINDS:
        raise InvalidInput(f"kind: must be one of {', '.join(KINDS)}", field="kind", rule="choice")
    with transaction() as session:
        subject, randomization, slot = _subject(session, actor, subject_id)
        reason = coded_reason(subject, reason) or ""
        backdate_reason = coded_reason(subject, backdate_reason, field=REASON_FIELD)
        site = _lock_active_site(session, subject)  # the site's kits: one pick at a time
        day1 = randomization.randomized_on
        visit = _dosing_visit(day1, visit_code)
        request = None if kind == "scheduled" else _open_request(session, subject, visit_code, kind)
        given = _dispensations(session, subject)
        _check_visit_not_dispensed(given, subject, visit_code, kind)
        today = clock.today(site)
        stated = _stated_visit_date(given, subject, day1, visit_code, visit_date, backdate_reason)
        out_of_window = _decide_out_of_window(day1, visit, kind, stated.on, reason)
        why = request.reason if request is not None else reason.strip()
        kit = _pick_kit(session, site, slot, day1, visit_code, today)
        # Defence in depth, as at randomization: the kit's own sealed value must be the slot's
        # arm; the refusal is the same whatever the arm (rule kit_check).
        refusal = (
            _refuse_for_stock(session, site, subject)
            if kit is None
            else kit_check(session, site, kit, arm=slot_arm(slot), use_case="dispensing")
        )
        if refusal is None:
            assert kit is not None
            result = _record_dispensation(
                session,
                actor,
                subject=subject,
                site=site,
                kit=kit,
                visit_code=visit_code,
                kind=kind,
                why=why,
                out_of_window=out_of_window,
                stated=stated,
                request=request,
            )
            if settle is not None:
                settle(session, result)
    if refusal is not None:
        raise refusal
    return result


def _lock_active_site(session: Session, subject: Subject) -> Site:
    """The subject's site, locked (one kit pick at a time), which must be active."""
    site = session.scalars(select(Site).where(Site.id == subject.site_id).with_for_update()).one()
    if site.status != SiteStatus.ACTIVE:
        raise Conflict(f"site {site.code} is {site.status}", field="site", rule="site_active")
    return site


def _dispensations(session: Session, subject: Subject) -> list[Dispensation]:
    """The subject's dispensations, read once for the checks of a new one (a handful: at most
    the protocol's visits and their extra kits, whatever the trial's size)."""
    return list(session.scalars(select(Dispensation).where(Dispensation.subject_id == subject.id)))


def _check_visit_not_dispensed(
    given: list[Dispensation], subject: Subject, visit_code: str, kind: str
) -> None:
    """A visit's scheduled kit is dispensed once (rule once_per_visit); `given`: the subject's
    dispensations (`_dispensations`)."""
    done = any(d.visit_code == visit_code and d.kind == "scheduled" for d in given)
    if kind == "scheduled" and done:
        raise Conflict(
            f"visit {visit_code} of {subject.screening_number} was dispensed "
            "already; use a replacement or an unscheduled kit",
            field="visit_code",
            rule="once_per_visit",
        )


def _decide_out_of_window(day1: date, visit: VisitPlan, kind: str, on: date, reason: str) -> bool:
    """Whether a scheduled kit is dispensed outside its visit's window, which takes the
    pharmacist's reason (rule out_of_window); the visit must be current (`_visit_current`)."""
    if kind == "scheduled":
        _visit_current(day1, visit, on)
    out_of_window = kind == "scheduled" and not visit.earliest <= on <= visit.latest
    if out_of_window and not reason.strip():
        raise InvalidInput(
            f"reason: the visit date {on} is outside the window of {visit.code} "
            f"({visit.earliest} to {visit.latest}); give a reason",
            field="reason",
            rule="out_of_window",
        )
    return out_of_window


def _pick_kit(
    session: Session,
    site: Site,
    slot: RandomizationSlot,
    day1: date,
    visit_code: str,
    today: date,
) -> Kit | None:
    """A dispensable kit of the subject's arm (its randomization's `slot`) at the site, locked
    and judged again as it stands now (`lock_dispensable`), or None if there is none. A kit
    that expired, was quarantined or fell inside the do-not-dispense window since the shelf
    was read is passed over and the shelf read again (at most REPICKS times)."""
    # Every kind lasts through the window end of the dosing visit after `visit_code`
    # (supply.expiry: an extra kit serves the interval of the visit it is requested for).
    through = kit_through(day1, visit_code)
    arm = slot_arm(slot)
    for _ in range(REPICKS):
        shelf = ShelfTreatments(dispensable_shelf(session, site.id, today=today, through=through))
        kit = shelf.pick(arm, tie_break())
        locking.failpoint("dispense.after_pick")
        if kit is None or lock_dispensable(
            session, kit, site_id=site.id, today=today, through=through
        ):
            return kit
    return None


def _record_dispensation(
    session: Session,
    actor: Actor,
    *,
    subject: Subject,
    site: Site,
    kit: Kit,
    visit_code: str,
    kind: str,
    why: str,
    out_of_window: bool,
    stated: StatedDate,
    request: KitRequest | None,
) -> DispenseResult:
    """Move the kit to the subject, record the dispensation (fulfilling the request, if any)
    and its audit event."""
    _apply(
        session,
        kit,
        KitAction.DISPENSE,
        actor=actor,
        to=Place.subject(subject.id),
        detail=f"{visit_code} {kind}",
    )
    row = Dispensation(
        subject_id=subject.id,
        kit_id=kit.id,
        visit_code=visit_code,
        kind=kind,
        reason=why or None,
        out_of_window=out_of_window,
        dispensed_at=clock.now(),
        visit_date=stated.on,
        dispensed_by_id=actor.user_id,
    )
    session.add(row)
    session.flush()
    after: dict[str, object] = {
        "subject": subject.screening_number,
        "visit": visit_code,
        "kind": kind,
        "kit": kit.number,
        "out_of_window": out_of_window,
        **stated.audit_fields("visit_date"),
    }
    if stated.backdated:
        after["backdate_reason"] = stated.backdate_reason
    if request is not None:
        request.dispensation_id = row.id
        after["kit_request"] = request.id
    audit.record(
        session,
        actor=actor,
        action="kit.dispensed",
        entity_type="dispensation",
        entity_id=row.id,
        site_id=site.id,
        subject_id=subject.id,
        reason=why or None,
        after=after,
    )
    return DispenseResult(
        row.id,
        subject.screening_number,
        visit_code,
        kit.number,
        out_of_window,
        visit_date=stated.on,
        dispensed_at=row.dispensed_at,
    )


def _stated_visit_date(
    given: list[Dispensation],
    subject: Subject,
    day1: date,
    visit_code: str,
    value: object,
    backdate_reason: str | None,
) -> StatedDate:
    """The visit's date at the site: not in the future, not before day 1 (randomization) nor
    before the date of an earlier visit of the schedule already dispensed."""
    order = [v.code for v in visit_plan(day1)]
    earlier = set(order[: order.index(visit_code)]) if visit_code in order else set()
    previous = [d.visit_date for d in given if d.visit_code in earlier and d.visit_date is not None]
    not_before = max([day1, *previous])
    return stated_date(
        value=value,
        field="visit_date",
        site=subject.site,
        not_before=not_before,
        previous_step="randomization (day 1)" if not_before == day1 else "previous visit",
        reason=backdate_reason,
    )


def _dosing_visit(day1: date, visit_code: str) -> VisitPlan:
    visit = {v.code: v for v in visit_plan(day1)}.get(visit_code)
    if visit is None or not visit.kits:
        raise InvalidInput(
            f"visit_code: {visit_code!r} is not a dosing visit of the protocol",
            field="visit_code",
            rule="dosing_visit",
        )
    return visit


def _visit_current(day1: date, visit: VisitPlan, today: date) -> None:
    """A scheduled kit is dispensed from the first day of its visit's window (rule
    window_not_open) until the window of the protocol's next visit opens (rule visit_missed);
    late within that stretch takes the pharmacist's reason (rule out_of_window).

    Decision (issue 10, finding 4): without this, a pharmacist could dispense a subject's later
    visits ahead, on free text alone, drawing kits of one arm until "no dispensable kit" splits
    the shelf by arm. So a subject has at most one scheduled kit open to dispensing at a time -
    its real demand. A kit outside that stretch (a missed visit) is an unscheduled kit: the
    investigator's signed request, capped per visit."""
    if today < visit.earliest:
        raise Conflict(
            f"visit_code: the window of {visit.code} opens on {visit.earliest}; "
            "nothing was dispensed",
            field="visit_code",
            rule="window_not_open",
        )
    later = [v.earliest for v in visit_plan(day1) if v.target > visit.target]
    if later and today >= min(later):
        raise Conflict(
            f"visit_code: {visit.code} was missed (the next visit's window opened on "
            f"{min(later)}); a kit now needs the investigator's signed unscheduled request",
            field="visit_code",
            rule="visit_missed",
        )


def _requester(session: Session, actor: Actor, subject_id: int, *, lock: bool) -> Subject:
    """The subject, if the actor is an investigator of its site and it is on study treatment."""
    user = acting_user(session, actor, Permission.RANDOMIZE)
    query = select(Subject).where(Subject.id == subject_id)
    subject = session.scalars(query.with_for_update() if lock else query).first()
    if subject is None:
        raise NotFound(f"subject {subject_id} does not exist", field="subject_id", rule="exists")
    require_site(user, subject.site_id, not_found("subject", subject_id, field="subject_id"))
    if subject.status != SubjectStatus.RANDOMIZED or subject.treatment_discontinued_at:
        raise Conflict(
            f"subject {subject.screening_number} is not on study treatment",
            field="subject_id",
            rule="on_treatment",
        )
    return subject


def request_extra_kit(
    *,
    actor: Actor,
    subject_id: int,
    visit_code: str,
    kind: str,
    reason: str,
    signer_password: str,
) -> KitRequest:
    """The investigator asks, with a reason and an e-signature, for an unscheduled or
    replacement kit at a dosing visit; at most the protocol's `extra_kits_per_visit` per
    subject and visit (rule replacement_limit). Every request alerts the supply manager.
    An unblinded subject's reason is coded (rule coded_reason_after_unblinding).
    The pharmacist then dispenses it (`dispense`, same kind) and confirms the kit in hand."""
    if kind not in EXTRA_KINDS:
        raise InvalidInput(
            f"kind: must be one of {', '.join(EXTRA_KINDS)}", field="kind", rule="choice"
        )
    reason = validation.reason(reason)
    # Who may ask, and with what reason, is settled before the signature.
    coded_reason(_requester(read_session(), actor, subject_id, lock=False), reason)
    confirm_signature(signer_id=actor.user_id, password=signer_password)
    limit = protocol().extra_kits_per_visit
    with transaction() as session:
        subject = _requester(session, actor, subject_id, lock=True)
        reason = coded_reason(subject, reason) or ""
        _check_visit_reached(session, subject, visit_code)
        _check_extra_kit_limit(session, subject, visit_code, limit)
        site = session.get(Site, subject.site_id)
        assert site is not None
        row = _record_kit_request(session, actor, subject, site, visit_code, kind, reason)
        open_alert(
            session,
            kind="kit_requested",
            site_id=site.id,
            actor=Actor.system("kit-requests"),
            trigger={"event": "kit.requested", "kit_request": row.id},
            once=False,
            message=f"Site {site.code}: an investigator requested a {kind} kit at visit "
            f"{visit_code}.",
        )
        return row


def _check_visit_reached(session: Session, subject: Subject, visit_code: str) -> None:
    """An extra kit belongs to a dosing visit already reached (rule window_not_open)."""
    randomization = session.scalars(
        select(Randomization).where(Randomization.subject_id == subject.id)
    ).one()
    visit = _dosing_visit(randomization.randomized_on, visit_code)
    if clock.today(subject.site) < visit.earliest:
        raise Conflict(
            f"visit_code: the window of {visit_code} opens on {visit.earliest}",
            field="visit_code",
            rule="window_not_open",
        )


def _check_extra_kit_limit(session: Session, subject: Subject, visit_code: str, limit: int) -> None:
    """At most the protocol's extra kits per subject and visit (rule replacement_limit)."""
    earlier = (
        session.scalar(
            select(func.count())
            .select_from(KitRequest)
            .where(KitRequest.subject_id == subject.id, KitRequest.visit_code == visit_code)
        )
        or 0
    )
    if earlier >= limit:
        raise Conflict(
            f"visit_code: {subject.screening_number} has had {earlier} unscheduled or "
            f"replacement kit(s) at {visit_code}; the protocol allows {limit} per visit",
            field="visit_code",
            rule="replacement_limit",
        )


def _record_kit_request(
    session: Session,
    actor: Actor,
    subject: Subject,
    site: Site,
    visit_code: str,
    kind: str,
    reason: str,
) -> KitRequest:
    """Record the request, the investigator's signature on it and its audit event."""
    row = KitRequest(
        subject_id=subject.id,
        visit_code=visit_code,
        kind=kind,
        reason=reason.strip(),
        requested_at=clock.now(),
        requested_by_id=actor.user_id,
    )
    session.add(row)
    session.flush()
    row.signature_id = sign(
        session,
        actor=actor,
        meaning=signatures.request_kit(
            kind=kind, screening_number=subject.screening_number, visit_code=visit_code
        ),
        entity_type="kit_request",
        entity_id=row.id,
    ).id
    audit.record(
        session,
        actor=actor,
        action="kit.requested",
        entity_type="kit_request",
        entity_id=row.id,
        site_id=site.id,
        subject_id=subject.id,
        reason=row.reason,
        after={"subject": subject.screening_number, "visit": visit_code, "kind": kind},
    )
    return row


def confirm_kit(*, actor: Actor, dispensation_id: int, kit_number: str) -> Dispensation:
    """The pharmacist types or scans the number of the kit in hand; it must be the kit
    dispensed (a mistyped number is caught by its check digit first)."""
    typed = kit_number.strip()
    if not is_valid_kit_number(typed):
        raise InvalidInput(
            f"kit_number: {typed!r} is not a valid kit number (7 or 9 digits with a "
            "check digit): check for a typing error",
            field="kit_number",
            rule="check_digit",
        )
    with transaction() as session:
        user = acting_user(session, actor, Permission.DISPENSE)
        row = session.scalars(
            select(Dispensation).where(Dispensation.id == dispensation_id).with_for_update()
        ).first()
        subject = session.get(Subject, row.subject_id) if row else None
        if row is None or subject is None:
            raise NotFound(
                f"dispensation {dispensation_id} does not exist",
                field="dispensation_id",
                rule="exists",
            )
        require_site(
            user,
            subject.site_id,
            not_found("dispensation", dispensation_id, field="dispensation_id"),
        )
        kit = session.get(Kit, row.kit_id)
        assert kit is not None
        if row.confirmed_at is not None:
            raise Conflict(
                f"kit {kit.number} was confirmed already", field="dispensation_id", rule="once"
            )
        if typed != kit.number:
            raise Conflict(
                f"kit_number: {typed} is not the kit dispensed to "
                f"{subject.screening_number} at {row.visit_code}; give the subject "
                f"kit {kit.number}",
                field="kit_number",
                rule="matches",
            )
        row.confirmed_at = clock.now()
        audit.record(
            session,
            actor=actor,
            action="kit.dispense_confirmed",
            entity_type="dispensation",
            entity_id=row.id,
            site_id=subject.site_id,
            subject_id=subject.id,
            after={"kit": kit.number, "visit": row.visit_code},
        )
        return row


def discontinue_treatment(*, actor: Actor, subject_id: int, reason: str) -> Subject:
    """The investigator records that the subject stops study treatment (no more kits); an
    unblinded subject's reason is coded (rule coded_reason_after_unblinding)."""
    from iwrs.services.subjects import _investigator

    reason = validation.reason(reason)
    with transaction() as session:
        subject = session.scalars(
            select(Subject).where(Subject.id == subject_id).with_for_update()
        ).first()
        if subject is None:
            raise NotFound(
                f"subject {subject_id} does not exist", field="subject_id", rule="exists"
            )
        _investigator(
            session, actor, subject.site_id, not_found("subject", subject_id, field="subject_id")
        )
        if subject.status != SubjectStatus.RANDOMIZED or subject.treatment_discontinued_at:
            raise Conflict(
                f"subject {subject.screening_number} is not on study treatment",
                field="subject_id",
                rule="on_treatment",
            )
        reason = coded_reason(subject, reason) or ""
        subject.treatment_discontinued_at = clock.now()
        audit.record(
            session,
            actor=actor,
            action="subject.treatment_discontinued",
            entity_type="subject",
            entity_id=subject.id,
            site_id=subject.site_id,
            subject_id=subject.id,
            reason=reason.strip(),
            after={"treatment_discontinued_at": subject.treatment_discontinued_at},
        )
        return subject
