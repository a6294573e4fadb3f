"""Dispensing at visits through the real services, on SQLite and PostgreSQL: the kit of the
subject's treatment, confirmed by the pharmacist; once per scheduled visit; windows; replacement
and unscheduled kits; discontinued subjects; a site out of the subject's treatment; site scope."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from blinding.kits import is_valid_kit_number
from iwrs.db import read_session
from iwrs.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound
from iwrs.models import (
    AuditEvent,
    Dispensation,
    Kit,
    Randomization,
    RandomizationSlot,
    Subject,
    SupplyAlert,
)
from iwrs.services import accountability, dispensing
from iwrs.services.randomization import slot_arm
from iwrs.services.supply import treatment_of
from tests.conftest import PASSWORD
from tests.integration.randomization_worker import (
    World,
    eligible_subject,
    make_world,
    randomize,
)

ARMS = ("ACTIVEQX", "PLACEBOZK")  # distinctive codes, so a message naming an arm is caught
PROTOCOL = {
    "quantity = 8": "quantity = 20",
    'code = "A"': f'code = "{ARMS[0]}"',
    'code = "P"': f'code = "{ARMS[1]}"',
}


@pytest.fixture
def world(tmp_path, database_url, clock) -> Iterator[World]:
    """CN01 and CN02 active with 10 kits of each arm, a list; an app context."""
    w = make_world(tmp_path, database_url, clock, replacements=PROTOCOL)
    with w.app.app_context():
        yield w
    w.app.extensions["iwrs.engine"].dispose()


@pytest.fixture
def subject(world) -> int:
    """A subject randomized at CN01 on the clock's day (day 1)."""
    subject_id = eligible_subject(world, "CN01")
    randomize(world, subject_id)
    return subject_id


def arm_of(subject_id: int) -> str:
    read_session().rollback()
    row = (
        read_session()
        .scalars(select(Randomization).where(Randomization.subject_id == subject_id))
        .one()
    )
    return slot_arm(read_session().get(RandomizationSlot, row.slot_id))  # type: ignore[arg-type]


def kit(number: str) -> Kit:
    read_session().rollback()
    return read_session().scalars(select(Kit).where(Kit.number == number)).one()


def given(subject_id: int) -> list[Dispensation]:
    read_session().rollback()
    return list(
        read_session().scalars(
            select(Dispensation)
            .where(Dispensation.subject_id == subject_id)
            .order_by(Dispensation.id)
        )
    )


def ledger() -> tuple[int, int, list[tuple[str, str, str]]]:
    """Dispensations, audit events, and every kit's state and place (to show nothing changed)."""
    session = read_session()
    session.rollback()
    return (
        session.scalar(select(func.count()).select_from(Dispensation)) or 0,
        session.scalar(select(func.count()).select_from(AuditEvent)) or 0,
        sorted(
            (k.number, str(k.state), f"{k.place_kind}:{k.place_id}")
            for k in session.scalars(select(Kit))
        ),
    )


def refused(error: type[Exception], call: Any, **kwargs: Any) -> Any:
    before = ledger()
    with pytest.raises(error) as refusal:
        call(**kwargs)
    assert ledger() == before
    return refusal.value


def dispense(world: World, subject_id: int, visit: str = "V2", *, by: str = "ph-CN01", **kw: Any):
    return dispensing.dispense(actor=world.actor(by), subject_id=subject_id, visit_code=visit, **kw)


def test_v2_in_window_gives_a_kit_of_the_subjects_treatment_confirmed_by_the_pharmacist(
    world, subject, clock
):
    clock.advance(days=28 - 3)  # the first day of V2's window (day 29 - 3)
    result = dispense(world, subject)
    assert (result.visit_code, result.out_of_window) == ("V2", False)
    dispensed = kit(result.kit_number)
    assert treatment_of(dispensed) == arm_of(subject)
    assert (dispensed.state, dispensed.place_kind, dispensed.place_id) == (
        "dispensed",
        "subject",
        subject,
    )
    assert [(d.visit_code, d.kind, d.confirmed_at) for d in given(subject)] == [
        ("V1", "scheduled", None),
        ("V2", "scheduled", None),
    ]
    row = dispensing.confirm_kit(
        actor=world.actor("ph-CN01"),
        dispensation_id=result.dispensation_id,
        kit_number=f" {result.kit_number} ",
    )
    assert row.confirmed_at == clock.current
    error = refused(
        Conflict,
        dispensing.confirm_kit,
        actor=world.actor("ph-CN01"),
        dispensation_id=result.dispensation_id,
        kit_number=result.kit_number,
    )
    assert error.rule == "once"
    read_session().rollback()
    event = (
        read_session()
        .scalars(select(AuditEvent).where(AuditEvent.action == "kit.dispense_confirmed"))
        .one()
    )
    assert event.subject_id == subject and result.kit_number in event.after


def test_a_mistyped_number_is_a_typing_error_and_another_kit_is_named_wrong(world, subject, clock):
    clock.advance(days=28)
    result = dispense(world, subject)
    number = result.kit_number
    mistyped = number[:-1] + str((int(number[-1]) + 1) % 10)
    swapped = number[1] + number[0] + number[2:]
    for typed in (mistyped, swapped if swapped != number else mistyped, "12345", "abcdefg"):
        assert not is_valid_kit_number(typed)
        error = refused(
            InvalidInput,
            dispensing.confirm_kit,
            actor=world.actor("ph-CN01"),
            dispensation_id=result.dispensation_id,
            kit_number=typed,
        )
        assert (error.field, error.rule) == ("kit_number", "check_digit")
        assert "typing error" in str(error)
    read_session().rollback()
    other = (
        read_session()
        .scalars(
            select(Kit.number).where(
                Kit.place_kind == "site", Kit.place_id == world.sites["CN01"], Kit.number != number
            )
        )
        .first()
    )
    assert other is not None and is_valid_kit_number(other)
    error = refused(
        Conflict,
        dispensing.confirm_kit,
        actor=world.actor("ph-CN01"),
        dispensation_id=result.dispensation_id,
        kit_number=other,
    )
    assert (error.field, error.rule) == ("kit_number", "matches")
    assert str(error) == (
        f"kit_number: {other} is not the kit dispensed to CN01-001 at V2; give the subject "
        f"kit {number}"
    )
    assert given(subject)[-1].confirmed_at is None


def test_a_visit_is_dispensed_once_as_scheduled(world, subject, clock):
    clock.advance(days=28)
    dispense(world, subject)
    error = refused(Conflict, dispense, world=world, subject_id=subject)
    assert (error.field, error.rule) == ("visit_code", "once_per_visit")
    assert "dispensed already; use a replacement or an unscheduled kit" in str(error)
    error = refused(Conflict, dispense, world=world, subject_id=subject, visit="V1")
    assert error.rule == "once_per_visit"  # V1 was dispensed at randomization
    for visit in ("EOT", "V9"):
        error = refused(InvalidInput, dispense, world=world, subject_id=subject, visit=visit)
        assert (error.field, error.rule) == ("visit_code", "dosing_visit")


def test_out_of_window_needs_a_reason_and_is_recorded(world, subject, clock):
    clock.advance(days=28 + 4)  # a day after V2's window closes
    error = refused(InvalidInput, dispense, world=world, subject_id=subject)
    assert (error.field, error.rule) == ("reason", "out_of_window")
    assert "2026-03-27 to 2026-04-02" in str(error)
    result = dispense(world, subject, reason="subject was in hospital")
    assert result.out_of_window
    row = given(subject)[-1]
    assert (row.visit_code, row.kind, row.out_of_window, row.reason) == (
        "V2",
        "scheduled",
        True,
        "subject was in hospital",
    )
    read_session().rollback()
    event = (
        read_session().scalars(select(AuditEvent).where(AuditEvent.action == "kit.dispensed")).one()
    )
    assert event.reason == "subject was in hospital" and '"out_of_window":true' in event.after


def request_kit(world: World, subject_id: int, visit: str = "V1", **kw: Any) -> Any:
    kw.setdefault("kind", "replacement")
    kw.setdefault("reason", "syringe dropped")
    kw.setdefault("signer_password", PASSWORD)
    return dispensing.request_extra_kit(
        actor=world.actor(kw.pop("by", "inv-CN01")), subject_id=subject_id, visit_code=visit, **kw
    )


def raised_by(alert) -> tuple[object, str, str, bool]:  # type: ignore[no-untyped-def]
    """Who the alert's audit event names: (user_id, role, auth, has a trigger). An alert is an
    automatic action: the system's, citing its triggering event (issue 10)."""
    read_session().rollback()
    (event,) = read_session().scalars(
        select(AuditEvent).where(
            AuditEvent.action == "supply.alert_raised", AuditEvent.entity_id == str(alert.id)
        )
    )
    return event.user_id, event.role, event.auth, "trigger" in json.loads(event.after)


def alerts(kind: str) -> list[SupplyAlert]:
    read_session().rollback()
    return list(read_session().scalars(select(SupplyAlert).where(SupplyAlert.kind == kind)))


@pytest.mark.parametrize("kind", ["replacement", "unscheduled"])
def test_replacement_and_unscheduled_kits_need_the_investigators_signed_request(
    world, subject, clock, kind
):
    clock.advance(days=10)
    error = refused(Conflict, dispense, world=world, subject_id=subject, visit="V1", kind=kind)
    assert (error.field, error.rule) == ("kind", "investigator_request")
    # The pharmacist's free text is no request; only the site's investigator may ask.
    error = refused(
        Conflict, dispense, world=world, subject_id=subject, visit="V1", kind=kind, reason="x"
    )
    assert error.rule == "investigator_request"
    for by in ("ph-CN01", "inv-CN02"):
        assert refused(
            NotFound, request_kit, world=world, subject_id=subject, by=by, kind=kind
        ).rule in (
            "permission",
            "exists",
        )
    error = refused(
        InvalidInput, request_kit, world=world, subject_id=subject, kind=kind, reason=" "
    )
    assert (error.field, error.rule) == ("reason", "required")
    error = refused(InvalidInput, request_kit, world=world, subject_id=subject, kind="scheduled")
    assert (error.field, error.rule) == ("kind", "choice")
    error = refused(
        InvalidInput, request_kit, world=world, subject_id=subject, visit="EOT", kind=kind
    )
    assert (error.field, error.rule) == ("visit_code", "dosing_visit")
    with pytest.raises(AuthenticationFailed):
        request_kit(world, subject, kind=kind, signer_password="wrong password")
    assert not alerts("kit_requested")

    row = request_kit(world, subject, kind=kind, reason="syringe dropped")
    assert row.signature_id is not None and row.dispensation_id is None
    assert [a.site_id for a in alerts("kit_requested")] == [world.sites["CN01"]]
    assert raised_by(alerts("kit_requested")[0]) == (None, "system", "system", True)
    # Another kind than the one requested is still refused.
    other = "unscheduled" if kind == "replacement" else "replacement"
    refused(Conflict, dispense, world=world, subject_id=subject, visit="V1", kind=other)
    result = dispense(world, subject, "V1", kind=kind)
    assert treatment_of(kit(result.kit_number)) == arm_of(subject)
    (extra,) = given(subject)[1:]
    assert (extra.kind, extra.reason, extra.out_of_window) == (kind, "syringe dropped", False)
    # The request is used up: no second kit from it, and the protocol allows one per visit.
    error = refused(Conflict, dispense, world=world, subject_id=subject, visit="V1", kind=kind)
    assert error.rule == "investigator_request"
    error = refused(Conflict, request_kit, world=world, subject_id=subject, kind=kind)
    assert (error.field, error.rule) == ("visit_code", "replacement_limit")
    error = refused(Conflict, request_kit, world=world, subject_id=subject, kind=other)
    assert error.rule == "replacement_limit"
    # Every request alerts the supply manager, not only the first while one is open.
    clock.advance(days=28 - 3 - 10)  # an extra kit belongs to a visit whose window has opened
    request_kit(world, subject, "V2", kind=kind)
    assert len(alerts("kit_requested")) == 2
    events = (
        read_session().scalars(select(AuditEvent).where(AuditEvent.action == "kit.requested")).all()
    )
    assert [(e.username, e.reason) for e in events] == [
        ("inv-cn01", "syringe dropped"),
    ] * 2


def test_the_limit_per_visit_is_the_protocols(tmp_path, database_url, clock):
    more = {**PROTOCOL, "extra_kits_per_visit = 1": "extra_kits_per_visit = 2"}
    w = make_world(tmp_path, database_url, clock, replacements=more)
    with w.app.app_context():
        subject_id = eligible_subject(w, "CN01")
        randomize(w, subject_id)
        request_kit(w, subject_id)
        request_kit(w, subject_id, kind="unscheduled")
        error = refused(Conflict, request_kit, world=w, subject_id=subject_id)
        assert error.rule == "replacement_limit"
    w.app.extensions["iwrs.engine"].dispose()


def test_a_discontinued_subject_gets_nothing(world, subject, clock):
    investigator = world.actor("inv-CN01")
    with pytest.raises(InvalidInput):
        dispensing.discontinue_treatment(actor=investigator, subject_id=subject, reason="  ")
    with pytest.raises(NotFound):
        dispensing.discontinue_treatment(
            actor=world.actor("ph-CN01"), subject_id=subject, reason="adverse event"
        )
    dispensing.discontinue_treatment(actor=investigator, subject_id=subject, reason="adverse event")
    clock.advance(days=28)
    for kind, reason in (("scheduled", ""), ("replacement", "broken"), ("unscheduled", "extra")):
        error = refused(
            Conflict, dispense, world=world, subject_id=subject, kind=kind, reason=reason
        )
        assert (error.field, error.rule) == ("subject_id", "discontinued")
        assert str(error) == (
            "subject CN01-001 has discontinued study treatment; no kit is dispensed"
        )
        if kind != "scheduled":
            error = refused(
                Conflict, request_kit, world=world, subject_id=subject, visit="V2", kind=kind
            )
            assert (error.field, error.rule) == ("subject_id", "on_treatment")
    error = refused(
        Conflict,
        dispensing.discontinue_treatment,
        actor=investigator,
        subject_id=subject,
        reason="again",
    )
    assert error.rule == "on_treatment"


def test_a_subject_not_randomized_gets_nothing(world):
    subject_id = eligible_subject(world, "CN01")
    error = refused(Conflict, dispense, world=world, subject_id=subject_id)
    assert (error.field, error.rule) == ("subject_id", "randomized")


def test_a_site_without_the_subjects_treatment_refuses_without_naming_it(world, subject, clock):
    arm = arm_of(subject)
    read_session().rollback()
    for k in (
        read_session()
        .scalars(select(Kit).where(Kit.place_kind == "site", Kit.place_id == world.sites["CN01"]))
        .all()
    ):
        if treatment_of(k) == arm and k.state == "available":
            accountability.report_kit(
                actor=world.actor("ph-CN01"), kit_number=k.number, lost=True, reason="lost"
            )
    clock.advance(days=28)
    before = ledger()
    with pytest.raises(Conflict) as refusal:
        dispense(world, subject)
    error = refusal.value
    assert (error.field, error.rule) == ("site", "site_stock")
    assert str(error) == (
        "no dispensable kit for subject CN01-001 at site CN01: nothing was dispensed; the "
        "supply manager has been alerted"
    )
    for word in (*ARMS, "Genakumab", "Placebo", "placebo", "active"):
        assert word not in str(error)
    after = ledger()
    assert after[0] == before[0] and after[2] == before[2]  # no kit moved, nothing dispensed
    read_session().rollback()
    (alert,) = (
        read_session()
        .scalars(select(SupplyAlert).where(SupplyAlert.kind == "site_stock_dispensing"))
        .all()
    )
    assert alert.site_id == world.sites["CN01"] and alert.resolved_at is None
    for word in ARMS:
        assert word not in alert.message
    assert [d.visit_code for d in given(subject)] == ["V1"]


def _empty_shelf_of(world: World, site: str, arm: str) -> None:
    read_session().rollback()
    for k in (
        read_session()
        .scalars(select(Kit).where(Kit.place_kind == "site", Kit.place_id == world.sites[site]))
        .all()
    ):
        if treatment_of(k) == arm and k.state == "available":
            accountability.report_kit(
                actor=world.actor(f"ph-{site}"), kit_number=k.number, lost=True, reason="lost"
            )


def _refusal_seen(world: World, subject_id: int, site: str, kind: str) -> tuple[Any, ...]:
    """Everything a blinded reader can see of a refused dispensing, the subject and site
    replaced by placeholders: the exception, its status, field, rule and words, and the audit
    events and alerts it wrote."""
    read_session().rollback()
    seq = read_session().scalar(select(func.max(AuditEvent.seq))) or 0
    number = read_session().get(Subject, subject_id).screening_number  # type: ignore[union-attr]
    if kind != "scheduled":
        request_kit(world, subject_id, "V2", kind=kind, by=f"inv-{site}")
    with pytest.raises(Conflict) as refusal:
        dispense(world, subject_id, kind=kind, by=f"ph-{site}")
    error = refusal.value

    def neutral(text: str | None) -> str | None:
        if text is None:
            return None
        return text.replace(number, "<subject>").replace(site, "<site>")

    read_session().rollback()
    events = read_session().scalars(
        select(AuditEvent).where(AuditEvent.seq > seq).order_by(AuditEvent.seq)
    )
    return (
        type(error),
        error.status,
        error.field,
        error.rule,
        neutral(str(error)),
        [
            (e.action, e.entity_type, e.username.replace(site.lower(), "<site>"), neutral(e.after))
            for e in events
            # The request itself, and its alert citing it by id, differ by construction.
            if e.action not in ("kit.requested", "esign.signed")
            and '"kind":"kit_requested"' not in (e.after or "")
        ],
        sorted(
            (a.kind, neutral(a.message))
            for a in alerts("site_stock_dispensing")
            if a.site_id == world.sites[site]
        ),
    )


@pytest.mark.parametrize("kind", ["scheduled", "unscheduled"])
def test_a_refusal_for_stock_is_the_same_whatever_the_arm(world, clock, kind):
    first = eligible_subject(world, "CN01")
    randomize(world, first)
    other = None
    while other is None:  # a subject of the other arm, at the other site
        candidate = eligible_subject(world, "CN02")
        randomize(world, candidate)
        other = candidate if arm_of(candidate) != arm_of(first) else None
    _empty_shelf_of(world, "CN01", arm_of(first))
    _empty_shelf_of(world, "CN02", arm_of(other))
    clock.advance(days=28)
    seen = [
        _refusal_seen(world, first, "CN01", kind),
        _refusal_seen(world, other, "CN02", kind),
    ]
    assert seen[0][3] == "site_stock"
    assert seen[0] == seen[1]
    assert "<subject>" in seen[0][4] and seen[0][5]  # the comparison saw words and events


def test_other_sites_pharmacists_get_not_found(world, subject, clock):
    clock.advance(days=28)
    refused(NotFound, dispense, world=world, subject_id=subject, by="ph-CN02")
    refused(NotFound, dispense, world=world, subject_id=subject, by="inv-CN01")
    refused(NotFound, dispense, world=world, subject_id=987654)
    result = dispense(world, subject)
    error = refused(
        NotFound,
        dispensing.confirm_kit,
        actor=world.actor("ph-CN02"),
        dispensation_id=result.dispensation_id,
        kit_number=result.kit_number,
    )
    assert result.kit_number not in str(error)
    refused(
        NotFound,
        dispensing.confirm_kit,
        actor=world.actor("ph-CN01"),
        dispensation_id=987654,
        kit_number=result.kit_number,
    )


# --- issue 10, finding 4 by the scheduled path: no drawing of later visits' kits ahead ---------


def test_a_scheduled_kit_is_not_dispensed_before_its_window_opens(world, subject, clock):
    """Dispensing a subject's later visits early on the pharmacist's free text alone would draw
    kits of one arm until 'no dispensable kit' splits the shelf by arm (issue 10, finding 4)."""
    clock.advance(days=1)
    for visit in ("V2", "V3", "V6"):
        error = refused(
            Conflict, dispense, world=world, subject_id=subject, visit=visit, reason="travel"
        )
        assert (error.field, error.rule) == ("visit_code", "window_not_open")
    clock.advance(days=28 - 3 - 1)  # the first day of V2's window
    assert dispense(world, subject).visit_code == "V2"


def test_a_missed_visit_is_not_dispensed_once_the_next_window_opens(world, subject, clock):
    clock.advance(days=56 - 3)  # the first day of V3's window: V2 was missed
    error = refused(
        Conflict, dispense, world=world, subject_id=subject, visit="V2", reason="forgot"
    )
    assert (error.field, error.rule) == ("visit_code", "visit_missed")
    assert dispense(world, subject, visit="V3").visit_code == "V3"


def test_an_extra_kit_is_not_requested_for_a_visit_not_yet_open(world, subject, clock):
    clock.advance(days=1)
    before = ledger()
    with pytest.raises(Conflict) as refusal:
        request_kit(world, subject, visit="V4", kind="unscheduled")
    assert (refusal.value.field, refusal.value.rule) == ("visit_code", "window_not_open")
    assert ledger()[0] == before[0]
