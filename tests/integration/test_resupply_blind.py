"""Resupply that reveals nothing, through the real services on SQLite and PostgreSQL: never
inside a randomization, a top-up whose size depends only on the site's total, identical events
for sites whose per-arm stock differs, the per-arm emergency fallback audited as such, and every
automatic request and alert recorded as the system's with its trigger referenced."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from iwrs.db import read_session
from iwrs.models import AuditEvent, Kit, Shipment, SupplyAlert
from iwrs.services import accountability, shipments
from iwrs.services.resupply import run_resupply
from iwrs.services.supply import treatment_of
from tests.integration.randomization_worker import (
    World,
    eligible_subject,
    make_world,
    randomize,
    receive_requested,
    usable_by_arm,
)


@pytest.fixture
def world(tmp_path, database_url, clock) -> Iterator[World]:
    """CN01 and CN02 active, 4 kits of each treatment received at each, a generated list."""
    made = make_world(tmp_path, database_url, clock)
    with made.app.app_context():
        yield made
    made.app.extensions["iwrs.engine"].dispose()


def fresh() -> Any:
    read_session().rollback()
    return read_session()


def shipments_to(world: World, code: str) -> list[Shipment]:
    return list(
        fresh().scalars(
            select(Shipment)
            .where(Shipment.site_id == world.sites[code], Shipment.kind != "initial")
            .order_by(Shipment.id)
        )
    )


def stock(world: World, code: str) -> dict[str, list[str]]:
    by_arm = usable_by_arm(fresh(), world.sites[code], today=world_today())
    return {arm: sorted(k.number for k, _ in kits) for arm, kits in by_arm.items()}


def world_today():  # type: ignore[no-untyped-def]
    from iwrs.services.supply import depot_today

    return depot_today()


def lose(world: World, code: str, numbers: list[str]) -> None:
    for number in numbers:
        accountability.report_kit(
            actor=world.actor(f"ph-{code}"), kit_number=number, lost=True, reason="lost"
        )


def events(action: str) -> list[AuditEvent]:
    return list(fresh().scalars(select(AuditEvent).where(AuditEvent.action == action)))


def neutral(event: AuditEvent) -> dict[str, Any]:
    """An event without what names its site and its kits (kit numbers differ by construction)."""
    after = json.loads(event.after or "{}")
    for key in ("kits", "number", "site"):
        after.pop(key, None)
    return {"action": event.action, "by": (event.user_id, event.username, event.role), **after}


def test_randomizing_never_creates_a_shipment_the_next_run_does(world):
    """Randomize CN01 down to its total trigger and below: no shipment appears in any of those
    transactions; the scheduled run then requests one top-up (2 x 4 - total)."""
    requested = len(events("shipment.requested"))  # the initial shipments
    for _ in range(3):
        randomize(world, eligible_subject(world, "CN01"))
        assert shipments_to(world, "CN01") == []
        assert len(events("shipment.requested")) == requested
    total = sum(len(n) for n in stock(world, "CN01").values())
    assert total == 5  # 8 - 3, below the total trigger 6
    assert run_resupply() == ["SHP-00003 to CN01"]
    (top_up,) = shipments_to(world, "CN01")
    kits = fresh().scalars(select(Kit).where(Kit.shipment_id == top_up.id)).all()
    assert len(kits) == 2 * 4 - total
    receive_requested(world)
    assert {arm: len(n) for arm, n in stock(world, "CN01").items()} == {"A": 4, "P": 4}


def test_sites_whose_arms_differ_but_totals_agree_get_identical_top_ups_and_events(world):
    """CN01 loses two kits of one treatment (2 + 4), CN02 one of each (3 + 3): the same total 6,
    the same shipment size, and the same audit events apart from site and kit numbers."""
    lose(world, "CN01", stock(world, "CN01")["A"][:2])
    lose(world, "CN02", [stock(world, "CN02")["A"][0], stock(world, "CN02")["P"][0]])
    assert sorted(len(n) for n in stock(world, "CN01").values()) == [2, 4]
    assert sorted(len(n) for n in stock(world, "CN02").values()) == [3, 3]
    assert run_resupply() == ["SHP-00003 to CN01", "SHP-00004 to CN02"]
    sizes = {
        code: len(fresh().scalars(select(Kit).where(Kit.shipment_id == row.id)).all())
        for code in ("CN01", "CN02")
        for row in shipments_to(world, code)
    }
    assert sizes == {"CN01": 2, "CN02": 2}
    first, second = (neutral(e) for e in events("shipment.requested")[-2:])
    assert first == second
    assert first["by"] == (None, "resupply", "system")
    assert first["trigger"]["levels"] == [
        {"kit_type": "GSK-SC", "total_usable": 6, "total_trigger": 6, "rule": "total_trigger"}
    ]
    split = {
        code: sorted(
            treatment_of(k)
            for k in fresh().scalars(
                select(Kit).where(Kit.shipment_id == shipments_to(world, code)[0].id)
            )
        )
        for code in ("CN01", "CN02")
    }
    assert split == {"CN01": ["A", "A"], "CN02": ["A", "P"]}  # inside only: filled to 4 each


def test_an_arm_truly_short_gets_the_emergency_fallback_audited_as_such(world):
    """A manual shipment overfills CN01 (8 + 8); losing every kit of one treatment leaves the
    total (8) above the trigger, so only the per-arm fallback can see it: an emergency top-up,
    its own audit action and alert kind, the system's, naming no arm."""
    shipments.request_manual_shipment(
        actor=world.actor("manager"), site_id=world.sites["CN01"], quantity=8
    )
    receive_requested(world)
    assert run_resupply() == []
    lose(world, "CN01", stock(world, "CN01")["P"])
    assert {arm: len(n) for arm, n in stock(world, "CN01").items()} == {"A": 8, "P": 0}
    assert run_resupply(slot="intraday") == ["SHP-00004 to CN01"]
    emergency = shipments_to(world, "CN01")[-1]
    assert emergency.kind == "emergency"
    kits = fresh().scalars(select(Kit).where(Kit.shipment_id == emergency.id)).all()
    assert sorted(treatment_of(k) for k in kits) == ["P"] * 4
    (event,) = events("shipment.emergency_requested")
    assert (event.user_id, event.username, event.role) == (None, "resupply", "system")
    trigger = json.loads(event.after)["trigger"]
    assert trigger["levels"] == [
        {"kit_type": "GSK-SC", "total_usable": 8, "rule": "emergency_minimum"}
    ]
    assert "A" not in json.dumps(trigger["levels"]) and 'P"' not in json.dumps(trigger)
    (alert,) = fresh().scalars(select(SupplyAlert).where(SupplyAlert.kind == "emergency_resupply"))
    assert alert.site_id == world.sites["CN01"]
    (raised,) = [
        e
        for e in events("supply.alert_raised")
        if json.loads(e.after)["kind"] == "emergency_resupply"
    ]
    assert (raised.username, raised.role) == ("resupply", "system")
    assert json.loads(raised.after)["trigger"]["run"] == trigger["run"]
    assert run_resupply() == []  # open: no second emergency


def test_the_stock_refusal_alert_is_the_systems_and_resupply_waits_for_the_run(world):
    lose(world, "CN01", stock(world, "CN01")["A"])
    subject = eligible_subject(world, "CN01")
    with pytest.raises(Exception) as refused:
        randomize(world, subject)
    assert getattr(refused.value, "rule", None) == "site_stock"
    assert shipments_to(world, "CN01") == []
    (raised,) = [
        e
        for e in events("supply.alert_raised")
        if json.loads(e.after)["kind"] == "site_stock_randomization"
    ]
    assert (raised.user_id, raised.role) == (None, "system")
    assert json.loads(raised.after)["trigger"]["event"] == "randomization refused for stock"
    assert run_resupply() == ["SHP-00003 to CN01"]  # total 4: a plain top-up
    assert shipments_to(world, "CN01")[0].kind == "resupply"


def test_the_cli_run_names_its_slot_and_refuses_an_unknown_one(world):
    runner = world.app.test_cli_runner()
    lose(world, "CN02", stock(world, "CN02")["P"][:2])
    done = runner.invoke(args=["iwrs", "supply", "resupply", "--slot", "intraday"])
    assert done.exit_code == 0, done.output
    assert done.output.strip() == "requested SHP-00003 to CN02"
    (event,) = [e for e in events("shipment.requested") if e.entity_id == "3"]
    assert json.loads(event.after)["trigger"]["run"].startswith("intraday run at ")
    refused = runner.invoke(args=["iwrs", "supply", "resupply", "--slot", "hourly"])
    assert refused.exit_code == 2 and "--slot" in refused.output
