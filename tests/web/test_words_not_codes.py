"""Pages speak words, not internal codes (issue 15, problems 7 and 8).

Every role crawls the main pages (each page shape once, from every GET route and the links on
the pages, tests/web/blind_world.py) and three refusals are provoked on purpose (a kit number
left empty, an unblinding category that does not exist, an FVC that is not a number): no text a
person reads may hold a field or rule code ("kit_number:", "(site_scope)", "attest_I1"), a
stratum key ("disease=RA"), or a date written YYYY-MM-DD. The codes stay where tools read them:
`data-field` / `data-rule` attributes and the API's problem+json, which this test does not read.
The raw record of an audit event (its before/after JSON in <pre>) is the auditor's evidence and
is shown as recorded.
"""

from __future__ import annotations

import html as html_lib
import re
from collections import deque

import pytest

from iwrs.web.words import in_words
from tests.conftest import csrf_from
from tests.web.blind_world import (
    BLINDED,
    STATISTICIAN,
    World,
    _same_site,
    route_urls,
)

CODES = {
    "a field code opening a message": re.compile(r"\b[a-z][a-z0-9]*_[a-z0-9_]+:"),
    "a rule code in brackets": re.compile(r"\([a-z]+_[a-z_]+\)"),
    "an attestation's field name": re.compile(r"\battest_"),
    "a stratum key": re.compile(r"\b[a-z]+=[A-Za-z]"),
    "a choice list of codes": re.compile(r"one of [a-z]+(?:_[a-z]+)*, [a-z]+_"),
    "an ISO date": re.compile(r"\b\d{4}-\d{2}-\d{2}\b"),
}
_TAG = re.compile(r"<[^>]+>")
_UNREAD = re.compile(r"<pre\b.*?</pre>|<head\b.*?</head>|<select\b.*?</select>", re.S)


@pytest.fixture
def world(trial_world: World) -> World:
    return trial_world  # tests/web/conftest.py


def read_text(page: str) -> str:
    """What a person reads on a page: the text between the tags (option lists, the page head
    and raw records aside), entities decoded."""
    return html_lib.unescape(_TAG.sub(" ", _UNREAD.sub(" ", page)))


def codes_in(page: str) -> list[str]:
    text = read_text(page)
    return [f"{what}: {m.group(0)!r}" for what, rx in CODES.items() for m in rx.finditer(text)]


def _pattern(url: str) -> str:
    return re.sub(r"\d+", "N", url.split("?", 1)[0])


def _main_pages(world: World, username: str) -> dict[str, str]:
    """Each page shape the user can open once: every GET route (first row id), then the links
    found on the pages."""
    client = world.client(username)
    queue = deque(u for u in route_urls(world.app, world.ids()) if not u.startswith("/api/"))
    queue.appendleft("/")
    seen: set[str] = set()
    shapes: set[str] = set()
    tries: dict[str, int] = {}
    pages = {}
    while queue:
        url = queue.popleft()
        shape = _pattern(url)
        if url in seen or shape in shapes or tries.get(shape, 0) >= 2 or "export" in url:
            continue
        seen.add(url)
        tries[shape] = tries.get(shape, 0) + 1
        response = client.get(url)
        if response.status_code != 200 or response.mimetype != "text/html":
            continue
        shapes.add(shape)
        pages[url] = body = response.get_data(as_text=True)
        for href in re.findall(r'href="([^"]*)"', body):
            target = _same_site(html_lib.unescape(href))
            if target is not None and target not in seen:
                queue.append(target)
    return pages


@pytest.mark.parametrize("username", sorted({*BLINDED.values(), STATISTICIAN}))
def test_no_page_shows_a_person_an_internal_code(world, username):
    pages = _main_pages(world, username)
    assert len(pages) >= 5, "the crawl reached too little"
    found = [f"{url}: {code}" for url, page in pages.items() for code in codes_in(page)]
    assert not found, "\n".join(found)


def test_refusals_name_fields_and_choices_in_words(world):
    subject = world.subject_ids["S1"]
    investigator = world.client("dr.li")
    url = f"/subjects/{subject}/randomization"
    token = csrf_from(investigator.get(url).get_data(as_text=True))
    refused = investigator.post(
        f"/subjects/{subject}/unblind",
        data={"csrf_token": token, "category": "bogus", "reason": "x", "understood": "y"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert 'data-field="category" data-rule="choice"' in refused
    assert "serious adverse event" in _messages(refused)

    form = f"/subjects/{world.subject_ids['S5']}"
    token = csrf_from(investigator.get(form).get_data(as_text=True))
    eligibility = investigator.post(
        f"{form}/assessment", data={"csrf_token": token, "fvc_pct": "abc"}
    ).get_data(as_text=True)
    assert 'data-field="fvc_pct"' in eligibility

    pharmacist = world.client("ph.wang")
    board = pharmacist.get("/dispensing/").get_data(as_text=True)
    (dispensation,) = re.findall(r'action="/dispensing/confirm/(\d+)"', board)[:1] or ["0"]
    token = csrf_from(board)
    confirm = pharmacist.post(
        f"/dispensing/confirm/{dispensation}",
        data={"csrf_token": token, "kit_number": ""},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert 'data-field="kit_number"' in confirm
    for page in (refused, eligibility, confirm):
        assert not codes_in(page), codes_in(page)


def _flashes(page: str) -> str:
    return " ".join(re.findall(r'<p class="flash[^"]*"[^>]*>(.*?)</p>', page, re.S))


def _messages(page: str) -> str:
    """What a person reads of a refusal: the flashes and the messages beside the fields."""
    beside = re.findall(r'<span class="field-error"[^>]*>(.*?)</span>', page, re.S)
    return " ".join([_flashes(page), *beside])


@pytest.mark.parametrize(
    ("message", "field", "shown"),
    [
        ("kit_number: required", "kit_number", "Kit number: required"),
        (
            "category: must be one of sae, overdose, pregnancy, other",
            "category",
            "Reason category: must be one of serious adverse event, overdose, pregnancy, other",
        ),
        ("fvc_pct: 'abc' is not a number", "fvc_pct", "FVC: 'abc' is not a number"),
        ("attest_I1: 'x' is not yes or no", "attest_I1", "Inclusion I1: 'x' is not yes or no"),
        ("Stratum disease=RA of list L has no slot left", None, "Stratum (Underlying disease: RA)"),
        (
            "hrct_date: 2026-01-02 is after 2025-12-31",
            "hrct_date",
            "02-JAN-2026 is after 31-DEC-2025",
        ),
    ],
)
def test_a_message_names_fields_choices_strata_and_dates_in_words(world, message, field, shown):
    with world.app.app_context():  # the protocol's labels
        assert shown in in_words(message, field)
