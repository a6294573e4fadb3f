"""Use cases for subjects: screening, eligibility assessment and confirmation, screen failure,
withdrawal and re-screening."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload, object_session

from iwrs import audit, clock, signatures, validation
from iwrs.audit import Actor, canonical_json
from iwrs.auth import Permission, has_permission, not_found, require_site
from iwrs.db import transaction
from iwrs.eligibility import Assessment, Context, Engine, FieldError
from iwrs.errors import Conflict, InvalidInput, NotFound
from iwrs.models.sites import Site, SiteStatus
from iwrs.models.subjects import (
    Decision,
    EligibilityAssessment,
    Outcome,
    Sex,
    Subject,
    SubjectStatus,
)
from iwrs.models.users import User
from iwrs.protocol import Protocol
from iwrs.services import eligibility_drafts, persons
from iwrs.services.coded_reasons import coded_reason
from iwrs.services.drug_classes import with_drug_classes
from iwrs.services.stated_dates import StatedDate, stated_date
from iwrs.services.users import confirm_signature, sign

SEXES = tuple(s.value for s in Sex)


def protocol() -> Protocol:
    return current_app.extensions["iwrs.protocol"]


def engine() -> Engine:
    """The eligibility engine for the loaded protocol, built once per application."""
    if "iwrs.eligibility" not in current_app.extensions:
        current_app.extensions["iwrs.eligibility"] = Engine(protocol())
    return current_app.extensions["iwrs.eligibility"]


def _investigator(
    session: Session, actor: Actor, site_id: int, missing: NotFound | None = None
) -> User:
    """The acting user, if an investigator of this site; otherwise `missing` (the record asked
    for does not exist; default: the site)."""
    user = (  # the user and their sites in one statement
        session.get(User, actor.user_id, options=[joinedload(User.site_links)])
        if actor.user_id is not None
        else None
    )
    if user is None or not has_permission(user, Permission.SCREEN_SUBJECTS):
        raise NotFound("subjects are managed by the site's investigators", rule="permission")
    require_site(user, site_id, missing)
    return user


def _subject_for_update(session: Session, actor: Actor, subject_id: int) -> Subject:
    subject = session.scalars(
        select(Subject).where(Subject.id == subject_id).with_for_update()
    ).first()
    if subject is None:
        raise NotFound(f"subject {subject_id} does not exist", field="subject_id", rule="exists")
    _investigator(
        session, actor, subject.site_id, not_found("subject", subject_id, field="subject_id")
    )
    # The derived stratum is read again once the row is held: the locking statement may have
    # computed it before waiting for a concurrent decision (PostgreSQL re-reads only the row).
    session.expire(subject, ["stratum"])
    return subject


def _snapshot(subject: Subject) -> dict[str, Any]:
    return {
        "screening_number": subject.screening_number,
        "status": str(subject.status),
        "stratum": subject.stratum,
    }


def _set_status(subject: Subject, status: SubjectStatus) -> None:
    subject.status = status
    subject.status_changed_at = clock.now()


def parse_date(value: Any, field: str) -> date:
    """A date typed DD-MMM-YYYY or YYYY-MM-DD (iwrs/validation.py, rules date_format, date)."""
    return validation.day_date(value, field=field)


def screen_subject(
    *,
    actor: Actor,
    site_id: int,
    date_of_birth: Any,
    sex: str,
    screening_date: Any = None,
    backdate_reason: str | None = None,
    initials: str | None = None,
    different_person_password: str | None = None,
) -> Subject:
    """Register a subject at an active site, screened on `screening_date` (stated, see
    `stated_dates`) or the site's local today.

    The same date of birth, sex and initials screened before at any site is refused (rule
    possible_duplicate, iwrs.services.persons) unless the investigator signs, with
    `different_person_password`, that this is a different person."""
    dob = parse_date(date_of_birth, "date_of_birth")
    if sex not in SEXES:
        raise InvalidInput("sex: must be female or male", field="sex", rule="choice")
    key = persons.person_key(
        date_of_birth=dob, sex=sex, initials=persons.normalize_initials(initials)
    )
    if different_person_password is not None:
        confirm_signature(signer_id=actor.user_id, password=different_person_password)
    with transaction() as session:
        _investigator(session, actor, site_id)
        site = session.get(Site, site_id)
        assert site is not None  # _investigator found it
        screening = stated_date(
            value=screening_date,
            field="screening_date",
            site=site,
            not_before=None,
            previous_step="",
            reason=backdate_reason,
        )
        _check_birth(dob, screening.on)
        found = persons.matches(session, key=key, site_id=site_id)
        if found and different_person_password is None:
            persons.refuse_duplicate(found)
        subject = _register(
            session,
            actor,
            site_id=site_id,
            date_of_birth=dob,
            sex=sex,
            screening=screening,
            person_key=key,
        )
        if found:
            _sign_distinct_person(session, actor, subject, found)
        return subject


def _check_birth(dob: date, screening_date: date) -> None:
    if dob >= screening_date:
        raise InvalidInput(
            "date_of_birth: must be before the screening date", field="date_of_birth", rule="past"
        )
    if (screening_date - dob).days > 120 * 366:
        raise InvalidInput(
            "date_of_birth: more than 120 years ago; check the year",
            field="date_of_birth",
            rule="plausible",
        )


def _sign_distinct_person(
    session: Session, actor: Actor, subject: Subject, found: persons.Matches
) -> None:
    signature = sign(
        session,
        actor=actor,
        meaning=signatures.distinct_person(described=found.described()),
        entity_type="subject",
        entity_id=subject.id,
    )
    subject.distinct_person_signature_id = signature.id
    audit.record(
        session,
        actor=actor,
        action="subject.distinct_person_confirmed",
        entity_type="subject",
        entity_id=subject.id,
        site_id=subject.site_id,
        subject_id=subject.id,
        after={"screening_number": subject.screening_number, "matched": found.described()},
    )


def _register(
    session: Session,
    actor: Actor,
    *,
    site_id: int,
    date_of_birth: date,
    sex: str,
    screening: StatedDate | None = None,
    rescreen_of: Subject | None = None,
    person_key: str | None = None,
    reason: str | None = None,
) -> Subject:
    """Insert the subject; its screening number is the site code plus the site's next
    sequence number, never reused."""
    # The site row is locked: it holds the screening sequence and its status.
    site = session.scalars(select(Site).where(Site.id == site_id).with_for_update()).one()
    if site.status != SiteStatus.ACTIVE:
        raise Conflict(
            f"site_id: site {site.code} is {site.status}; subjects are screened only at "
            "active sites",
            field="site_id",
            rule="site_active",
        )
    site.screening_seq += 1
    now = clock.now()
    screening = screening or StatedDate(clock.today(site), None)
    today = screening.on
    subject = Subject(
        site_id=site.id,
        screening_number=f"{site.code}-{site.screening_seq:03d}",
        status=SubjectStatus.SCREENING,
        sex=sex,
        date_of_birth=date_of_birth,
        screening_date=today,
        rescreen_of_id=rescreen_of.id if rescreen_of else None,
        person_key=rescreen_of.person_key if rescreen_of else person_key,
        distinct_person_signature_id=(
            rescreen_of.distinct_person_signature_id if rescreen_of else None
        ),
        created_at=now,
        created_by_id=actor.user_id,
        status_changed_at=now,
    )
    session.add(subject)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="subject.rescreened" if rescreen_of else "subject.screened",
        entity_type="subject",
        entity_id=subject.id,
        site_id=site.id,
        subject_id=subject.id,
        after={
            **_snapshot(subject),
            **screening.audit_fields("screening_date"),
            "rescreen_of": rescreen_of.screening_number if rescreen_of else None,
        },
        reason=reason or screening.backdate_reason,
    )
    return subject


def context_for(subject: Subject, on: date | None = None) -> Context:
    """The engine's context for `subject`, assessed on `on` (default: the site's local today):
    no answer may be dated after the day the facts were assessed."""
    return Context(
        screening_date=subject.screening_date,
        today=on or clock.today(subject.site),
        date_of_birth=subject.date_of_birth,
        sex=subject.sex,
    )


@dataclass(frozen=True)
class AssessmentRecord:
    """A stored assessment and the engine's full result for it."""

    row: EligibilityAssessment
    result: Assessment


def _check_answer_text(value: Any, path: str) -> None:
    """Typed answers (a drug name, a choice) hold no control or bidi characters (validation)."""
    if isinstance(value, str):
        validation.check_characters(value, field=path or "answers")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_answer_text(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_answer_text(item, f"{path}[{index}]")


def _check_assessable(subject: Subject) -> None:
    """Only a subject in screening (or confirmed eligible, not yet randomized) is assessed."""
    if subject.status not in (SubjectStatus.SCREENING, SubjectStatus.ELIGIBLE):
        raise Conflict(
            f"subject {subject.screening_number} is {subject.status}; only subjects in "
            "screening (or confirmed eligible, not yet randomized) are assessed",
            field="subject_id",
            rule="status",
        )


def _check_answers_valid(errors: list[FieldError]) -> None:
    """Implausible or malformed values are refused, every one named."""
    if errors:
        raise InvalidInput(
            "; ".join(e.message for e in errors),
            errors=[{"field": e.field, "rule": e.rule, "message": e.message} for e in errors],
        )


def _record_assessment_row(
    session: Session,
    *,
    actor: Actor,
    subject: Subject,
    typed: dict[str, Any],
    result: Assessment,
    assessed_on: date,
) -> EligibilityAssessment:
    """The stored assessment: the typed answers and the engine's result, any outcome."""
    row = EligibilityAssessment(
        subject_id=subject.id,
        criteria_version=protocol().criteria_version,
        answers=canonical_json(typed) or "{}",
        computed=canonical_json(result.computed) or "{}",
        outcome=Outcome(result.outcome),
        failing=json.dumps([r.number for r in result.failing]),
        missing=json.dumps(list(result.missing_fields)),
        stratum=canonical_json(result.stratum) if result.stratum else None,
        assessed_at=clock.now(),
        assessment_date=assessed_on,
        assessed_by_id=actor.user_id,
    )
    session.add(row)
    return row


def _reopen_screening(subject: Subject) -> None:
    """A new assessment after confirmation (a corrected value, amended criteria) reopens
    screening: the subject must be confirmed again before randomization."""
    if subject.status == SubjectStatus.ELIGIBLE:
        _set_status(subject, SubjectStatus.SCREENING)


def _audit_assessment(
    session: Session,
    *,
    actor: Actor,
    subject: Subject,
    row: EligibilityAssessment,
    result: Assessment,
    assessed: StatedDate,
    drug_classes: Mapping[str, Any],
    before: dict[str, Any],
) -> None:
    """The audit event `eligibility.assessed`: answers, result and the stated date."""
    audit.record(
        session,
        actor=actor,
        action="eligibility.assessed",
        entity_type="eligibility_assessment",
        entity_id=row.id,
        site_id=subject.site_id,
        subject_id=subject.id,
        before=before,
        after={
            **_snapshot(subject),
            "criteria_version": row.criteria_version,
            "outcome": result.outcome,
            "failing": [r.number for r in result.failing],
            "missing": list(result.missing_fields),
            "answers": json.loads(row.answers),
            "computed": json.loads(row.computed),
            **assessed.audit_fields("assessment_date"),
            "drug_classes": dict(drug_classes),
        },
        reason=assessed.backdate_reason,
    )


def record_assessment(
    *,
    actor: Actor,
    subject_id: int,
    answers: Mapping[str, Any],
    assessment_date: Any = None,
    backdate_reason: str | None = None,
) -> AssessmentRecord:
    """Evaluate every criterion on the answers and keep the result (any outcome).

    `assessment_date` (stated, `stated_dates`; default the site's local today) is not before
    the screening date; no answer may be dated after it. Implausible or malformed values are
    refused, every one named, and nothing is stored.
    """
    _check_answer_text(answers, "")
    eng = engine()
    typed, errors = eng.parse(answers)
    with transaction() as session:
        subject = _subject_for_update(session, actor, subject_id)
        _check_assessable(subject)
        assessed = stated_date(
            value=assessment_date,
            field="assessment_date",
            site=subject.site,
            not_before=subject.screening_date,
            previous_step="screening date",
            reason=backdate_reason,
        )
        ctx = with_drug_classes(session, subject.id, context_for(subject, assessed.on))
        errors = errors + eng.validate(typed, ctx)
        _check_answers_valid(errors)
        result = eng.assess(typed, ctx)
        row = _record_assessment_row(
            session,
            actor=actor,
            subject=subject,
            typed=typed,
            result=result,
            assessed_on=assessed.on,
        )
        before = _snapshot(subject)
        _reopen_screening(subject)
        eligibility_drafts.discard_draft(session, subject.id)  # the form's draft is now recorded
        session.flush()
        session.expire(subject, ["stratum"])  # derived: the new assessment has no decision
        _audit_assessment(
            session,
            actor=actor,
            subject=subject,
            row=row,
            result=result,
            assessed=assessed,
            drug_classes=ctx.drug_classes,
            before=before,
        )
    return AssessmentRecord(row, result)


def _latest_assessment(session: Session, subject_id: int) -> EligibilityAssessment | None:
    return session.scalars(
        select(EligibilityAssessment)
        .where(EligibilityAssessment.subject_id == subject_id)
        .order_by(EligibilityAssessment.id.desc())
        .limit(1)
    ).first()


def _assessment_to_decide(
    session: Session, subject: Subject, assessment_id: int, wanted: Decision
) -> EligibilityAssessment:
    """The assessment a decision confirms: the subject's latest (rule latest), under the current
    criteria (rule criteria_version), whose outcome is the one `wanted` needs (rule outcome)."""
    latest = _latest_assessment(session, subject.id)
    if latest is None or latest.id != assessment_id:
        raise Conflict(
            "assessment_id: only the subject's latest assessment can be confirmed",
            field="assessment_id",
            rule="latest",
        )
    if latest.criteria_version != protocol().criteria_version:
        raise Conflict(
            "assessment_id: the eligibility criteria changed since this assessment; assess again",
            field="assessment_id",
            rule="criteria_version",
        )
    needed = Outcome.ELIGIBLE if wanted == Decision.ELIGIBLE else Outcome.NOT_ELIGIBLE
    if latest.outcome != needed:
        raise Conflict(
            f"decision: the assessment is {latest.outcome}; {wanted} needs {needed}",
            field="decision",
            rule="outcome",
        )
    return latest


def decide_eligibility(
    *,
    actor: Actor,
    subject_id: int,
    assessment_id: int,
    decision: str,
    signer_password: str,
    understood: bool,
) -> Subject:
    """Confirm, with an electronic signature, that the subject is eligible (the latest assessment
    says eligible under the current criteria) or a screen failure (it says not eligible);
    `understood`: the caller confirmed the decision cannot be undone
    (`validation.require_understood`)."""
    validation.require_understood(understood, step="an eligibility decision")
    try:
        wanted = Decision(decision)
    except ValueError:
        raise InvalidInput(
            "decision: must be eligible or screen_failure", field="decision", rule="choice"
        ) from None
    confirm_signature(signer_id=actor.user_id, password=signer_password)
    with transaction() as session:
        subject = _subject_for_update(session, actor, subject_id)
        if subject.status != SubjectStatus.SCREENING:
            raise Conflict(
                f"subject {subject.screening_number} is {subject.status}; nothing to confirm",
                field="subject_id",
                rule="status",
            )
        latest = _assessment_to_decide(session, subject, assessment_id, wanted)
        before = _snapshot(subject)
        meaning = signatures.eligibility(
            eligible=wanted == Decision.ELIGIBLE,
            screening_number=subject.screening_number,
            study_id=protocol().study_id,
            criteria_version=latest.criteria_version,
            failing=json.loads(latest.failing),
        )
        signature = sign(
            session,
            actor=actor,
            meaning=meaning,
            entity_type="eligibility_assessment",
            entity_id=latest.id,
        )
        latest.decision, latest.decided_at = wanted, clock.now()
        latest.decided_by_id, latest.signature_id = actor.user_id, signature.id
        _set_status(
            subject,
            SubjectStatus.ELIGIBLE if wanted == Decision.ELIGIBLE else SubjectStatus.SCREEN_FAILED,
        )
        if wanted != Decision.ELIGIBLE:  # screening is over: a draft would outlive it
            eligibility_drafts.discard_draft(session, subject.id)
        session.flush()
        session.expire(subject, ["stratum"])  # derived from the decision just made
        audit.record(
            session,
            actor=actor,
            action=f"eligibility.confirmed_{wanted}",
            entity_type="subject",
            entity_id=subject.id,
            site_id=subject.site_id,
            subject_id=subject.id,
            before=before,
            after={**_snapshot(subject), "assessment_id": latest.id},
        )
    return subject


def withdraw_subject(*, actor: Actor, subject_id: int, reason: str) -> Subject:
    """Withdraw a subject from screening or the study; the record stays, nothing is deleted.
    An unblinded subject's reason is coded (`coded_reasons`, rule coded_reason_after_unblinding)."""
    reason = validation.reason(reason)
    with transaction() as session:
        subject = _subject_for_update(session, actor, subject_id)
        if subject.status in (SubjectStatus.WITHDRAWN, SubjectStatus.SCREEN_FAILED):
            raise Conflict(
                f"subject {subject.screening_number} is already {subject.status}",
                field="subject_id",
                rule="status",
            )
        reason = coded_reason(subject, reason) or ""
        before = _snapshot(subject)
        _set_status(subject, SubjectStatus.WITHDRAWN)
        eligibility_drafts.discard_draft(session, subject.id)
        subject.withdrawal_reason = reason.strip()
        audit.record(
            session,
            actor=actor,
            action="subject.withdrawn",
            entity_type="subject",
            entity_id=subject.id,
            site_id=subject.site_id,
            subject_id=subject.id,
            before=before,
            after=_snapshot(subject),
            reason=reason.strip(),
        )
    return subject


def _rescreens_before(session: Session, subject: Subject) -> int:
    count, current = 0, subject
    while current.rescreen_of_id is not None:
        count += 1
        current = session.get(Subject, current.rescreen_of_id)  # type: ignore[assignment]
    return count


def rescreen_subject(*, actor: Actor, subject_id: int, reason: str) -> Subject:
    """Screen a screen failure again under a new screening number linked to the old one,
    as often as the protocol allows (GenSci048-204: once), for a stated `reason` (required,
    recorded in the audit event; coded once the subject is unblinded)."""
    reason = validation.reason(reason)
    with transaction() as session:
        subject = _subject_for_update(session, actor, subject_id)
        if subject.status != SubjectStatus.SCREEN_FAILED:
            raise Conflict(
                f"subject {subject.screening_number} is {subject.status}; only screen failures "
                "are re-screened",
                field="subject_id",
                rule="status",
            )
        allowed = protocol().rescreens_allowed
        already = session.scalar(
            select(func.count()).select_from(Subject).where(Subject.rescreen_of_id == subject.id)
        )
        # Every path counts: the re-screen chain and any other screening of the same person.
        used = max(
            _rescreens_before(session, subject), persons.screenings_of_person(session, subject) - 1
        )
        if already or used >= allowed:
            raise Conflict(
                f"subject_id: the protocol allows {allowed} re-screening(s) and "
                f"{subject.screening_number} has used them",
                field="subject_id",
                rule="rescreen_limit",
            )
        return _register(
            session,
            actor,
            site_id=subject.site_id,
            date_of_birth=subject.date_of_birth,
            sex=subject.sex,
            rescreen_of=subject,
            reason=reason,
        )


def evaluate_stored(subject: Subject, row: EligibilityAssessment) -> Assessment:
    """Re-run the engine on a stored assessment's answers to show its criterion-by-criterion
    result (the stored outcome stays the record; this is only for display)."""
    eng = engine()
    typed, _ = eng.parse(json.loads(row.answers))
    on = row.assessment_date or clock.local_date(row.assessed_at, subject.site)
    session = object_session(subject)
    ctx = context_for(subject, on)
    return eng.assess(typed, with_drug_classes(session, subject.id, ctx) if session else ctx)


def require_confirmed_eligible(session: Session, subject: Subject) -> EligibilityAssessment:
    """The eligibility gate randomization passes through: the subject is eligible, by a signed
    decision on an eligible assessment made under the current criteria, with every
    stratification factor known. Anything else is refused, naming what is missing."""
    if subject.status != SubjectStatus.ELIGIBLE:
        raise Conflict(
            f"subject {subject.screening_number} is {subject.status}; only subjects confirmed "
            "eligible are randomized",
            field="subject_id",
            rule="confirmed_eligible",
        )
    # The latest assessment must itself be the confirmed one: one read (the latest assessment
    # decided eligible is the latest assessment exactly when the latest is decided eligible).
    confirmed = _latest_assessment(session, subject.id)
    if (
        confirmed is None
        or confirmed.decision != Decision.ELIGIBLE
        or confirmed.outcome != Outcome.ELIGIBLE
        or confirmed.signature_id is None
    ):
        raise Conflict(
            f"subject {subject.screening_number} has no signed eligible assessment",
            field="subject_id",
            rule="confirmed_eligible",
        )
    if confirmed.criteria_version != protocol().criteria_version:
        raise Conflict(
            "subject_id: the eligibility criteria changed since the confirmation; assess again",
            field="subject_id",
            rule="criteria_version",
        )
    factors = json.loads(confirmed.stratum) if confirmed.stratum else {}
    unknown = [f.factor for f in protocol().stratification if f.factor not in factors]
    if unknown:
        raise Conflict(
            f"subject_id: stratification factor(s) {', '.join(unknown)} unknown",
            field="subject_id",
            rule="stratum_known",
        )
    return confirmed
