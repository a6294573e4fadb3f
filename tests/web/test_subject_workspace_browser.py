"""The subject list in real chromium (issue 15): emergency unblinding reached from the list's
actions menu in two steps, a wrong password shown beside its field with the reason kept; and an
eligibility draft that survives a session ended mid-entry, restored on the same subject after
signing in again, with a warning (and a way to stay) before the session ends. One trial and one
browser for the module (cheap)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import PASSWORD, ManualClock
from tests.integration.randomization_worker import (
    World,
    eligible_subject,
    make_world,
    randomize,
    screen,
)
from tests.web.chromium import launched, served

SIDEWAYS = "document.documentElement.scrollWidth > window.innerWidth"
REASON = "Anaphylaxis after the last dose; the treating physician must know"


@pytest.fixture(scope="module")
def world(tmp_path_factory, sqlite_template) -> Iterator[tuple[World, ManualClock]]:
    folder = tmp_path_factory.mktemp("subject-workspace")
    shutil.copy(sqlite_template, folder / "iwrs.sqlite")
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    built = make_world(
        folder, f"sqlite:///{folder / 'iwrs.sqlite'}", clock, lots=(("L-0001", 40, 730),)
    )
    yield built, clock
    built.app.extensions["iwrs.engine"].dispose()


@pytest.fixture(scope="module")
def server(world) -> Iterator[str]:
    with served(world[0].app) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched() as chromium:
        yield chromium


@pytest.fixture
def page(browser, server) -> Iterator[Any]:
    context = browser.new_context(base_url=server)
    yield context.new_page()
    context.close()


def sign_in(page: Any, username: str, password: str = PASSWORD) -> None:
    page.fill("#username", username)
    page.fill("#password", password)
    with page.expect_navigation():  # signed in (its cookie set) before the next step
        page.click("button[type=submit]")


def test_emergency_unblinding_from_the_list_in_two_steps_keeps_the_reason_on_a_wrong_password(
    world, page
):
    trial, _ = world
    with trial.app.app_context():
        subject_id = eligible_subject(trial, "CN01")
        number = randomize(trial, subject_id).randomization_number
    page.set_viewport_size({"width": 390, "height": 800})  # a phone: nothing scrolls sideways
    page.goto("/subjects/")
    sign_in(page, "inv-CN01")
    page.goto(f"/subjects/?q={number}")
    row = page.locator("table.subject-list tbody tr")
    assert row.count() == 1
    row.locator("summary").click()
    assert not page.evaluate(SIDEWAYS)
    row.locator("a[data-action=unblind]").click()  # step 1: the reason

    page.select_option("#u-category", "sae")
    page.fill("#u-reason", REASON)
    page.check("#u-sae")
    page.click("button:has-text('Continue to confirmation')")
    page.locator(".what-happens").wait_for()
    assert page.locator(".what-happens li").count() >= 3  # step 2: what will happen
    page.check("#u-understood")
    page.fill("#u-signature", "not my password")
    page.click("button:has-text('Sign and unblind')")

    error = page.locator("#err-signature_password")
    assert error.get_attribute("data-rule") == "credentials"
    assert page.get_attribute("#u-signature", "aria-describedby") == "err-signature_password"
    assert page.input_value("#u-signature") == ""  # never the password
    assert page.locator(".typed-reason").inner_text() == REASON
    assert page.input_value("input[type=hidden][name=reason]") == REASON
    assert page.is_checked("#u-understood")
    assert not page.evaluate(SIDEWAYS)

    page.fill("#u-signature", PASSWORD)
    page.click("button:has-text('Sign and unblind')")
    page.locator("strong.arm").wait_for()
    page.goto("/subjects/?status=unblinded")
    listed = page.locator("table.subject-list tbody tr[data-subject]")
    assert listed.count() == 1
    assert listed.locator("[data-status=unblinded]").count() == 1
    assert listed.locator("[data-action=unblind]").get_attribute("data-rule") == (
        "already_unblinded"
    )


def test_an_eligibility_draft_survives_a_session_ended_mid_entry(world, page):
    trial, clock = world
    with trial.app.app_context():
        subject_id = screen(trial, "CN01").id
    page.clock.install()  # the page's own clock, to reach the session warning at once
    page.goto(f"/subjects/{subject_id}")
    sign_in(page, "inv-CN01")
    page.wait_for_url(f"**/subjects/{subject_id}")
    page.fill("#f-fvc_pct", "55.5")
    page.check("input[name=diagnosis_ra][value=yes]")
    page.locator(".draft-status", has_text="Draft saved").wait_for()

    page.clock.fast_forward("13:30")  # 13.5 of the 15 idle minutes: warned, with a way to stay
    warning = page.locator(".session-warning[role=alert]")
    warning.wait_for()
    warning.locator("button", has_text="Stay signed in").click()
    warning.wait_for(state="hidden")

    clock.advance(minutes=16)  # idle past the limit: the server ends the session
    page.goto(f"/subjects/{subject_id}")
    assert "/sign-in" in page.url
    sign_in(page, "inv-CN01")
    page.wait_for_url(f"**/subjects/{subject_id}")  # back to the same subject
    assert page.input_value("#f-fvc_pct") == "55.5"
    assert page.is_checked("input[name=diagnosis_ra][value=yes]")
    page.locator(".draft-restored").wait_for()
