"""No blinded role ever sees an arm (README rule 2), anywhere it can reach.

One world (tests/web/blind_world.py) whose arm codes are distinctive (ACTIVEQX, PLACEBOZK):
every blinded role crawls every page reachable from "/", every page and API GET for every row
id, and no status line, header or body may hold an arm code; the arm names may appear only in
the protocol's title (page title, header, footer). The unblinded statistician must see the
codes (else this test could not fail), and no audit event may hold an arm.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from sqlalchemy import String, Text, select

from tests.web.blind_world import (
    ARM_CODES,
    BLINDED,
    STATISTICIAN,
    World,
    build_world,
    crawl,
    fresh_databases,
)

# The arm names as the protocol spells them. "Placebo" also opens "Placebo-controlled" in the
# study title, and the blinded kit type reads "... or placebo" (lower case): neither is an arm.
ARM_NAMES = re.compile(r"\bGenakumab\b|\bPlacebo\b(?!-controlled)")
_CHROME = re.compile(r"<title>.*?</title>|<header\b.*?</header>|<footer\b.*?</footer>", re.S)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("blind-world")
    with fresh_databases(request, request.param, directory, 1) as (url,):
        built = build_world(directory / "plain", url, mirror=False)
        yield built
        built.dispose()


def _protocol_title(world: World) -> str:
    return world.app.extensions["iwrs.protocol"].title


def _without_protocol_title(text: str, title: str) -> str:
    """The text minus the page chrome and the study title (which names the study drug)."""
    text = _CHROME.sub("", text)
    for form in (title, title.replace('"', '\\"')):
        text = text.replace(form, "")
    return text


@pytest.mark.parametrize("role", sorted(BLINDED))
def test_a_blinded_role_never_sees_an_arm(world, role):
    fetched = crawl(world, BLINDED[role])
    assert sum(1 for f in fetched.values() if f.status == 200) >= 10, "the crawl reached too little"
    title = _protocol_title(world)
    permitted = world.may_see_arms(BLINDED[role])  # subjects this user emergency-unblinded
    for url in permitted:
        assert fetched[url].status == 200
        assert ARM_NAMES.search(_CHROME.sub("", fetched[url].body)), "the arm is not shown"
    found = []
    for url, response in sorted(fetched.items()):
        if url in permitted:
            continue
        everything = " ".join([url, *(f"{k}: {v}" for k, v in response.headers), response.body])
        codes = [code for code in ARM_CODES if code in everything]
        names = ARM_NAMES.findall(_without_protocol_title(response.body, title))
        names += ARM_NAMES.findall(" ".join(v for _, v in response.headers))
        if codes or names:
            found.append(f"{url} ({response.status}): {sorted(set(codes + names))}")
    assert not found, "a blinded role saw an arm:\n" + "\n".join(found)


def test_the_statistician_sees_the_arms(world):
    """The unblinded view shows the distinctive codes: the check above can find them."""
    client = world.client(STATISTICIAN)
    page = client.get("/lists/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert all(code in html for code in ARM_CODES)
    api = world.app.test_client().get(
        "/api/v1/lists/status", headers={"Authorization": f"Bearer {world.tokens[STATISTICIAN]}"}
    )
    assert api.status_code == 200
    assert all(code in api.get_data(as_text=True) for code in ARM_CODES)


def test_no_audit_event_names_an_arm(world):
    """The trail the auditor reviews and exports holds no arm code or arm name in any field."""
    from iwrs.db import read_session
    from iwrs.models.audit import AuditEvent

    columns = [c for c in AuditEvent.__table__.columns if isinstance(c.type, String | Text)]
    with world.app.app_context():
        rows = read_session().execute(select(AuditEvent.seq, *columns)).all()
    assert len(rows) > 50
    found = [
        (row[0], value)
        for row in rows
        for value in row[1:]
        if value and (any(code in value for code in ARM_CODES) or ARM_NAMES.search(value))
    ]
    assert not found, found


def test_no_table_holds_an_arm_in_clear(world):
    """A database dump shows no arm code anywhere (rule 1: arms are stored only sealed); the arm
    names appear only in the stored study title."""
    import iwrs.models  # noqa: F401 - every table registered on Base
    from iwrs.db import Base, read_session

    title = _protocol_title(world)
    found = []
    with world.app.app_context():
        session = read_session()
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, String | Text)]
            if not columns:
                continue
            for row in session.execute(select(*columns)):
                for column, value in zip(columns, row, strict=True):
                    if not value:
                        continue
                    if any(code in value for code in ARM_CODES) or ARM_NAMES.search(
                        value.replace(title, "")
                    ):
                        found.append(f"{table.name}.{column.name}: {value[:120]}")
    assert not found, found
