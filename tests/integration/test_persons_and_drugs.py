"""Issue 12 (findings 3, 4 and 8) on both databases: one person one subject (keyed person hash,
the duplicate shown, re-screen or a signed "different person", the re-screen limit on every
path), drugs off the dictionary classified with a signature, missing medication details."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, update

from iwrs.audit import Actor
from iwrs.db import read_session
from iwrs.errors import AuthenticationFailed, Conflict, InvalidInput
from iwrs.models import AuditEvent, DrugClassification, Signature, Subject
from iwrs.services import drug_classes, subjects
from tests.conftest import PASSWORD
from tests.integration import test_randomization, test_subjects
from tests.integration.randomization_worker import assess as worker_assess
from tests.integration.randomization_worker import randomize
from tests.integration.test_subjects import answers, assess, decide

# the fixtures of those modules, used here too
new_world, world = test_randomization.new_world, test_randomization.world
active_sites, investigator = test_subjects.active_sites, test_subjects.investigator

BORN = "1968-04-02"


def screen(user, site_id, initials="ZYL", **more):
    return subjects.screen_subject(
        actor=Actor.of(user),
        site_id=site_id,
        date_of_birth=more.pop("date_of_birth", BORN),
        sex=more.pop("sex", "female"),
        initials=initials,
        **more,
    )


def refusal(call, *args, **kwargs):
    with pytest.raises((Conflict, InvalidInput, AuthenticationFailed)) as caught:
        call(*args, **kwargs)
    return caught.value


def actions(subject_id):
    read_session().rollback()
    return list(
        read_session().scalars(select(AuditEvent.action).where(AuditEvent.subject_id == subject_id))
    )


# ---------------------------------------------------------------- duplicate persons


def test_the_person_is_stored_only_as_a_keyed_hash(investigator, active_sites):
    subject = screen(investigator, active_sites["CN01"], initials="z.y. l")
    row = read_session().get(Subject, subject.id)
    assert row.person_key is not None and len(row.person_key) == 64
    assert "ZYL" not in row.person_key and BORN not in row.person_key
    same = screen(investigator, active_sites["CN01"], initials="ABC")
    assert read_session().get(Subject, same.id).person_key != row.person_key


def test_the_same_person_screened_as_new_at_the_same_site_is_shown_and_refused(
    investigator, active_sites
):
    first = screen(investigator, active_sites["CN01"])
    error = refusal(screen, investigator, active_sites["CN01"], initials="zyl")
    assert (error.field, error.rule) == ("date_of_birth", "possible_duplicate")
    assert first.screening_number in error.message
    # a different date of birth, sex or initials is no match
    screen(investigator, active_sites["CN01"], initials="ZYM")
    screen(investigator, active_sites["CN01"], sex="male")
    screen(investigator, active_sites["CN01"], date_of_birth="1968-04-03")


def test_a_match_at_another_site_names_neither_the_site_nor_the_subject(
    investigator, active_sites, make_user
):
    first = screen(investigator, active_sites["CN01"])
    other = make_user("investigator", sites=["CN02"])
    error = refusal(screen, other, active_sites["CN02"])
    assert error.rule == "possible_duplicate"
    assert "another site" in error.message
    assert first.screening_number not in error.message and "CN01" not in error.message


def test_a_signed_different_person_is_screened_and_audited(investigator, active_sites):
    first = screen(investigator, active_sites["CN01"])
    wrong = refusal(screen, investigator, active_sites["CN01"], different_person_password="wrong")
    assert wrong.rule == "credentials"
    twin = screen(investigator, active_sites["CN01"], different_person_password=PASSWORD)
    row = read_session().get(Subject, twin.id)
    signature = read_session().get(Signature, row.distinct_person_signature_id)
    assert first.screening_number in signature.meaning
    assert "subject.distinct_person_confirmed" in actions(twin.id)


def test_the_rescreen_limit_counts_every_path(investigator, active_sites):
    first = screen(investigator, active_sites["CN01"])
    decide(investigator, first, assess(investigator, first, fvc_pct="30"), "screen_failure")
    again = subjects.rescreen_subject(
        actor=Actor.of(investigator), subject_id=first.id, reason="Lab value repeated"
    )
    assert (
        read_session().get(Subject, again.id).person_key
        == read_session().get(Subject, first.id).person_key
    )
    decide(investigator, again, assess(investigator, again, fvc_pct="30"), "screen_failure")
    # "new" again: shown as a duplicate, and the re-screen path is used up
    assert refusal(screen, investigator, active_sites["CN01"]).rule == "possible_duplicate"
    error = refusal(
        subjects.rescreen_subject,
        actor=Actor.of(investigator),
        subject_id=again.id,
        reason="Lab value repeated",
    )
    assert error.rule == "rescreen_limit"


def test_a_person_screened_twice_without_the_chain_still_uses_the_limit(
    investigator, active_sites, ctx
):
    """Two screenings of one person that are not linked (an old record, a race) count as two:
    the first one's re-screen is refused."""
    first = screen(investigator, active_sites["CN01"])
    decide(investigator, first, assess(investigator, first, fvc_pct="30"), "screen_failure")
    second = screen(investigator, active_sites["CN01"], initials="QQQ")
    key = read_session().get(Subject, first.id).person_key
    # the same person key on an unlinked second screening (a record from before the check)
    with ctx.extensions["iwrs.engine"].begin() as connection:
        connection.execute(update(Subject).where(Subject.id == second.id).values(person_key=key))
    error = refusal(
        subjects.rescreen_subject,
        actor=Actor.of(investigator),
        subject_id=first.id,
        reason="Lab value repeated",
    )
    assert error.rule == "rescreen_limit"


def test_one_person_never_holds_two_randomization_numbers(world):
    """The issue's case: randomized (R0001), withdrawn, screened as "new" again -> refused."""
    inv = world.actor("inv-CN01")
    person = {"date_of_birth": BORN, "sex": "female", "initials": "WJ"}
    first = subjects.screen_subject(actor=inv, site_id=world.sites["CN01"], **person)
    record = worker_assess(world, first)
    subjects.decide_eligibility(
        actor=inv,
        subject_id=first.id,
        assessment_id=record.row.id,
        decision="eligible",
        signer_password=PASSWORD,
        understood=True,
    )
    assert randomize(world, first.id).randomization_number == "R0001"
    subjects.withdraw_subject(actor=inv, subject_id=first.id, reason="moved away")
    error = refusal(subjects.screen_subject, actor=inv, site_id=world.sites["CN01"], **person)
    assert error.rule == "possible_duplicate"
    assert (
        refusal(
            subjects.rescreen_subject, actor=inv, subject_id=first.id, reason="Lab value repeated"
        ).rule
        == "status"
    )
    other = world.actor("inv-CN02")
    error = refusal(subjects.screen_subject, actor=other, site_id=world.sites["CN02"], **person)
    assert error.rule == "possible_duplicate"
    assert "R0001" not in error.message and "CN01" not in error.message


# ---------------------------------------------------------------- drugs off the dictionary


def meds(subject, entries):
    return answers(subject, medications=json.dumps(entries))


def test_an_unknown_drug_stays_incomplete_until_classified_with_a_signature(
    investigator, active_sites
):
    subject = screen(investigator, active_sites["CN01"])
    entry = {"drug": "iguratimod", "ongoing": True, "dose_stable_since": "2020-01-01"}
    record = subjects.record_assessment(
        actor=Actor.of(investigator), subject_id=subject.id, answers=meds(subject, [entry])
    )
    assert record.result.outcome == "incomplete"
    assert json.loads(record.row.missing) == ["drug_class:iguratimod"]
    actor = Actor.of(investigator)
    assert (
        refusal(
            drug_classes.classify_drug,
            actor=actor,
            subject_id=subject.id,
            drug="Iguratimod",
            drug_class="glucocorticoid",
            signer_password=PASSWORD,
        ).rule
        == "choice"
    )
    assert (
        refusal(
            drug_classes.classify_drug,
            actor=actor,
            subject_id=subject.id,
            drug="tolizumab",
            drug_class="not_restricted",
            signer_password=PASSWORD,
        ).rule
        == "in_dictionary"
    )
    assert (
        refusal(
            drug_classes.classify_drug,
            actor=actor,
            subject_id=subject.id,
            drug="Iguratimod",
            drug_class="washout_6_months",
            signer_password="wrong",
        ).rule
        == "credentials"
    )
    row = drug_classes.classify_drug(
        actor=actor,
        subject_id=subject.id,
        drug="Iguratimod",
        drug_class="washout_6_months",
        signer_password=PASSWORD,
    )
    assert (row.drug, row.drug_class) == ("iguratimod", "washout_6_months")
    assert read_session().get(DrugClassification, row.id).signature_id is not None
    assert "eligibility.drug_classified" in actions(subject.id)
    record = subjects.record_assessment(
        actor=actor, subject_id=subject.id, answers=meds(subject, [entry])
    )
    assert (record.result.outcome, json.loads(record.row.failing)) == ("not_eligible", ["E3.3a"])
    drug_classes.classify_drug(
        actor=actor,
        subject_id=subject.id,
        drug="iguratimod",
        drug_class="not_restricted",
        signer_password=PASSWORD,
    )
    record = subjects.record_assessment(
        actor=actor, subject_id=subject.id, answers=meds(subject, [entry])
    )
    assert record.result.outcome == "eligible"


def test_other_tolizumab_in_the_washout_is_not_eligible(investigator, active_sites):
    subject = screen(investigator, active_sites["CN01"])
    dose = subject.screening_date.replace(day=1).isoformat()
    record = subjects.record_assessment(
        actor=Actor.of(investigator),
        subject_id=subject.id,
        answers=meds(subject, [{"drug": "other:tolizumab", "last_dose": dose}]),
    )
    assert (record.result.outcome, json.loads(record.row.failing)) == ("not_eligible", ["E3.3a"])


def test_a_medication_without_its_date_is_incomplete_not_refused(investigator, active_sites):
    subject = screen(investigator, active_sites["CN01"])
    record = subjects.record_assessment(
        actor=Actor.of(investigator),
        subject_id=subject.id,
        answers=meds(subject, [{"drug": "azathioprine"}]),
    )
    assert record.result.outcome == "incomplete"
    assert json.loads(record.row.missing) == ["azathioprine.last_dose"]
