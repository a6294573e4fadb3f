"""Real chromium against a real server: the pages work as a person uses them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import PASSWORD
from tests.web.chromium import launched, served


@pytest.fixture
def page(app) -> Iterator:
    with served(app) as base, launched() as browser:
        context = browser.new_context(base_url=base)
        yield context.new_page()
        context.close()


def sign_in(page, username: str, password: str = PASSWORD) -> None:
    page.goto("/")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("button[type=submit]")


def test_pharmacist_signs_in_sees_only_own_site_and_signs_out(page, make_user):
    pharmacist = make_user("pharmacist", sites=["CN03"])
    sign_in(page, pharmacist.username)
    assert page.locator("header .who").inner_text().endswith("pharmacist")
    page.click("text=Sites")
    rows = page.locator("tbody tr")
    assert rows.count() == 1 and "CN03" in rows.first.inner_text()
    page.click("text=Sign out")
    page.locator("text=You are signed out.").wait_for()  # times out (fails) if never shown
    assert page.locator("input[type=password]").count() == 1


def test_wrong_password_shows_a_message_and_no_session(page, make_user):
    user = make_user("auditor")
    sign_in(page, user.username, "not the password")
    assert "Unknown username or wrong password." in page.locator(".flash.error").inner_text()
    page.goto("/sites/")
    assert "/sign-in" in page.url


def test_admin_creates_an_investigator_and_deactivates_with_signature(page, make_user):
    admin = make_user("admin")
    sign_in(page, admin.username)
    page.click("text=Users")
    page.click("text=New user")
    page.fill("#username", "dr.wu")
    page.fill("#full_name", "Dr Wu")
    page.select_option("#role", "investigator")
    page.check("input[name=site_codes][value=CN02]")  # sites are checkboxes
    page.fill("#email", "dr.wu@example.org")  # the system mails a temporary password
    page.click("button:has-text('Create user')")
    assert "User dr.wu created" in page.content()
    page.fill("#deactivate-reason", "left the study team")
    page.check("#deactivate-understood")
    page.fill("#deactivate-signature_password", "wrong password!!")
    page.click("button:has-text('Deactivate user')")
    assert "the password is wrong; nothing was signed" in page.locator(".flash.error").inner_text()
    page.fill("#deactivate-reason", "left the study team")
    page.check("#deactivate-understood")
    page.fill("#deactivate-signature_password", PASSWORD)
    page.click("button:has-text('Deactivate user')")
    assert "User dr.wu deactivated." in page.content()
    assert "inactive" in page.locator("dl.facts").inner_text()


def test_investigator_screens_and_sees_failing_criteria_in_the_browser(page, make_user, app):
    from sqlalchemy import select

    from iwrs.audit import Actor
    from iwrs.db import read_session
    from iwrs.models import Site, SiteStatus
    from iwrs.services import sites

    admin = make_user("admin")
    with app.app_context():
        cn01 = read_session().scalars(select(Site).where(Site.code == "CN01")).one()
        sites.change_site_status(
            actor=Actor.of(admin),
            site_id=cn01.id,
            status=SiteStatus.ACTIVE,
            signer_password=PASSWORD,
            understood=True,
        )
    investigator = make_user("investigator", sites=["CN01"])
    sign_in(page, investigator.username)
    page.click("nav >> text=Subjects")
    page.fill("#date_of_birth", "1966-09-30")
    page.select_option("#sex", "male")
    page.click("button:has-text('Register')")
    assert "Subject CN01-001" in page.locator("h1").inner_text()
    page.fill("#f-fvc_pct", "400")
    page.click("button:has-text('Check eligibility')")
    refused = page.locator(".flash.error").last
    assert refused.locator('[data-field="fvc_pct"]').count() == 1  # named by its field…
    assert "fvc_pct" not in refused.inner_text()  # …in words (issue 15, problem 8)
    assert page.input_value("#f-fvc_pct") == "400"
    page.fill("#f-fvc_pct", "39.9")
    page.check("input[name=diagnosis_ra][value=yes]")
    page.check("input[name=diagnosis_ssc][value=no]")
    page.click("button:has-text('Check eligibility')")
    result = page.locator("section.result").inner_text()
    assert "Latest assessment: not eligible" in result and "I5" in result
    assert page.locator("button:has-text('Sign: screen failure')").count() == 1
