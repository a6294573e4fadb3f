"""What every browser test shares: the app served on a real port, Debian's chromium launched by
Playwright, and axe-core's verdict on a page.

    with served(app) as base, launched() as browser:
        page = browser.new_context(base_url=base).new_page()
        ...
        assert serious_violations(page) == []

Without chromium a browser test is skipped, except in CI (`CI=true`), where `.ci/run` installs it
and its absence fails the test (Playwright's own browser download is not possible here)."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGUMENTS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# axe-core's impacts a page may not have (issue 15: no serious or critical violation).
IMPACTS_REFUSED = ("serious", "critical")
AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact,
    nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))
  }));
}"""


@contextmanager
def served(app: Flask) -> Iterator[str]:
    """The app on 127.0.0.1 at a free port, threaded, until the block ends: its base URL."""
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join()


@contextmanager
def launched() -> Iterator[Any]:
    """Debian's chromium, headless, through Playwright (a `Browser`)."""
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed: .ci/run installs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGUMENTS)
        try:
            yield browser
        finally:
            browser.close()


def axe_findings(page: Any) -> list[dict[str, Any]]:
    """axe-core 4 (bundled by axe-playwright-python) run inside the page: every violation as
    {id, impact, nodes}. The page's context needs `bypass_csp=True` (axe is an inline script)."""
    source = resources.files("axe_playwright_python").joinpath("axe.min.js").read_text()
    page.add_script_tag(content=source)
    return list(page.evaluate(AXE_RUN))


def serious_violations(page: Any) -> list[str]:
    """The serious and critical violations on the page, as "rule: nodes" lines."""
    return [
        f"{found['id']}: {', '.join(found['nodes'])}"
        for found in axe_findings(page)
        if found["impact"] in IMPACTS_REFUSED
    ]
