"""The supply manager's home in Debian's chromium at phone width (issue 15): the mode banner,
days of cover, and an alert acknowledged then resolved from the home page; nothing scrolls
sideways at 390 px."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from iwrs.audit import Actor
from tests.conftest import PASSWORD, ManualClock
from tests.integration.randomization_worker import make_world
from tests.web.chromium import launched
from tests.web.chromium import served as served_app


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sqlite_template) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("home-browser")
    shutil.copy(sqlite_template, folder / "iwrs.sqlite")
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    world = make_world(
        folder,
        f"sqlite:///{folder / 'iwrs.sqlite'}",
        clock,
        sites=("CN01",),
        lots=(("L-0001", 24, 730),),
        with_list=False,
        environment="uat",
    )
    from iwrs.db import transaction
    from iwrs.services.supply import open_alert

    with world.app.app_context(), transaction() as session:
        open_alert(
            session,
            kind="depot_shortfall",
            site_id=world.sites["CN01"],
            message="The depot cannot fill a shipment to CN01.",
            actor=Actor.system("test"),
        )
    world.app.config["IWRS_PROPAGATE_UNEXPECTED"] = False
    with served_app(world.app) as base:
        yield {"world": world, "url": base}
    world.app.extensions["iwrs.engine"].dispose()


def test_supply_manager_handles_an_alert_from_the_home_page_at_phone_width(served):
    world = served["world"]
    with launched() as browser:
        context = browser.new_context(
            base_url=served["url"], viewport={"width": 390, "height": 844}
        )
        page = context.new_page()
        page.goto("/")
        page.fill("#username", world.people["manager"].username)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        assert page.locator(".mode-banner").get_attribute("data-mode") == "uat"
        assert page.locator(".mode-banner").is_visible()
        rows = page.locator("tr[data-site]")
        assert [rows.nth(i).get_attribute("data-site") for i in range(rows.count())] == [
            "CN01",
            "CN02",
            "CN03",
            "CN04",
        ]
        assert [rows.nth(i).get_attribute("data-warn") for i in range(4)] == ["no"] * 4
        wide = page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
        assert wide <= 0, f"the home page scrolls sideways by {wide} px at 390 px"
        alert = page.locator("li[data-kind=depot_shortfall]")
        alert.locator("button:has-text('Acknowledge')").click()
        assert "Acknowledged by Test supply_manager" in page.locator("#alerts ~ ul").inner_text()
        page.locator("li[data-kind=depot_shortfall] input[name$=reason]").fill("Depot restocked")
        page.locator("li[data-kind=depot_shortfall] button:has-text('Resolve')").click()
        assert page.locator("li[data-kind=depot_shortfall]").count() == 0
        assert "Alert resolved." in page.locator(".flash").first.inner_text()
        assert "Depot restocked" in page.locator("li[data-resolved]").inner_text()
        page.screenshot(path=str(_artifacts() / "home-supply-manager-390.png"), full_page=True)
        context.close()
        browser.close()


def _artifacts() -> Any:
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "artifacts"
    folder.mkdir(exist_ok=True)
    return folder
