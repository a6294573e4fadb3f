"""Eligibility drafts (issue 15): the ~60-answer eligibility form kept server-side, per subject,
as the investigator types it, so that a session that times out mid-entry loses nothing.

A draft is a working copy, never a record: it is not evaluated, not an eligibility decision and
not part of what is signed; the page restores it into the form, and recording an assessment
from the form removes it (`subjects.record_assessment`, in the assessment's transaction, whose
audit event holds every answer that counts). Withdrawing the subject or confirming it a screen
failure removes it too, in that transaction (`subjects.withdraw_subject`,
`subjects.decide_eligibility`): a closed screening keeps no working copy of answers that can
no longer be recorded. (Randomization leaves a draft typed after the last assessment in place.)

Decision (issue 15 left it open): saving a draft writes no audit event; the draft table is
one of the rows `iwrs.audit.UNAUDITED_ROWS` lets a transaction change without one (like the
idempotency keys). A draft is overwritten in place every few seconds while someone types (the
page's autosave), decides nothing and is shown to no one but the subject's site investigators;
an event per save would flood the trail and take the chain head (the one global point of
contention, README rule 8) on every pause in typing. What reaches the record is audited when it
reaches it: the assessment, with every answer, in the transaction that removes the draft.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from iwrs import clock, validation
from iwrs.audit import Actor, canonical_json
from iwrs.auth import Permission, not_found, require_in_scope
from iwrs.db import read_session, transaction
from iwrs.errors import InvalidInput
from iwrs.models.subjects import EligibilityDraft, Subject
from iwrs.services import subjects

MAX_DRAFT_CHARACTERS = 64_000  # the form's ~60 answers and 8 medication rows take about 4,000


@dataclass(frozen=True)
class Draft:
    """A subject's draft: the answers as typed (the form's fields), the stated assessment date
    and its reason, and when it was last saved."""

    answers: dict[str, Any]
    assessment_date: str
    backdate_reason: str
    saved_at: datetime


def _checked(answers: Mapping[str, Any], assessment_date: str, backdate_reason: str) -> str:
    """The draft as stored: typed text only (no control or bidi characters), bounded."""
    subjects._check_answer_text(answers, "")
    for name, value in (("assessment_date", assessment_date), ("backdate_reason", backdate_reason)):
        if not isinstance(value, str):
            raise InvalidInput(f"{name}: must be text", field=name, rule="type")
        validation.check_characters(value, field=name, multiline=True)
    stored = canonical_json(
        {
            "answers": dict(answers),
            "assessment_date": assessment_date,
            "backdate_reason": backdate_reason,
        }
    )
    if stored is None or len(stored) > MAX_DRAFT_CHARACTERS:
        raise InvalidInput(
            f"answers: a draft holds at most {MAX_DRAFT_CHARACTERS} characters",
            field="answers",
            rule="max_length",
        )
    return stored


def save_draft(
    *,
    actor: Actor,
    subject_id: int,
    answers: Mapping[str, Any],
    assessment_date: str = "",
    backdate_reason: str = "",
) -> Draft:
    """Keep the subject's eligibility form as typed (replacing its earlier draft); only while
    the subject can be assessed (rule status), by an investigator of its site."""
    stored = _checked(answers, assessment_date, backdate_reason)
    with transaction() as session:
        # The subject row is held: drafts of one subject are saved one after the other.
        subject = subjects._subject_for_update(session, actor, subject_id)
        subjects._check_assessable(subject)
        row = session.scalars(
            select(EligibilityDraft).where(EligibilityDraft.subject_id == subject.id)
        ).first()
        if row is None:
            row = EligibilityDraft(subject_id=subject.id)
            session.add(row)
        assert actor.user_id is not None  # an investigator (_subject_for_update)
        row.answers, row.saved_at, row.saved_by_id = stored, clock.now(), actor.user_id
        return _draft(row)


def draft_of(*, actor: Actor, subject_id: int) -> Draft | None:
    """The subject's draft, if any (investigators of its site; the operator)."""
    from iwrs.services.users import site_reader

    scope = site_reader(actor, Permission.SCREEN_SUBJECTS)
    subject = read_session().get(Subject, subject_id)
    missing = not_found("subject", subject_id, field="subject_id")
    if subject is None:
        raise missing
    require_in_scope(scope, subject.site_id, missing)
    row = (
        read_session()
        .scalars(select(EligibilityDraft).where(EligibilityDraft.subject_id == subject_id))
        .first()
    )
    return _draft(row) if row else None


def discard_draft(session: Session, subject_id: int) -> None:
    """Remove the subject's draft inside the caller's transaction (an assessment recorded, the
    subject withdrawn or confirmed a screen failure)."""
    session.execute(delete(EligibilityDraft).where(EligibilityDraft.subject_id == subject_id))


def _draft(row: EligibilityDraft) -> Draft:
    stored = json.loads(row.answers)
    return Draft(
        stored["answers"], stored["assessment_date"], stored["backdate_reason"], row.saved_at
    )
