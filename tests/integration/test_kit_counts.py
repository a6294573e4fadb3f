"""The `kit_count` summary (issue 13) stays equal to a fresh COUNT(*) GROUP BY over the kits
through every kind of kit change - generation, shipping, receipt (good, damaged, missing, an
excursion's quarantine), release and rejection, cancellation, dispensing, returns, loss,
damage reports, expiry, destruction - on SQLite and PostgreSQL; `iwrs supply check-ledger`
reports a summary row that disagrees; the supply page reads the summary, a page of sites."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from iwrs.audit import Actor
from iwrs.db import engine, read_session
from iwrs.models.supply import Kit, KitCount, Shipment
from iwrs.services import accountability, dispensing, kit_counts, shipments, supply, supply_views
from iwrs.worker import run_once
from tests.conftest import PASSWORD
from tests.integration.randomization_worker import (
    World,
    add_kits,
    eligible_subject,
    make_world,
    randomize,
)

PROTOCOL = {"quantity = 8": "quantity = 20"}


@pytest.fixture
def world(tmp_path, database_url, clock) -> Iterator[World]:
    w = make_world(tmp_path, database_url, clock, replacements=PROTOCOL)
    with w.app.app_context():
        yield w
    w.app.extensions["iwrs.engine"].dispose()


def consistent() -> dict[tuple[str, int, int, str], int]:
    """Assert the summary equals the kits' GROUP BY; return the counts."""
    session = read_session()
    session.rollback()
    assert kit_counts.mismatches(actor=Actor.system("test")) == []
    return kit_counts.fresh_counts(session)


def at_site(world: World, code: str, state: str) -> list[str]:
    read_session().rollback()
    return list(
        read_session().scalars(
            select(Kit.number)
            .where(Kit.place_kind == "site", Kit.place_id == world.sites[code])
            .where(Kit.state == state)
            .order_by(Kit.number)
        )
    )


def requested_to(world: World, code: str) -> Shipment:
    shipment = shipments.request_manual_shipment(
        actor=world.actor("manager"), site_id=world.sites[code], quantity=4
    )
    consistent()
    return shipment


def ship(world: World, shipment_id: int) -> None:
    shipments.ship_shipment(
        actor=world.actor("manager"), shipment_id=shipment_id, courier="C", tracking_number="T1"
    )
    consistent()


def manifest(shipment_id: int) -> list[str]:
    read_session().rollback()
    return list(
        read_session().scalars(
            select(Kit.number).where(Kit.shipment_id == shipment_id).order_by(Kit.number)
        )
    )


def test_the_summary_equals_a_fresh_count_through_every_kind_of_kit_change(world, clock):
    manager, ph = world.actor("manager"), world.actor("ph-CN01")
    first = consistent()
    assert sum(first.values()) == 200
    add_kits(world, lot="L-0002", count=20, expiry=clock.current.date() + timedelta(days=40))
    consistent()
    # shipments: receipt with damage and loss, an excursion, release and rejection, cancel
    one = requested_to(world, "CN01")
    ship(world, one.id)
    kits = manifest(one.id)
    lines = {n: "good" for n in kits} | {kits[0]: "damaged", kits[1]: "missing"}
    shipments.receive_shipment(actor=ph, shipment_id=one.id, lines=lines, excursion=False)
    consistent()
    two = requested_to(world, "CN01")
    ship(world, two.id)
    held = manifest(two.id)
    shipments.receive_shipment(
        actor=ph, shipment_id=two.id, lines=dict.fromkeys(held, "good"), excursion=True
    )
    consistent()
    shipments.decide_quarantine(actor=manager, kit_numbers=held[:2], release=True, reason="ok")
    shipments.decide_quarantine(actor=manager, kit_numbers=held[2:], release=False, reason="x")
    consistent()
    three = requested_to(world, "CN02")  # its kits leave depot stock on the request
    shipments.cancel_shipment(actor=manager, shipment_id=three.id, reason="courier failed")
    consistent()
    # dispensing (randomization dispenses V1), a return, a loss, a damage report
    subject = eligible_subject(world, "CN01")
    randomize(world, subject)
    consistent()
    clock.advance(days=28)
    given = dispensing.dispense(actor=ph, subject_id=subject, visit_code="V2")
    consistent()
    accountability.record_return(
        actor=ph, kit_number=given.kit_number, condition="unused", visit_code="V3"
    )
    consistent()
    accountability.verify_return(actor=ph, kit_number=given.kit_number, units_verified=1)
    counts = consistent()
    assert any(key[3] == "pending_destruction" for key in counts)
    clock.advance(days=28)
    again = dispensing.dispense(actor=ph, subject_id=subject, visit_code="V3")
    accountability.record_return(actor=ph, kit_number=again.kit_number, condition="lost")
    consistent()
    available = at_site(world, "CN01", "available")
    accountability.report_kit(actor=ph, kit_number=available[0], lost=True, reason="lost")
    accountability.report_kit(actor=ph, kit_number=available[1], lost=False, reason="cracked")
    consistent()
    # expiry (lot L-0002 is past its date), destruction of damaged, returned and expired kits
    clock.advance(days=30)
    run_once("expiry", None, supply.Actor.system("test"))
    counts = consistent()
    assert any(key[3] == "expired" for key in counts)
    destroyed = [kits[0], available[1], given.kit_number]
    accountability.destroy_kits(
        actor=manager, kit_numbers=destroyed, reference="DC-1", signer_password=PASSWORD
    )
    counts = consistent()
    assert sum(n for key, n in counts.items() if key[3] == "destroyed") == 3
    assert sum(counts.values()) == 220  # no kit counted twice or lost
    problems = world.app.test_cli_runner().invoke(args=["iwrs", "supply", "check-ledger"])
    assert problems.exit_code == 0, problems.output


def test_check_ledger_reports_a_summary_row_that_disagrees_with_the_kits(world):
    consistent()
    run = world.app.test_cli_runner().invoke(args=["iwrs", "supply", "check-ledger"])
    assert run.exit_code == 0, run.output
    with engine().begin() as connection:
        connection.execute(
            text("UPDATE kit_count SET n = n + 3 WHERE place_kind = 'depot' AND state = 'at_depot'")
        )
    read_session().rollback()
    wrong = kit_counts.mismatches(actor=Actor.system("test"))
    assert [(key[0], key[3], kept - fresh) for key, kept, fresh in wrong] == [
        ("depot", "at_depot", 3)
    ]
    run = world.app.test_cli_runner().invoke(args=["iwrs", "supply", "check-ledger"])
    assert run.exit_code == 1
    assert "kit_count depot" in run.output
    read_session().rollback()
    kit_counts.rebuild(read_session())
    read_session().commit()
    consistent()


def test_a_rolled_back_kit_change_leaves_the_summary_as_it_was(world):
    before = consistent()
    with pytest.raises(Exception, match="rule"), supply.transaction() as session:
        kit = session.scalars(select(Kit).where(Kit.place_kind == "depot")).first()
        assert kit is not None
        kit.place_kind, kit.place_id = "site", world.sites["CN02"]
        session.flush()
        raise RuntimeError("rule: abandoned")
    assert consistent() == before


def test_the_supply_page_pages_sites_and_counts_from_the_summary(world):
    manager = world.people["manager"]
    page = supply_views.site_page(actor=Actor.of(manager), limit=1)
    assert [s.code for s in page] == ["CN01"]
    assert [
        s.code for s in supply_views.site_page(actor=Actor.of(manager), after="CN01", limit=1)
    ] == ["CN02"]
    counts = supply_views.stock_by_site(
        actor=world.actor("manager"), site_ids=[world.sites["CN01"]]
    )
    fresh = consistent()
    assert counts[world.sites["CN01"]] == {
        key[3]: n for key, n in fresh.items() if key[:2] == ("site", world.sites["CN01"])
    }
    depot = {
        lot.code: by_state
        for lot, by_state in supply_views.depot_stock(actor=world.actor("manager"))
    }
    assert sum(depot["L-0001"].values()) == sum(n for key, n in fresh.items() if key[0] == "depot")
    assert read_session().scalars(select(KitCount)).first() is not None


def test_the_supply_page_shows_a_page_of_sites_and_lots_with_a_link_to_the_next(
    world, monkeypatch, clock
):
    from tests.conftest import sign_in

    monkeypatch.setattr(supply_views, "SITE_PAGE", 1)
    monkeypatch.setattr(supply_views, "LOT_PAGE", 1)
    add_kits(world, lot="L-0002", count=20, expiry=clock.current.date() + timedelta(days=400))
    client = world.app.test_client()
    with world.app.app_context():
        assert sign_in(client, world.people["manager"].username).status_code == 302
    first = client.get("/supply/").get_data(as_text=True)
    assert f"/supply/sites/{world.sites['CN01']}" in first
    assert f"/supply/sites/{world.sites['CN02']}" not in first
    assert "after=CN01" in first and "lots_after=L-0001" in first
    assert "L-0002" not in first
    second = client.get("/supply/?after=CN01&lots_after=L-0001").get_data(as_text=True)
    assert f"/supply/sites/{world.sites['CN02']}" in second
    assert f'/supply/sites/{world.sites["CN01"]}"' not in second
    assert "L-0002" in second
