"""The subject list as the place to work, the eligibility draft and the re-screening reason
(issue 15): rules by their codes, and a list whose statement count does not grow with the trial
or with its search and filters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from iwrs.db import read_session
from iwrs.errors import IWRSError
from iwrs.models.audit import AuditEvent
from iwrs.models.subjects import Subject
from iwrs.services import eligibility_drafts, subject_views, subjects, unblinding
from iwrs.services.subject_views import Filters
from tests.conftest import PASSWORD
from tests.integration.randomization_worker import (
    World,
    assess,
    eligible_subject,
    make_world,
    randomize,
    screen,
)
from tests.statements import counted


@pytest.fixture
def world(tmp_path, database_url, clock) -> Iterator[World]:
    w = make_world(tmp_path, database_url, clock, lots=(("L-0001", 60, 730),))
    w.user("pharmacist", ["CN01"], name="ph2-CN01")
    with w.app.app_context():
        yield w
    w.app.extensions["iwrs.engine"].dispose()


def refusal(call: Any, **kwargs: Any) -> IWRSError:
    with pytest.raises(IWRSError) as caught:
        call(**kwargs)
    return caught.value


def listed(world: World, who: str = "inv-CN01", **filters: str) -> dict[str, Any]:
    read_session().rollback()
    page = subject_views.subject_list(actor=world.actor(who), filters=Filters(**filters))
    return {line.subject.screening_number: line for line in page.lines}


def actions(line: Any) -> dict[str, str | None]:
    """Each action's rule code (None: open)."""
    return {a.name: a.rule for a in line.actions}


def events() -> int:
    read_session().rollback()
    return read_session().scalar(select(func.count()).select_from(AuditEvent)) or 0


def statements_per_filter(world: World) -> dict[str, int]:
    """The statements one page of the list sends, for each kind of search and filter."""
    counts = {}
    for label, filters in {
        "all": Filters(),
        "search": Filters(search="CN01"),
        "status": Filters(status="randomized"),
        "unblinded": Filters(status="unblinded"),
        "site": Filters(site_code="CN01"),
    }.items():
        read_session().rollback()
        with counted(world.app) as tally:
            subject_views.subject_list(actor=world.actor("inv-CN01"), filters=filters)
        counts[label] = tally.count
    return counts


def test_the_list_searches_filters_and_shows_unblinded_with_actions_naming_what_is_missing(world):
    screening = screen(world, "CN01").id
    eligible = eligible_subject(world, "CN01")
    treated = eligible_subject(world, "CN01")
    broken = eligible_subject(world, "CN01")
    elsewhere = eligible_subject(world, "CN02")
    number = randomize(world, treated).randomization_number
    randomize(world, broken)
    unblinding.unblind(
        actor=world.actor("inv-CN01"),
        subject_id=broken,
        category="sae",
        reason="Anaphylaxis; the physician must know",
        understood=True,
        signer_password=PASSWORD,
    )
    by_id = {s.id: s.screening_number for s in read_session().scalars(select(Subject))}

    every = listed(world)
    assert set(every) == {by_id[i] for i in (screening, eligible, treated, broken)}
    assert by_id[elsewhere] not in every  # another site's subject is never listed
    assert [n for n, line in every.items() if line.unblinded] == [by_id[broken]]
    assert set(listed(world, status="unblinded")) == {by_id[broken]}
    assert set(listed(world, status="randomized")) == {by_id[treated], by_id[broken]}
    assert set(listed(world, search=by_id[treated][-3:].lower())) == {by_id[treated]}
    assert set(listed(world, search=number)) == {by_id[treated]}
    assert listed(world, site_code="cn02") == {}  # not one of the investigator's sites
    assert set(listed(world, "inv-CN02", site_code="CN02")) == {by_id[elsewhere]}

    assert actions(every[by_id[screening]])["randomize"] == "eligibility_not_confirmed"
    assert actions(every[by_id[screening]])["unblind"] == "randomized"
    assert actions(every[by_id[eligible]])["randomize"] is None
    assert actions(every[by_id[eligible]])["eligibility"] == "eligibility_confirmed"
    assert actions(every[by_id[screening]])["eligibility"] is None
    assert actions(every[by_id[treated]])["unblind"] is None
    assert actions(every[by_id[treated]])["randomize"] == "already_randomized"
    assert actions(every[by_id[broken]])["unblind"] == "already_unblinded"
    assert actions(every[by_id[eligible]])["rescreen"] == "status"
    visit = every[by_id[treated]].next_visit
    assert visit is not None and visit.earliest <= visit.target <= visit.latest
    assert every[by_id[screening]].next_visit is None

    wrong = refusal(
        subject_views.subject_list, actor=world.actor("inv-CN01"), filters=Filters(status="x")
    )
    assert (wrong.field, wrong.rule) == ("status", "choice")
    for blinded in ("ph-CN01", "manager", "admin"):
        assert refusal(subject_views.subject_list, actor=world.actor(blinded)).rule == "permission"

    # No growth: three times the subjects, the same statements for every search and filter.
    small = statements_per_filter(world)
    for _ in range(2):
        randomize(world, eligible_subject(world, "CN01"))
    for _ in range(6):
        screen(world, "CN01")
    assert statements_per_filter(world) == small
    # BEGIN, the actor with their sites (3), the page, its dispensations, its re-screenings
    assert max(small.values()) <= 7, small


def test_a_draft_is_kept_until_assessed_and_a_rescreening_needs_a_reason(world):
    subject = screen(world, "CN01")
    before = events()
    eligibility_drafts.save_draft(
        actor=world.actor("inv-CN01"),
        subject_id=subject.id,
        answers={"fvc_pct": "55", "diagnosis_ra": "yes"},
        assessment_date="",
    )
    eligibility_drafts.save_draft(
        actor=world.actor("inv-CN01"), subject_id=subject.id, answers={"fvc_pct": "56"}
    )
    assert events() == before  # decision: a draft is not the record (eligibility_drafts)
    draft = eligibility_drafts.draft_of(actor=world.actor("inv-CN01"), subject_id=subject.id)
    assert draft is not None and draft.answers == {"fvc_pct": "56"}

    outsider = refusal(
        eligibility_drafts.draft_of, actor=world.actor("inv-CN02"), subject_id=subject.id
    )
    assert (outsider.field, outsider.rule) == ("subject_id", "exists")
    blinded = refusal(
        eligibility_drafts.save_draft,
        actor=world.actor("ph-CN01"),
        subject_id=subject.id,
        answers={"fvc_pct": "1"},
    )
    assert blinded.rule == "permission"
    hidden = refusal(
        eligibility_drafts.save_draft,
        actor=world.actor("inv-CN01"),
        subject_id=subject.id,
        answers={"drug": "x\u202ey"},
    )
    assert (hidden.field, hidden.rule) == ("drug", "control_characters")

    assess(world, read_session().get(Subject, subject.id))
    read_session().rollback()
    assert eligibility_drafts.draft_of(actor=world.actor("inv-CN01"), subject_id=subject.id) is None

    gone = screen(world, "CN01").id
    subjects.withdraw_subject(actor=world.actor("inv-CN01"), subject_id=gone, reason="Moved away")
    late = refusal(
        eligibility_drafts.save_draft,
        actor=world.actor("inv-CN01"),
        subject_id=gone,
        answers={"fvc_pct": "55"},
    )
    assert (late.field, late.rule) == ("subject_id", "status")

    # Re-screening needs a reason, which the trail records.
    subject = screen(world, "CN01")
    record = assess(world, read_session().get(Subject, subject.id), fvc_pct="30")
    subjects.decide_eligibility(
        actor=world.actor("inv-CN01"),
        subject_id=subject.id,
        assessment_id=record.row.id,
        decision="screen_failure",
        signer_password=PASSWORD,
        understood=True,
    )
    blank = refusal(
        subjects.rescreen_subject, actor=world.actor("inv-CN01"), subject_id=subject.id, reason=" "
    )
    assert (blank.field, blank.rule) == ("reason", "required")
    again = subjects.rescreen_subject(
        actor=world.actor("inv-CN01"), subject_id=subject.id, reason="FVC repeated after infection"
    )
    read_session().rollback()
    event = (
        read_session()
        .scalars(
            select(AuditEvent).where(
                AuditEvent.action == "subject.rescreened", AuditEvent.entity_id == str(again.id)
            )
        )
        .one()
    )
    assert event.reason == "FVC repeated after infection"
    line = listed(world)[subject.screening_number]
    assert actions(line)["rescreen"] == "rescreen_limit"


def test_a_draft_goes_when_the_subject_is_withdrawn_or_a_screen_failure(world):
    """Withdrawal and a screen failure end screening: the draft is removed in that transaction
    (it could never be recorded, and its answers should not linger)."""

    def draft(subject_id: int) -> Any:
        read_session().rollback()
        return eligibility_drafts.draft_of(actor=world.actor("inv-CN01"), subject_id=subject_id)

    def keep(subject_id: int) -> None:
        eligibility_drafts.save_draft(
            actor=world.actor("inv-CN01"), subject_id=subject_id, answers={"fvc_pct": "57"}
        )

    gone = screen(world, "CN01").id
    keep(gone)
    subjects.withdraw_subject(actor=world.actor("inv-CN01"), subject_id=gone, reason="Moved away")
    assert draft(gone) is None

    failed = screen(world, "CN01")
    record = assess(world, read_session().get(Subject, failed.id), fvc_pct="30")
    keep(failed.id)  # typed again after the assessment, not recorded
    subjects.decide_eligibility(
        actor=world.actor("inv-CN01"),
        subject_id=failed.id,
        assessment_id=record.row.id,
        decision="screen_failure",
        signer_password=PASSWORD,
        understood=True,
    )
    assert draft(failed.id) is None
