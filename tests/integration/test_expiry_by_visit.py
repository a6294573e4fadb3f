"""Issue 12, findings 5, 6, 7 and 9 through the real services, on SQLite and PostgreSQL:
do-not-dispense by the next dosing visit's window end, resupply of a site whose kits cannot
serve the next randomization, manual requests larger than the depot, and a 200-lot kit file.

With the shipped schedule and day 1 = D: a kit dispensed at V1 must last through V2's window
end (day 32 = D + 31) + 7 = D + 38; one dispensed at V2 through V3's window end (day 60 =
D + 59) + 7 = D + 66, wherever in V2's window (days 26 to 32) it is dispensed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from iwrs import audit
from iwrs import clock as app_clock
from iwrs.audit import Actor, AuditFieldTooLong
from iwrs.db import read_session, transaction
from iwrs.errors import Conflict
from iwrs.models import AuditEvent, Kit, Lot, Shipment
from iwrs.services import dispensing, shipments, supply, users
from iwrs.services.resupply import run_resupply
from iwrs.services.shipments import DepotShortfall
from tests.conftest import PASSWORD
from tests.integration.randomization_worker import (
    World,
    eligible_subject,
    make_world,
    randomize,
    usable_by_arm,
)


@pytest.fixture
def world(tmp_path, database_url, clock) -> Iterator[World]:
    """CN01 active with its initial 8 kits from lot L-SHORT (first expiry), L-LONG at the
    depot, a generated list."""
    made = make_world(
        tmp_path,
        database_url,
        clock,
        sites=("CN01",),
        lots=(("L-SHORT", 20, 600), ("L-LONG", 100, 730)),
    )
    with made.app.app_context():
        yield made
    made.app.extensions["iwrs.engine"].dispose()


def fresh() -> Any:
    read_session().rollback()
    return read_session()


def set_expiry(world: World, lot: str, expiry: date) -> None:
    supply.change_lot_expiry(
        actor=world.actor("manager"), lot_code=lot, new_expiry=expiry, reason="test"
    )


def counts() -> tuple[int, int, int]:
    session = fresh()
    return (
        session.scalar(select(func.count()).select_from(Shipment)) or 0,
        session.scalar(select(func.count()).select_from(AuditEvent)) or 0,
        session.scalar(select(func.count()).select_from(Kit).where(Kit.state == "at_depot")) or 0,
    )


def lot_of(number: str) -> str:
    session = fresh()
    kit = session.scalars(select(Kit).where(Kit.number == number)).one()
    return session.get(Lot, kit.lot_id).code  # type: ignore[union-attr]


# --- finding 5: expiry by visit ------------------------------------------------------------


@pytest.mark.parametrize("day", [26, 29, 32], ids=["early", "target", "late"])
def test_a_kit_must_last_through_v3s_window_end_plus_7_whenever_v2_is_done(world, clock, day):
    subject = eligible_subject(world, "CN01")
    randomize(world, subject)
    d = clock.current.date()
    clock.advance(days=day - 1)

    def v2() -> Any:
        return dispensing.dispense(
            actor=world.actor("ph-CN01"), subject_id=subject, visit_code="V2"
        )

    for expiry in (d + timedelta(days=44), d + timedelta(days=65)):  # between V2 and V3; edge-1
        set_expiry(world, "L-SHORT", expiry)
        with pytest.raises(Conflict) as refused:
            v2()
        assert (refused.value.field, refused.value.rule) == ("site", "site_stock")
    set_expiry(world, "L-SHORT", d + timedelta(days=66))  # V3's window end (D + 59) + 7
    result = v2()
    assert lot_of(result.kit_number) == "L-SHORT"


@pytest.mark.parametrize(
    ("kind", "visit", "day", "edge"),
    [("replacement", "V1", 11, 38), ("unscheduled", "V2", 40, 66)],
)
def test_an_extra_kit_lasts_as_long_as_its_visits_scheduled_kit(
    world, clock, kind, visit, day, edge
):
    """Decision: an unscheduled or replacement kit requested for a visit lasts through the
    window end of the dosing visit after that visit + 7 (V1: D + 38; V2: D + 66)."""
    subject = eligible_subject(world, "CN01")
    randomize(world, subject)
    d = clock.current.date()
    clock.advance(days=day - 1)
    dispensing.request_extra_kit(
        actor=world.actor("inv-CN01"),
        subject_id=subject,
        visit_code=visit,
        kind=kind,
        reason="syringe dropped",
        signer_password=PASSWORD,
    )

    def extra() -> Any:
        return dispensing.dispense(
            actor=world.actor("ph-CN01"), subject_id=subject, visit_code=visit, kind=kind
        )

    set_expiry(world, "L-SHORT", d + timedelta(days=edge - 1))
    with pytest.raises(Conflict) as refused:
        extra()
    assert refused.value.rule == "site_stock"
    set_expiry(world, "L-SHORT", d + timedelta(days=edge))
    assert lot_of(extra().kit_number) == "L-SHORT"


# --- finding 6: usable stock, one definition ---------------------------------------------


def test_a_site_whose_kits_expire_before_v2s_window_end_plus_7_is_resupplied_and_refuses(
    world, clock
):
    d = clock.current.date()
    set_expiry(world, "L-SHORT", d + timedelta(days=37))  # V2's target + 7 would still pass
    assert all(not kits for kits in usable_by_arm(fresh(), world.sites["CN01"], today=d).values())
    subject = eligible_subject(world, "CN01")
    with pytest.raises(Conflict) as refused:
        randomize(world, subject)
    assert (refused.value.field, refused.value.rule) == ("site", "site_stock")
    made = run_resupply()
    assert len(made) == 1 and made[0].endswith("to CN01")
    (row,) = fresh().scalars(select(Shipment).where(Shipment.kind == "resupply")).all()
    kits = fresh().scalars(select(Kit).where(Kit.shipment_id == row.id)).all()
    assert {lot_of(k.number) for k in kits} == {"L-LONG"}
    assert len(kits) == 8  # 2 treatments x maximum 4, nothing usable counted


def test_kits_usable_through_v2s_window_end_plus_7_serve_and_need_no_resupply(world, clock):
    d = clock.current.date()
    set_expiry(world, "L-SHORT", d + timedelta(days=38))
    usable = usable_by_arm(fresh(), world.sites["CN01"], today=d)
    assert sum(len(kits) for kits in usable.values()) == 8
    assert run_resupply() == []
    result = randomize(world, eligible_subject(world, "CN01"))
    assert lot_of(result.kit_number) == "L-SHORT"


# --- finding 7: manual requests larger than the depot ------------------------------------


def test_a_manual_request_larger_than_the_depot_is_refused_whole_with_the_shortfall(world):
    depot = counts()[2]
    assert depot == 112  # 120 generated, 8 shipped to CN01
    before = counts()
    with pytest.raises(DepotShortfall) as refused:
        shipments.request_manual_shipment(
            actor=world.actor("manager"), site_id=world.sites["CN01"], quantity=300
        )
    assert (refused.value.field, refused.value.rule) == ("quantity", "depot_stock")
    assert (refused.value.requested, refused.value.available) == (300, 112)
    assert counts() == before, "nothing requested, nothing reserved, no alert kept"
    row = shipments.request_manual_shipment(
        actor=world.actor("manager"), site_id=world.sites["CN01"], quantity=112
    )
    assert len(fresh().scalars(select(Kit).where(Kit.shipment_id == row.id)).all()) == 112


def test_the_api_refuses_a_manual_request_larger_than_the_depot_with_field_and_rule(world):
    manager = world.people["manager"]
    token, _ = users.create_api_token(
        actor=Actor.of(manager), user_id=manager.id, name="t", password=PASSWORD
    )
    client = world.app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    before = counts()
    answer = client.post(
        "/api/v1/shipments", headers=auth, json={"site_code": "CN01", "quantity": 300}
    )
    assert answer.status_code == 409
    (problem,) = answer.get_json()["errors"]
    assert (problem["field"], problem["rule"]) == ("quantity", "depot_stock")
    assert (problem["requested"], problem["available"]) == ("300", "112")
    assert counts() == before
    made = client.post("/api/v1/shipments", headers=auth, json={"site_code": "CN01", "quantity": 4})
    assert made.status_code == 201 and len(made.get_json()["kits"]) == 4


# --- finding 9: audit fields built from input ----------------------------------------------


def balanced_file(lots: int, per_arm: int, expiry: date) -> str:
    """A vendor file of `lots` lots, each with `per_arm` kits of each treatment; kit numbers
    drawn at random (so the rank test does not warn)."""
    from blinding.kits import KitSpec, format_kit_list_csv, generate_kit_list

    arms = [a.code for a in supply.protocol().arms]
    specs: list[KitSpec] = []
    taken = set(fresh().scalars(select(Kit.number)))
    for n in range(lots):
        lot = generate_kit_list(
            seed=bytes([n % 256, n // 256]) * 16,
            kit_type=supply.protocol().kit_types[0].code,
            lot=f"VENDOR-LOT-{n:04d}",
            expiry=expiry,
            per_treatment=dict.fromkeys(arms, per_arm),
            taken=taken,
        )
        taken |= {s.number for s in lot}
        specs += lot
    return format_kit_list_csv(specs)


def test_a_kit_file_of_200_lots_imports_and_its_audit_event_lists_every_lot(world):
    text = balanced_file(200, 1, supply.depot_today() + timedelta(days=500))
    report = supply.import_kits(actor=Actor.system("test"), csv_text=text)
    assert (report.kits, len(report.lots)) == (400, 200)
    (event,) = fresh().scalars(select(AuditEvent).where(AuditEvent.action == "kits.imported"))
    assert event.entity_id is None
    assert json.loads(event.after)["lots"] == list(report.lots)


@pytest.mark.parametrize("field", ["entity_id", "action", "entity_type", "username"])
def test_an_over_long_audit_field_is_refused_by_name_before_anything_is_written(world, field):
    def call(width: int) -> dict[str, Any]:
        values: dict[str, Any] = {
            "actor": Actor.system("test"),
            "action": "test.event",
            "entity_type": "lot",
            "entity_id": None,
        }
        if field == "username":
            values["actor"] = Actor(None, "u" * width, "system", "system")
        else:
            values[field] = "x" * width
        return values

    before = counts()
    with pytest.raises(AuditFieldTooLong) as refused, transaction() as session:
        session.add(
            Lot(
                code="X",
                kit_type="GSK-SC",
                expiry=supply.depot_today(),
                created_at=app_clock.now(),
            )
        )
        audit.record(session, **call(65))
    assert (refused.value.field, refused.value.width, refused.value.length) == (field, 64, 65)
    assert counts() == before
    assert fresh().scalars(select(Lot).where(Lot.code == "X")).first() is None
    with transaction() as session:  # 64 characters fit, on both databases
        audit.record(session, **call(64))
    assert counts()[1] == before[1] + 1


def test_kits_import_of_200_lots_through_the_cli_exits_cleanly(world, tmp_path):
    path = tmp_path / "vendor.csv"
    path.write_text(balanced_file(200, 1, supply.depot_today() + timedelta(days=500)))
    result = world.app.test_cli_runner().invoke(args=["iwrs", "kits", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("imported 400 kits")
    assert len(fresh().scalars(select(Lot).where(Lot.code.like("VENDOR-LOT-%"))).all()) == 200
