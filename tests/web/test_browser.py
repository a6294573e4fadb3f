"""Real chromium against a real server: the pages work as a person uses them."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from tests.conftest import PASSWORD

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def server(app) -> Iterator[str]:
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join()


@pytest.fixture
def page(server) -> Iterator:
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed: .ci/run installs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = browser.new_context(base_url=server)
        yield context.new_page()
        context.close()
        browser.close()


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
    assert "You are signed out." in page.content()
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
    page.select_option("#sites", ["CN02"])
    page.fill("#password", "a long enough password")
    page.click("button:has-text('Create user')")
    assert "User dr.wu created." in page.content()
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
