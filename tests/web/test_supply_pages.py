"""Supply through the pages and the API: the pharmacist's inventory and receipt, the supply
manager's depot, lots, alerts, chart and reconciliation; site scoping; roles without supply
access; and the blind: nothing a pharmacist or supply manager can fetch names an arm, and
swapping every kit's treatment changes nothing they can fetch (noninterference)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from blinding.kits import KitSpec, format_kit_list_csv, generate_kit_list
from iwrs.audit import Actor
from iwrs.clock import day_text
from iwrs.db import read_session
from iwrs.models.audit import AuditEvent
from iwrs.models.sites import Site, SiteStatus
from iwrs.models.supply import Kit, KitEvent, Shipment, SupplyAlert
from iwrs.services import shipments, sites, supply, users
from iwrs.services.resupply import run_resupply
from iwrs.services.supply import depot_today as today
from tests.conftest import PASSWORD, PG_URL, ManualClock, csrf_from, sign_in
from tests.integration.test_blinding_at_rest import ARM_CODES, make_blind_app

PROBLEM = "application/problem+json"
ARM_NAMES = ("Genakumab", "Placebo")


# --- helpers ----------------------------------------------------------------------------------


def _fresh():  # type: ignore[no-untyped-def]
    session = read_session()
    session.rollback()
    return session


def site_ids(app: Flask) -> dict[str, int]:
    with app.app_context():
        return {s.code: s.id for s in _fresh().scalars(select(Site))}


def shipment_of(app: Flask, code: str) -> Shipment:
    with app.app_context():
        return (
            _fresh()
            .scalars(select(Shipment).where(Shipment.site_id == site_ids(app)[code]))
            .first()
        )


def kit_numbers(app: Flask, shipment_id: int) -> list[str]:
    with app.app_context():
        return list(
            _fresh().scalars(
                select(Kit.number).where(Kit.shipment_id == shipment_id).order_by(Kit.number)
            )
        )


def kit_states(app: Flask, numbers: list[str]) -> dict[str, str]:
    with app.app_context():
        rows = _fresh().scalars(select(Kit).where(Kit.number.in_(numbers)))
        return {k.number: str(k.state) for k in rows}


def counts(app: Flask) -> tuple[int, int]:
    with app.app_context():
        session = _fresh()
        return (
            session.scalar(select(func.count()).select_from(KitEvent)),
            session.scalar(select(func.count()).select_from(AuditEvent)),
        )


def post_form(client: FlaskClient, url: str, data: dict, page: str = "/supply/"):  # type: ignore[no-untyped-def]
    token = csrf_from(client.get(page).get_data(as_text=True))
    return client.post(url, data={**data, "csrf_token": token})


def token_for(app: Flask, user) -> dict[str, str]:  # type: ignore[no-untyped-def]
    with app.app_context():
        token, _ = users.create_api_token(
            actor=Actor.of(user), user_id=user.id, name="t", password=PASSWORD
        )
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    return response.get_json(force=True)


def stock(app: Flask, admin, *, kits: int = 40, codes=("CN01", "CN02")) -> None:  # type: ignore[no-untyped-def]
    """Kits generated at the depot and sites activated (each gets an initial shipment)."""
    with app.app_context():
        supply.generate_kits(
            actor=Actor.system("test"),
            kit_type="GSK-SC",
            lot="L001",
            expiry_date=today() + timedelta(days=365),
            count=kits,
            seed=b"p" * 32,
        )
        ids = site_ids(app)
        for code in codes:
            sites.change_site_status(
                actor=Actor.of(admin),
                site_id=ids[code],
                status=SiteStatus.ACTIVE,
                signer_password=PASSWORD,
                understood=True,
            )


def ship(app: Flask, manager, shipment_id: int) -> None:  # type: ignore[no-untyped-def]
    with app.app_context():
        shipments.ship_shipment(
            actor=Actor.of(manager),
            shipment_id=shipment_id,
            courier="Cold Chain",
            tracking_number="T42",
        )


@pytest.fixture
def admin(make_user):  # type: ignore[no-untyped-def]
    return make_user("admin")


@pytest.fixture
def manager(make_user):  # type: ignore[no-untyped-def]
    return make_user("supply_manager")


# --- the pharmacist ---------------------------------------------------------------------------


def test_pharmacist_sees_own_shipments_and_receives_through_the_form(app, admin, manager, login_as):
    stock(app, admin)
    cn01, cn02 = shipment_of(app, "CN01"), shipment_of(app, "CN02")
    ship(app, manager, cn01.id)
    client, _ = login_as("pharmacist", ["CN01"])
    index = client.get("/supply/").get_data(as_text=True)
    assert cn01.number in index and cn02.number not in index
    page = client.get(f"/supply/shipments/{cn01.id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    numbers = kit_numbers(app, cn01.id)
    assert len(numbers) == 8
    for number in numbers:
        assert f'name="kit-{number}"' in html
    assert "L001" in html and day_text(today_of(app) + timedelta(days=365)) in html
    assert "Confirm receipt" in html
    assert " checked" not in html, "issue 15: no condition and no temperature answer preset"

    damaged = numbers[0]
    form = (
        {f"kit-{n}": "good" for n in numbers} | {f"kit-{damaged}": "damaged"} | receipt_answers(app)
    )
    response = post_form(client, f"/supply/shipments/{cn01.id}/receipt", form)
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/supply/shipments/{cn01.id}")
    after = client.get(f"/supply/shipments/{cn01.id}").get_data(as_text=True)
    assert f"Shipment {cn01.number} received." in after
    assert "Confirm receipt" not in after
    states = kit_states(app, numbers)
    assert states.pop(damaged) == "damaged" and set(states.values()) == {"available"}

    inventory = client.get(f"/supply/sites/{site_ids(app)['CN01']}")
    assert inventory.status_code == 200
    html = inventory.get_data(as_text=True)
    for number in numbers:
        assert number in html
    assert "L001" in html and "available" in html and "damaged" in html


def receipt_answers(app: Flask) -> dict[str, str]:
    """The receipt form's required answers: no excursion, received today at the site."""
    return {"temperature_excursion": "no", "received_on": today_of(app).isoformat()}


def today_of(app: Flask):  # type: ignore[no-untyped-def]
    with app.app_context():
        return today()


def test_incomplete_receipt_form_is_refused_naming_the_kit_and_changes_nothing(
    app, admin, manager, login_as
):
    stock(app, admin)
    cn01 = shipment_of(app, "CN01")
    ship(app, manager, cn01.id)
    client, _ = login_as("pharmacist", ["CN01"])
    numbers = kit_numbers(app, cn01.id)
    before = counts(app)
    response = post_form(
        client,
        f"/supply/shipments/{cn01.id}/receipt",
        {f"kit-{n}": "good" for n in numbers[1:]} | receipt_answers(app),
    )
    assert response.status_code == 409  # the form again, with what was chosen
    page = response.get_data(as_text=True)
    assert f"kit {numbers[0]} of shipment" in page
    assert page.count('value="good" checked') == len(numbers) - 1
    assert counts(app) == before
    assert set(kit_states(app, numbers).values()) == {"in_transit"}


def test_pharmacist_of_another_site_gets_not_found(app, admin, manager, login_as):
    stock(app, admin)
    cn01 = shipment_of(app, "CN01")
    ship(app, manager, cn01.id)
    client, other = login_as("pharmacist", ["CN02"])
    cn01_site = site_ids(app)["CN01"]
    assert client.get(f"/supply/shipments/{cn01.id}").status_code == 404
    assert client.get(f"/supply/sites/{cn01_site}").status_code == 404
    assert cn01.number not in client.get("/supply/").get_data(as_text=True)
    # its own site is fine
    assert client.get(f"/supply/sites/{site_ids(app)['CN02']}").status_code == 200

    headers = token_for(app, other)
    api = app.test_client()
    assert_problem(api.get(f"/api/v1/shipments/{cn01.id}", headers=headers), 404)
    assert_problem(api.get("/api/v1/inventory?site_code=CN01", headers=headers), 404)
    listed = api.get("/api/v1/shipments", headers=headers).get_json()
    assert cn01.id not in {s["id"] for s in listed}
    numbers = kit_numbers(app, cn01.id)
    before = counts(app)
    body = {
        "lines": [{"kit_number": n, "condition": "good"} for n in numbers],
        "temperature_excursion": False,
    }
    assert_problem(
        api.post(f"/api/v1/shipments/{cn01.id}/receipt", json=body, headers=headers), 404
    )
    # the form post is refused too, and nothing changes
    post_form(
        client,
        f"/supply/shipments/{cn01.id}/receipt",
        {f"kit-{n}": "good" for n in numbers} | receipt_answers(app),
    )
    number = numbers[0]
    post_form(
        client, f"/supply/kits/{number}/report", {"what": "lost", "reason": "x", "confirmed": "y"}
    )
    assert counts(app) == before
    assert set(kit_states(app, numbers).values()) == {"in_transit"}


# --- the supply manager -----------------------------------------------------------------------


def test_supply_manager_sees_depot_lots_alerts_chart_and_reconciliation(
    app, admin, manager, make_user, login_as
):
    stock(app, admin, kits=16)  # CN01 and CN02 take all 16
    cn01 = shipment_of(app, "CN01")
    ship(app, manager, cn01.id)
    pharmacist = make_user("pharmacist", sites=["CN01"])
    with app.app_context():
        shipments.receive_shipment(
            actor=Actor.of(pharmacist),
            shipment_id=cn01.id,
            lines={n: "good" for n in kit_numbers(app, cn01.id)},
            excursion=False,
        )
        sites.change_site_status(  # the depot is empty now: a shortfall alert
            actor=Actor.of(admin),
            site_id=site_ids(app)["CN03"],
            status=SiteStatus.ACTIVE,
            signer_password=PASSWORD,
            understood=True,
        )
        alert = _fresh().scalars(select(SupplyAlert)).one()
    client, _ = login_as("supply_manager")
    response = client.get("/supply/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Alerts" in html and alert.message in html.replace("&#39;", "'")
    assert "Depot and lots" in html and "L001" in html
    assert "/supply/chart" in html and "CN01" in html
    chart = client.get("/supply/chart").get_data(as_text=True)
    assert '<svg class="chart"' in chart and "CN01" in chart
    assert "Reconciliation" in html and "/supply/reconciliation" in html
    report = client.get("/supply/reconciliation").get_data(as_text=True)
    assert "Balanced" in report and "CN01" in report
    assert "Quarantine" in html and "Destruction" in html
    for code in ("CN01", "CN02", "CN03", "CN04"):
        assert code in html
    # and every shipment page, with the ship and cancel forms for a requested one
    cn02 = shipment_of(app, "CN02")
    page = client.get(f"/supply/shipments/{cn02.id}").get_data(as_text=True)
    assert "Mark shipped" in page and "Cancel shipment" in page


def test_supply_manager_ships_and_cancels_through_the_forms(app, admin, login_as):
    stock(app, admin)
    cn01, cn02 = shipment_of(app, "CN01"), shipment_of(app, "CN02")
    client, _ = login_as("supply_manager")
    page = f"/supply/shipments/{cn01.id}"
    before = counts(app)
    post_form(client, f"{page}/ship", {"courier": "", "tracking_number": "T1"}, page)
    assert 'data-field="courier"' in client.get(page).get_data(as_text=True)
    assert counts(app) == before
    post_form(client, f"{page}/ship", {"courier": "DHL", "tracking_number": "T1"}, page)
    assert set(kit_states(app, kit_numbers(app, cn01.id)).values()) == {"in_transit"}
    numbers = kit_numbers(app, cn02.id)
    page2 = f"/supply/shipments/{cn02.id}"
    post_form(client, f"{page2}/cancel", {"reason": "site not ready"}, page2)
    assert set(kit_states(app, numbers).values()) == {"at_depot"}


def test_a_manual_request_larger_than_the_depot_is_refused_on_the_page_never_shrunk(
    app, admin, login_as
):
    stock(app, admin, codes=("CN01",))  # 40 kits, 8 shipped: 32 at the depot
    client, _ = login_as("supply_manager")
    cn01 = site_ids(app)["CN01"]
    before = counts(app)
    with app.app_context():
        shipped_before = _fresh().scalar(select(func.count()).select_from(Shipment))
    post_form(client, f"/supply/sites/{cn01}/shipment", {"quantity": "300"})
    page = client.get("/supply/").get_data(as_text=True)
    assert "300 kit(s) of GSK-SC requested, the depot holds 32 shippable" in page
    assert counts(app) == before
    with app.app_context():
        assert _fresh().scalar(select(func.count()).select_from(Shipment)) == shipped_before
    done = post_form(client, f"/supply/sites/{cn01}/shipment", {"quantity": "32"})
    assert "32 kit(s), the whole request" in client.get(done.location).get_data(as_text=True)


def test_a_quarantine_form_without_a_decision_rejects_nothing(app, admin, manager, login_as):
    stock(app, admin)
    cn01 = shipment_of(app, "CN01")
    ship(app, manager, cn01.id)
    pharmacist_client, pharmacist = login_as("pharmacist", ["CN01"])
    numbers = kit_numbers(app, cn01.id)
    with app.app_context():
        shipments.receive_shipment(
            actor=Actor.of(pharmacist),
            shipment_id=cn01.id,
            lines={n: "good" for n in numbers},
            excursion=True,
        )
    client, _ = login_as("supply_manager")
    held = numbers[:2]
    page = client.get("/supply/").get_data(as_text=True)
    assert "Release to use" in page
    before = counts(app)
    for url, form in (
        ("/supply/quarantine", {"reason": "ok", "decision": "release"}),
        ("/supply/destruction", {"reference": "CERT-1", "signature_password": PASSWORD}),
    ):  # no kit named: the refusal names the input the page posts, so it can mark it
        shown = client.get(post_form(client, url, form).location).get_data(as_text=True)
        refused = re.findall(r'role="alert" data-field="([^"]+)" data-rule="([^"]+)"', shown)
        assert refused == [("kit_numbers", "required")], (url, refused)
        assert page.count('name="kit_numbers"') == len(numbers), url  # the quarantine's
    post_form(client, "/supply/quarantine", {"kit_numbers": held, "reason": "checked"})
    assert set(kit_states(app, held).values()) == {"quarantined"}
    assert counts(app) == before
    post_form(
        client, "/supply/quarantine", {"kit_numbers": held, "reason": "ok", "decision": "release"}
    )
    assert set(kit_states(app, held).values()) == {"available"}
    assert "2 kit(s) released" in client.get("/supply/").get_data(as_text=True)
    post_form(
        client,
        "/supply/quarantine",
        {"kit_numbers": numbers[2:4], "reason": "x", "decision": "reject"},
    )
    assert set(kit_states(app, numbers[2:4]).values()) == {"damaged"}
    assert "2 kit(s) rejected" in client.get("/supply/").get_data(as_text=True)


@pytest.mark.parametrize("role", ["investigator", "auditor", "unblinded_statistician", "admin"])
def test_roles_without_supply_access_get_forbidden(app, login_as, make_user, role):
    client, user = login_as(role, ["CN01"] if role == "investigator" else None)
    assert client.get("/supply/").status_code == 403
    assert client.get(f"/supply/sites/{site_ids(app)['CN01']}").status_code == 403
    assert_problem(app.test_client().get("/api/v1/shipments", headers=token_for(app, user)), 403)


# --- the API ----------------------------------------------------------------------------------


def test_api_inventory_shipments_shipping_and_receipt(app, admin, manager, make_user):
    stock(app, admin)
    pharmacist = make_user("pharmacist", sites=["CN01"])
    ph, mg = token_for(app, pharmacist), token_for(app, manager)
    api = app.test_client()
    cn01 = shipment_of(app, "CN01")
    numbers = kit_numbers(app, cn01.id)

    listed = api.get("/api/v1/shipments", headers=ph).get_json()
    assert listed == [], "issue 15: a site sees its shipments from 'shipped' on"
    assert_problem(api.get(f"/api/v1/shipments/{cn01.id}", headers=ph), 404)
    both = api.get("/api/v1/shipments", headers=mg).get_json()
    assert len(both) == 2 and both[0]["id"] > both[1]["id"]  # newest first
    # Keyset pages (issue 13): `limit`, then `before` = the last id shown.
    first = api.get("/api/v1/shipments?limit=1", headers=mg).get_json()
    older = api.get(f"/api/v1/shipments?limit=1&before={first[0]['id']}", headers=mg).get_json()
    assert [first[0]["id"], older[0]["id"]] == [s["id"] for s in both]
    assert_problem(api.get("/api/v1/shipments?limit=0", headers=mg), 422)
    detail = api.get(f"/api/v1/shipments/{cn01.id}", headers=mg).get_json()
    assert detail["state"] == "requested"
    assert [k["number"] for k in detail["kits"]] == numbers
    assert set(detail["kits"][0]) == {"number", "kit_type", "lot", "expiry", "state"}

    # shipping: the supply manager only, courier and tracking required
    assert_problem(
        api.post(
            f"/api/v1/shipments/{cn01.id}/shipping",
            json={"courier": "DHL", "tracking_number": "1"},
            headers=ph,
        ),
        403,
    )
    body = assert_problem(
        api.post(f"/api/v1/shipments/{cn01.id}/shipping", json={"courier": "DHL"}, headers=mg),
        422,
    )
    assert "tracking_number" in {e["field"] for e in body["errors"]}
    shipped = api.post(
        f"/api/v1/shipments/{cn01.id}/shipping",
        json={"courier": "DHL", "tracking_number": "JD0042"},
        headers=mg,
    )
    assert shipped.status_code == 200, shipped.get_data(as_text=True)
    assert (shipped.get_json()["state"], shipped.get_json()["tracking_number"]) == (
        "shipped",
        "JD0042",
    )
    assert_problem(
        api.post(
            f"/api/v1/shipments/{cn01.id}/shipping",
            json={"courier": "DHL", "tracking_number": "JD0042"},
            headers=mg,
        ),
        409,
    )

    # receipt: every kit exactly once
    before = counts(app)
    assert [s["number"] for s in api.get("/api/v1/shipments", headers=ph).get_json()] == [
        cn01.number
    ]
    incomplete = {
        "lines": [{"kit_number": n, "condition": "good"} for n in numbers[1:]],
        "temperature_excursion": False,
    }
    body = assert_problem(
        api.post(f"/api/v1/shipments/{cn01.id}/receipt", json=incomplete, headers=ph), 409
    )
    assert numbers[0] in body["detail"]
    twice = {
        "lines": [{"kit_number": n, "condition": "good"} for n in [*numbers, numbers[0]]],
        "temperature_excursion": False,
    }
    body = assert_problem(
        api.post(f"/api/v1/shipments/{cn01.id}/receipt", json=twice, headers=ph), 409
    )
    assert numbers[0] in body["detail"]
    bad = {"lines": [{"kit_number": n, "condition": "fine"} for n in numbers]}
    assert_problem(api.post(f"/api/v1/shipments/{cn01.id}/receipt", json=bad, headers=ph), 422)
    complete = {"lines": [{"kit_number": n, "condition": "good"} for n in numbers]}
    assert_problem(  # the supply manager does not receive
        api.post(f"/api/v1/shipments/{cn01.id}/receipt", json=complete, headers=mg), 403
    )
    assert counts(app) == before
    received = api.post(
        f"/api/v1/shipments/{cn01.id}/receipt",
        json={**complete, "temperature_excursion": False},
        headers=ph,
    )
    assert received.status_code == 200, received.get_data(as_text=True)
    assert received.get_json()["state"] == "received"
    assert {k["state"] for k in received.get_json()["kits"]} == {"available"}

    inventory = api.get("/api/v1/inventory?site_code=CN01", headers=ph)
    assert inventory.status_code == 200
    assert sorted(k["number"] for k in inventory.get_json()) == numbers
    assert_problem(api.get("/api/v1/inventory?site_code=CN02", headers=ph), 404)
    assert_problem(api.get("/api/v1/inventory", headers=ph), 422)
    assert len(api.get("/api/v1/inventory?site_code=CN01", headers=mg).get_json()) == 8


# --- the blind --------------------------------------------------------------------------------


@pytest.fixture
def twin_database_url(database_url: str, tmp_path: Path, request) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A second fresh database on the same backend as `database_url`."""
    if database_url.startswith("sqlite"):
        path = tmp_path / "twin.sqlite"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("pg_template")
    name = f"iwrs_twin_{os.getpid()}_{tmp_path.name[-24:]}".lower().replace("-", "_")
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")  # type: ignore[arg-type]
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def kit_list(swapped: bool) -> list[KitSpec]:
    """One kit list; `swapped` gives every kit the other treatment."""
    specs = generate_kit_list(
        seed=b"n" * 32,
        kit_type="GSK-SC",
        lot="NI01",
        expiry=datetime(2027, 6, 30, tzinfo=UTC).date(),
        per_treatment={code: 20 for code in ARM_CODES},
    )
    other = dict(zip(ARM_CODES, reversed(ARM_CODES), strict=True))
    if not swapped:
        return specs
    return [KitSpec(s.number, s.kit_type, other[s.treatment], s.lot, s.expiry) for s in specs]


def _client(app: Flask, username: str) -> FlaskClient:
    client = app.test_client()
    assert sign_in(client, username).status_code == 302
    return client


def replay_and_fetch(app: Flask, swapped: bool) -> dict[str, str]:
    """The same actions on a kit list (swapped or not); everything the pharmacist and the
    supply manager can then fetch, by URL (CSRF tokens blanked)."""
    with app.app_context():
        people = {
            name: users.create_user(
                actor=Actor.system("test"),
                username=name,
                full_name=name.title(),
                role=role,
                password=PASSWORD,
                site_codes=site_codes,
            )
            for name, role, site_codes in (
                ("admin", "admin", []),
                ("manager", "supply_manager", []),
                ("pharma", "pharmacist", ["CN01"]),
            )
        }
        supply.import_kits(
            actor=Actor.system("test"), csv_text=format_kit_list_csv(kit_list(swapped))
        )
    ids = site_ids(app)
    with app.app_context():
        for code in ("CN01", "CN02"):
            sites.change_site_status(
                actor=Actor.of(people["admin"]),
                site_id=ids[code],
                status=SiteStatus.ACTIVE,
                signer_password=PASSWORD,
                understood=True,
            )
    manager, pharmacist = _client(app, "manager"), _client(app, "pharma")
    cn01 = shipment_of(app, "CN01")
    page = f"/supply/shipments/{cn01.id}"
    post_form(manager, f"{page}/ship", {"courier": "DHL", "tracking_number": "T1"}, page)
    numbers = kit_numbers(app, cn01.id)
    form = {f"kit-{n}": "good" for n in numbers} | {f"kit-{numbers[0]}": "damaged"}
    received = {"temperature_excursion": "no", "received_on": "2026-03-02"}
    post_form(pharmacist, f"{page}/receipt", form | received, page)
    # lose the kits that hold the first treatment of the UNSWAPPED list (same numbers both runs)
    first = {s.number for s in kit_list(False) if s.treatment == ARM_CODES[0]}
    site_page = f"/supply/sites/{ids['CN01']}"
    lost = [n for n in numbers[1:] if n in first][:2]
    for number in lost:
        post_form(
            pharmacist,
            f"/supply/kits/{number}/report",
            {"what": "lost", "reason": "x", "confirmed": "y"},
            site_page,
        )
    with app.app_context():  # the scheduled run, not the losses, requests CN01's top-up
        assert len(run_resupply()) == 1
    # CN02's shipment is shipped, not yet received
    cn02 = shipment_of(app, "CN02")
    page2 = f"/supply/shipments/{cn02.id}"
    post_form(manager, f"{page2}/ship", {"courier": "DHL", "tracking_number": "T2"}, page2)

    fetched: dict[str, str] = {}
    with app.app_context():
        every_shipment = [s.id for s in _fresh().scalars(select(Shipment).order_by(Shipment.id))]
    assert len(every_shipment) == 3, "the initial shipments and CN01's resupply"
    shipped = every_shipment[:1]  # a site sees a shipment from "shipped" on (issue 15)
    urls = {
        "pharma": [
            "/supply/",
            site_page,
            *(f"/supply/shipments/{i}" for i in shipped if i != cn02.id),
            "/api/v1/inventory?site_code=CN01",
            "/api/v1/shipments",
            *(f"/api/v1/shipments/{i}" for i in shipped if i != cn02.id),
        ],
        "manager": [
            "/supply/",
            *(f"/supply/sites/{ids[c]}" for c in ("CN01", "CN02", "CN03", "CN04")),
            *(f"/supply/shipments/{i}" for i in every_shipment),
            *(f"/api/v1/inventory?site_code={c}" for c in ("CN01", "CN02")),
            "/api/v1/shipments",
            *(f"/api/v1/shipments/{i}" for i in every_shipment),
        ],
    }
    clients = {"pharma": pharmacist, "manager": manager}
    for who, paths in urls.items():
        for path in paths:
            response = clients[who].get(path)
            assert response.status_code == 200, (who, path)
            fetched[f"{who} {path}"] = response.get_data(as_text=True)
    # refusals a blinded user meets are fetched too
    refused = pharmacist.post(
        f"/api/v1/shipments/{shipped[0]}/receipt",  # received already
        json={"lines": [], "temperature_excursion": False},
        headers={"X-CSRFToken": csrf_from(pharmacist.get("/supply/").get_data(as_text=True))},
    )
    fetched["pharma refused receipt"] = refused.get_data(as_text=True)
    again = post_form(  # the confirmation page again, with the refusal (issue 15)
        pharmacist,
        f"/supply/kits/{lost[0]}/report",
        {"what": "lost", "reason": "x", "confirmed": "y"},
        site_page,
    )
    fetched["pharma flash"] = again.get_data(as_text=True)
    return {
        key: re.sub(r'(name="csrf_token"[^>]*value=")[^"]+', r"\1", body)
        for key, body in fetched.items()
    }


def test_no_supply_page_or_api_response_names_an_arm_and_swapping_treatments_changes_nothing(
    tmp_path, database_url, twin_database_url
):
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    apps = [
        make_blind_app(tmp_path / "a", database_url, ManualClock(start)),
        make_blind_app(tmp_path / "b", twin_database_url, ManualClock(start)),
    ]
    try:
        plain = replay_and_fetch(apps[0], swapped=False)
        swapped = replay_and_fetch(apps[1], swapped=True)
    finally:
        for application in apps:
            application.extensions["iwrs.engine"].dispose()
    assert len(plain) > 20
    for key, body in plain.items():
        for word in (*ARM_CODES, *ARM_NAMES):
            assert word.lower() not in body.lower(), f"{word} shown on {key}"
    assert plain.keys() == swapped.keys()
    for key in plain:
        assert plain[key] == swapped[key], f"{key} differs when every treatment is swapped"
    # the replay did what it says: a resupply and a refusal are among what was fetched
    assert "resupply" in plain["manager /supply/"]
    assert "cannot be received" in plain["pharma refused receipt"]
    assert "cannot be reported lost" in plain["pharma flash"]
