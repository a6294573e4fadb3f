"""Journeys in real chromium for issue 15's problems whose pages no other browser test walks:
a kit brought back recorded, verified and shown pending destruction (2); the destruction's
e-signature, where a wrong password destroys nothing (9); the pharmacist's visits due and the
subject list's search and filter (4, 5); a date typed 05031965 refused, 05-MAR-1965 accepted and
shown back (7); a randomization receipt naming study, site, person and local time, and the
inbox (10). Problems 11 and 12 are walked in tests/web/test_import_admin_audit_browser.py.

One trial, one server and one browser for the module (SQLite: what the browser shows does not
depend on the database; the client tests run both). The trial: CN01 randomizes subject A on
day 0 and subject B on day 4; the clock then stands at day 27, so A's V2 window (days 25 to 31)
is open today and B's (29 to 35) opens this week. Assertions are on values and on the
data-field / data-rule / data-* attributes, never on wording."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import PASSWORD, ManualClock
from tests.integration.randomization_worker import World, eligible_subject, make_world, randomize
from tests.web.chromium import launched, served

RANDOMIZED_AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Trial:
    world: World
    clock: ManualClock
    a: Any  # randomized on day 0: its V2 window is open today (day 27)
    b: Any  # randomized on day 4: its V2 window opens this week


@dataclass(frozen=True)
class Randomized:
    subject_id: int
    screening_number: str
    randomization_number: str
    kit_number: str


def _randomized(world: World) -> Randomized:
    from iwrs.db import read_session
    from iwrs.models.subjects import Subject

    subject_id = eligible_subject(world, "CN01")
    result = randomize(world, subject_id)
    subject = read_session().get(Subject, subject_id)
    assert subject is not None
    return Randomized(
        subject_id, subject.screening_number, result.randomization_number, result.kit_number
    )


@pytest.fixture(scope="module")
def trial(tmp_path_factory, sqlite_template) -> Iterator[Trial]:
    folder = tmp_path_factory.mktemp("journeys")
    shutil.copy(sqlite_template, folder / "iwrs.sqlite")
    clock = ManualClock(RANDOMIZED_AT)
    world = make_world(
        folder, f"sqlite:///{folder / 'iwrs.sqlite'}", clock, lots=(("L-0001", 40, 730),)
    )
    with world.app.app_context():
        a = _randomized(world)
        clock.advance(days=4)
        b = _randomized(world)
    clock.advance(days=23)
    yield Trial(world, clock, a, b)
    world.app.extensions["iwrs.engine"].dispose()


@pytest.fixture(scope="module")
def server(trial) -> Iterator[str]:
    with served(trial.world.app) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched() as chromium:
        yield chromium


@pytest.fixture
def page(browser, server) -> Iterator[Any]:
    context = browser.new_context(base_url=server)
    context.set_default_timeout(5000)  # a missing element fails the test at once
    yield context.new_page()
    context.close()


def sign_in(page: Any, username: str, at: str) -> None:
    """Open `at`, sign in on the sign-in page it leads to, and be back on `at`."""
    page.goto(at)
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    with page.expect_navigation():  # signed in (its cookie set) before the next step
        page.click("button[type=submit]")
    assert "/sign-in" not in page.url


def refused(page: Any) -> set[tuple[str, str]]:
    found = page.eval_on_selector_all(
        "[data-rule]", "nodes => nodes.map(n => [n.dataset.field || '', n.dataset.rule])"
    )
    return {(field, rule) for field, rule in found}


def kit_state(page: Any, number: str) -> str:
    """A kit's state on the site inventory, from its status element's class."""
    row = page.locator("tbody tr", has=page.locator(f"td:text-is('{number}')"))
    assert row.count() == 1, number
    classes = row.locator("span.status").get_attribute("class") or ""
    return classes.replace("status", "").strip()


def listed_subjects(page: Any, table: str) -> list[str]:
    return page.eval_on_selector_all(
        f"{table} tbody tr[data-subject]", "rows => rows.map(r => r.dataset.subject)"
    )


def test_visits_due_search_and_open_then_the_subject_list_search_and_status(trial, page):
    """Problems 4 and 5: the pharmacist's board lists the visits due, not every subject."""
    a, b = trial.a, trial.b
    sign_in(page, "ph-CN01", "/dispensing/")
    assert page.input_value("#due") == "today"  # the default: windows open today
    assert listed_subjects(page, "#visits") == [a.screening_number]
    page.select_option("#due", "week")
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    assert set(listed_subjects(page, "#visits")) == {a.screening_number, b.screening_number}
    page.fill("#q", b.screening_number)
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    assert listed_subjects(page, "#visits") == [b.screening_number]
    assert page.input_value("#due") == "week"  # the filter kept with the search
    with page.expect_navigation():
        page.click(f"#visits tr[data-subject='{b.screening_number}'] a.button")
    assert page.url.endswith(f"/dispensing/{b.subject_id}")
    assert page.locator("tr.next td").first.inner_text().startswith("V2")

    page.context.clear_cookies()
    sign_in(page, "inv-CN01", "/subjects/")
    listed = set(listed_subjects(page, "table.subject-list"))
    assert {a.screening_number, b.screening_number} <= listed
    page.fill("#q", a.randomization_number)
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    assert listed_subjects(page, "table.subject-list") == [a.screening_number]
    page.fill("#q", "")
    page.select_option("#f-status", "screening")
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    assert listed_subjects(page, "table.subject-list") == []  # every subject is randomized
    page.select_option("#f-status", "randomized")
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    assert set(listed_subjects(page, "table.subject-list")) == listed


def test_a_date_typed_without_its_month_is_refused_and_dd_mmm_yyyy_is_shown_back(trial, page):
    """Problem 7: 05031965 could be 5 March or 3 May; it is refused beside the field, never
    guessed; 05-MAR-1965 is taken and shown back as typed."""
    sign_in(page, "inv-CN01", "/subjects/")
    before = set(listed_subjects(page, "table.subject-list"))
    page.fill("#date_of_birth", "05031965")
    page.select_option("#sex", "female")
    page.fill("#initials", "JKL")
    with page.expect_navigation():
        page.click("#register button[type=submit]")
    assert ("date_of_birth", "date_format") in refused(page)
    assert page.input_value("#date_of_birth") == "05031965"  # kept as typed, to correct
    page.goto("/subjects/")
    assert set(listed_subjects(page, "table.subject-list")) == before  # nothing registered

    page.fill("#date_of_birth", "05-MAR-1965")
    page.select_option("#sex", "female")
    page.fill("#initials", "JKL")
    with page.expect_navigation():
        page.click("#register button[type=submit]")
    assert "/subjects/" in page.url and refused(page) == set()
    assert page.locator("dl dd:text-matches(', 05-MAR-1965$')").count() == 1  # sex, birth


def test_a_return_is_recorded_verified_and_a_wrong_password_destroys_nothing(trial, page):
    """Problems 2 and 9: the kit brought back, verified, pending destruction on the inventory;
    the destruction is reviewed and needs the e-signature: a wrong password destroys nothing."""
    a, sites = trial.a, trial.world.sites
    sign_in(page, "ph-CN01", f"/dispensing/{a.subject_id}")
    page.select_option("#return-kit", a.kit_number)
    page.select_option("#return-visit", "V2")
    page.check("input[name=condition][value=partly_used]")
    page.fill("#units_returned", "1")
    with page.expect_navigation():
        page.click(f"form[action$='/dispensing/{a.subject_id}/returns'] button")
    assert refused(page) == set()
    assert page.locator("#return-kit").count() == 0  # its only kit is back: nothing to record

    page.goto(f"/supply/sites/{sites['CN01']}")
    assert kit_state(page, a.kit_number) == "returned"
    with page.expect_navigation():
        page.click(f"a[href$='/supply/kits/{a.kit_number}/verify']")
    page.fill("#units_verified", "1")
    with page.expect_navigation():
        page.click(f"form[action$='/supply/kits/{a.kit_number}/verify'] button")
    assert page.url.endswith(f"/supply/sites/{sites['CN01']}")
    assert kit_state(page, a.kit_number) == "pending_destruction"

    page.context.clear_cookies()
    sign_in(page, "manager", "/supply/destruction")
    page.check(f"#k-{a.kit_number}")
    page.fill("#reference", "DC-2026-01")
    with page.expect_navigation():
        page.click("form[method=get] button[type=submit]")
    confirm = page.locator("#confirm-destruction")
    assert confirm.locator("input[name=kit_numbers]").evaluate_all(
        "nodes => nodes.map(n => n.value)"
    ) == [a.kit_number]
    assert a.kit_number in confirm.locator(".signature-meaning").inner_text()
    page.fill("#signature_password", "not my password")
    with page.expect_navigation():
        page.click("#confirm-destruction button[type=submit]")
    # The service names the signer's `password`; the form's field is signature_password.
    assert any(
        rule == "credentials" and field in {"password", "signature_password"}
        for field, rule in refused(page)
    )
    assert page.locator("#confirm-destruction").count() == 1  # the review again, to sign

    page.context.clear_cookies()
    sign_in(page, "ph-CN01", f"/supply/sites/{sites['CN01']}")
    assert kit_state(page, a.kit_number) == "pending_destruction"  # nothing destroyed


def test_the_randomization_receipt_names_study_site_person_and_local_time(trial, page):
    """Problem 10 (receipts): opened from the randomization page, re-printable."""
    from iwrs import clock
    from iwrs.web.calendar import day

    b, world = trial.b, trial.world
    sign_in(page, "inv-CN01", f"/subjects/{b.subject_id}/randomization")
    with page.expect_navigation():
        page.click(f"a[href$='/receipts/randomization/{b.subject_id}']")
    receipt = page.locator("article[data-receipt]")
    facts = dict(
        zip(
            receipt.locator("dl.facts > dt").all_inner_texts(),
            receipt.locator("dl.facts > dd").all_inner_texts(),
            strict=False,
        )
    )
    with world.app.app_context():
        from iwrs.db import read_session
        from iwrs.models.sites import Site

        study = world.app.extensions["iwrs.protocol"].study_id
        site = read_session().get(Site, world.sites["CN01"])
        assert site is not None
        code, name, zone = site.code, site.name, site.time_zone
        local = clock.local_time(RANDOMIZED_AT.replace(day=6), site)
    assert facts["Study"].startswith(study)
    assert facts["Site"] == f"{code} {name}"
    assert facts["By"].startswith(world.people["inv-CN01"].full_name)
    assert facts["When"].startswith(f"{day(local)} {local:%H:%M}")
    assert f"({zone})" in facts["When"]
    assert b.randomization_number in facts.values()
    assert receipt.locator(".proof code.hash").count() >= 1  # its place in the audit trail


def test_the_inbox_lists_a_notice_and_marks_it_read(trial, page):
    """Problem 10 (inbox): a notice to the person shows unread, then read once marked."""
    from iwrs import audit, clock
    from iwrs.audit import Actor
    from iwrs.db import transaction
    from iwrs.models.users import UserNotice

    world = trial.world
    person = world.people["ph-CN02"].id
    with world.app.app_context(), transaction() as session:  # as a password reset leaves one
        session.add(UserNotice(user_id=person, text="A notice", created_at=clock.now()))
        audit.record(
            session,
            actor=Actor.system("test"),
            action="user.notice",
            entity_type="user",
            entity_id=person,
        )
    sign_in(page, "ph-CN02", "/inbox")
    item = page.locator("li.inbox-item[data-kind=notice]")
    assert item.count() == 1 and item.get_attribute("data-read") == "no"
    with page.expect_navigation():
        item.locator("button[type=submit]").click()
    assert page.url.endswith("/inbox")
    item = page.locator("li.inbox-item[data-kind=notice]")
    assert item.get_attribute("data-read") == "yes"
    assert item.locator("button[type=submit]").count() == 0
