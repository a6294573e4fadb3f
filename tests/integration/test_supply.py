"""Blinded kits and site supply through the services, on SQLite and PostgreSQL: kit lists,
initial shipments at activation, the shipment lifecycle, short-dated kits, threshold resupply,
illegal transitions, lot expiry, accountability and the insert-only kit ledger.

Treatments are read back only by unsealing inside the test (supply.treatment_of); nothing here
relies on a treatment being visible anywhere else."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import threading
from collections import Counter
from datetime import date, timedelta
from types import SimpleNamespace

import pytest
from flask import current_app
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from blinding.kits import format_kit_list_csv, generate_kit_list
from iwrs.audit import Actor
from iwrs.db import engine, read_session
from iwrs.errors import Conflict, InvalidInput, NotFound
from iwrs.models.audit import AuditEvent
from iwrs.models.sites import Depot, Site, SiteStatus
from iwrs.models.supply import Destruction, Kit, KitEvent, Lot, Shipment, SupplyAlert
from iwrs.services import accountability, shipments, sites, supply
from iwrs.services.resupply import run_resupply
from iwrs.worker import run_once
from supply.states import KitState
from tests.conftest import PASSWORD
from tests.integration.randomization_worker import ledger_check, usable_by_arm

SYSTEM = Actor.system("test")
KIT_TYPE = "GSK-SC"
ARMS = ("A", "P")
ARM_NAMES = ("Genakumab", "Placebo")


# --- helpers ----------------------------------------------------------------------------------


def fresh():  # type: ignore[no-untyped-def]
    """The read session with a fresh snapshot (services commit in their own sessions)."""
    session = read_session()
    session.rollback()
    return session


def today() -> date:
    return supply.depot_today()


def audit_count(action: str | None = None) -> int:
    query = select(func.count()).select_from(AuditEvent)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    return int(fresh().scalar(query) or 0)


def audit_events(action: str) -> list[AuditEvent]:
    return list(
        fresh().scalars(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
        )
    )


def kit_event_count() -> int:
    return int(fresh().scalar(select(func.count()).select_from(KitEvent)) or 0)


def snapshot() -> tuple[int, int, list[tuple[str, str, str, int, int | None]]]:
    """Everything a refused use case must leave as it was: ledger, trail, every kit row."""
    kits = [
        (k.number, str(k.state), k.place_kind, k.place_id, k.shipment_id)
        for k in fresh().scalars(select(Kit).order_by(Kit.number))
    ]
    return kit_event_count(), audit_count(), kits


def site_ids() -> dict[str, int]:
    return {s.code: s.id for s in fresh().scalars(select(Site))}


def kit(number: str) -> Kit:
    found = fresh().scalars(select(Kit).where(Kit.number == number)).one()
    return found


def kits_where(**where: object) -> list[Kit]:
    query = select(Kit).order_by(Kit.number)
    for column, value in where.items():
        query = query.where(getattr(Kit, column) == value)
    return list(fresh().scalars(query))


def arms_of(kits: list[Kit]) -> Counter[str]:
    return Counter(supply.treatment_of(k) for k in kits)


def generate(
    count: int = 40,
    *,
    lot: str = "L001",
    expiry: date | None = None,
    seed: bytes = b"k" * 32,
) -> int:
    return supply.generate_kits(
        actor=SYSTEM,
        kit_type=KIT_TYPE,
        lot=lot,
        expiry_date=expiry or today() + timedelta(days=365),
        count=count,
        seed=seed,
    ).kits


def activate(admin, code: str) -> int:  # type: ignore[no-untyped-def]
    site_id = site_ids()[code]
    sites.change_site_status(
        actor=Actor.of(admin),
        site_id=site_id,
        status=SiteStatus.ACTIVE,
        signer_password=PASSWORD,
        understood=True,
    )
    return site_id


def shipments_to(site_id: int) -> list[Shipment]:
    return list(
        fresh().scalars(select(Shipment).where(Shipment.site_id == site_id).order_by(Shipment.id))
    )


def manifest(shipment_id: int) -> list[str]:
    return [k.number for k in kits_where(shipment_id=shipment_id)]


def ship(manager, shipment_id: int) -> Shipment:  # type: ignore[no-untyped-def]
    return shipments.ship_shipment(
        actor=Actor.of(manager),
        shipment_id=shipment_id,
        courier="Cold Chain",
        tracking_number="CC1",
    )


def receive(pharmacist, shipment_id: int, excursion: bool = False, **conditions: str):  # type: ignore[no-untyped-def]
    lines = {n: conditions.get(f"k{n}", "good") for n in manifest(shipment_id)}
    return shipments.receive_shipment(
        actor=Actor.of(pharmacist), shipment_id=shipment_id, lines=lines, excursion=excursion
    )


def dispensable(site_id: int) -> dict[str, list[str]]:
    by_arm = usable_by_arm(fresh(), site_id, today=today())
    return {arm: [k.number for k, _ in kits] for arm, kits in by_arm.items() if kits}


@pytest.fixture
def people(ctx, make_user):  # type: ignore[no-untyped-def]
    return SimpleNamespace(
        admin=make_user("admin"),
        manager=make_user("supply_manager"),
        pharmacist=make_user("pharmacist", sites=["CN01"]),
        other=make_user("pharmacist", sites=["CN02"]),
    )


@pytest.fixture
def stocked_site(people):  # type: ignore[no-untyped-def]
    """40 kits generated; CN01 activated, its initial shipment (8 kits) shipped and received."""
    generate(40)
    site_id = activate(people.admin, "CN01")
    (initial,) = shipments_to(site_id)
    ship(people.manager, initial.id)
    receive(people.pharmacist, initial.id)
    return SimpleNamespace(site_id=site_id, shipment_id=initial.id)


# --- 1. kit lists -----------------------------------------------------------------------------


def test_generated_kits_are_at_the_depot_split_by_ratio_sealed_and_audited_once(ctx):
    first_new = audit_count() + 1
    assert generate(40) == 40
    depot = fresh().scalars(select(Depot)).one()
    kits = kits_where()
    assert len(kits) == 40
    assert {(k.state, k.place_kind, k.place_id) for k in kits} == {
        (KitState.AT_DEPOT, "depot", depot.id)
    }
    assert arms_of(kits) == {"A": 20, "P": 20}
    sealed = [k.sealed_treatment for k in kits]
    assert len(set(sealed)) == 40, "every sealed value is distinct"
    assert len({len(s) for s in sealed}) == 1, "the length of a sealed value says nothing"
    for value in sealed:
        assert not set(value.split(".")) & set(ARMS)
        assert not any(name.lower() in value.lower() for name in ARM_NAMES)
    (lot,) = fresh().scalars(select(Lot)).all()
    assert (lot.code, lot.kit_type, lot.kit_numbers) == ("L001", KIT_TYPE, "kit-numbers-v1")
    events = fresh().scalars(select(AuditEvent).where(AuditEvent.seq >= first_new)).all()
    assert [e.action for e in events] == ["kits.generated"]
    after = json.loads(events[0].after)
    assert after == {
        "kits": 40,
        "lots": ["L001"],
        "kit_types": [KIT_TYPE],
        "depot": depot.code,
        "kit_numbers": "kit-numbers-v1",
        "number_rank_test": {"p_value": after["number_rank_test"]["p_value"], "warning": False},
    }


def test_a_lot_generated_by_kit_numbers_v2_has_9_digit_numbers_and_records_its_scheme(ctx):
    made = supply.generate_kits(
        actor=SYSTEM,
        kit_type=KIT_TYPE,
        lot="L002",
        expiry_date=today() + timedelta(days=365),
        count=20,
        seed=b"v" * 32,
        kit_numbers="kit-numbers-v2",
    )
    assert made.kits == 20
    (lot,) = fresh().scalars(select(Lot).where(Lot.code == "L002")).all()
    assert lot.kit_numbers == "kit-numbers-v2"
    numbers = fresh().scalars(select(Kit.number).where(Kit.lot_id == lot.id)).all()
    assert len(numbers) == 20 and {len(n) for n in numbers} == {9}
    with pytest.raises(InvalidInput) as refused:
        supply.generate_kits(
            actor=SYSTEM,
            kit_type=KIT_TYPE,
            lot="L003",
            expiry_date=today() + timedelta(days=365),
            count=20,
            seed=b"v" * 32,
            kit_numbers="kit-numbers-v3",
        )
    assert (refused.value.field, refused.value.rule) == ("kit_numbers", "choice")


def test_generate_refuses_bad_requests_naming_the_field(ctx):
    with pytest.raises(InvalidInput) as refused:
        generate(41)
    assert refused.value.field == "count"
    with pytest.raises(InvalidInput) as refused:
        generate(40, expiry=today() - timedelta(days=1))
    assert refused.value.field == "expiry"
    with pytest.raises(InvalidInput) as refused:
        supply.generate_kits(
            actor=SYSTEM,
            kit_type="NOPE",
            lot="L9",
            expiry_date=today() + timedelta(days=90),
            count=4,
            seed=b"x" * 32,
        )
    assert refused.value.field == "kit_type"
    assert kits_where() == [] and audit_count("kits.generated") == 0


def vendor_specs(per_arm: int = 4, lot: str = "VL01", seed: bytes = b"v" * 32):  # type: ignore[no-untyped-def]
    return generate_kit_list(
        seed=seed,
        kit_type=KIT_TYPE,
        lot=lot,
        expiry=today() + timedelta(days=400),
        per_treatment={arm: per_arm for arm in ARMS},
    )


def bad_csv() -> tuple[str, set[int]]:
    """A vendor kit list with five bad rows (2..6) among good ones: the rows that are bad."""
    lines = format_kit_list_csv(vendor_specs()).splitlines()
    header, rows = lines[0], [line.split(",") for line in lines[1:]]
    rows[1][0] = rows[0][0]  # row 2: duplicate kit number
    number = rows[2][0]
    rows[2][0] = number[:6] + str((int(number[6]) + 1) % 10)  # row 3: bad check digit
    rows[3][1] = "GSK-IV"  # row 4: unknown kit type
    rows[4][2] = "X"  # row 5: unknown treatment
    rows[5][4] = (today() - timedelta(days=1)).isoformat()  # row 6: expiry in the past
    return "\n".join([header, *(",".join(r) for r in rows)]) + "\n", {2, 3, 4, 5, 6}


def test_kit_list_with_bad_rows_is_rejected_whole_naming_every_bad_row(ctx):
    csv_text, bad_rows = bad_csv()
    before = audit_count()
    with pytest.raises(InvalidInput) as refused:
        supply.import_kits(actor=SYSTEM, csv_text=csv_text)
    named = {int(m) for m in re.findall(r"\brow (\d+), ", refused.value.message)}
    assert named == bad_rows
    listed = {int(re.match(r"row (\d+)", e["message"]).group(1)) for e in refused.value.errors}  # type: ignore[union-attr]
    assert listed == bad_rows
    rules = {e["rule"] for e in refused.value.errors or []}
    assert {"duplicate_number", "check_digit", "unknown_type", "unknown_treatment", "expired"} <= (
        rules
    )
    assert kits_where() == []
    assert fresh().scalar(select(func.count()).select_from(Lot)) == 0
    assert audit_count() == before


def test_good_kit_list_imports_every_kit_sealed_at_the_depot(ctx):
    specs = vendor_specs()
    assert supply.import_kits(actor=SYSTEM, csv_text=format_kit_list_csv(specs)).kits == 8
    kits = {k.number: k for k in kits_where()}
    assert set(kits) == {s.number for s in specs}
    assert {n: supply.treatment_of(k) for n, k in kits.items()} == {
        s.number: s.treatment for s in specs
    }
    assert {k.state for k in kits.values()} == {KitState.AT_DEPOT}
    assert audit_count("kits.imported") == 1
    # the same list again: every number is already in use, nothing added
    with pytest.raises(InvalidInput, match="already in use"):
        supply.import_kits(actor=SYSTEM, csv_text=format_kit_list_csv(specs))
    assert len(kits_where()) == 8 and audit_count("kits.imported") == 1


def test_cli_kit_import_refuses_a_bad_list_naming_every_row_without_traceback(app, tmp_path):
    with app.app_context():
        csv_text, bad_rows = bad_csv()
        good_text = format_kit_list_csv(vendor_specs())
    path = tmp_path / "kits.csv"
    path.write_text(csv_text, encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["iwrs", "kits", "import", str(path)])
    assert result.exit_code == 1, result.output
    for row in bad_rows:
        assert f"row {row}, " in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), "a clean exit, not an unhandled error"
    with app.app_context():
        assert kits_where() == []
    good = tmp_path / "good.csv"
    good.write_text(good_text, encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["iwrs", "kits", "import", str(good)])
    assert result.exit_code == 0, result.output
    assert "imported 8 kits" in result.output


def test_a_long_list_of_bad_rows_still_names_every_row(app, tmp_path):
    with app.app_context():
        lines = format_kit_list_csv(vendor_specs(per_arm=15)).splitlines()
    rows = [line.split(",") for line in lines[1:]]
    for row in rows:
        row[2] = "X"  # 30 rows, each with an unknown treatment
    path = tmp_path / "kits.csv"
    path.write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n", encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["iwrs", "kits", "import", str(path)])
    assert result.exit_code == 1
    named = {int(n) for n in re.findall(r"\brow (\d+), ", result.output)}
    more = re.search(r"and 10 more in rows ([\d, ]+)", result.output)
    assert more is not None, result.output
    named |= {int(n) for n in more.group(1).split(", ")}
    assert named == set(range(1, 31))


# --- 2. initial shipment at activation --------------------------------------------------------


def test_activation_requests_the_initial_shipment_four_kits_per_treatment(people):
    generate(40)
    site_id = activate(people.admin, "CN01")
    (initial,) = shipments_to(site_id)
    assert (initial.kind, initial.state) == ("initial", "requested")
    kits = kits_where(shipment_id=initial.id)
    assert len(kits) == 8
    assert arms_of(kits) == {"A": 4, "P": 4}
    assert {(k.state, k.place_kind, k.place_id) for k in kits} == {
        (KitState.RESERVED, "shipment", initial.id)
    }
    (requested,) = audit_events("shipment.requested")
    assert json.loads(requested.after)["kits"] == sorted(k.number for k in kits)
    assert len(kits_where(state=KitState.AT_DEPOT)) == 32
    assert ledger_check()[1] == []


def raised_by(alert) -> tuple[object, str, str, bool]:  # type: ignore[no-untyped-def]
    """Who the alert's audit event names: (user_id, role, auth, has a trigger). An alert is an
    automatic action: the system's, citing its triggering event (issue 10)."""
    (event,) = fresh().scalars(
        select(AuditEvent).where(
            AuditEvent.action == "supply.alert_raised", AuditEvent.entity_id == str(alert.id)
        )
    )
    return event.user_id, event.role, event.auth, "trigger" in json.loads(event.after)


def test_activation_with_an_empty_depot_succeeds_and_raises_a_blinded_shortfall_alert(people):
    site_id = activate(people.admin, "CN01")
    assert fresh().get(Site, site_id).status == SiteStatus.ACTIVE
    assert shipments_to(site_id) == []
    (alert,) = fresh().scalars(select(SupplyAlert)).all()
    assert (alert.kind, alert.site_id, alert.resolved_at) == ("depot_shortfall", site_id, None)
    assert "CN01" in alert.message and "8 kit(s) short" in alert.message
    assert raised_by(alert) == (None, "system", "system", True)
    for word in (*ARMS, *ARM_NAMES, "active", "placebo", "arm", "treatment"):
        assert not re.search(rf"\b{word}\b", alert.message, re.IGNORECASE), alert.message
    assert audit_count("supply.alert_raised") == 1


def test_a_depot_short_of_one_treatment_never_ships_that_treatment_alone(people):
    """4 + 4 wanted, the depot holds 6 + 1: the shipment carries what there is of both (5 kits)
    and the alert gives the total short only; then, with none of one treatment left, nothing
    is shipped at all (a shipment never carries one treatment only)."""
    a_kits = [s for s in vendor_specs(per_arm=6) if s.treatment == "A"]
    p_kits = [s for s in vendor_specs(per_arm=6) if s.treatment == "P"][:1]
    loose = dataclasses.replace(supply.protocol(), lot_balance_tolerance=5)  # a 6 + 1 lot
    current_app.extensions["iwrs.protocol"] = loose
    supply.import_kits(actor=SYSTEM, csv_text=format_kit_list_csv([*a_kits, *p_kits]))
    cn01 = activate(people.admin, "CN01")
    (initial,) = shipments_to(cn01)
    assert arms_of(kits_where(shipment_id=initial.id)) == {"A": 4, "P": 1}
    (alert,) = fresh().scalars(select(SupplyAlert)).all()
    assert "3 kit(s) short" in alert.message
    cn02 = activate(people.admin, "CN02")
    assert shipments_to(cn02) == []
    second = fresh().scalars(select(SupplyAlert).where(SupplyAlert.site_id == cn02)).one()
    assert "8 kit(s) short" in second.message
    assert len(kits_where(state=KitState.AT_DEPOT)) == 2


# --- 3. shipment lifecycle --------------------------------------------------------------------


def test_shipping_needs_a_courier_and_a_tracking_number(people):
    generate(40)
    site_id = activate(people.admin, "CN01")
    (initial,) = shipments_to(site_id)
    before = snapshot()
    for courier, tracking, field in (("", "T1", "courier"), ("DHL", " ", "tracking_number")):
        with pytest.raises(InvalidInput) as refused:
            shipments.ship_shipment(
                actor=Actor.of(people.manager),
                shipment_id=initial.id,
                courier=courier,
                tracking_number=tracking,
            )
        assert (refused.value.field, refused.value.rule) == (field, "required")
    assert snapshot() == before
    assert fresh().get(Shipment, initial.id).state == "requested"
    with pytest.raises(NotFound):  # a pharmacist cannot ship
        shipments.ship_shipment(
            actor=Actor.of(people.pharmacist),
            shipment_id=initial.id,
            courier="X",
            tracking_number="Y",
        )
    shipped = ship(people.manager, initial.id)
    assert (shipped.state, shipped.courier, shipped.tracking_number) == (
        "shipped",
        "Cold Chain",
        "CC1",
    )
    assert {k.state for k in kits_where(shipment_id=initial.id)} == {KitState.IN_TRANSIT}
    with pytest.raises(Conflict, match="shipped; it cannot be shipped"):
        ship(people.manager, initial.id)


def test_receipt_must_confirm_every_kit_exactly_once(people):
    generate(40)
    site_id = activate(people.admin, "CN01")
    (initial,) = shipments_to(site_id)
    ship(people.manager, initial.id)
    numbers = manifest(initial.id)
    before = snapshot()
    with pytest.raises(Conflict) as refused:
        shipments.receive_shipment(
            actor=Actor.of(people.pharmacist),
            shipment_id=initial.id,
            lines={n: "good" for n in numbers[1:]},
            excursion=False,
        )
    assert numbers[0] in refused.value.message and refused.value.field == "lines"
    with pytest.raises(Conflict) as twice:  # the service's rule, for the API and any caller
        shipments.receive_shipment(
            actor=Actor.of(people.pharmacist),
            shipment_id=initial.id,
            lines=[*((n, "good") for n in numbers), (numbers[0], "damaged")],
            excursion=False,
        )
    assert (twice.value.field, twice.value.rule) == ("lines", "shipment")
    assert snapshot() == before
    with pytest.raises(Conflict, match="not in shipment"):
        shipments.receive_shipment(
            actor=Actor.of(people.pharmacist),
            shipment_id=initial.id,
            lines={**{n: "good" for n in numbers}, "1000009": "good"},
            excursion=False,
        )
    with pytest.raises(Conflict, match="condition"):
        shipments.receive_shipment(
            actor=Actor.of(people.pharmacist),
            shipment_id=initial.id,
            lines={**{n: "good" for n in numbers}, numbers[0]: "fine"},
            excursion=False,
        )
    with pytest.raises(NotFound):  # the pharmacist of another site
        shipments.receive_shipment(
            actor=Actor.of(people.other),
            shipment_id=initial.id,
            lines={n: "good" for n in numbers},
            excursion=False,
        )
    assert snapshot() == before
    assert fresh().get(Shipment, initial.id).state == "shipped"


def test_receipt_conditions_and_excursion_quarantine_until_the_manager_decides(people):
    generate(40)
    site_id = activate(people.admin, "CN01")
    (initial,) = shipments_to(site_id)
    ship(people.manager, initial.id)
    numbers = manifest(initial.id)
    damaged, missing, good = numbers[0], numbers[1], numbers[2:]
    lines = {n: "good" for n in numbers} | {damaged: "damaged", missing: "missing"}
    received = shipments.receive_shipment(
        actor=Actor.of(people.pharmacist), shipment_id=initial.id, lines=lines, excursion=True
    )
    assert (received.state, received.temperature_excursion) == ("received", True)
    assert kit(damaged).state == KitState.DAMAGED and kit(missing).state == KitState.MISSING
    assert {kit(n).state for n in good} == {KitState.QUARANTINED}
    assert {(kit(n).place_kind, kit(n).place_id) for n in numbers} == {("site", site_id)}
    assert dispensable(site_id) == {}, "quarantined kits are never dispensable"
    (event,) = audit_events("shipment.received")
    tally = json.loads(event.after)
    assert (tally["good"], tally["damaged"], tally["missing"]) == (6, 1, 1)
    assert tally["good"] + tally["damaged"] + tally["missing"] == len(numbers)

    release, reject = good[:3], good[3:]
    shipments.decide_quarantine(
        actor=Actor.of(people.manager), kit_numbers=release, release=True, reason="logger ok"
    )
    assert {kit(n).state for n in release} == {KitState.AVAILABLE}
    assert sorted(n for kits in dispensable(site_id).values() for n in kits) == sorted(release)
    shipments.decide_quarantine(
        actor=Actor.of(people.manager), kit_numbers=reject, release=False, reason="too warm"
    )
    assert {kit(n).state for n in reject} == {KitState.DAMAGED}
    assert sorted(n for kits in dispensable(site_id).values() for n in kits) == sorted(release)
    assert ledger_check()[1] == []
    assert accountability.reconciliation(actor=SYSTEM).balanced


def test_cancelled_shipment_returns_its_kits_to_the_depot(people):
    generate(40)
    site_id = activate(people.admin, "CN01")
    (initial,) = shipments_to(site_id)
    numbers = manifest(initial.id)
    with pytest.raises(InvalidInput) as refused:
        shipments.cancel_shipment(actor=Actor.of(people.manager), shipment_id=initial.id, reason="")
    assert refused.value.field == "reason"
    cancelled = shipments.cancel_shipment(
        actor=Actor.of(people.manager), shipment_id=initial.id, reason="site not ready"
    )
    assert cancelled.state == "cancelled"
    depot = fresh().scalars(select(Depot)).one()
    assert {(kit(n).state, kit(n).place_kind, kit(n).place_id) for n in numbers} == {
        (KitState.AT_DEPOT, "depot", depot.id)
    }
    assert len(kits_where(state=KitState.AT_DEPOT)) == 40
    with pytest.raises(Conflict, match="cancelled; it cannot be shipped"):
        ship(people.manager, initial.id)
    # a shipped shipment cannot be cancelled
    site2 = activate(people.admin, "CN02")
    (second,) = shipments_to(site2)
    ship(people.manager, second.id)
    with pytest.raises(Conflict, match="cannot be cancelled"):
        shipments.cancel_shipment(
            actor=Actor.of(people.manager), shipment_id=second.id, reason="too late"
        )
    assert ledger_check()[1] == []


# --- 4. short-dated kits are never shipped ----------------------------------------------------


def test_short_dated_lot_is_never_picked_for_an_initial_shipment(people):
    generate(40, lot="SHORT", expiry=today() + timedelta(days=44))
    cn01 = activate(people.admin, "CN01")
    assert shipments_to(cn01) == []
    (alert,) = fresh().scalars(select(SupplyAlert)).all()
    assert alert.kind == "depot_shortfall" and alert.site_id == cn01
    # a lot usable through the edge day (today + 45) ships, before a longer-dated one (FEFO)
    generate(8, lot="EDGE", expiry=today() + timedelta(days=45), seed=b"e" * 32)
    generate(8, lot="LONG", expiry=today() + timedelta(days=400), seed=b"l" * 32)
    cn02 = activate(people.admin, "CN02")
    (initial,) = shipments_to(cn02)
    lots = {lot.id: lot.code for lot in fresh().scalars(select(Lot))}
    assert {lots[k.lot_id] for k in kits_where(shipment_id=initial.id)} == {"EDGE"}
    assert len(kits_where(shipment_id=initial.id)) == 8
    assert {k.state for k in kits_where(lot_id=_lot_id("SHORT"))} == {KitState.AT_DEPOT}


def _lot_id(code: str) -> int:
    return fresh().scalars(select(Lot.id).where(Lot.code == code)).one()


def test_shipping_is_refused_once_a_kit_is_short_dated(people, clock):
    generate(40, expiry=today() + timedelta(days=200))
    site_id = activate(people.admin, "CN01")
    (initial,) = shipments_to(site_id)
    supply.change_lot_expiry(
        actor=Actor.of(people.manager),
        lot_code="L001",
        new_expiry=today() + timedelta(days=40),
        reason="stability data",
    )
    before = snapshot()
    with pytest.raises(Conflict) as refused:
        ship(people.manager, initial.id)
    assert refused.value.rule == "do_not_ship"
    assert re.search(r"kit \d{7} expires within 45 days", refused.value.message)
    assert snapshot() == before
    # restored, it ships again; time passing makes it short-dated once more
    supply.change_lot_expiry(
        actor=Actor.of(people.manager),
        lot_code="L001",
        new_expiry=today() + timedelta(days=100),
        reason="stability data corrected",
    )
    clock.advance(days=60)
    before = snapshot()
    with pytest.raises(Conflict, match="expires within 45 days"):
        ship(people.manager, initial.id)
    assert snapshot() == before
    shipments.cancel_shipment(
        actor=Actor.of(people.manager), shipment_id=initial.id, reason="short-dated"
    )
    assert len(kits_where(state=KitState.AT_DEPOT)) == 40


# --- 5. threshold resupply --------------------------------------------------------------------


def test_resupply_fires_at_the_total_trigger_only_at_a_run_and_fills_every_treatment(
    people, stocked_site
):
    """Total trigger 6 (of 4 + 4): a loss never requests anything by itself; the scheduled run
    tops the site up to 4 of each treatment, as the system, referencing the run and total."""
    site_id = stocked_site.site_id
    at_site = {arm: sorted(numbers) for arm, numbers in dispensable(site_id).items()}
    assert {arm: len(n) for arm, n in at_site.items()} == {"A": 4, "P": 4}
    low = "A"

    def lose(number: str) -> None:
        accountability.report_kit(
            actor=Actor.of(people.pharmacist), kit_number=number, lost=True, reason="not found"
        )

    lose(at_site[low][0])  # total 7: just above the trigger
    assert run_resupply() == []
    lose(at_site[low][1])  # total 6: at the trigger, but nothing happens until the run
    assert len(shipments_to(site_id)) == 1
    assert run_resupply(slot="intraday") == ["SHP-00002 to CN01"]
    initial, resupply = shipments_to(site_id)
    assert (resupply.kind, resupply.state, resupply.requested_by_id) == (
        "resupply",
        "requested",
        None,
    )
    order = arms_of(kits_where(shipment_id=resupply.id))
    assert order == {low: 2}  # every treatment to its maximum: 2 + 2 = 4, 4 + 0 = 4
    event = (
        fresh()
        .scalars(
            select(AuditEvent)
            .where(AuditEvent.entity_id == str(resupply.id))
            .where(AuditEvent.action == "shipment.requested")
        )
        .one()
    )
    assert (event.username, event.role) == ("resupply", "system")
    trigger = json.loads(event.after)["trigger"]
    assert trigger["run"].startswith("intraday run at ")
    assert trigger["levels"] == [
        {"kit_type": KIT_TYPE, "total_usable": 6, "total_trigger": 6, "rule": "total_trigger"}
    ]

    lose(at_site[low][2])  # total 5, but a resupply is already open
    assert run_resupply() == []
    assert audit_count("shipment.requested") == 2

    # received, the site is full again; the next run finds nothing to do
    ship(people.manager, resupply.id)
    receive(people.pharmacist, resupply.id)
    assert {arm: len(n) for arm, n in dispensable(site_id).items()} == {"A": 3, "P": 4}
    assert run_resupply() == []
    lose(dispensable(site_id)[low][0])  # total 6
    assert len(shipments_to(site_id)) == 2
    assert len(run_resupply()) == 1
    assert ledger_check()[1] == []


def test_damage_reports_never_request_a_resupply_the_run_does_once(people, stocked_site):
    assert run_resupply() == []
    site_id = stocked_site.site_id
    for number in dispensable(site_id)["P"][:2]:
        assert kit(number).state == KitState.AVAILABLE
        accountability.report_kit(
            actor=Actor.of(people.pharmacist), kit_number=number, lost=False, reason="cracked"
        )
    assert [s.kind for s in shipments_to(site_id)] == ["initial"]
    assert len(run_resupply()) == 1
    assert [s.kind for s in shipments_to(site_id)] == ["initial", "resupply"]
    assert run_resupply() == []


def test_a_resupply_run_names_its_slot_or_is_refused(ctx):
    with pytest.raises(InvalidInput) as refused:
        run_resupply(slot="hourly")
    assert (refused.value.field, refused.value.rule) == ("slot", "choice")


# --- 6. illegal transitions -------------------------------------------------------------------


def _refusal(call, number: str, error=Conflict):  # type: ignore[no-untyped-def]
    before = snapshot()
    destructions = fresh().scalar(select(func.count()).select_from(Destruction))
    with pytest.raises(error) as refused:
        call()
    assert number in refused.value.message
    assert snapshot() == before, "a refused transition changes nothing"
    assert fresh().scalar(select(func.count()).select_from(Destruction)) == destructions
    return refused.value


def test_reporting_a_kit_lost_twice_is_refused(people, stocked_site):
    number = manifest(stocked_site.shipment_id)[0]
    accountability.report_kit(
        actor=Actor.of(people.pharmacist), kit_number=number, lost=True, reason="gone"
    )
    refusal = _refusal(
        lambda: accountability.report_kit(
            actor=Actor.of(people.pharmacist), kit_number=number, lost=True, reason="gone again"
        ),
        number,
    )
    assert "missing" in refusal.message and refusal.rule == "kit_transition"


def test_returning_a_kit_that_was_never_dispensed_is_refused(people, stocked_site):
    number = manifest(stocked_site.shipment_id)[0]
    refusal = _refusal(
        lambda: accountability.record_return(
            actor=Actor.of(people.pharmacist), kit_number=number, condition="unused"
        ),
        number,
    )
    assert "available; it cannot be returned" in refusal.message
    with pytest.raises(InvalidInput) as bad:
        accountability.record_return(
            actor=Actor.of(people.pharmacist), kit_number=number, condition="half"
        )
    assert bad.value.field == "condition"


def test_destroying_an_available_kit_is_refused(people, stocked_site):
    number = manifest(stocked_site.shipment_id)[0]
    refusal = _refusal(
        lambda: accountability.destroy_kits(
            actor=Actor.of(people.manager),
            kit_numbers=[number],
            reference="DC-1",
            signer_password=PASSWORD,
        ),
        number,
    )
    assert "available; it cannot be destroyed" in refusal.message


def test_releasing_a_kit_that_is_not_quarantined_is_refused(people, stocked_site):
    number = manifest(stocked_site.shipment_id)[0]
    refusal = _refusal(
        lambda: shipments.decide_quarantine(
            actor=Actor.of(people.manager), kit_numbers=[number], release=True, reason="ok"
        ),
        number,
    )
    assert "cannot be released from quarantine" in refusal.message


def test_kits_outside_the_pharmacists_sites_are_not_found(people, stocked_site):
    at_cn01 = manifest(stocked_site.shipment_id)[0]
    at_depot = kits_where(state=KitState.AT_DEPOT)[0].number
    for number in (at_cn01, at_depot):
        _refusal(
            lambda number=number: accountability.report_kit(
                actor=Actor.of(people.other), kit_number=number, lost=False, reason="x"
            ),
            number,
            NotFound,
        )
    with pytest.raises(NotFound) as unknown:  # another site's kit and no kit read the same
        accountability.report_kit(
            actor=Actor.of(people.pharmacist), kit_number="1000009", lost=True, reason="x"
        )
    assert (unknown.value.field, unknown.value.rule) == ("kit_number", "exists")


# --- 7. lot expiry ----------------------------------------------------------------------------


def test_shortening_a_lot_to_today_quarantines_its_usable_kits_extending_does_not(
    people, stocked_site
):
    site_id = stocked_site.site_id
    manager = Actor.of(people.manager)
    original = fresh().scalars(select(Lot)).one().expiry
    supply.change_lot_expiry(
        actor=manager, lot_code="L001", new_expiry=original + timedelta(days=90), reason="ext"
    )
    assert len(kits_where(state=KitState.QUARANTINED)) == 0
    assert len(dispensable(site_id)["A"]) == 4
    with pytest.raises(Conflict):
        supply.change_lot_expiry(
            actor=manager, lot_code="L001", new_expiry=original + timedelta(days=90), reason="x"
        )
    with pytest.raises(InvalidInput) as refused:
        supply.change_lot_expiry(actor=manager, lot_code="L001", new_expiry=today(), reason=" ")
    assert refused.value.field == "reason"
    with pytest.raises(NotFound):  # a pharmacist may not change a lot
        supply.change_lot_expiry(
            actor=Actor.of(people.pharmacist), lot_code="L001", new_expiry=today(), reason="x"
        )

    supply.change_lot_expiry(actor=manager, lot_code="L001", new_expiry=today(), reason="recall")
    held = kits_where(state=KitState.QUARANTINED)
    assert len(held) == 40  # 32 at the depot, 8 at the site
    assert dispensable(site_id) == {}
    first, second = audit_events("lot.expiry_changed")
    assert json.loads(first.before) == {"expiry": original.isoformat()}
    assert json.loads(first.after)["quarantined"] == []
    assert json.loads(second.before) == {"expiry": (original + timedelta(days=90)).isoformat()}
    assert json.loads(second.after) == {
        "expiry": today().isoformat(),
        "quarantined": sorted(k.number for k in held),
    }
    assert second.reason == "recall"
    assert ledger_check()[1] == []


def test_expiry_sweep_expires_kits_past_expiry_and_they_are_never_dispensable(
    people, stocked_site, clock
):
    site_id = stocked_site.site_id
    expiry = fresh().scalars(select(Lot)).one().expiry
    # Usable: through V2's window end (day 32, today + 31) + do_not_dispense_days 7.
    clock.advance(days=(expiry - today()).days - 38)
    assert len(dispensable(site_id)["A"]) == 4
    clock.advance(days=1)  # expires within that horizon: not usable, not expired
    assert run_once("expiry", None, SYSTEM).summary["expired"] == []
    assert dispensable(site_id) == {}
    assert {k.state for k in kits_where(place_kind="site")} == {KitState.AVAILABLE}
    clock.advance(days=37)  # the expiry day: still not expired
    assert run_once("expiry", None, SYSTEM).summary["expired"] == []
    clock.advance(days=1)
    expired = run_once("expiry", None, SYSTEM).summary["expired"]
    assert len(expired) == 40
    assert {k.state for k in kits_where()} == {KitState.EXPIRED}
    assert dispensable(site_id) == {}
    (event,) = audit_events("kits.expired")
    assert json.loads(event.after)["kits"] == sorted(expired)
    assert run_once("expiry", None, SYSTEM).summary["expired"] == []
    number = expired[0]
    with pytest.raises(Conflict, match=f"kit {number} is expired"):
        shipments.decide_quarantine(
            actor=Actor.of(people.manager), kit_numbers=[number], release=True, reason="x"
        )
    result = usable_by_arm(fresh(), site_id, today=today())
    assert all(not kits for kits in result.values())


# --- 8. accountability ------------------------------------------------------------------------


def test_destruction_needs_a_reference_and_takes_damaged_and_expired_kits(people, stocked_site):
    numbers = manifest(stocked_site.shipment_id)
    accountability.report_kit(
        actor=Actor.of(people.pharmacist), kit_number=numbers[0], lost=False, reason="dropped"
    )
    with pytest.raises(InvalidInput) as refused:
        accountability.destroy_kits(
            actor=Actor.of(people.manager),
            kit_numbers=[numbers[0]],
            reference=" ",
            signer_password=PASSWORD,
        )
    assert refused.value.field == "reference"
    with pytest.raises(NotFound):  # a pharmacist does not record destruction
        accountability.destroy_kits(
            actor=Actor.of(people.pharmacist),
            kit_numbers=[numbers[0]],
            reference="DC-1",
            signer_password=PASSWORD,
        )
    record = accountability.destroy_kits(
        actor=Actor.of(people.manager),
        kit_numbers=[numbers[0]],
        reference="DC-2026-001",
        signer_password=PASSWORD,
    )
    destroyed = kit(numbers[0])
    assert (destroyed.state, destroyed.place_kind, destroyed.place_id) == (
        KitState.DESTROYED,
        "destroyed",
        record.id,
    )
    (event,) = audit_events("kits.destroyed")
    assert event.reason == "DC-2026-001" and json.loads(event.after)["kits"] == [numbers[0]]
    with pytest.raises(Conflict, match=f"kit {numbers[0]} is destroyed"):
        accountability.destroy_kits(
            actor=Actor.of(people.manager),
            kit_numbers=[numbers[0]],
            reference="DC-2",
            signer_password=PASSWORD,
        )


def test_reconciliation_balances_after_receipts_damage_loss_expiry_and_destruction(people, clock):
    manager = Actor.of(people.manager)
    generate(40, lot="L001", expiry=today() + timedelta(days=365))
    cn01, cn02 = activate(people.admin, "CN01"), activate(people.admin, "CN02")
    (s1,) = shipments_to(cn01)
    (s2,) = shipments_to(cn02)
    for row in (s1, s2):
        ship(people.manager, row.id)
    m1, m2 = manifest(s1.id), manifest(s2.id)
    receive(people.pharmacist, s1.id, **{f"k{m1[0]}": "damaged", f"k{m1[1]}": "missing"})
    receive(people.other, s2.id, excursion=True)
    accountability.report_kit(
        actor=Actor.of(people.pharmacist), kit_number=m1[2], lost=True, reason="lost"
    )
    accountability.report_kit(
        actor=Actor.of(people.pharmacist), kit_number=m1[3], lost=False, reason="cracked"
    )
    shipments.decide_quarantine(actor=manager, kit_numbers=m2[:4], release=True, reason="ok")
    accountability.destroy_kits(
        actor=manager, kit_numbers=[m1[0], m1[3]], reference="DC-9", signer_password=PASSWORD
    )
    # let the whole lot expire, then destroy some expired kits at CN02
    clock.advance(days=366)
    run_once("expiry", None, SYSTEM)
    accountability.destroy_kits(
        actor=manager, kit_numbers=m2[:2], reference="DC-10", signer_password=PASSWORD
    )

    rec = accountability.reconciliation(actor=SYSTEM)
    assert rec.balanced, rec.differences
    site1, site2 = rec.sites[cn01], rec.sites[cn02]
    assert site1.received == 8 and site2.received == 8
    assert {str(s): n for s, n in site1.by_state.items() if n} == {
        "missing": 2,
        "destroyed": 2,
        "expired": 4,
    }
    assert {str(s): n for s, n in site2.by_state.items() if n} == {"expired": 6, "destroyed": 2}
    assert rec.overall.received == sum(t.received for t in rec.sites.values())
    events, wrong = ledger_check()
    assert wrong == [] and events == kit_event_count()
    result = check_ledger_cli()
    assert result.exit_code == 0, result.output
    assert "every kit matches" in result.output and "reconciliation: balanced" in result.output


def check_ledger_cli():  # type: ignore[no-untyped-def]
    from flask import current_app

    return current_app.test_cli_runner().invoke(args=["iwrs", "supply", "check-ledger"])


def test_check_ledger_names_a_kit_whose_row_disagrees_with_its_ledger(people, stocked_site):
    number = manifest(stocked_site.shipment_id)[0]
    with engine().begin() as connection:
        connection.execute(
            text("UPDATE kit SET state = 'damaged' WHERE number = :n"), {"n": number}
        )
    fresh()
    assert ledger_check()[1] == [number]


@pytest.mark.parametrize(
    "statement", ["UPDATE kit_event SET detail = 'rewritten'", "DELETE FROM kit_event"]
)
def test_the_kit_ledger_refuses_update_and_delete(people, stocked_site, statement):
    rows = kit_event_count()
    assert rows > 0
    with pytest.raises(DBAPIError, match="insert-only"), engine().begin() as connection:
        connection.execute(text(statement))
    assert kit_event_count() == rows
    assert ledger_check() == (rows, [])


def test_concurrent_resupply_runs_request_one_resupply(app, people, stocked_site, monkeypatch):
    """Two resupply runs at the same moment (an intra-day run overlapping the daily job, or two
    hosts running the cron): exactly one top-up is requested, whichever commits first; the other
    sees it open. The first to decide waits (up to 2 s) at the point of requesting, so without
    the per-site lock both would request."""
    site_id = stocked_site.site_id
    for number in dispensable(site_id)["A"][:2]:
        accountability.report_kit(
            actor=Actor.of(people.pharmacist), kit_number=number, lost=True, reason="gone"
        )
    barrier = threading.Barrier(2)
    original = shipments._request

    def waiting_request(*args, **kwargs):  # type: ignore[no-untyped-def]
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=2)
        return original(*args, **kwargs)

    monkeypatch.setattr(shipments, "_request", waiting_request)
    errors: list[BaseException] = []
    made: list[list[str]] = []

    def run(slot: str) -> None:
        try:
            with app.app_context():
                made.append(run_resupply(slot=slot))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(s,)) for s in ("daily", "intraday")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(len(m) for m in made) == [0, 1]
    assert [s.kind for s in shipments_to(site_id)] == ["initial", "resupply"]
    assert ledger_check()[1] == []


def test_manual_shipment_splits_by_ratio_and_a_refusal_promises_nothing_it_rolled_back(people):
    manager = Actor.of(people.manager)
    cn01 = activate(people.admin, "CN01")  # empty depot: no initial shipment, one alert
    assert shipments_to(cn01) == [] and audit_count("supply.alert_raised") == 1
    before = snapshot()
    with pytest.raises(Conflict) as refused:
        shipments.request_manual_shipment(actor=manager, site_id=cn01, quantity=4)
    assert "alert" not in refused.value.message, "no alert is kept from a refused request"
    assert "release or import kits" in refused.value.message
    assert snapshot() == before
    for quantity in (0, 501):
        with pytest.raises(InvalidInput) as bad:
            shipments.request_manual_shipment(actor=manager, site_id=cn01, quantity=quantity)
        assert bad.value.field == "quantity"
    generate(40)
    with pytest.raises(Conflict) as refused:  # CN02 is not active
        shipments.request_manual_shipment(actor=manager, site_id=site_ids()["CN02"], quantity=4)
    assert refused.value.field == "site_id"
    with pytest.raises(NotFound):  # a pharmacist cannot request shipments
        shipments.request_manual_shipment(
            actor=Actor.of(people.pharmacist), site_id=cn01, quantity=4
        )
    row = shipments.request_manual_shipment(actor=manager, site_id=cn01, quantity=6)
    assert row.kind == "manual"
    assert arms_of(kits_where(shipment_id=row.id)) == {"A": 3, "P": 3}


@pytest.mark.parametrize("lot", ["", "   ", "L" * 33])
def test_a_bad_lot_code_is_refused_naming_the_field_on_both_backends(ctx, lot):
    with pytest.raises(InvalidInput) as refused:
        generate(4, lot=lot)
    assert refused.value.field == "lot"
    specs = vendor_specs(per_arm=2, lot=lot.strip() or "VL01")
    if lot.strip():
        with pytest.raises(InvalidInput) as refused:
            supply.import_kits(actor=SYSTEM, csv_text=format_kit_list_csv(specs))
        assert "lot" in refused.value.message
    assert kits_where() == [] and audit_count("kits.generated") == 0


def test_more_kits_than_kit_numbers_is_refused_naming_the_count(ctx):
    with pytest.raises(InvalidInput) as refused:
        generate(1_000_000)
    assert refused.value.field == "count"
    assert kits_where() == []
