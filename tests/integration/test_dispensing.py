"""Dispensing at visits through the real services, on SQLite and PostgreSQL: the kit of the
subject's treatment, confirmed by the pharmacist; once per scheduled visit; windows; replacement
and unscheduled kits; discontinued subjects; a site out of the subject's treatment; site scope."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from blinding.kits import is_valid_kit_number
from iwrs.db import read_session
from iwrs.errors import Conflict, InvalidInput, NotFound
from iwrs.models import AuditEvent, Dispensation, Kit, Randomization, RandomizationSlot, SupplyAlert
from iwrs.services import accountability, dispensing
from iwrs.services.randomization import slot_arm
from iwrs.services.supply import treatment_of
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


@pytest.mark.parametrize("kind", ["replacement", "unscheduled"])
def test_replacement_and_unscheduled_kits_need_a_reason_and_keep_the_treatment(
    world, subject, clock, kind
):
    clock.advance(days=10)
    error = refused(InvalidInput, dispense, world=world, subject_id=subject, visit="V1", kind=kind)
    assert (error.field, error.rule) == ("reason", "required")
    error = refused(
        InvalidInput, dispense, world=world, subject_id=subject, visit="V1", kind="extra"
    )
    assert (error.field, error.rule) == ("kind", "choice")
    numbers = [
        dispense(world, subject, "V1", kind=kind, reason=f"syringe dropped {n}").kit_number
        for n in range(3)
    ]
    assert len(set(numbers)) == 3
    assert {treatment_of(kit(n)) for n in numbers} == {arm_of(subject)}
    assert [(d.kind, d.out_of_window) for d in given(subject)[1:]] == [(kind, False)] * 3


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
