"""Issue 15, the supply side: a kit brought back is recorded at a visit, verified, then pending
destruction, and destroyed only with a signature; a kit the subject lost is missing at the site;
a receipt states its date; sites see shipments from "shipped" on; the visit board lists what is
due. Refusals are asserted by field and rule, and a refusal writes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from iwrs import clock as site_clock
from iwrs import signatures
from iwrs.audit import Actor
from iwrs.db import read_session
from iwrs.errors import IWRSError, NotFound
from iwrs.models.audit import AuditEvent
from iwrs.models.sites import Site
from iwrs.models.supply import Kit, KitReturn, Shipment
from iwrs.models.users import Signature
from iwrs.services import accountability, kit_counts, randomization_views, shipments, supply_views
from supply.states import KitState
from tests.conftest import PASSWORD
from tests.integration.randomization_worker import (
    World,
    eligible_subject,
    ledger_check,
    make_world,
    randomize,
)


@pytest.fixture
def world(tmp_path, database_url, clock) -> Iterator[World]:
    w = make_world(tmp_path, database_url, clock)
    with w.app.app_context():
        w.user("pharmacist", ["CN01"], name="ph2-CN01")
        yield w
    w.app.extensions["iwrs.engine"].dispose()


def fresh() -> object:
    read_session().rollback()
    return read_session()


def kit(number: str) -> Kit:
    row = fresh().scalars(select(Kit).where(Kit.number == number)).one()  # type: ignore[attr-defined]
    return row


def refusal(call) -> tuple[str | None, str | None]:  # type: ignore[no-untyped-def]
    """(field, rule) of the refusal `call` raises; the trail gains nothing."""
    before = fresh().scalar(select(func.count()).select_from(AuditEvent))  # type: ignore[attr-defined]
    with pytest.raises(IWRSError) as refused:
        call()
    after = fresh().scalar(select(func.count()).select_from(AuditEvent))  # type: ignore[attr-defined]
    assert after == before, "a refusal writes nothing"
    return refused.value.field, refused.value.rule


def events(action: str) -> list[dict]:
    rows = fresh().scalars(  # type: ignore[attr-defined]
        select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
    )
    return [json.loads(r.after) for r in rows]


def test_a_return_is_recorded_verified_then_destroyed_with_a_signature(world):
    ph, other, manager = world.actor("ph-CN01"), world.actor("ph2-CN01"), world.actor("manager")
    subject = eligible_subject(world, "CN01")
    number = randomize(world, subject).kit_number
    kit_counts_before = kit_counts.mismatches(actor=Actor.system("test"))

    accountability.record_return(
        actor=ph, kit_number=number, condition="partly_used", units_returned="2"
    )
    row = kit(number)
    assert (row.state, row.place_kind, row.place_id) == (
        KitState.RETURNED,
        "site",
        world.sites["CN01"],
    )
    (recorded,) = events("kit.returned")
    assert recorded["condition"] == "partly_used" and recorded["units_returned"] == 2
    assert recorded["visit_code"] == "unscheduled" and recorded["state"] == "returned"
    # not destroyable before a pharmacist verified it; a second return is refused
    destroy = lambda: accountability.destroy_kits(  # noqa: E731
        actor=manager, kit_numbers=[number], reference="DC-1", signer_password=PASSWORD
    )
    assert refusal(destroy) == ("action", "kit_transition")
    again = lambda: accountability.record_return(  # noqa: E731
        actor=ph, kit_number=number, condition="empty"
    )
    assert refusal(again) == ("action", "kit_transition")

    accountability.verify_return(actor=other, kit_number=number, units_verified=1)
    assert kit(number).state == KitState.PENDING_DESTRUCTION
    (verified,) = events("kit.return_verified")
    assert verified == {
        "state": "pending_destruction",
        "units_returned": 2,
        "units_verified": 1,
        "same_person": False,
    }
    verify = lambda: accountability.verify_return(actor=ph, kit_number=number)  # noqa: E731
    assert refusal(verify) == ("action", "kit_transition")

    wrong = lambda: accountability.destroy_kits(  # noqa: E731
        actor=manager, kit_numbers=[number], reference="DC-1", signer_password="wrong-password"
    )
    with pytest.raises(IWRSError) as bad_signature:
        wrong()
    assert bad_signature.value.field == "password"
    assert kit(number).state == KitState.PENDING_DESTRUCTION
    record = destroy()
    assert kit(number).state == KitState.DESTROYED and kit(number).place_id == record.id
    signed = (
        fresh()
        .scalars(  # type: ignore[attr-defined]
            select(Signature).where(Signature.entity_type == "destruction")
        )
        .one()
    )
    assert signed.meaning == signatures.destroy_kits(kit_numbers=[number], reference="DC-1")
    assert fresh().scalars(select(KitReturn)).one().verified_by_id == other.user_id  # type: ignore[attr-defined]
    assert ledger_check()[1] == []
    assert kit_counts.mismatches(actor=Actor.system("test")) == kit_counts_before == []


def test_return_refusals_name_the_field_and_the_rule_and_a_lost_kit_is_missing(world, clock):
    ph = world.actor("ph-CN01")
    subject = eligible_subject(world, "CN01")
    number = randomize(world, subject).kit_number
    today = site_clock.today(fresh().get(Site, world.sites["CN01"]))  # type: ignore[attr-defined]
    cases = {
        ("condition", "choice"): {"condition": "half"},
        ("visit_code", "choice"): {"condition": "empty", "visit_code": "V99"},
        ("units_returned", "range"): {"condition": "empty", "units_returned": -1},
        ("units_returned", "integer"): {"condition": "empty", "units_returned": "two"},
        ("returned_on", "future_date"): {
            "condition": "empty",
            "returned_on": (today + timedelta(days=1)).isoformat(),
        },
        ("returned_on", "before_previous_step"): {
            "condition": "empty",
            "returned_on": (today - timedelta(days=1)).isoformat(),
        },
        ("returned_on", "date"): {"condition": "empty", "returned_on": "31-12-2026"},
    }
    for expected, given in cases.items():
        got = refusal(
            lambda given=given: accountability.record_return(actor=ph, kit_number=number, **given)
        )
        assert got == expected, (given, got)
    assert kit(number).state == KitState.DISPENSED
    assert fresh().scalar(select(func.count()).select_from(KitReturn)) == 0  # type: ignore[attr-defined]
    # another site's pharmacist: as if the kit did not exist
    elsewhere = lambda: accountability.record_return(  # noqa: E731
        actor=world.actor("ph-CN02"), kit_number=number, condition="empty"
    )
    with pytest.raises(NotFound) as hidden:
        elsewhere()
    assert (hidden.value.field, hidden.value.rule) == ("kit_number", "exists")
    # a kit on the shelf was never dispensed
    shelf = (
        fresh()
        .scalars(  # type: ignore[attr-defined]
            select(Kit.number).where(Kit.state == KitState.AVAILABLE, Kit.place_kind == "site")
        )
        .first()
    )
    unused = lambda: accountability.record_return(  # noqa: E731
        actor=ph, kit_number=shelf, condition="unused"
    )
    assert refusal(unused) == ("action", "kit_transition")
    # a kit the subject lost: missing at the site, nothing to verify
    accountability.record_return(actor=ph, kit_number=number, condition="lost", visit_code="V2")
    row = kit(number)
    assert (row.state, row.place_kind, row.place_id) == (
        KitState.MISSING,
        "site",
        world.sites["CN01"],
    )
    assert events("kit.return_lost")[0]["condition"] == "lost"
    verify = lambda: accountability.verify_return(actor=ph, kit_number=number)  # noqa: E731
    assert refusal(verify) == ("action", "kit_transition")
    assert ledger_check()[1] == []


def test_a_receipt_states_its_date_and_sites_see_shipments_from_shipped_on(world, clock):
    manager, ph = world.actor("manager"), world.actor("ph-CN01")
    row = shipments.request_manual_shipment(actor=manager, site_id=world.sites["CN01"], quantity=2)
    assert row.id not in {s.id for s in supply_views.visible_shipments(actor=ph)}
    hidden = lambda: supply_views.visible_shipment(actor=ph, shipment_id=row.id)  # noqa: E731
    assert refusal(hidden) == ("shipment_id", "exists")
    shipments.ship_shipment(actor=manager, shipment_id=row.id, courier="C", tracking_number="T1")
    assert row.id in {s.id for s in supply_views.visible_shipments(actor=ph)}
    assert supply_views.visible_shipment(actor=ph, shipment_id=row.id).id == row.id
    clock.advance(days=2)
    lines = {k.number: "good" for k in supply_views.shipment_kits(actor=ph, shipment_id=row.id)}
    today = site_clock.today(fresh().get(Site, world.sites["CN01"]))  # type: ignore[attr-defined]
    for day, rule in (
        (today + timedelta(days=1), "future_date"),
        (today - timedelta(days=3), "before_shipping"),
    ):
        call = lambda day=day: shipments.receive_shipment(  # noqa: E731
            actor=ph, shipment_id=row.id, lines=lines, excursion=False, received_on=day
        )
        assert refusal(call) == ("received_on", rule)
    yesterday = today - timedelta(days=1)
    shipments.receive_shipment(
        actor=ph, shipment_id=row.id, lines=lines, excursion=False, received_on=yesterday
    )
    stored = fresh().get(Shipment, row.id)  # type: ignore[attr-defined]
    assert stored.received_on == yesterday
    assert events("shipment.received")[-1]["received_on"] == yesterday.isoformat()


def test_the_visit_board_lists_the_visits_due_by_the_sites_date(world, clock):
    """V2 is day 29, window 3 days either side. Randomized on day 0 (O), 2 (A), 6 (C) and 30
    (B), on day 30 O is overdue (target passed, window open), A due today, C due this week."""
    ph = world.actor("ph-CN01")
    subjects = {}
    for key, wait in (("O", 0), ("A", 2), ("C", 4), ("B", 24)):
        clock.advance(days=wait)
        subjects[key] = eligible_subject(world, "CN01")
        randomize(world, subjects[key])
    names = {v: k for k, v in subjects.items()}

    def board(**filters) -> dict[str, str | None]:  # type: ignore[no-untyped-def]
        fresh()
        rows = randomization_views.visits_board(actor=ph, **filters)
        return {names[r.subject.id]: r.due for r in rows}

    assert board(due="overdue") == {"O": "overdue"}
    assert board(due="today") == {"O": "overdue", "A": "today"}
    assert board(due="week") == {"O": "overdue", "A": "today", "C": "week"}
    assert board(due="all") == {"O": "overdue", "A": "today", "C": "week", "B": None}
    number = randomization_views.visit_row(actor=ph, subject_id=subjects["C"])
    number = number.subject.screening_number
    assert board(due="all", search=number.lower()) == {"C": "week"}
    first = randomization_views.visits_board(actor=ph, due="week", limit=1)
    rest = randomization_views.visits_board(
        actor=ph, due="week", after=first[0].subject.screening_number
    )
    assert [names[r.subject.id] for r in first + rest] == ["O", "A", "C"]
    assert board(due="today", site_id=world.sites["CN02"]) == {}
    with pytest.raises(IWRSError) as bad:
        randomization_views.visits_board(actor=ph, due="soon")
    assert (bad.value.field, bad.value.rule) == ("due", "choice")
    # once given, the visit is no longer due
    from iwrs.services import dispensing

    dispensing.dispense(actor=ph, subject_id=subjects["A"], visit_code="V2")
    assert board(due="today") == {"O": "overdue"}


def test_a_kit_returned_before_returns_had_details_is_verified_then_destroyable(world):
    """A kit returned before migration 0024 has no kit_return row: verifying it is neither a
    500 nor a dead end (review finding); it becomes pending destruction like any other."""
    from sqlalchemy import text

    from iwrs.db import engine

    ph, manager = world.actor("ph-CN01"), world.actor("manager")
    number = randomize(world, eligible_subject(world, "CN01")).kit_number
    accountability.record_return(actor=ph, kit_number=number, condition="empty")
    with engine().begin() as connection:  # the row 0024 could not have backfilled
        connection.execute(text("DELETE FROM kit_return"))

    accountability.verify_return(actor=ph, kit_number=number)
    assert kit(number).state == KitState.PENDING_DESTRUCTION
    (verified,) = events("kit.return_verified")
    assert verified["units_returned"] is None and verified["same_person"] is None
    accountability.destroy_kits(
        actor=manager, kit_numbers=[number], reference="DC-9", signer_password=PASSWORD
    )
    assert kit(number).state == KitState.DESTROYED
    assert ledger_check()[1] == []
