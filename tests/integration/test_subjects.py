"""Screening and the eligibility gate: numbers, assessments, signed decisions, re-screening,
and that nobody the protocol excludes can get past the gate."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from iwrs.audit import Actor
from iwrs.db import read_session, transaction
from iwrs.demo import eligible_answers
from iwrs.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound
from iwrs.models import AuditEvent, EligibilityAssessment, Site, SiteStatus, Subject
from iwrs.services import sites, subjects
from tests.conftest import PASSWORD, next_initials


@pytest.fixture
def active_sites(ctx, make_user):
    """CN01 and CN02 activated by an admin (CN03, CN04 stay inactive)."""
    admin = make_user("admin")
    ids = {s.code: s.id for s in read_session().scalars(select(Site))}
    for code in ("CN01", "CN02"):
        sites.change_site_status(
            actor=Actor.of(admin),
            site_id=ids[code],
            status=SiteStatus.ACTIVE,
            signer_password=PASSWORD,
            understood=True,
        )
    return ids


@pytest.fixture
def investigator(active_sites, make_user):
    return make_user("investigator", sites=["CN01"])


def screen(investigator, site_id, **overrides):
    values = {"date_of_birth": "1968-04-02", "sex": "female", "initials": next_initials()}
    values |= overrides
    return subjects.screen_subject(actor=Actor.of(investigator), site_id=site_id, **values)


def answers(subject, **changes):
    base = eligible_answers(subjects.engine(), subject.screening_date)
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def assess(investigator, subject, **changes):
    return subjects.record_assessment(
        actor=Actor.of(investigator), subject_id=subject.id, answers=answers(subject, **changes)
    )


def decide(investigator, subject, record, decision, password=PASSWORD):
    return subjects.decide_eligibility(
        actor=Actor.of(investigator),
        subject_id=subject.id,
        assessment_id=record.row.id,
        decision=decision,
        signer_password=password,
        understood=True,
    )


def actions(subject_id):
    read_session().rollback()
    return list(
        read_session().scalars(
            select(AuditEvent.action)
            .where(AuditEvent.subject_id == subject_id)
            .order_by(AuditEvent.seq)
        )
    )


def test_screening_numbers_are_site_prefixed_sequential_and_never_reused(
    investigator, active_sites, clock
):
    first = screen(investigator, active_sites["CN01"])
    second = screen(investigator, active_sites["CN01"])
    assert (first.screening_number, second.screening_number) == ("CN01-001", "CN01-002")
    subjects.withdraw_subject(
        actor=Actor.of(investigator), subject_id=second.id, reason="consent withdrawn"
    )
    assert screen(investigator, active_sites["CN01"]).screening_number == "CN01-003"
    assert first.screening_date == clock.current.date()
    assert actions(first.id) == ["subject.screened"]


def test_screening_is_refused_at_inactive_and_foreign_sites(investigator, active_sites, make_user):
    with pytest.raises(NotFound) as foreign:
        screen(investigator, active_sites["CN02"])
    assert (foreign.value.field, foreign.value.rule) == ("site_id", "exists")
    other = make_user("investigator", sites=["CN03"])
    with pytest.raises(Conflict, match="inactive; subjects are screened only at active sites"):
        screen(other, active_sites["CN03"])
    pharmacist = make_user("pharmacist", sites=["CN01"])
    with pytest.raises(NotFound):
        screen(pharmacist, active_sites["CN01"])
    assert read_session().scalar(select(func.count()).select_from(Subject)) == 0


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"date_of_birth": "2030-01-01"}, "date_of_birth"),
        ({"date_of_birth": "1900-01-01"}, "date_of_birth"),
        ({"date_of_birth": "02/04/1968"}, "date_of_birth"),
        ({"sex": "unknown"}, "sex"),
    ],
)
def test_bad_screening_input_names_the_field(investigator, active_sites, overrides, field):
    with pytest.raises(InvalidInput) as refused:
        screen(investigator, active_sites["CN01"], **overrides)
    assert refused.value.field == field


def test_eligible_subject_is_confirmed_with_signature_and_stratum(investigator, active_sites):
    subject = screen(investigator, active_sites["CN01"])
    record = assess(investigator, subject, diagnosis_ra="no", diagnosis_ssc="yes")
    assert record.result.outcome == "eligible"
    confirmed = decide(investigator, subject, record, "eligible")
    assert confirmed.status == "eligible"
    assert json.loads(confirmed.stratum) == {"disease": "SSc"}
    assert actions(subject.id) == [
        "subject.screened",
        "eligibility.assessed",
        "eligibility.confirmed_eligible",
    ]
    with transaction() as session:
        gate = subjects.require_confirmed_eligible(session, session.get(Subject, subject.id))
    assert gate.id == record.row.id and gate.signature_id is not None


def test_every_failing_criterion_is_reported_not_just_the_first(investigator, active_sites):
    subject = screen(investigator, active_sites["CN01"])
    record = assess(
        investigator,
        subject,
        fvc_pct="39.9",
        platelets="74",
        hiv_ab="positive",
        qt_ms=None,
        rr_ms=None,
    )
    assert record.result.outcome == "not_eligible"
    assert json.loads(record.row.failing) == ["I5", "E14.2", "E15.3"]
    assert {"qt_ms", "rr_ms"} <= set(json.loads(record.row.missing)) | {"rr_ms"}


def test_not_eligible_subject_cannot_be_confirmed_eligible_or_pass_the_gate(
    investigator, active_sites
):
    subject = screen(investigator, active_sites["CN01"])
    record = assess(investigator, subject, fvc_pct="35")
    with pytest.raises(Conflict, match="the assessment is not_eligible"):
        decide(investigator, subject, record, "eligible")
    with transaction() as session, pytest.raises(Conflict, match="confirmed eligible"):
        subjects.require_confirmed_eligible(session, session.get(Subject, subject.id))
    failed = decide(investigator, subject, record, "screen_failure")
    assert failed.status == "screen_failed"
    with transaction() as session, pytest.raises(Conflict):
        subjects.require_confirmed_eligible(session, session.get(Subject, subject.id))


def test_incomplete_assessment_can_be_neither_confirmed_nor_failed(investigator, active_sites):
    subject = screen(investigator, active_sites["CN01"])
    record = assess(investigator, subject, wbc=None)
    assert record.result.outcome == "incomplete" and "wbc" in record.result.missing_fields
    for decision in ("eligible", "screen_failure"):
        with pytest.raises(Conflict):
            decide(investigator, subject, record, decision)


def test_only_the_latest_assessment_can_be_confirmed(investigator, active_sites):
    subject = screen(investigator, active_sites["CN01"])
    old = assess(investigator, subject)
    assess(investigator, subject, fvc_pct="30")
    with pytest.raises(Conflict, match="latest assessment"):
        decide(investigator, subject, old, "eligible")


def test_wrong_signature_confirms_nothing(investigator, active_sites):
    subject = screen(investigator, active_sites["CN01"])
    record = assess(investigator, subject)
    with pytest.raises(AuthenticationFailed):
        decide(investigator, subject, record, "eligible", password="not my password")
    read_session().expire_all()
    assert read_session().get(Subject, subject.id).status == "screening"


def test_implausible_values_are_refused_all_named_and_nothing_is_stored(investigator, active_sites):
    subject = screen(investigator, active_sites["CN01"])
    before = actions(subject.id)
    with pytest.raises(InvalidInput) as refused:
        assess(investigator, subject, fvc_pct="400", wbc="5000", hrct_date="2099-01-01")
    named = {p["field"] for p in refused.value.problems()}
    assert {"fvc_pct", "wbc", "hrct_date"} <= named
    assert read_session().scalar(select(func.count()).select_from(EligibilityAssessment)) == 0
    assert actions(subject.id) == before


def test_reassessing_a_confirmed_subject_reopens_screening(investigator, active_sites):
    subject = screen(investigator, active_sites["CN01"])
    decide(investigator, subject, assess(investigator, subject), "eligible")
    record = assess(investigator, subject, platelets="70")
    read_session().expire_all()
    reopened = read_session().get(Subject, subject.id)
    assert record.result.outcome == "not_eligible"
    assert reopened.status == "screening" and reopened.stratum is None
    with transaction() as session, pytest.raises(Conflict):
        subjects.require_confirmed_eligible(session, session.get(Subject, subject.id))


def test_screen_failure_is_rescreened_once_under_a_linked_new_number(investigator, active_sites):
    subject = screen(investigator, active_sites["CN01"])
    decide(investigator, subject, assess(investigator, subject, fvc_pct="30"), "screen_failure")
    again = subjects.rescreen_subject(
        actor=Actor.of(investigator), subject_id=subject.id, reason="Lab value repeated"
    )
    assert again.screening_number == "CN01-002" and again.rescreen_of_id == subject.id
    assert (again.date_of_birth, again.sex) == (subject.date_of_birth, subject.sex)
    with pytest.raises(Conflict, match="has used them"):
        subjects.rescreen_subject(
            actor=Actor.of(investigator), subject_id=subject.id, reason="Lab value repeated"
        )
    decide(investigator, again, assess(investigator, again, fvc_pct="30"), "screen_failure")
    with pytest.raises(Conflict, match="allows 1 re-screening"):
        subjects.rescreen_subject(
            actor=Actor.of(investigator), subject_id=again.id, reason="Lab value repeated"
        )
    with pytest.raises(Conflict, match="only screen failures"):
        subjects.rescreen_subject(
            actor=Actor.of(investigator),
            subject_id=screen(investigator, active_sites["CN01"]).id,
            reason="Lab value repeated",
        )


def test_other_site_investigator_can_neither_read_nor_change(investigator, active_sites, make_user):
    subject = screen(investigator, active_sites["CN01"])
    outsider = make_user("investigator", sites=["CN02"])
    with pytest.raises(NotFound):
        subjects.record_assessment(
            actor=Actor.of(outsider), subject_id=subject.id, answers=answers(subject)
        )
    with pytest.raises(NotFound):
        subjects.withdraw_subject(actor=Actor.of(outsider), subject_id=subject.id, reason="x")
    assert actions(subject.id) == ["subject.screened"]
