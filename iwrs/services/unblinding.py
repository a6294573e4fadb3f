"""Emergency unblinding: one subject's arm, to an authorised investigator of the subject's
site who gave a reason, confirmed it cannot be undone and signed. Recorded, notified, permanent.
The arm is shown on screen only; it is never written to the audit trail, the outbox or a log."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from iwrs import audit, clock, signatures, validation
from iwrs.audit import Actor
from iwrs.auth import Permission, not_found
from iwrs.db import read_session, transaction
from iwrs.errors import Conflict, InvalidInput, IWRSError, NotFound
from iwrs.models.randomization import Randomization, RandomizationSlot
from iwrs.models.sites import Site
from iwrs.models.subjects import Subject
from iwrs.models.unblinding import Notification, Unblinding
from iwrs.models.users import Signature, User
from iwrs.services import refusals
from iwrs.services.randomization import slot_arm
from iwrs.services.subjects import _investigator, protocol
from iwrs.services.users import confirm_signature, sign, site_reader

CATEGORIES = signatures.UNBLINDING_CATEGORIES
log = logging.getLogger("iwrs.notifications")


@dataclass(frozen=True)
class UnblindedArm:
    """What the unblinding investigator sees, and only they."""

    screening_number: str
    randomization_number: str
    arm_code: str
    arm_name: str
    unblinded_at: object
    first_view: bool


def _arm(session, subject: Subject) -> tuple[str, str, str]:  # type: ignore[no-untyped-def]
    randomization = session.scalars(
        select(Randomization).where(Randomization.subject_id == subject.id)
    ).first()
    if randomization is None:
        raise Conflict(
            f"subject {subject.screening_number} is not randomized: there is no arm to reveal",
            field="subject_id",
            rule="randomized",
        )
    slot = session.get(RandomizationSlot, randomization.slot_id)
    code = slot_arm(slot)
    name = next(a.name for a in protocol().arms if a.code == code)
    return randomization.randomization_number, code, name


def _subject_to_unblind(
    session: Session, actor: Actor, subject_id: int, *, lock: bool = False
) -> tuple[Subject, User]:
    """The subject, if it exists, is at one of the actor's sites (an investigator) and was
    randomized; refused otherwise (a subject out of scope as if it did not exist)."""
    query = select(Subject).where(Subject.id == subject_id)
    subject = session.scalars(query.with_for_update() if lock else query).first()
    if subject is None:
        raise NotFound(f"subject {subject_id} does not exist", field="subject_id", rule="exists")
    user = _investigator(
        session, actor, subject.site_id, not_found("subject", subject_id, field="subject_id")
    )
    randomized = session.scalar(
        select(Randomization.id).where(Randomization.subject_id == subject.id)
    )
    if randomized is None:
        raise Conflict(
            f"subject {subject.screening_number} is not randomized: there is no arm to reveal",
            field="subject_id",
            rule="randomized",
        )
    if subject.unblinded_at is not None:
        # Free text a blinded reader (auditor, sponsor contacts) sees must be written before its
        # writer could know the arm: once a subject is unblinded, its site may know the arm,
        # so no new reason is taken. The investigator who unblinded sees it again by view_arm.
        raise Conflict(
            f"subject {subject.screening_number} is already emergency-unblinded: nothing was "
            "recorded; the investigator who unblinded can view the treatment again",
            field="subject_id",
            rule="already_unblinded",
        )
    return subject, user


def _check_request(category: str, reason: str, understood: bool) -> str:
    """The request names a known category, a reason and the confirmation; the reason, checked."""
    if category not in CATEGORIES:
        raise InvalidInput(
            f"category: must be one of {', '.join(CATEGORIES)}", field="category", rule="choice"
        )
    if not reason.strip():
        raise InvalidInput(
            "reason: describe why the blind must be broken", field="reason", rule="required"
        )
    reason = validation.reason(reason)
    validation.require_understood(understood, step="an unblinding")
    return reason


def _check_may_unblind(actor: Actor, subject_id: int, signer_password: str) -> None:
    """Who may unblind whom is decided before the signature is checked: a refused request
    neither counts nor clears signature failures (nothing changes), and a blinded role
    never reaches the signature step."""
    try:
        _subject_to_unblind(read_session(), actor, subject_id)
        confirm_signature(signer_id=actor.user_id, password=signer_password)
    except IWRSError as refusal:  # who may not, or a wrong signature: audited, no arm
        refusals.record(
            actor=actor, action=refusals.UNBLINDING_REFUSED, refusal=refusal, subject_id=subject_id
        )
        raise


def _sign_unblinding(session: Session, actor: Actor, subject: Subject, category: str) -> Signature:
    """The investigator's signature of the unblinding, recorded in its transaction."""
    return sign(
        session,
        actor=actor,
        entity_type="subject",
        entity_id=subject.id,
        meaning=signatures.unblind(screening_number=subject.screening_number, category=category),
    )


def _record_unblinding(
    session: Session,
    *,
    subject: Subject,
    user: User,
    now: datetime,
    category: str,
    reason: str,
    sae_led_to_unblinding: bool,
    signature_id: int,
    stop: bool,
) -> Unblinding:
    """The unblinding row; the subject marked unblinded (and discontinued, if the protocol says)."""
    row = Unblinding(
        subject_id=subject.id,
        unblinded_by_id=user.id,
        unblinded_at=now,
        category=category,
        reason=reason.strip(),
        sae_led_to_unblinding=sae_led_to_unblinding,
        treatment_discontinued=stop,
        signature_id=signature_id,
    )
    session.add(row)
    subject.unblinded_at = subject.unblinded_at or now
    if stop and subject.treatment_discontinued_at is None:
        subject.treatment_discontinued_at = now
    session.flush()
    return row


def _notify_sponsor(
    session: Session,
    *,
    subject: Subject,
    user: User,
    number: str,
    now: datetime,
    category: str,
    reason: str,
    sae_led_to_unblinding: bool,
    stop: bool,
) -> None:
    """One message to every sponsor contact (if the protocol names any); no arm in it."""
    site = session.get(Site, subject.site_id)
    text = (
        f"Subject {subject.screening_number} ({number}) at site "
        f"{site.code if site else subject.site_id} was emergency-unblinded by "
        f"{user.full_name} ({user.username}) at {clock.utc_text(now)}.\n"
        f"Reason category: {CATEGORIES[category]}. Serious adverse event led to it: "
        f"{'yes' if sae_led_to_unblinding else 'no'}.\nReason: {reason.strip()}\n"
        f"Study treatment {'discontinued' if stop else 'continues'} per protocol.\n"
    )
    if protocol().unblinding_notify:  # one message to every sponsor contact
        session.add(
            Notification(
                recipient=", ".join(protocol().unblinding_notify),
                created_at=now,
                body=text,
                subject_line=f"[{protocol().study_id}] Emergency "
                f"unblinding of {subject.screening_number}",
            )
        )


def _audit_unblinding(
    session: Session,
    *,
    actor: Actor,
    row: Unblinding,
    subject: Subject,
    number: str,
    category: str,
    reason: str,
    sae_led_to_unblinding: bool,
    stop: bool,
) -> None:
    """The audit event `subject.unblinded`: the reason, never the arm."""
    audit.record(
        session,
        actor=actor,
        action="subject.unblinded",
        entity_type="unblinding",
        entity_id=row.id,
        site_id=subject.site_id,
        subject_id=subject.id,
        reason=reason.strip(),
        after={
            "subject": subject.screening_number,
            "randomization_number": number,
            "category": category,
            "sae_led_to_unblinding": sae_led_to_unblinding,
            "treatment_discontinued": stop,
            "notified": list(protocol().unblinding_notify),
        },
    )


def unblind(
    *,
    actor: Actor,
    subject_id: int,
    category: str,
    reason: str,
    understood: bool,
    signer_password: str,
    sae_led_to_unblinding: bool = False,
) -> UnblindedArm:
    """Break the blind of one subject, once: a request for a subject already unblinded (by
    anyone) is refused with rule `already_unblinded` and records nothing, so no reason is ever
    written by someone who may know the arm. The unblinding investigator sees the arm again
    with view_arm (audited, no free text)."""
    reason = _check_request(category, reason, understood)
    _check_may_unblind(actor, subject_id, signer_password)
    with transaction() as session:
        subject, user = _subject_to_unblind(session, actor, subject_id, lock=True)
        number, code, name = _arm(session, subject)
        now = clock.now()
        signature = _sign_unblinding(session, actor, subject, category)
        stop = protocol().unblinding_discontinues_treatment
        row = _record_unblinding(
            session,
            subject=subject,
            user=user,
            now=now,
            category=category,
            reason=reason,
            sae_led_to_unblinding=sae_led_to_unblinding,
            signature_id=signature.id,
            stop=stop,
        )
        _notify_sponsor(
            session,
            subject=subject,
            user=user,
            number=number,
            now=now,
            category=category,
            reason=reason,
            sae_led_to_unblinding=sae_led_to_unblinding,
            stop=stop,
        )
        _audit_unblinding(
            session,
            actor=actor,
            row=row,
            subject=subject,
            number=number,
            category=category,
            reason=reason,
            sae_led_to_unblinding=sae_led_to_unblinding,
            stop=stop,
        )
        return UnblindedArm(subject.screening_number, number, code, name, now, True)


def view_arm(*, actor: Actor, subject_id: int) -> UnblindedArm:
    """The investigator who unblinded a subject sees its arm again (audited as a view); a
    refused view is audited as `unblinding.refused` (iwrs/services/refusals.py)."""
    try:
        return _view_arm(actor=actor, subject_id=subject_id)
    except IWRSError as refusal:
        refusals.record(
            actor=actor, action=refusals.UNBLINDING_REFUSED, refusal=refusal, subject_id=subject_id
        )
        raise


def _view_arm(*, actor: Actor, subject_id: int) -> UnblindedArm:
    with transaction() as session:
        subject = session.get(Subject, subject_id)
        if subject is None:
            raise NotFound(
                f"subject {subject_id} does not exist", field="subject_id", rule="exists"
            )
        user = _investigator(
            session, actor, subject.site_id, not_found("subject", subject_id, field="subject_id")
        )
        earlier = session.scalars(
            select(Unblinding).where(
                Unblinding.subject_id == subject.id, Unblinding.unblinded_by_id == user.id
            )
        ).first()
        if earlier is None:
            raise NotFound(
                "you have not unblinded this subject", field="subject_id", rule="unblinded_by_you"
            )
        number, code, name = _arm(session, subject)
        audit.record(
            session,
            actor=actor,
            action="unblinding.viewed",
            entity_type="unblinding",
            entity_id=earlier.id,
            site_id=subject.site_id,
            subject_id=subject.id,
        )
        return UnblindedArm(
            subject.screening_number, number, code, name, earlier.unblinded_at, False
        )


@dataclass(frozen=True)
class ReportLine:
    subject: str
    site: str
    by: str
    at: object
    category: str
    reason: str
    sae: bool
    discontinued: bool


def report(*, actor: Actor) -> list[ReportLine]:
    """Every unblinding (never the arm), newest first; scoped to sites for site roles
    (VIEW_UNBLINDING_REPORT: investigators, statisticians, auditors, admins, the operator)."""
    site_ids = site_reader(actor, Permission.VIEW_UNBLINDING_REPORT)
    query = (
        select(Unblinding, Subject, User, Site)
        .join(Subject, Unblinding.subject_id == Subject.id)
        .join(User, Unblinding.unblinded_by_id == User.id)
        .join(Site, Subject.site_id == Site.id)
        .order_by(Unblinding.id.desc())
    )
    if site_ids is not None:
        query = query.where(Subject.site_id.in_(site_ids))
    return [
        ReportLine(
            s.screening_number,
            site.code,
            u.username,
            b.unblinded_at,
            CATEGORIES[b.category],
            b.reason,
            b.sae_led_to_unblinding,
            b.treatment_discontinued,
        )
        for b, s, u, site in read_session().execute(query).all()
    ]
