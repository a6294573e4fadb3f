"""Issue 15, problem 6: receipt kit by kit in chromium - nothing preset, the scan field fills the
row of the kit scanned, the temperature answer and the received date are required - and the
scan field without JavaScript (the server fills the row)."""

from __future__ import annotations

import re

from sqlalchemy import select

from iwrs.db import read_session
from iwrs.models.supply import Shipment
from tests.web.test_browser import page, sign_in  # noqa: F401 (fixtures)
from tests.web.test_supply_pages import (
    kit_numbers,
    kit_states,
    post_form,
    ship,
    shipment_of,
    stock,
    today_of,
)


def test_receipt_by_scan_in_chromium_fills_each_row_and_needs_every_answer(
    app,
    make_user,
    page,  # noqa: F811
):
    admin, manager = make_user("admin"), make_user("supply_manager")
    stock(app, admin, codes=("CN01",))
    shipment = shipment_of(app, "CN01")
    ship(app, manager, shipment.id)
    numbers = kit_numbers(app, shipment.id)
    pharmacist = make_user("pharmacist", sites=["CN01"])
    sign_in(page, pharmacist.username)
    page.set_viewport_size({"width": 390, "height": 800})  # a phone: no sideways scrolling
    page.goto(f"/supply/shipments/{shipment.id}")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.locator("#receipt input[type=radio]:checked").count() == 0, "nothing preset"

    page.check("input[name=scan_condition][value=good]")
    for number in numbers[1:]:  # a scanner types the number and Enter
        page.fill("#scan", number)
        page.press("#scan", "Enter")
    page.check("input[name=scan_condition][value=damaged]")
    page.fill("#scan", numbers[0])
    page.press("#scan", "Enter")
    page.fill("#scan", "999999")
    page.press("#scan", "Enter")
    assert "999999 is not in this shipment" in page.locator("#scan-status").inner_text()
    checked = page.locator("tbody input[type=radio]:checked")
    assert checked.count() == len(numbers)
    assert page.is_checked(f"input[name='kit-{numbers[0]}'][value=damaged]")

    page.click("button[value=receive]")  # the temperature question is not answered yet
    refused = page.locator(".flash.error")
    assert refused.get_attribute("data-field") == "temperature_excursion"
    assert refused.get_attribute("data-rule") == "required"
    assert page.locator("tbody input[type=radio]:checked").count() == len(numbers), "kept"
    page.check("input[name=temperature_excursion][value=no]")
    page.click("button[value=receive]")
    assert f"Shipment {shipment.number} received." in page.locator(".flash").first.inner_text()
    states = kit_states(app, numbers)
    assert states.pop(numbers[0]) == "damaged" and set(states.values()) == {"available"}
    with app.app_context():
        row = read_session().scalars(select(Shipment).where(Shipment.id == shipment.id)).one()
        assert row.received_on == today_of(app)


def test_the_scan_field_fills_the_row_without_javascript(app, make_user, login_as):
    admin, manager = make_user("admin"), make_user("supply_manager")
    stock(app, admin, codes=("CN01",))
    shipment = shipment_of(app, "CN01")
    ship(app, manager, shipment.id)
    numbers = kit_numbers(app, shipment.id)
    client, _ = login_as("pharmacist", ["CN01"])
    url = f"/supply/shipments/{shipment.id}"
    form = {"action": "scan", "scan": numbers[2], "scan_condition": "missing"}
    shown = post_form(client, f"{url}/receipt", form, url)
    assert shown.status_code == 200
    html = shown.get_data(as_text=True)
    checked = re.findall(r'name="kit-([^"]+)" value="([a-z]+)" checked', html)
    assert checked == [(numbers[2], "missing")]
    assert set(kit_states(app, numbers).values()) == {"in_transit"}, "a scan receives nothing"
