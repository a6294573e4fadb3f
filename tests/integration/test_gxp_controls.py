"""GxP controls that no test guarded (issue 14), each at the layer that enforces it, asserting
rule codes and what changed, never wording:
- site activation needs the admin's e-signature (21 CFR 11.200: re-entered password);
- a UAT (dummy) list is refused in production at randomization, not only when it is loaded;
- the pages, the services and the API refuse an eligibility decision or a randomization
  without the "cannot be undone" confirmation;
- the dispensing service never hands over a kit inside the do-not-dispense window;
- a subject withdrawn after eligibility was confirmed is never randomized."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from flask import current_app
from sqlalchemy import func, select

from iwrs.db import read_session
from iwrs.errors import AuthenticationFailed, Conflict, InvalidInput
from iwrs.models import AuditEvent, Dispensation, Shipment, Signature, Site, SiteStatus, Subject
from iwrs.protocol import load_protocol
from iwrs.services import dispensing, randomization, sites, subjects, users
from supply import expiry
from tests.conftest import PASSWORD, csrf_from, sign_in
from tests.integration import test_randomization as base
from tests.integration.randomization_worker import (
    assess,
    eligible_subject,
    randomize,
    screen,
)
from tests.integration.test_randomization import state

new_world = base.new_world  # the fixture: new_world(**options) -> World


# --- site activation: the e-signature --------------------------------------------------------


def site_record(site_id: int) -> tuple[Any, ...]:
    session = read_session()
    session.rollback()
    site = session.get(Site, site_id)
    assert site is not None
    return (
        str(site.status),
        site.activated_at,
        session.scalar(
            select(func.count())
            .select_from(Signature)
            .where(Signature.entity_type == "site", Signature.entity_id == str(site_id))
        ),
        session.scalar(select(func.count()).select_from(Shipment)),
        session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "site.activated", AuditEvent.entity_id == str(site_id))
        ),
    )


def test_a_site_is_activated_only_with_the_admins_signature(new_world):
    world = new_world(sites=("CN01",))
    with world.app.app_context():
        site_id = world.sites["CN02"]
        before = site_record(site_id)
        assert before[0] != "active" and before[2] == 0
        for password, understood, error, field, rule in (
            ("", True, InvalidInput, "password", "required"),
            ("not the admin's password", True, AuthenticationFailed, "password", "credentials"),
            (PASSWORD, False, InvalidInput, "understood", "required"),
        ):
            with pytest.raises(error) as refusal:
                sites.change_site_status(
                    actor=world.actor("admin"),
                    site_id=site_id,
                    status=SiteStatus.ACTIVE,
                    signer_password=password,
                    understood=understood,
                )
            assert (refusal.value.field, refusal.value.rule) == (field, rule)
            assert site_record(site_id) == before, "nothing activated, signed or shipped"
        sites.change_site_status(
            actor=world.actor("admin"),
            site_id=site_id,
            status=SiteStatus.ACTIVE,
            signer_password=PASSWORD,
            understood=True,
        )
        status, activated_at, signatures, shipments, events = site_record(site_id)
        assert (status, signatures, shipments, events) == ("active", 1, before[3] + 1, 1)
        assert activated_at is not None


# --- a UAT list in production, at randomization ----------------------------------------------


def test_a_dummy_list_active_in_production_is_refused_at_randomization(new_world):
    """A UAT database promoted to production keeps its dummy list: randomize refuses it."""
    world = new_world(environment="uat", with_list=False, sites=("CN01",))
    with world.app.app_context():
        randomization.generate_list(actor=world.actor("stat"), name="uat", dummy=True)
        subject_id = eligible_subject(world, "CN01")
        settings = current_app.extensions["iwrs.settings"]
        current_app.extensions["iwrs.settings"] = dataclasses.replace(
            settings, environment="production"
        )
        before = state()
        with pytest.raises(Conflict) as refusal:
            randomize(world, subject_id)
        assert (refusal.value.field, refusal.value.rule) == ("dummy", "no_dummy_in_production")
        assert state() == before
        current_app.extensions["iwrs.settings"] = settings  # in UAT the same request works
        assert randomize(world, subject_id).randomization_number == "R0001"


# --- "cannot be undone": the pages refuse without the confirmation ---------------------------


def subject_status(subject_id: int) -> str:
    read_session().rollback()
    subject = read_session().get(Subject, subject_id)
    assert subject is not None
    return str(subject.status)


def post_form(client: Any, subject_id: int, action: str, data: dict[str, Any]) -> Any:
    token = csrf_from(client.get(f"/subjects/{subject_id}").get_data(as_text=True))
    return client.post(f"/subjects/{subject_id}/{action}", data={**data, "csrf_token": token})


def test_the_pages_refuse_a_decision_or_a_randomization_without_the_confirmation(new_world):
    world = new_world(sites=("CN01",))
    client = world.app.test_client()
    with world.app.app_context():
        subject = screen(world, "CN01")
        record = assess(world, subject)
        subject_id, assessment_id = subject.id, record.row.id
    assert sign_in(client, "inv-CN01").status_code == 302
    decision = {
        "assessment_id": assessment_id,
        "decision": "eligible",
        "signature_password": PASSWORD,
    }
    with world.app.app_context():
        before = state()
    for unconfirmed in ({}, {"understood": ""}, {"understood": "n"}):
        response = post_form(client, subject_id, "decision", {**decision, **unconfirmed})
        assert response.status_code == 422
        with world.app.app_context():
            assert subject_status(subject_id) == "screening" and state() == before
    confirmed = post_form(client, subject_id, "decision", {**decision, "understood": "y"})
    assert confirmed.status_code == 302
    with world.app.app_context():
        assert subject_status(subject_id) == "eligible"
        before = state()
    for unconfirmed in ({}, {"understood": ""}):
        data = {"signature_password": PASSWORD, **unconfirmed}
        assert post_form(client, subject_id, "randomize", data).status_code == 422
        with world.app.app_context():
            assert state() == before, "nothing randomized, signed or dispensed"
    data = {"signature_password": PASSWORD, "understood": "y"}
    assert post_form(client, subject_id, "randomize", data).status_code == 302
    with world.app.app_context():
        assert subject_status(subject_id) == "randomized"


def test_the_services_refuse_a_decision_or_a_randomization_without_the_confirmation(new_world):
    """The page is not the only wall: each service takes `understood` and refuses without it
    (field understood, rule required) before anything is signed or changed; a keyed
    randomization refused so claims no key (the same key then works)."""
    world = new_world(sites=("CN01",))
    with world.app.app_context():
        subject = screen(world, "CN01")
        record = assess(world, subject)
        decision = {
            "actor": world.actor("inv-CN01"),
            "subject_id": subject.id,
            "assessment_id": record.row.id,
            "decision": "eligible",
            "signer_password": PASSWORD,
        }
        before = state()
        with pytest.raises(InvalidInput) as refusal:
            subjects.decide_eligibility(**decision, understood=False)
        assert (refusal.value.field, refusal.value.rule) == ("understood", "required")
        assert subject_status(subject.id) == "screening" and state() == before
        subjects.decide_eligibility(**decision, understood=True)
        before = state()
        keyed = {"idempotency_key": "edc-1"}
        for options in ({}, keyed):
            with pytest.raises(InvalidInput) as refusal:
                randomize(world, subject.id, understood=False, **options)
            assert (refusal.value.field, refusal.value.rule) == ("understood", "required")
            assert state() == before, "nothing randomized, signed or dispensed"
        assert randomize(world, subject.id, **keyed).randomization_number == "R0001"


def test_the_api_refuses_a_decision_or_a_randomization_without_the_confirmation(new_world):
    world = new_world(sites=("CN01",))
    with world.app.app_context():
        subject = screen(world, "CN01")
        record = assess(world, subject)
        token, _ = users.create_api_token(
            actor=world.actor("inv-CN01"),
            user_id=world.people["inv-CN01"].id,
            name="edc",
            password=PASSWORD,
        )
        before = state()
    client = world.app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    base_path = f"/api/v1/subjects/{subject.id}"
    decision = {"assessment_id": record.row.id, "decision": "eligible"}
    decision["signature_password"] = PASSWORD
    calls = (
        ("eligibility-decision", decision),
        ("randomization", {"signature_password": PASSWORD}),
    )
    for path, body in calls:
        for unconfirmed in ({}, {"understood": False}):
            response = client.post(f"{base_path}/{path}", json={**body, **unconfirmed})
            assert response.status_code == 422, response.get_data(as_text=True)
            problems = [(e["field"], e["rule"]) for e in response.get_json()["errors"]]
            assert problems == [("understood", "required")]
            with world.app.app_context():
                assert state() == before
        confirmed = client.post(f"{base_path}/{path}", json={**body, "understood": True})
        assert confirmed.status_code in (200, 201), confirmed.get_data(as_text=True)
        with world.app.app_context():
            before = state()
    with world.app.app_context():
        assert subject_status(subject.id) == "randomized"


# --- do-not-dispense at the dispensing service -----------------------------------------------


def days_to_expiry_inside_the_buffer_at_v2(today: Any) -> int:
    """Days from `today` to an expiry 3 days inside the do-not-dispense buffer of the kit
    dispensed at V2 to a subject randomized today (usable at V1, not at V2)."""
    protocol = load_protocol()
    schedule = tuple(
        expiry.ScheduleVisit(v.code, v.day, v.window_before, v.window_after, v.kits > 0)
        for v in protocol.visits
    )
    through = expiry.must_last_through(schedule, day1=today, dispensed="V2")
    assert protocol.do_not_dispense_days > 4
    return (through - today).days + 3


def test_no_kit_inside_the_do_not_dispense_window_is_dispensed(new_world, clock):
    days = days_to_expiry_inside_the_buffer_at_v2(clock.current.date())
    world = new_world(sites=("CN01",), lots=(("L-SHORT", 200, days),))
    with world.app.app_context():
        subject_id = eligible_subject(world, "CN01")
        randomize(world, subject_id)  # the V1 kit: the lot lasts long enough for it
        clock.advance(days=28)  # V2, in its window: the lot now ends inside the buffer
        read_session().rollback()
        given = read_session().scalar(select(func.count()).select_from(Dispensation))
        with pytest.raises(Conflict) as refusal:
            dispensing.dispense(
                actor=world.actor("ph-CN01"), subject_id=subject_id, visit_code="V2"
            )
        assert (refusal.value.field, refusal.value.rule) == ("site", "site_stock")
        read_session().rollback()
        assert read_session().scalar(select(func.count()).select_from(Dispensation)) == given


# --- withdrawn after confirmation -------------------------------------------------------------


def test_a_subject_withdrawn_after_eligibility_was_confirmed_is_never_randomized(new_world):
    world = new_world(sites=("CN01",))
    with world.app.app_context():
        subject_id = eligible_subject(world, "CN01")
        assert subject_status(subject_id) == "eligible"
        subjects.withdraw_subject(
            actor=world.actor("inv-CN01"), subject_id=subject_id, reason="consent withdrawn"
        )
        before = state()
        with pytest.raises(Conflict) as refusal:
            randomize(world, subject_id)
        assert (refusal.value.field, refusal.value.rule) == ("subject_id", "confirmed_eligible")
        assert state() == before
        assert subject_status(subject_id) == "withdrawn"
