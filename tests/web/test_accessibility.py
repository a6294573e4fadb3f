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

import os
import re
import shutil
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.conftest import PASSWORD
from tests.web.blind_world import BLINDED, STATISTICIAN, World, build_world, route_urls

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
# The roles, in the order a page is claimed by the first one that may see it.
ROLES = [STATISTICIAN, *BLINDED.values()]
PHONE = {"width": 390, "height": 844}
# 200 % zoom of a 1280 px window lays the page out in 640 CSS px.
ZOOMED = {"width": 640, "height": 400}
IMPACTS_REFUSED = {"serious", "critical"}
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
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed: .ci/run installs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    httpd = make_server("127.0.0.1", 0, world.app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--no-first-run"],
            )
            yield launched, f"http://127.0.0.1:{httpd.server_port}"
            launched.close()
    finally:
        httpd.shutdown()
        thread.join()


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


_AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact,
    nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))
  }));
}"""
_SIDEWAYS = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


def _visit_all(browser: tuple[object, str], world: World) -> tuple[list[str], list[str], int]:
    launched, base = browser
    axe_source = resources.files("axe_playwright_python").joinpath("axe.min.js").read_text()
    ARTIFACTS.mkdir(exist_ok=True)
    violations: list[str] = []
    sideways: list[str] = []
    visited = 0
    for role, urls in _pages_by_role(world).items():
        context = launched.new_context(  # type: ignore[attr-defined]
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
            page.add_script_tag(content=axe_source)
            for found in page.evaluate(_AXE_RUN):
                if found["impact"] in IMPACTS_REFUSED:
                    violations.append(f"{url} as {role}: {found['id']} {found['nodes']}")
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
