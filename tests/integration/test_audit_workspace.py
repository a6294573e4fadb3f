"""The statistician's and the auditor's workspaces (README rules 2 and 8).

Statistician: every view and export of arms is in the trail, with the statistician as actor, and
no page of theirs changes subject or kit data. Auditor: filters return exactly the matching
events, keyset paging walks the whole trail, "verify now" records checkpoints and names a
tampered event, exports verify offline (with the CLI, with iwrs.audit_export.verify_export and an
independent implementation of the documented procedure), and the auditor never sees an arm.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape
from sqlalchemy import text

from iwrs.audit import Actor
from iwrs.audit_export import package_files
from iwrs.clock import as_utc
from tests.conftest import csrf_from
from tests.integration.test_audit_anchors import independent_verify_export
from tests.integration.test_unblinding import (  # noqa: F401 - built_trials is a fixture
    ARM_CODES,
    START,
    assert_no_arm,
    built_trials,
    event_text,
    events_since,
    fresh,
    head_seq,
    open_trial,
    sealed_arm,
    unblind,
)

AUDITOR = "audit.zhao"
STATISTICIAN = "stat.liu"
EVENT_LINK = re.compile(r'href="/audit/events/(\d+)[?"]')
OLDER_LINK = re.compile(r'href="(/audit/\?[^"]*before=\d+[^"]*)"')


@pytest.fixture
def world(request, tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    request.getfixturevalue("built_trials")
    built = open_trial(tmp_path, database_url)
    with built.app.app_context():
        yield built
    built.dispose()


def rows_of(table: str) -> list[tuple[Any, ...]]:
    """Every row of a table, every column, straight from the database."""
    return [tuple(r) for r in fresh().execute(text(f"SELECT * FROM {table} ORDER BY id"))]  # noqa: S608


def screening_number(world, key: str) -> str:  # type: ignore[no-untyped-def]
    from iwrs.models.subjects import Subject

    return fresh().get(Subject, world.subjects[key]).screening_number


# --- the statistician ---------------------------------------------------------------------------


def test_every_statistician_view_and_export_is_audited_and_changes_nothing(world):
    unblind(world, "dr.li", "R1")  # an unblinded subject is listed as such, nothing else
    client = world.client(STATISTICIAN)
    token = world.token(STATISTICIAN)
    kits, subjects = rows_of("kit"), rows_of("subject")
    arms = {screening_number(world, k): sealed_arm(world.subjects[k]) for k in ("R1", "R2", "Z1")}
    pages = {}
    for url, action, headers in [
        ("/lists/", "list.status_viewed", {}),
        ("/lists/allocations", "allocations.viewed", {}),
        ("/lists/allocations.csv", "allocations.exported", {}),
        ("/lists/status.csv", "list_status.exported", {}),
        ("/api/v1/lists/status", "list.status_viewed", token),
    ]:
        seq = head_seq()
        response = client.get(url, headers=headers)
        assert response.status_code == 200, (url, response.get_data(as_text=True)[:300])
        recorded = [(e.action, e.username, e.role) for e in events_since(seq)]
        assert recorded == [(action, STATISTICIAN, "unblinded_statistician")], url
        pages[url] = response.get_data(as_text=True)

    # The allocation page and CSV show each subject's arm: the one sealed in its slot.
    html = pages["/lists/allocations"]
    for number, arm in arms.items():
        row = re.search(rf"<tr><td>[^<]*</td><td>{re.escape(number)}</td>.*?</tr>", html)
        # The arm, then the spaces that give every arm the same length (iwrs/padding.py).
        assert row and re.search(rf"<td>{arm} *</td>", row.group(0)), number
    table = list(csv.DictReader(io.StringIO(pages["/lists/allocations.csv"])))
    assert {r["screening_number"]: r["arm"] for r in table} == arms
    assert {r["screening_number"]: r["unblinded"] for r in table} == {
        n: str(n == screening_number(world, "R1")) for n in arms
    }
    status = list(csv.DictReader(io.StringIO(pages["/lists/status.csv"])))
    assert sum(int(r["used"]) for r in status) == 3
    assert sum(int(r.get(f"used_{a}") or 0) for r in status for a in ARM_CODES) == 3
    by_arm = json.loads(pages["/api/v1/lists/status"])["overall_by_arm"]
    assert by_arm == {a: list(arms.values()).count(a) for a in ARM_CODES}  # every arm
    # Nothing the statistician looked at changed a subject or a kit.
    assert rows_of("kit") == kits and rows_of("subject") == subjects


@pytest.mark.parametrize("username", ["dr.li", "ph.wang", "supply.chen", AUDITOR, "admin"])
def test_the_statistician_pages_are_refused_to_blinded_roles(world, username):
    client = world.client(username)
    token = world.token(username)
    seq = head_seq()
    for url in ("/lists/", "/lists/allocations", "/lists/allocations.csv", "/lists/status.csv"):
        response = client.get(url)
        assert response.status_code == 403, url
        assert_no_arm(response.get_data(as_text=True), names=False)
    response = client.get("/api/v1/lists/status", headers=token)
    assert response.status_code == 403
    assert_no_arm(response.get_data(as_text=True), names=False)
    # Each refused request is audited once (arm_access.refused, its rule), never with an arm.
    events = events_since(seq)
    assert [e.action for e in events] == ["arm_access.refused"] * 5
    assert {json.loads(e.after)["rule"] for e in events} == {"permission"}
    assert [e.auth for e in events][-1].startswith("token:")
    for event in events:
        assert event.username == username
        assert_no_arm(" ".join(str(getattr(event, c.key)) for c in event.__table__.columns))


# --- the auditor: filters and paging ------------------------------------------------------------


def _more_events(world) -> None:  # type: ignore[no-untyped-def]
    """Events on later days, of several users, roles and actions, enough for several pages."""
    from iwrs import audit
    from iwrs.db import transaction

    world.clock.advance(days=3)
    unblind(world, "dr.li", "R1")
    world.clock.advance(days=2)
    unblind(world, "dr.zhang", "Z1", category="other", reason="Suspected overdose at home")
    client = world.client(STATISTICIAN)
    client.get("/lists/allocations")
    client.get("/lists/status.csv")
    people = ["dr.li", "dr.zhang", "ph.wang", "ph.zhou", "supply.chen", STATISTICIAN]
    keys = list(world.subjects)
    for n in range(180):
        world.clock.advance(minutes=47)
        with transaction() as session:
            user = world.people[people[n % len(people)]]
            key = keys[n % len(keys)]
            audit.record(
                session,
                actor=world.actor(user.username),
                action=("test_a.one", "testXa.two", "kit.checked")[n % 3],
                entity_type="test",
                entity_id=n,
                site_id=world.sites["CN01" if key != "Z1" else "CN02"] if n % 5 else None,
                subject_id=world.subjects[key] if n % 2 else None,
                after={"n": n},
            )


def walk_service(filters: dict[str, str]) -> list[int]:
    from iwrs.services import audit_views

    parsed, seqs, before = audit_views.Filters.parse(filters), [], None
    while True:
        events, before, _ = audit_views.page(parsed, actor=Actor.system("test"), before=before)
        seqs += [e.seq for e in events]
        if before is None:
            return seqs


def walk_api(client, headers, filters: dict[str, str]) -> list[int]:  # type: ignore[no-untyped-def]
    seqs, before = [], None
    while True:
        query = {**filters, **({"before": before} if before else {})}
        response = client.get("/api/v1/audit/events", query_string=query, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        assert len(body["events"]) <= 50
        seqs += [e["seq"] for e in body["events"]]
        before = body["next_before"]
        if before is None:
            return seqs


def walk_web(client, filters: dict[str, str]) -> tuple[list[int], list[str]]:  # type: ignore[no-untyped-def]
    """Follow "Older events" from the first page; returns the seqs and every page's HTML."""
    response = client.get("/audit/", query_string=filters)
    seqs, pages = [], []
    while True:
        assert response.status_code == 200
        html = response.get_data(as_text=True)
        pages.append(html)
        seqs += [int(s) for s in EVENT_LINK.findall(html)]
        older = OLDER_LINK.search(html)
        if older is None:
            return seqs, pages
        response = client.get(older.group(1).replace("&amp;", "&"))


def sql_seqs(where: str, **params: Any) -> list[int]:
    return list(
        fresh().scalars(
            text(f"SELECT seq FROM audit_event WHERE {where} ORDER BY seq DESC"),  # noqa: S608
            params,
        )
    )


def sql_seqs_between(first: date, last: date) -> list[int]:
    rows = fresh().execute(text("SELECT seq, occurred_at FROM audit_event ORDER BY seq DESC"))
    found = []
    for seq, moment in rows:
        moment = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
        if first <= as_utc(moment).date() <= last:
            found.append(seq)
    return found


def test_each_filter_returns_exactly_the_matching_events(world):
    _more_events(world)
    client = world.client(AUDITOR)
    token = world.token(AUDITOR)
    r1 = screening_number(world, "R1")
    day2, day7 = START.date() + timedelta(days=1), START.date() + timedelta(days=7)
    cases = [
        ({"username": "dr.li"}, sql_seqs("username = :u", u="dr.li")),
        ({"username": "DR.LI"}, sql_seqs("username = :u", u="dr.li")),
        ({"role": "pharmacist"}, sql_seqs("role = :r", r="pharmacist")),
        ({"role": "system"}, sql_seqs("role = :r", r="system")),
        ({"action": "subject."}, sql_seqs("action LIKE :a", a="subject.%")),
        ({"action": "esign.signed"}, sql_seqs("action = :a", a="esign.signed")),
        ({"action": "list_"}, sql_seqs("action = :a", a="list_status.exported")),
        ({"action": "test_a"}, sql_seqs("action = :a", a="test_a.one")),
        (
            {"subject": r1},
            sql_seqs("subject_id = (SELECT id FROM subject WHERE screening_number = :n)", n=r1),
        ),
        ({"site": "CN02"}, sql_seqs("site_id = (SELECT id FROM site WHERE code = :c)", c="CN02")),
        (
            {"date_from": day2.isoformat(), "date_to": day7.isoformat()},
            sql_seqs_between(day2, day7),
        ),
        ({"date_from": day7.isoformat()}, sql_seqs_between(day7, date.max)),
        ({"date_to": START.date().isoformat()}, sql_seqs_between(date.min, START.date())),
        (
            {"role": "investigator", "site": "CN01", "action": "subject."},
            sql_seqs(
                "role = 'investigator' AND action LIKE 'subject.%' AND "
                "site_id = (SELECT id FROM site WHERE code = 'CN01')"
            ),
        ),
        ({"site": "XX99"}, []),
        ({"subject": "CN09-999"}, []),
    ]
    everything = sql_seqs("1 = 1")
    for filters, expected in cases:
        if filters not in ({"site": "XX99"}, {"subject": "CN09-999"}):
            assert expected and len(expected) < len(everything), filters  # a real selection
        assert walk_service(filters) == expected, filters
        assert walk_api(client, token, filters) == expected, filters
        assert walk_web(client, filters)[0] == expected, filters
    # A malformed date is refused, naming the field.
    response = client.get("/api/v1/audit/events", query_string={"date_from": "2026-13-01"})
    assert response.status_code == 422 and "date_from" in response.get_data(as_text=True)
    response = client.get("/audit/", query_string={"date_from": "yesterday"})
    assert response.status_code == 422 and "date_from" in response.get_data(as_text=True)


def test_paging_walks_the_whole_trail_without_duplicates_or_gaps(world):
    _more_events(world)
    client = world.client(AUDITOR)
    token = world.token(AUDITOR)
    head = head_seq()
    assert head > 150  # several pages
    whole = list(range(head, 0, -1))
    assert walk_service({}) == whole
    assert walk_api(client, token, {}) == whole
    seqs, pages = walk_web(client, {})
    assert seqs == whole and len(pages) == -(-head // 50)
    # Filtered paging keeps the filter on every page.
    expected = sql_seqs("action LIKE :a", a="kit.%")
    assert len(expected) > 50, len(expected)
    assert walk_web(client, {"action": "kit."})[0] == expected
    assert walk_api(client, token, {"action": "kit."}) == expected


def test_event_detail_shows_before_and_after(world):
    from iwrs.models.audit import AuditEvent

    client = world.client(AUDITOR)
    event = (
        fresh()
        .scalars(text("SELECT seq FROM audit_event WHERE action = 'site.activated' ORDER BY seq"))
        .first()
    )
    row = fresh().get(AuditEvent, event)
    assert row.before and row.after
    html = client.get(f"/audit/events/{row.seq}").get_data(as_text=True)
    for value in (row.before, row.after):
        pretty = json.dumps(json.loads(value), indent=2, ensure_ascii=False)
        assert str(escape(pretty)) in html
    assert "inactive" in html and row.action in html and row.hash in html
    assert row.username in html
    response = client.get(f"/audit/events/{head_seq() + 100}")
    assert response.status_code == 404


# --- the auditor: verification -------------------------------------------------------------------


def _verify_now(client) -> str:  # type: ignore[no-untyped-def]
    token = csrf_from(client.get("/audit/").get_data(as_text=True))
    response = client.post("/audit/verify", data={"csrf_token": token})
    assert response.status_code == 302
    return client.get("/audit/").get_data(as_text=True)


def _last_checkpoint() -> Any:
    from sqlalchemy import select

    from iwrs.models.audit import AuditCheckpoint

    return fresh().scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc())).first()


def _drop_append_only_guard(connection) -> None:  # type: ignore[no-untyped-def]
    """What an attacker with database access would do first (as in test_audit_trail.py)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("ALTER TABLE audit_event DISABLE TRIGGER USER")
    else:
        connection.exec_driver_sql("DROP TRIGGER audit_event_no_update")
        connection.exec_driver_sql("DROP TRIGGER audit_event_no_delete")


def test_verify_now_records_checkpoints_and_names_a_tampered_event(world):
    from iwrs.db import engine
    from iwrs.models.audit import AuditEvent

    client = world.client(AUDITOR)
    assert "Not verified yet" in client.get("/audit/").get_data(as_text=True)
    head = head_seq()
    page = _verify_now(client)
    checkpoint = _last_checkpoint()
    assert checkpoint.ok and checkpoint.seq == head and checkpoint.problem is None
    assert checkpoint.hash == fresh().get(AuditEvent, head).hash
    assert checkpoint.verified_by == AUDITOR
    assert f"Verified up to event {head} " in page
    (recorded,) = events_since(head)
    assert (recorded.action, recorded.username) == ("audit.verified", AUDITOR)
    assert json.loads(recorded.after) == {
        "ok": True,
        "up_to": head,
        "full_walk": False,
        "problems": [],
    }

    # The next verification continues from the checkpoint (the "audit.verified" event).
    page = _verify_now(client)
    assert _last_checkpoint().ok and _last_checkpoint().seq == head + 1
    assert f"Verified up to event {head + 1} " in page

    unblind(world, "dr.li", "R1")
    tampered = next(e.seq for e in events_since(head) if e.action == "subject.unblinded")
    with engine().begin() as connection:
        _drop_append_only_guard(connection)
        connection.execute(
            text("UPDATE audit_event SET reason = 'nothing to see' WHERE seq = :s"),
            {"s": tampered},
        )
    seq = head_seq()
    page = _verify_now(client)
    checkpoint = _last_checkpoint()
    assert not checkpoint.ok and checkpoint.seq == tampered - 1
    assert f"event {tampered}" in checkpoint.problem and "altered" in checkpoint.problem
    assert "Verification FAILED" in page and f"event {tampered}" in page
    (recorded,) = events_since(seq)
    assert recorded.action == "audit.verified"
    assert json.loads(recorded.after)["ok"] is False
    # It keeps failing (from the last good checkpoint) until the trail is repaired.
    _verify_now(client)
    assert not _last_checkpoint().ok and f"event {tampered}" in _last_checkpoint().problem


def test_verify_now_neither_blocks_nor_is_fooled_by_events_committed_while_it_runs(world):
    """Other use cases append while a verification walks the trail: they are not blocked (on
    SQLite a write transaction would hold the write lock through the whole walk), and what they
    commit is not mistaken for an event "after the head" (on PostgreSQL each statement sees what
    is committed when it starts)."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from iwrs import audit
    from iwrs.audit import Actor
    from iwrs.db import transaction
    from iwrs.services import audit_views

    appended: list[int] = []

    def append_meanwhile(state) -> None:  # type: ignore[no-untyped-def]
        froms = getattr(state.statement, "get_final_froms", list)()
        if appended or not any(getattr(t, "name", "") == "audit_event" for t in froms):
            return
        appended.append(1)
        with transaction() as other:
            audit.record(
                other, actor=Actor.system("meanwhile"), action="test.meanwhile", entity_type="test"
            )

    head = head_seq()
    event.listen(Session, "do_orm_execute", append_meanwhile)
    try:
        checkpoint = audit_views.verify_now(actor=world.actor(AUDITOR))
    finally:
        event.remove(Session, "do_orm_execute", append_meanwhile)
    assert appended, "the verification never read the events"
    assert checkpoint.ok, checkpoint.problem
    assert checkpoint.seq == head
    assert [e.action for e in events_since(head)] == ["test.meanwhile", "audit.verified"]
    # The next verification covers the event appended meanwhile.
    assert audit_views.verify_now(actor=world.actor(AUDITOR)).seq == head + 2


# --- the auditor: exports -----------------------------------------------------------------------


def independent_verify(content: str) -> tuple[bool, str]:
    """The documented procedure, followed with cryptography, hashlib and json only (no iwrs
    code), with the public key published at /audit/public-key. Returns (ok, what failed)."""
    return independent_verify_export(content, public_pem())


def public_pem() -> bytes:
    from flask import current_app

    return current_app.test_client().get("/audit/public-key").get_data()


def _altered(line: str, name: str) -> str:
    """The line with one field's value changed (types kept), re-serialized as exported."""
    event = json.loads(line)
    value = event[name]
    if name == "occurred_at":
        event[name] = (datetime.fromisoformat(value) + timedelta(seconds=1)).isoformat(
            timespec="microseconds"
        )
    elif name in ("hash", "prev_hash"):
        event[name] = ("1" if value[0] != "1" else "2") + value[1:]
    elif isinstance(value, bool) or value is None:
        event[name] = 7 if name.endswith("_id") else "x"
    elif isinstance(value, int):
        event[name] = value + 1
    else:
        event[name] = value + "x"
    return json.dumps(event, sort_keys=True, ensure_ascii=False)


def _cli_verify(app, content: str, path: Path) -> Any:  # type: ignore[no-untyped-def]
    path.write_text(content, encoding="utf-8")
    key = path.with_suffix(".pem")
    key.write_bytes(public_pem())
    return app.test_cli_runner().invoke(
        args=["iwrs", "audit", "verify-export", str(path), "--public-key", str(key)]
    )


def _verify(content: str) -> Any:  # type: ignore[no-untyped-def]
    from iwrs.audit_anchor import load_public_key
    from iwrs.audit_export import verify_export

    return verify_export(content, load_public_key(public_pem()))


def _codes(result: Any) -> set[str]:  # type: ignore[no-untyped-def]
    return {p.code for p in result.problems}


def test_the_filtered_jsonl_export_verifies_offline_and_any_change_is_found(world, tmp_path):
    from iwrs.audit_export import EXPORT_PROCEDURE

    unblind(world, "dr.li", "R1")
    client = world.client(AUDITOR)
    expected = sorted(sql_seqs("action LIKE :a", a="subject.%"))
    seq = head_seq()
    response = client.get("/audit/export.jsonl?action=subject.")
    assert response.status_code == 200 and response.mimetype == "application/x-ndjson"
    assert "attachment" in response.headers["Content-Disposition"]
    content = response.get_data(as_text=True)
    (recorded,) = events_since(seq)
    assert (recorded.action, recorded.username) == ("audit.exported", AUDITOR)
    after = json.loads(recorded.after)
    assert after["kind"] == "jsonl" and after["count"] == len(expected)
    assert after["filters"] == {"action": "subject."}

    lines = content.split("\n")[:-1]
    header = json.loads(lines[0])
    assert header["count"] == len(expected) and header["filters"] == {"action": "subject."}
    assert header["exported_by"] == AUDITOR and header["procedure"] == EXPORT_PROCEDURE
    assert header["chain_head"]["seq"] == seq and header["filtered"] is True
    assert [json.loads(x)["seq"] for x in lines[1:]] == expected
    assert all(json.loads(x)["action"].startswith("subject.") for x in lines[1:])
    assert "subject.unblinded" in {json.loads(x)["action"] for x in lines[1:]}

    # Verified three ways: the CLI, the library function and an independent implementation.
    result = _cli_verify(world.app, content, tmp_path / "export.jsonl")
    assert result.exit_code == 0, result.output
    assert f"OK: {len(expected)} exported events verified" in result.output
    verified = _verify(content)
    assert verified.ok and verified.count == len(expected), verified
    assert independent_verify(content) == (True, "ok")

    # Any one field of any one line altered: found by the signed digest and the event's hash.
    target = len(lines) // 2
    seq_at = json.loads(lines[target])["seq"]
    for name in json.loads(lines[target]):
        altered = lines.copy()
        altered[target] = _altered(lines[target], name)
        changed = "\n".join(altered) + "\n"
        result = _verify(changed)
        assert "digest" in _codes(result), (name, result)
        if name not in ("seq",):
            assert any(p.seq == seq_at for p in result.problems), (name, result)
        cli = _cli_verify(world.app, changed, tmp_path / "changed.jsonl")
        assert cli.exit_code == 1 and "[digest]" in cli.output, (name, cli.output)
        assert independent_verify(changed) == (False, "digest"), name

    # A line deleted (middle or last): found by the count and the digest.
    for gone in (target, len(lines) - 1):
        shorter = "\n".join(lines[:gone] + lines[gone + 1 :]) + "\n"
        assert {"count", "digest"} <= _codes(_verify(shorter))
        cli = _cli_verify(world.app, shorter, tmp_path / "shorter.jsonl")
        assert cli.exit_code == 1 and "FAILED" in cli.output
        assert independent_verify(shorter)[0] is False
    # The count fixed too: the header's signature no longer holds.
    header_fixed = json.dumps({**header, "count": header["count"] - 1}, sort_keys=True)
    shorter = "\n".join([header_fixed, *lines[1:target], *lines[target + 1 :]]) + "\n"
    assert _codes(_verify(shorter)) == {"signature"}
    assert independent_verify(shorter) == (False, "signature")


def test_the_whole_trail_exports_as_jsonl_and_csv_on_the_web_and_the_api(world, tmp_path):
    from iwrs.services.audit_views import CSV_COLUMNS

    unblind(world, "dr.li", "R1")
    client = world.client(AUDITOR)
    token = world.token(AUDITOR)

    seq = head_seq()
    jsonl = client.get("/api/v1/audit/export", headers=token)
    assert jsonl.status_code == 200 and jsonl.mimetype == "application/x-ndjson"
    content = jsonl.get_data(as_text=True)
    lines = content.split("\n")[:-1]
    assert [json.loads(x)["seq"] for x in lines[1:]] == list(range(1, seq + 1))
    assert json.loads(lines[0])["chain_head"] == {
        "seq": seq,
        "hash": json.loads(lines[-1])["hash"],
    }
    assert _verify(content).ok
    assert json.loads(lines[0])["filtered"] is False
    assert independent_verify(content) == (True, "ok")
    assert _cli_verify(world.app, content, tmp_path / "all.jsonl").exit_code == 0
    # Every link of the whole chain is checked: a changed prev_hash anywhere is found.
    assert [e.action for e in events_since(seq)] == ["audit.exported"]

    seq = head_seq()
    filtered = client.get(
        "/api/v1/audit/export", query_string={"action": "subject.", "site": "CN01"}, headers=token
    )
    filtered_lines = filtered.get_data(as_text=True).split("\n")[:-1]
    assert [json.loads(x)["seq"] for x in filtered_lines[1:]] == sorted(
        sql_seqs("action LIKE 'subject.%' AND site_id = (SELECT id FROM site WHERE code = 'CN01')")
    )
    assert _verify(filtered.get_data(as_text=True)).ok

    for response in (
        client.get("/audit/export.csv?action=subject."),
        client.get("/api/v1/audit/export?format=csv&action=subject.", headers=token),
    ):
        assert response.status_code == 200 and response.mimetype == "application/zip"
        body = response.get_data()
        rest, manifest = package_files(body)
        assert rest.split(",", 1)[0] == "seq"  # a spreadsheet's first line: the column names
        header = json.loads(manifest)
        rows = list(csv.DictReader(io.StringIO(rest)))
        assert tuple(rows[0].keys()) == CSV_COLUMNS
        assert [int(r["seq"]) for r in rows] == sorted(sql_seqs("action LIKE 'subject.%'"))
        assert header["count"] == len(rows) and header["filtered"] is True
        assert _verify(body).ok
        # The CSV carries the same events as the JSON Lines export (same hashes).
        by_seq = {json.loads(x)["seq"]: json.loads(x) for x in lines[1:]}
        for row in rows:
            assert row["hash"] == by_seq[int(row["seq"])]["hash"]
            assert row["username"] == by_seq[int(row["seq"])]["username"]
    exported = [e for e in events_since(seq) if e.action == "audit.exported"]
    assert [json.loads(e.after)["kind"] for e in exported] == ["jsonl", "csv", "csv"]
    assert all(e.username == AUDITOR for e in exported)


@pytest.mark.parametrize("username", ["dr.li", "ph.wang", "supply.chen", STATISTICIAN, "admin"])
def test_the_audit_workspace_is_refused_to_other_roles(world, username):
    client = world.client(username)
    token = world.token(username)
    seq = head_seq()
    for url in ("/audit/", "/audit/events/1", "/audit/export.jsonl", "/audit/export.csv"):
        assert client.get(url).status_code == 403, url
    assert client.post("/audit/verify").status_code in (400, 403)
    for url in ("/api/v1/audit/events", "/api/v1/audit/export"):
        assert client.get(url, headers=token).status_code == 403, url
    assert events_since(seq) == []


# --- the auditor is blinded ---------------------------------------------------------------------


def test_the_auditor_never_sees_an_arm_even_after_an_unblinding(world):
    unblind(world, "dr.li", "R1")
    unblind(world, "dr.zhang", "Z1")
    world.client(STATISTICIAN).get("/lists/allocations")  # arms were looked at: still not shown
    world.client(STATISTICIAN).get("/lists/allocations.csv")

    # Not in any audit event, whatever the column.
    for event in events_since(0):
        assert_no_arm(event_text(event), names=False)

    client = world.client(AUDITOR)
    token = world.token(AUDITOR)
    seqs, pages = walk_web(client, {})
    texts = list(pages)
    for seq in seqs:
        response = client.get(f"/audit/events/{seq}")
        assert response.status_code == 200
        texts.append(response.get_data(as_text=True))
    for url in (
        "/",
        "/unblinding/",
        "/sites/",
        "/audit/export.jsonl",
        "/audit/?action=subject.",
        f"/audit/?subject={screening_number(world, 'R1')}",
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        texts.append(response.get_data(as_text=True))
    texts += package_files(client.get("/audit/export.csv").get_data())
    for url in ("/api/v1/audit/events", "/api/v1/audit/export", "/api/v1/unblindings"):
        response = client.get(url, headers=token)
        assert response.status_code == 200, url
        texts.append(response.get_data(as_text=True))
    texts.append(_verify_now(client))
    for page in texts:
        assert_no_arm(page, names=False)
