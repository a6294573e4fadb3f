"""In real chromium (issue 15: list import, problems 11 and 12): the statistician maps a REDCap
table's columns and imports it; the admin ticks sites as checkboxes and is told a site role needs
one; the auditor filters the trail by a category in words and is told a reversed date range is
refused. axe-core finds no serious or critical violation on the mapping step (a page reached only
by a form, so the accessibility crawl of GET pages never sees it), and it does not scroll sideways
at 390 px."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.chromium import launched, serious_violations, served
from tests.web.test_browser import sign_in

FIXTURES = Path(__file__).parents[1] / "fixtures" / "lists"


@pytest.fixture
def browser(app) -> Iterator[tuple[Any, str]]:  # type: ignore[no-untyped-def]
    with served(app) as base, launched() as chromium:
        yield chromium, base


def refused(page: Any) -> set[tuple[str, str]]:
    found = page.eval_on_selector_all(
        "[data-rule]", "nodes => nodes.map(n => [n.dataset.field, n.dataset.rule])"
    )
    return {tuple(pair) for pair in json.loads(json.dumps(found))}


# What the browser shows does not depend on the database: PostgreSQL runs the same use cases in
# the client tests (test_list_mapping_pages, test_admin_pages, test_audit_trail_pages).
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_mapping_checkboxes_and_trail_filters_in_chromium(browser, make_user):
    chromium, base = browser
    stat, admin, auditor = (
        make_user(role) for role in ("unblinded_statistician", "admin", "auditor")
    )

    context = chromium.new_context(base_url=base, bypass_csp=True, viewport=PHONE)
    page = context.new_page()
    sign_in(page, stat.username)
    page.goto("/lists/")
    page.fill("#m-name", "redcap")
    page.set_input_files("#m-file", str(FIXTURES / "redcap_allocation_raw.csv"))
    page.click("button:has-text('Map its columns')")
    assert page.locator("h1").inner_text().startswith("Map the columns")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the mapping page scrolls sideways ({width} px)"
    assert serious_violations(page) == []
    page.select_option("#arm_column", "redcap_randomization_group")
    page.fill("#arm_values", "1=A; 2=Genakumab")
    page.select_option("#factor-1-column", "disease")
    page.fill("#factor-1-values", "1=RA; 2=SSc")
    page.click("button:has-text('Import list through this mapping')")
    assert ("arm_values", "arm_known") in refused(page)
    assert page.input_value("#arm_values") == "1=A; 2=Genakumab"  # kept to correct
    page.fill("#arm_values", "1=A; 2=P")
    page.click("button:has-text('Import list through this mapping')")
    assert "imported through the column mapping" in page.content()
    assert "Column mapping" in page.locator("dl.facts").inner_text()
    context.close()

    context = chromium.new_context(base_url=base, bypass_csp=True)
    page = context.new_page()
    sign_in(page, admin.username)
    page.goto("/admin/users/new")
    page.fill("#username", "ph.new")
    page.fill("#full_name", "New Pharmacist")
    page.fill("#email", "ph.new@example.org")
    page.select_option("#role", "pharmacist")
    page.click("button:has-text('Create user')")
    assert refused(page) == {("sites", "site_required")}
    page.check("input[name=site_codes][value=CN03]")
    page.click("button:has-text('Create user')")
    assert "User ph.new created" in page.content()
    page.goto("/admin/users")
    assert "CN03" in page.locator("tr", has_text="ph.new").inner_text()
    context.close()

    context = chromium.new_context(base_url=base, bypass_csp=True)
    page = context.new_page()
    sign_in(page, auditor.username)
    page.goto("/audit/")
    page.select_option("select[name=action]", label="Sign-in, sign-out and e-signatures")
    page.click("button:has-text('Filter')")
    actions = page.locator("tbody tr td:nth-child(5)").all_inner_texts()
    assert actions and all(a.startswith(("auth.", "esign.")) for a in actions)
    page.fill("input[name=date_from]", "2026-03-05")
    page.fill("input[name=date_to]", "2026-03-01")
    page.click("button:has-text('Filter')")
    assert refused(page) == {("date_to", "date_range_order")}
    context.close()


PHONE = {"width": 390, "height": 844}
