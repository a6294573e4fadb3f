"""The site's calendar (issue 12), on SQLite and PostgreSQL: every clinical date is the site's
local date — a site in UTC+8 (CN01, Asia/Shanghai) and a test-only site in UTC-5/-4 (US01,
America/New_York) — crossing local midnight for age, washouts, day 1, visit windows, dispensing
and expiry; stated and back-dated screening, assessment and visit dates with their refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import select

from iwrs import audit
from iwrs.audit import Actor
from iwrs.db import read_session, transaction
from iwrs.demo import eligible_answers
from iwrs.errors import Conflict, InvalidInput, NotFound
from iwrs.models import AuditEvent, Dispensation, EligibilityAssessment, Kit, Site, Subject
from iwrs.services import dispensing, sites, subjects, supply, trial
from iwrs.worker import run_once
from tests.conftest import make_settings, next_initials
from tests.integration.randomization_worker import (
    World,
    activate,
    add_kits,
    build_world,
    generate_list,
    protocol_copy,
    randomize,
)

# A test-only site in New York, added to a copy of the shipped protocol.
NEW_YORK_SITE = {
    'resupply_policy = "predictive"\n': 'resupply_policy = "predictive"\n\n[[sites]]\n'
    'code = "US01"\nname = "Test site, New York"\ncity = "New York"\n'
    'country = "United States"\ntime_zone = "America/New_York"\n'
}


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.fixture
def world(tmp_path, database_url, clock) -> Iterator[World]:
    """CN01 (Beijing) and US01 (New York) active with stock, a list; an app context."""
    from iwrs import create_app
    from iwrs.clock import set_clock

    settings = make_settings(
        tmp_path, database_url, protocol_path=protocol_copy(tmp_path, NEW_YORK_SITE)
    )
    app = create_app(settings)
    set_clock(app, clock)
    w = build_world(app)
    w.user("investigator", ["US01"], name="inv-US01")
    w.user("pharmacist", ["US01"], name="ph-US01")
    add_kits(w, lot="L-0001", count=200, expiry=date(2028, 3, 1))
    activate(w, ("CN01", "US01"))
    with app.app_context():
        generate_list(w)
        yield w
    app.extensions["iwrs.engine"].dispose()


def screen(world: World, code: str, **values: Any) -> Subject:
    values = {"date_of_birth": "1966-05-14", "sex": "male", "initials": next_initials()} | values
    return subjects.screen_subject(
        actor=world.actor(f"inv-{code}"), site_id=world.sites[code], **values
    )


def assess(world: World, subject: Subject, **changes: Any) -> Any:
    answers = eligible_answers(subjects.engine(), subject.screening_date)
    answers.update(changes)
    code = next(c for c, i in world.sites.items() if i == subject.site_id)
    options = {k: changes.pop(k) for k in ("assessment_date", "backdate_reason") if k in changes}
    answers = {k: v for k, v in answers.items() if k not in options}
    return subjects.record_assessment(
        actor=world.actor(f"inv-{code}"),
        subject_id=subject.id,
        answers={k: v for k, v in answers.items() if v is not None},
        **options,
    )


def status(record: Any, number: str) -> str:
    return next(r.status for r in record.result.results if r.number == number)


def confirm_and_randomize(world: World, subject: Subject, record: Any) -> Any:
    code = next(c for c, i in world.sites.items() if i == subject.site_id)
    subjects.decide_eligibility(
        actor=world.actor(f"inv-{code}"),
        subject_id=subject.id,
        assessment_id=record.row.id,
        decision="eligible",
        signer_password="correct horse battery staple",
        understood=True,
    )
    return randomize(world, subject.id)


# --- age ------------------------------------------------------------------------------------


def test_at_0730_in_beijing_on_3_march_the_screening_date_is_3_march(world, clock):
    clock.current = at(2026, 3, 2, 23, 30)  # 07:30 CST on 3 March
    subject = screen(world, "CN01")
    assert subject.screening_date == date(2026, 3, 3)


def test_a_man_who_turned_76_that_morning_in_beijing_is_not_eligible(world, clock):
    clock.current = at(2026, 3, 2, 23, 30)
    subject = screen(world, "CN01", date_of_birth="1950-03-03")
    record = assess(world, subject)
    assert record.result.computed["age"] == 76
    assert status(record, "I2") == "fail"
    assert record.result.outcome == "not_eligible"


def test_a_man_who_turned_18_that_morning_in_beijing_is_eligible_by_age(world, clock):
    clock.current = at(2026, 3, 2, 23, 30)
    subject = screen(world, "CN01", date_of_birth="2008-03-03")
    record = assess(world, subject)
    assert record.result.computed["age"] == 18
    assert status(record, "I2") == "pass"
    assert record.result.outcome == "eligible"


def test_in_new_york_the_birthday_starts_at_local_midnight(world, clock):
    clock.current = at(2026, 3, 3, 3, 0)  # 22:00 EST on 2 March (3 March in UTC)
    evening = screen(world, "US01", date_of_birth="1950-03-03")
    assert evening.screening_date == date(2026, 3, 2)
    record = assess(world, evening)
    assert (record.result.computed["age"], status(record, "I2")) == (75, "pass")
    clock.current = at(2026, 3, 3, 5, 30)  # 00:30 EST on 3 March
    morning = screen(world, "US01", date_of_birth="1950-03-03")
    assert morning.screening_date == date(2026, 3, 3)
    record = assess(world, morning)
    assert (record.result.computed["age"], status(record, "I2")) == (76, "fail")


# --- washouts ---------------------------------------------------------------------------------


def _last_dose(drug: str, on: str) -> list[dict[str, Any]]:
    base = eligible_answers(subjects.engine(), date(2026, 3, 3))["medications"]
    return [*base, {"drug": drug, "last_dose": on, "ongoing": False}]


def test_a_washout_counts_from_the_sites_local_screening_date(world, clock):
    # E3.3c: tofacitinib on or after screening - 30 days excludes. Last dose 31 January.
    clock.current = at(2026, 3, 3, 3, 0)  # Beijing 3 March 11:00, New York 2 March 22:00
    beijing = screen(world, "CN01")
    new_york = screen(world, "US01")
    medications = _last_dose("tofacitinib", "2026-01-31")
    # Beijing: screening 3 March, washout from 1 February: the 31 January dose is outside it.
    assert status(assess(world, beijing, medications=medications), "E3.3c") == "pass"
    # New York: screening 2 March, washout from 31 January: the dose is inside it.
    assert status(assess(world, new_york, medications=medications), "E3.3c") == "fail"


# --- day 1, visit windows, dispensing ---------------------------------------------------------


def test_day_1_is_the_sites_local_date(world, clock):
    clock.current = at(2026, 3, 2, 9, 0)
    subject_ny = screen(world, "US01")
    subject_cn = screen(world, "CN01")
    record_ny, record_cn = assess(world, subject_ny), assess(world, subject_cn)
    clock.current = at(2026, 3, 3, 3, 0)  # New York 2 March 22:00, Beijing 3 March 11:00
    assert confirm_and_randomize(world, subject_ny, record_ny).randomized_on == date(2026, 3, 2)
    assert confirm_and_randomize(world, subject_cn, record_cn).randomized_on == date(2026, 3, 3)


def _randomized(world: World, code: str, clock: Any, moment: datetime) -> Subject:
    clock.current = at(2026, 3, 1, 9, 0)
    subject = screen(world, code)
    record = assess(world, subject)
    clock.current = moment
    confirm_and_randomize(world, subject, record)
    return subject


def test_a_visit_window_closes_at_local_midnight_in_new_york(world, clock):
    subject = _randomized(world, "US01", clock, at(2026, 3, 3, 3, 0))  # day 1: 2 March
    # V2 (day 29 +-3): 27 March to 2 April at the site. 3 April 03:30 UTC = 2 April 23:30 EDT.
    clock.current = at(2026, 4, 3, 3, 30)
    result = dispensing.dispense(
        actor=world.actor("ph-US01"), subject_id=subject.id, visit_code="V2"
    )
    assert (result.out_of_window, result.visit_date) == (False, date(2026, 4, 2))


def test_a_visit_window_opens_at_local_midnight_in_beijing(world, clock):
    subject = _randomized(world, "CN01", clock, at(2026, 3, 3, 3, 0))  # day 1: 3 March
    # V2: 28 March to 3 April at the site. 27 March 15:30 UTC = 23:30 CST: a day early.
    clock.current = at(2026, 3, 27, 15, 30)
    with pytest.raises(Conflict) as refusal:  # a scheduled kit waits for its window to open
        dispensing.dispense(actor=world.actor("ph-CN01"), subject_id=subject.id, visit_code="V2")
    assert (refusal.value.field, refusal.value.rule) == ("visit_code", "window_not_open")
    clock.current = at(2026, 3, 27, 16, 30)  # 00:30 CST on 28 March
    result = dispensing.dispense(
        actor=world.actor("ph-CN01"), subject_id=subject.id, visit_code="V2"
    )
    assert (result.out_of_window, result.visit_date) == (False, date(2026, 3, 28))


# --- expiry ---------------------------------------------------------------------------------


def _states_by_place() -> dict[str, set[str]]:
    read_session().rollback()
    codes = {s.id: s.code for s in read_session().scalars(select(Site))}
    found: dict[str, set[str]] = {}
    for kit in read_session().scalars(select(Kit)):
        place = codes[kit.place_id] if kit.place_kind == "site" else kit.place_kind
        found.setdefault(place, set()).add(str(kit.state))
    return found


def test_a_kit_expires_at_the_end_of_its_expiry_date_where_it_is(world, clock):
    supply.change_lot_expiry(
        actor=world.actor("manager"),
        lot_code="L-0001",
        new_expiry=date(2026, 3, 5),
        reason="stability data",
    )
    clock.current = at(2026, 3, 5, 15, 30)  # Beijing 23:30 on 5 March: not yet expired
    assert run_once("expiry", None, Actor.system("test")).summary["expired"] == []
    clock.current = at(2026, 3, 5, 16, 30)  # Beijing 00:30 on 6 March, New York 11:30 on 5 March
    assert run_once("expiry", None, Actor.system("test")).summary["expired"]
    states = _states_by_place()
    assert states["CN01"] == {"expired"} and states["depot"] == {"expired"}
    assert states["US01"] == {"available"}
    clock.current = at(2026, 3, 6, 5, 30)  # New York 00:30 on 6 March
    run_once("expiry", None, Actor.system("test"))
    assert _states_by_place()["US01"] == {"expired"}


# --- stated and back-dated dates --------------------------------------------------------------


def refused(call: Any, **kwargs: Any) -> tuple[str | None, str | None]:
    with pytest.raises(InvalidInput) as refusal:
        call(**kwargs)
    return refusal.value.field, refusal.value.rule


def _event(action: str) -> AuditEvent:
    read_session().rollback()
    return (
        read_session()
        .scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq))
        .all()[-1]
    )


def test_a_screening_date_in_the_sites_future_is_refused(world, clock):
    clock.current = at(2026, 3, 3, 3, 0)  # 3 March in Beijing, 2 March in New York
    assert screen(world, "CN01", screening_date="2026-03-03").screening_date == date(2026, 3, 3)
    assert refused(screen, world=world, code="US01", screening_date="2026-03-03") == (
        "screening_date",
        "future_date",
    )


@pytest.mark.parametrize("text", ["03/03/2026", "2026-3-3", "yesterday", "2026-02-30"])
def test_a_stated_date_must_be_yyyy_mm_dd(world, text):
    assert refused(screen, world=world, code="CN01", screening_date=text) == (
        "screening_date",
        "date",
    )


def test_a_back_dated_screening_needs_a_reason_and_keeps_both_dates(world, clock):
    clock.current = at(2026, 3, 3, 1, 0)  # 09:00 on 3 March in Beijing
    assert refused(screen, world=world, code="CN01", screening_date="2026-03-02") == (
        "backdate_reason",
        "backdate_reason_required",
    )
    assert refused(
        screen, world=world, code="CN01", screening_date="2026-03-02", backdate_reason="  "
    ) == ("backdate_reason", "backdate_reason_required")
    subject = screen(
        world, "CN01", screening_date="2026-03-02", backdate_reason="entered the next morning"
    )
    assert subject.screening_date == date(2026, 3, 2)
    event = _event("subject.screened")
    after = json.loads(event.after)
    assert (after["screening_date"], after["backdated"]) == ("2026-03-02", True)
    assert event.reason == "entered the next morning"
    assert event.occurred_at.replace(tzinfo=UTC) == clock.current  # the moment of entry


def test_an_assessment_date_is_between_screening_and_the_sites_today(world, clock):
    clock.current = at(2026, 3, 3, 1, 0)  # 3 March in Beijing
    subject = screen(world, "CN01", screening_date="2026-03-01", backdate_reason="late entry")
    assert refused(assess, world=world, subject=subject, assessment_date="2026-02-28") == (
        "assessment_date",
        "before_previous_step",
    )
    assert refused(assess, world=world, subject=subject, assessment_date="2026-03-04") == (
        "assessment_date",
        "future_date",
    )
    assert refused(assess, world=world, subject=subject, assessment_date="2026-03-02") == (
        "backdate_reason",
        "backdate_reason_required",
    )
    record = assess(
        world, subject, assessment_date="2026-03-02", backdate_reason="EDC sent it next day"
    )
    read_session().rollback()
    row = read_session().get(EligibilityAssessment, record.row.id)
    assert row is not None and row.assessment_date == date(2026, 3, 2)
    after = json.loads(_event("eligibility.assessed").after)
    assert (after["assessment_date"], after["backdated"]) == ("2026-03-02", True)
    today = assess(world, subject)  # no date stated: the site's local today, not back-dated
    assert today.row.assessment_date == date(2026, 3, 3)
    assert json.loads(_event("eligibility.assessed").after)["backdated"] is False


def test_no_answer_may_be_dated_after_the_stated_assessment_date(world, clock):
    clock.current = at(2026, 3, 3, 1, 0)
    subject = screen(world, "CN01", screening_date="2026-03-01", backdate_reason="late entry")
    with pytest.raises(InvalidInput) as refusal:
        assess(
            world,
            subject,
            assessment_date="2026-03-01",
            backdate_reason="late entry",
            infection_treatment_end="2026-03-02",
        )
    assert {"field": "infection_treatment_end", "rule": "future"} in [
        {k: e[k] for k in ("field", "rule")} for e in refusal.value.problems()
    ]


def test_a_visit_date_is_between_day_1_and_the_sites_today(world, clock):
    subject = _randomized(world, "CN01", clock, at(2026, 3, 3, 3, 0))  # day 1: 3 March
    clock.current = at(2026, 4, 4, 16, 30)  # 5 April 00:30 in Beijing: V2 closed on 3 April
    give = dispensing.dispense
    kw = {"actor": world.actor("ph-CN01"), "subject_id": subject.id, "visit_code": "V2"}
    assert refused(give, **kw, visit_date="2026-03-02") == ("visit_date", "before_previous_step")
    assert refused(give, **kw, visit_date="2026-04-06") == ("visit_date", "future_date")
    assert refused(give, **kw, visit_date="2026-04-03") == (
        "backdate_reason",
        "backdate_reason_required",
    )
    result = give(**kw, visit_date="2026-04-03", backdate_reason="dispensed, entered next day")
    # The window is judged on the stated visit date (3 April, inside), not on the entry day.
    assert (result.out_of_window, result.visit_date) == (False, date(2026, 4, 3))
    read_session().rollback()
    row = read_session().get(Dispensation, result.dispensation_id)
    assert row is not None and row.visit_date == date(2026, 4, 3)
    event = _event("kit.dispensed")
    after = json.loads(event.after)
    assert (after["visit_date"], after["backdated"]) == ("2026-04-03", True)
    assert after["backdate_reason"] == "dispensed, entered next day"


def test_a_visit_is_not_dated_before_an_earlier_visit(world, clock):
    subject = _randomized(world, "CN01", clock, at(2026, 3, 3, 3, 0))  # day 1: 3 March
    clock.current = at(2026, 4, 1, 2, 0)
    dispensing.dispense(actor=world.actor("ph-CN01"), subject_id=subject.id, visit_code="V2")
    clock.current = at(2026, 4, 29, 2, 0)
    kw = {"actor": world.actor("ph-CN01"), "subject_id": subject.id, "visit_code": "V3"}
    assert refused(
        dispensing.dispense, **kw, visit_date="2026-03-31", backdate_reason="x", reason="x"
    ) == ("visit_date", "before_previous_step")


# --- the site's zone: protocol default and the admin -----------------------------------------


def test_the_admin_sets_a_sites_zone_with_a_reason_audited(world, clock):
    admin, site_id = world.actor("admin"), world.sites["CN01"]
    assert refused(
        sites.change_site_time_zone,
        actor=admin,
        site_id=site_id,
        time_zone="Asia/Beijing",
        reason="typo",
    ) == ("time_zone", "iana_time_zone")
    with pytest.raises(NotFound):
        sites.change_site_time_zone(
            actor=world.actor("inv-CN01"),
            site_id=site_id,
            time_zone="America/New_York",
            reason="not mine to change",
        )
    sites.change_site_time_zone(
        actor=admin, site_id=site_id, time_zone="America/New_York", reason="moved"
    )
    event = _event("site.time_zone_changed")
    assert json.loads(event.before) == {"time_zone": "Asia/Shanghai"}
    assert json.loads(event.after) == {"time_zone": "America/New_York"}
    assert event.reason == "moved"
    clock.current = at(2026, 3, 3, 3, 0)  # New York 2 March
    assert screen(world, "CN01").screening_date == date(2026, 3, 2)


def test_loading_the_protocol_gives_a_site_without_zone_the_protocols(world):
    with transaction() as session:  # as a database from before issue 12 has it
        session.get(Site, world.sites["CN01"]).time_zone = None  # type: ignore[union-attr]
        audit.record(
            session,
            actor=Actor.system("test"),
            action="test.time_zone_cleared",
            entity_type="site",
            entity_id=world.sites["CN01"],
        )
    changes = trial.load_protocol(
        actor=Actor.system("test"), protocol=world.app.extensions["iwrs.protocol"]
    )
    assert "site CN01 time zone Asia/Shanghai" in changes
    read_session().rollback()
    assert read_session().get(Site, world.sites["CN01"]).time_zone == "Asia/Shanghai"  # type: ignore[union-attr]
    assert read_session().get(Site, world.sites["US01"]).time_zone == "America/New_York"  # type: ignore[union-attr]
