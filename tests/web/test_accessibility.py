"""Every page a person reaches, in real chromium: axe-core finds no serious or critical
violation, and no page scrolls sideways on a 390 px phone or at 200 % zoom (issue 15, problem 13).

One world (tests/web/blind_world.py: subjects screened, randomized, dispensed, unblinded;
shipments received; an audit trail) and one browser for the module. Every HTML GET route of
the application is visited once, as the first role (home pages: every role) for which it
answers 200, so a new page cannot escape the check. axe-core is the engine Deque publishes,
bundled by the `axe-playwright-python` package; it runs inside the page.

Screenshots of every page at 390 px go to tests/artifacts (git-ignored) for a person to look at.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PASSWORD
from tests.web.blind_world import BLINDED, STATISTICIAN, World, build_world, route_urls
from tests.web.chromium import launched, serious_violations, served

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
# The roles, in the order a page is claimed by the first one that may see it.
ROLES = [STATISTICIAN, *BLINDED.values()]
PHONE = {"width": 390, "height": 844}
# 200 % zoom of a 1280 px window lays the page out in 640 CSS px.
ZOOMED = {"width": 640, "height": 400}
# Shapes the crawl never opens in a browser: downloads and the API (not pages).
_NOT_PAGES = re.compile(r"^/api/|/export|\.csv|\.pdf|/sign-out|/receipt\.pdf")


@pytest.fixture(scope="module")
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    template = request.getfixturevalue("sqlite_template")
    directory = tmp_path_factory.mktemp("a11y-world")
    path = directory / "world.sqlite"
    shutil.copy(template, path)
    built = build_world(directory / "plain", f"sqlite:///{path}", mirror=False)
    yield built
    built.dispose()


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[tuple[object, str]]:
    with served(world.app) as base, launched() as chromium:
        yield chromium, base


def _pages_by_role(world: World) -> dict[str, list[str]]:
    """One URL per HTML route, claimed by the first role it answers 200 for; every role's home."""
    urls = [u for u in route_urls(world.app, world.ids()) if not _NOT_PAGES.search(u)]
    claimed: dict[str, list[str]] = {role: ["/"] for role in ROLES}
    shapes: set[str] = {"/"}
    for role in ROLES:
        client = world.client(role)
        for url in urls:
            shape = re.sub(r"\d+", "N", url)
            if shape in shapes:
                continue
            response = client.get(url)
            if response.status_code == 200 and response.mimetype == "text/html":
                shapes.add(shape)
                claimed[role].append(url)
    return claimed


_SIDEWAYS = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


def _visit_all(browser: tuple[object, str], world: World) -> tuple[list[str], list[str], int]:
    chromium, base = browser
    ARTIFACTS.mkdir(exist_ok=True)
    violations: list[str] = []
    sideways: list[str] = []
    visited = 0
    for role, urls in _pages_by_role(world).items():
        context = chromium.new_context(  # type: ignore[attr-defined]
            base_url=base,
            viewport=PHONE,
            bypass_csp=True,  # axe is injected as a script
        )
        page = context.new_page()
        page.goto("/sign-in")
        page.fill("#username", role)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_load_state()
        for url in urls:
            page.set_viewport_size(PHONE)
            page.goto(url)
            visited += 1
            name = re.sub(r"[^A-Za-z0-9]+", "_", f"{role}{url}").strip("_")
            page.screenshot(path=str(ARTIFACTS / f"390px_{name}.png"))
            for size in (PHONE, ZOOMED):
                page.set_viewport_size(size)
                overflow = page.evaluate(_SIDEWAYS)
                if overflow > 0:
                    sideways.append(f"{url} as {role} at {size['width']} px: {overflow} px")
            violations += [f"{url} as {role}: {found}" for found in serious_violations(page)]
        context.close()
    return violations, sideways, visited


@pytest.fixture(scope="module")
def visited(browser, world) -> tuple[list[str], list[str], int]:
    return _visit_all(browser, world)


def test_the_crawl_reaches_every_role_and_many_pages(visited):
    assert visited[2] >= 25, "the accessibility crawl reached too few pages"


def test_axe_finds_no_serious_or_critical_violation_on_any_page(visited):
    assert not visited[0], "axe-core violations:\n" + "\n".join(visited[0])


def test_no_page_scrolls_sideways_on_a_phone_or_at_200_percent_zoom(visited):
    assert not visited[1], "pages wider than the screen:\n" + "\n".join(visited[1])


def _reached_only_by_posting(world: World) -> dict[str, int]:
    """A subject dr.li may unblind (randomized, not unblinded), one they may withdraw and one
    they may re-screen (a screen failure): the first whose page shows the form."""
    client = world.client(BLINDED["investigator"])
    found: dict[str, int] = {}
    for subject_id in world.ids()["subject"]:
        for step in ("unblind", "withdraw", "rescreen"):
            if step in found:
                continue
            page = client.get(f"/subjects/{subject_id}/{step}").get_data(as_text=True)
            action = f"/subjects/{subject_id}/{step}" + ("/confirm" if step == "unblind" else "")
            if f'method="post" action="{action}"' in page:
                found[step] = subject_id
    assert set(found) == {"unblind", "withdraw", "rescreen"}, found
    return found


_MAP_FORM = """(token) => {
  const form = document.createElement('form');
  form.method = 'post'; form.action = '/lists/import/map'; form.enctype = 'multipart/form-data';
  form.innerHTML = '<input type="hidden" name="csrf_token"><input name="name" value="clinicedc">'
    + '<input type="file" id="m-file" name="file"><button type="submit">Map</button>';
  form.querySelector('[name=csrf_token]').value = token;
  document.querySelector('main').append(form);
}"""
_NO_BROWSER_CHECKS = (
    "() => document.querySelectorAll('form').forEach(f => { f.noValidate = true; })"
)


def test_pages_reached_only_by_a_form_pass_axe_and_fit_the_phone(browser, world):
    """The pages a GET never shows: the emergency-unblinding confirmation and both of its
    refusals, the withdrawal and re-screening refusals, the destruction review, the list-mapping
    step and its refusal. Each is reached by filling and submitting the form in chromium (the
    browser's own required-field checks off, so the server's refusal page is what is shown)."""
    chromium, base = browser
    subject = _reached_only_by_posting(world)
    violations: list[str] = []
    sideways: list[str] = []
    checked: list[tuple[str, int | None]] = []

    def check(page, label: str, status_seen: int | None) -> None:  # type: ignore[no-untyped-def]
        page.wait_for_load_state()
        checked.append((label, status_seen))
        for size in (PHONE, ZOOMED):
            page.set_viewport_size(size)
            overflow = page.evaluate(_SIDEWAYS)
            if overflow > 0:
                sideways.append(f"{label} at {size['width']} px: {overflow} px")
        page.set_viewport_size(PHONE)
        violations.extend(f"{label}: {found}" for found in serious_violations(page))

    def submit(page, selector: str) -> int | None:  # type: ignore[no-untyped-def]
        page.evaluate(_NO_BROWSER_CHECKS)
        with page.expect_navigation() as navigation:
            page.click(selector)
        response = navigation.value
        return response.status if response else None

    def signed_in(username: str):  # type: ignore[no-untyped-def]
        context = chromium.new_context(base_url=base, viewport=PHONE, bypass_csp=True)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.goto("/sign-in")
        page.fill("#username", username)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_load_state()
        return context, page

    context, page = signed_in(BLINDED["investigator"])
    page.goto(f"/subjects/{subject['unblind']}/unblind")
    check(page, "unblinding request refused", submit(page, "form.unblind button[type=submit]"))
    page.select_option("#u-category", index=1)
    page.fill("#u-reason", "Anaphylaxis in the emergency department")
    check(page, "unblinding confirmation", submit(page, "form.unblind button[type=submit]"))
    # Neither ticked nor signed: refused before any password is checked, nothing unblinded.
    check(page, "unblinding confirmation refused", submit(page, "form.unblind button[type=submit]"))
    for step in ("withdraw", "rescreen"):
        page.goto(f"/subjects/{subject[step]}/{step}")
        check(page, f"{step} refused", submit(page, "main form[method=post] button[type=submit]"))
    context.close()

    context, page = signed_in(BLINDED["supply_manager"])
    page.goto("/supply/destruction")
    page.locator("input[name=kit_numbers]").first.check()
    page.fill("#reference", "DC-A11Y-REVIEW")
    check(page, "destruction review", submit(page, "form[method=get] button[type=submit]"))
    assert page.locator("#confirm-destruction").count() == 1
    context.close()

    context, page = signed_in(STATISTICIAN)
    page.goto("/lists/")
    # The world's list is locked (subjects randomized), so the page offers no import: the same
    # form as lists.html's "Import another layout" is put on the page to reach the mapping step.
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    page.evaluate(_MAP_FORM, token)
    mapping_form = "form[action$='/lists/import/map']"
    page.set_input_files(
        "#m-file", str(Path(__file__).parents[1] / "fixtures" / "lists" / "clinicedc_list.csv")
    )
    check(page, "list mapping step", submit(page, f"{mapping_form} button[type=submit]"))
    mapped_form = "form[action$='/lists/import/mapped']"
    check(page, "list mapping refused", submit(page, f"{mapped_form} button[type=submit]"))
    context.close()

    # Each page was reached: the refusals re-rendered (422), the steps shown (200).
    assert [status for _, status in checked] == [422, 200, 422, 422, 422, 200, 200, 422], checked
    assert not violations, "axe-core violations:\n" + "\n".join(violations)
    assert not sideways, "pages wider than the screen:\n" + "\n".join(sideways)
