"""The trail an inspector can trust (issue 11, README rule 12): signed checkpoints anchored
outside the database, exports anyone can verify with the public key, state tables covered.

Each tamper case is what an attacker with database access would do (raw SQL through the engine,
the append-only triggers disabled first), on SQLite and PostgreSQL; the assertions name the
problem code `audit verify` / `reconcile` must report, never wording.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select, text

from iwrs.audit import Actor
from tests.integration.test_unblinding import (  # noqa: F401 - built_trials is a fixture
    built_trials,
    events_since,
    fresh,
    head_seq,
    open_trial,
    unblind,
)

AUDITOR = "audit.zhao"


# --- an independent export verifier: cryptography, hashlib and json only (no iwrs code) --------

HASHED = [
    "seq",
    "occurred_at",
    "user_id",
    "username",
    "role",
    "action",
    "entity_type",
    "entity_id",
    "site_id",
    "subject_id",
    "before",
    "after",
    "reason",
    "prev_hash",
]


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def independent_verify_export(content: str, public_pem: bytes) -> tuple[bool, str]:
    """The procedure in the export header, for a JSON Lines export. Returns (ok, what failed)."""
    key = serialization.load_pem_public_key(public_pem)
    assert isinstance(key, Ed25519PublicKey)
    first, _, body = content.partition("\n")
    try:
        header = json.loads(first)
        signature = bytes.fromhex(header.pop("signature"))
        key.verify(signature, _canonical(header))
    except (ValueError, KeyError, AttributeError, InvalidSignature):
        return False, "signature"
    if hashlib.sha256(body.encode()).hexdigest() != header["events_sha256"]:
        return False, "digest"
    events = [json.loads(line) for line in body.splitlines()]
    if len(events) != header["count"]:
        return False, "count"
    seqs = [e["seq"] for e in events]
    if any(b <= a for a, b in zip(seqs, seqs[1:], strict=False)):
        return False, "order"
    if not header["filtered"]:
        if seqs != list(range(1, len(seqs) + 1)):
            return False, "gap"
        if [seqs[-1], events[-1]["hash"]] != [header["chain_head"][k] for k in ("seq", "hash")]:
            return False, "head"
    for index, event in enumerate(events):
        hashed = {n: event[n] for n in HASHED}
        if event.get("auth") is not None:  # how the actor authenticated, hashed when recorded
            hashed["auth"] = event["auth"]
        digest = hashlib.sha256(_canonical(hashed)).hexdigest()
        if digest != event["hash"]:
            return False, f"hash {event['seq']}"
        linked = index and event["seq"] == seqs[index - 1] + 1
        if linked and event["prev_hash"] != events[index - 1]["hash"]:
            return False, f"link {event['seq']}"
    for checkpoint in [header["checkpoint"], *header["checkpoints"]]:
        signed = {k: checkpoint[k] for k in ("format", "seq", "hash", "signed_at")}
        try:
            key.verify(bytes.fromhex(checkpoint["signature"]), _canonical(signed))
        except InvalidSignature:
            return False, "checkpoint"
    return True, "ok"


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def world(request, tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    request.getfixturevalue("built_trials")
    built = open_trial(tmp_path, database_url)
    with built.app.app_context():
        yield built
    built.dispose()


def engine() -> Any:
    from iwrs.db import engine as current_engine

    return current_engine()


def disable_guard(connection: Any) -> None:
    """What an attacker with database access does first: the append-only triggers go."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("ALTER TABLE audit_event DISABLE TRIGGER USER")
    else:
        connection.exec_driver_sql("DROP TRIGGER IF EXISTS audit_event_no_update")
        connection.exec_driver_sql("DROP TRIGGER IF EXISTS audit_event_no_delete")


def full_walk() -> tuple[Any, list[Any]]:
    from flask import current_app

    from iwrs.services import audit_views

    reader = current_app.extensions["iwrs.sessionmaker"]()
    try:
        return audit_views.walk(reader, full=True)
    finally:
        reader.close()


def codes() -> dict[str, list[int | None]]:
    found: dict[str, list[int | None]] = {}
    for problem in full_walk()[1]:
        found.setdefault(problem.code, []).append(problem.seq)
    return found


def cli(world: Any, *args: str) -> Any:  # type: ignore[no-untyped-def]
    return world.app.test_cli_runner().invoke(args=["iwrs", *args])


def more_events(count: int) -> None:
    from iwrs import audit
    from iwrs.audit import Actor
    from iwrs.db import transaction

    for number in range(count):
        with transaction() as session:
            audit.record(
                session,
                actor=Actor.system("test"),
                action="test.event",
                entity_type="test",
                entity_id=number,
            )


def checkpoint() -> Any:
    from iwrs.audit_anchor import take_checkpoint

    return take_checkpoint(occasion="test")


def rewind_head(connection: Any, seq: int) -> None:
    digest = (
        connection.execute(text("SELECT hash FROM audit_event WHERE seq = :s"), {"s": seq}).scalar()
        or "0" * 64
    )
    connection.execute(
        text("UPDATE audit_chain_head SET seq = :s, hash = :h WHERE id = 1"),
        {"s": seq, "h": digest},
    )


# --- the genuine trail --------------------------------------------------------------------------


def test_a_genuine_trail_verifies_and_reconciles(world):
    more_events(3)
    checkpoint()
    assert codes() == {}
    verified = cli(world, "audit", "verify")
    assert verified.exit_code == 0, verified.output
    reconciled = cli(world, "audit", "reconcile")
    assert reconciled.exit_code == 0, reconciled.output
    ledger = cli(world, "supply", "check-ledger")
    assert ledger.exit_code == 0, ledger.output


# --- truncation, wipe, re-creation: found against the witness -----------------------------------


def test_tail_truncation_with_head_rewind_is_found(world):
    more_events(2)
    signed = checkpoint()  # witnessed at this head
    last = signed.seq
    with engine().begin() as connection:
        disable_guard(connection)
        connection.execute(text("DELETE FROM audit_event WHERE seq > :s"), {"s": last - 5})
        rewind_head(connection, last - 5)
        connection.execute(text("DELETE FROM audit_anchor WHERE seq > :s"), {"s": last - 5})
    found = codes()
    assert found.get("truncated") == [last - 4], found  # "events last-4..last are missing"
    assert "checkpoint_deleted" in found and "chain" not in found
    result = cli(world, "audit", "verify")
    assert result.exit_code == 1 and "[truncated]" in result.output
    assert f"events {last - 4}-{last} are missing" in result.output


def test_full_wipe_with_head_reset_is_found(world):
    checkpoint()
    with engine().begin() as connection:
        disable_guard(connection)
        connection.execute(text("DELETE FROM audit_event"))
        connection.execute(text("DELETE FROM audit_anchor"))
        rewind_head(connection, 0)
    found = codes()
    assert found.get("truncated") == [1], found
    assert cli(world, "audit", "verify").exit_code == 1


def test_drop_and_recreate_of_the_table_is_found(world):
    """CREATE TABLE … AS / DROP / re-create: no trigger ever fires."""
    signed = checkpoint()
    keep = signed.seq - 3
    with engine().begin() as connection:
        connection.execute(
            text("CREATE TABLE audit_copy AS SELECT * FROM audit_event WHERE seq <= :s"),
            {"s": keep},
        )
        connection.exec_driver_sql("DROP TABLE audit_event")
        connection.exec_driver_sql("ALTER TABLE audit_copy RENAME TO audit_event")
        rewind_head(connection, keep)
        connection.execute(text("DELETE FROM audit_anchor WHERE seq > :s"), {"s": keep})
    found = codes()
    assert found.get("truncated") == [keep + 1], found


# --- checkpoints forged or deleted --------------------------------------------------------------


def test_a_forged_checkpoint_row_is_found(world):
    signed = checkpoint()
    with engine().begin() as connection:
        connection.execute(
            text("UPDATE audit_anchor SET seq = seq - 1 WHERE id = :i"), {"i": signed.id}
        )
    assert codes().get("checkpoint_forged") == [signed.seq - 1]


def test_a_deleted_checkpoint_row_the_witness_still_has_is_found(world):
    signed = checkpoint()
    with engine().begin() as connection:
        connection.execute(text("DELETE FROM audit_anchor WHERE id = :i"), {"i": signed.id})
    assert codes().get("checkpoint_deleted") == [signed.seq]


def test_a_forged_witness_line_is_found(world):
    from flask import current_app

    checkpoint()
    path = current_app.extensions["iwrs.settings"].witness_file()
    lines = path.read_text().splitlines()
    forged = {**json.loads(lines[-1]), "seq": 10**6}
    path.write_text("\n".join([*lines, json.dumps(forged)]) + "\n")
    assert "witness_forged" in codes()


def test_verify_now_refuses_a_forged_checkpoint_and_walks_from_event_1(world):
    from iwrs.models.audit import AuditCheckpoint
    from iwrs.services import audit_views

    auditor = world.actor(AUDITOR)
    first = audit_views.verify_now(actor=auditor)
    assert first.ok, first.problem
    with engine().begin() as connection:
        disable_guard(connection)
        connection.execute(text("UPDATE audit_event SET reason = 'edited' WHERE seq = 3"))
        # The forger moves the last good checkpoint to the head, past the edited event.
        connection.execute(
            text(
                "UPDATE audit_checkpoint SET seq = (SELECT seq FROM audit_chain_head), "
                "hash = (SELECT hash FROM audit_chain_head) WHERE id = :i"
            ),
            {"i": first.id},
        )
    result = audit_views.verify_now(actor=auditor)
    assert not result.ok and result.seq == 2  # walked from event 1, stopped before event 3
    assert "[verification_forged]" in result.problem and "[chain]" in result.problem
    page = world.client(AUDITOR).get("/audit/").get_data(as_text=True)
    assert "Verification FAILED" in page
    assert fresh().get(AuditCheckpoint, first.id) is not None


def test_an_event_altered_after_it_was_verified_is_found_by_the_scheduled_full_walk(world):
    from iwrs.services import audit_views

    auditor = world.actor(AUDITOR)
    assert audit_views.verify_now(actor=auditor).ok
    with engine().begin() as connection:
        disable_guard(connection)
        connection.execute(text("UPDATE audit_event SET reason = 'edited' WHERE seq = 4"))
    assert codes().get("chain") == [4]
    client = world.client(AUDITOR)
    assert "Last full walk (scheduled): never run" in client.get("/audit/").get_data(as_text=True)
    result = cli(world, "audit", "verify", "--record")
    assert result.exit_code == 1 and "[chain]" in result.output
    page = client.get("/audit/").get_data(as_text=True)
    assert "Last full walk (scheduled):" in page and "FAILED up to event 3" in page


def test_a_checkpoint_is_taken_every_n_events_and_every_m_minutes(world):
    from datetime import timedelta

    from flask import current_app
    from sqlalchemy import func

    from iwrs.models.audit import AuditAnchor

    settings = current_app.extensions["iwrs.settings"]
    settings.checkpoint_every_events, settings.checkpoint_every = 4, timedelta(minutes=30)
    checkpoint()

    def anchors() -> list[int]:
        return list(fresh().scalars(select(AuditAnchor.seq).order_by(AuditAnchor.id)))

    before = anchors()
    more_events(3)
    assert anchors() == before  # 3 events, no time passed: not due
    more_events(1)
    assert anchors() == [*before, before[-1] + 4]
    world.clock.advance(minutes=31)
    more_events(1)
    assert anchors()[-1] == before[-1] + 5
    witness = settings.witness_file().read_text().splitlines()
    assert [json.loads(x)["seq"] for x in witness][-2:] == anchors()[-2:]
    assert fresh().scalar(select(func.count()).select_from(AuditAnchor)) == len(anchors())


def test_every_notification_carries_a_signed_head_that_covers_the_unblinding(world):
    from iwrs.audit import Actor
    from iwrs.audit_anchor import checkpoint_message, public_key
    from iwrs.models.unblinding import Notification
    from iwrs.worker import run_once

    unblind(world, "dr.li", "R1")
    (event,) = [e for e in events_since(0) if e.action == "subject.unblinded"]
    assert run_once("notify", None, Actor.system("test")).summary["sent"] == 1
    (note,) = fresh().scalars(select(Notification)).all()
    record = json.loads(note.body.split("Signed audit checkpoint: ", 1)[1])
    signed = checkpoint_message(record["seq"], record["hash"], record["signed_at"])
    public_key().verify(bytes.fromhex(record["signature"]), _canonical(signed))
    assert record["seq"] >= event.seq


# --- state tables covered -----------------------------------------------------------------------


def _reconcile() -> set[tuple[str, str]]:
    from iwrs.services import reconcile

    fresh()  # a snapshot after the edit
    return {(u.table, u.field) for u in reconcile.reconcile(actor=Actor.system("test"))}


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (
            "UPDATE app_user SET role = 'unblinded_statistician' WHERE username = 'audit.zhao'",
            ("app_user", "role"),
        ),
        ("UPDATE app_user SET active = false WHERE username = 'dr.li'", ("app_user", "active")),
        (
            "DELETE FROM user_site WHERE user_id = (SELECT id FROM app_user "
            "WHERE username = 'dr.li')",
            ("app_user", "sites"),
        ),
        (
            "UPDATE subject SET status = 'withdrawn' WHERE id = "
            "(SELECT MIN(subject_id) FROM randomization)",
            ("subject", "status"),
        ),
        (
            "UPDATE randomization SET randomization_number = 'R-999' WHERE id = "
            "(SELECT MIN(id) FROM randomization)",
            ("randomization", "randomization_number"),
        ),
        (
            "UPDATE kit SET state = 'damaged' WHERE id = (SELECT MIN(id) FROM kit "
            "WHERE state = 'available')",
            ("kit", "state"),
        ),
        (  # a place the database allows (ck_kit_place_kind refuses an unknown one) but wrong
            "UPDATE kit SET place_kind = 'destroyed' WHERE id = (SELECT MIN(id) FROM kit)",
            ("kit", "state"),
        ),
    ],
    ids=["user-role", "user-active", "user-sites", "subject", "randomization", "kit", "kit-place"],
)
def test_reconcile_reports_a_direct_edit_of_a_state_table(world, statement, expected):
    assert _reconcile() == set()
    with engine().begin() as connection:
        connection.execute(text(statement))
    assert expected in _reconcile()
    result = cli(world, "audit", "reconcile")
    assert result.exit_code == 1 and "UNEXPLAINED" in result.output
    assert "Traceback" not in result.output


def test_reconcile_reports_an_unblinding_edited_or_a_user_inserted_behind_the_trail(world):
    unblind(world, "dr.li", "R1")
    with engine().begin() as connection:
        connection.execute(text("UPDATE unblinding SET category = 'other'"))
        connection.execute(
            text(
                "INSERT INTO app_user (username, full_name, email, role, password_hash, active, "
                "failed_sign_ins, created_at, session_version) SELECT 'mallory', 'M', NULL, "
                "role, password_hash, active, 0, created_at, 1 FROM app_user "
                "WHERE username = 'audit.zhao'"
            )
        )
    found = _reconcile()
    assert ("unblinding", "category") in found and ("app_user", "row") in found


def test_check_ledger_reports_a_tampered_kit_row_one_line_each_and_never_crashes(world):
    with engine().begin() as connection:
        connection.execute(
            text("UPDATE kit SET place_kind = 'destroyed' WHERE id = (SELECT MIN(id) FROM kit)")
        )
        connection.execute(
            text(
                "UPDATE kit SET state = 'dispensed' WHERE id = (SELECT MAX(id) FROM kit "
                "WHERE state = 'at_depot')"
            )
        )
    result = cli(world, "supply", "check-ledger")
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert sum(line.startswith("MISMATCH kit ") for line in result.output.splitlines()) == 2


# --- exports anyone can verify -------------------------------------------------------------------


def _public_pem(world: Any) -> bytes:
    return world.app.test_client().get("/audit/public-key").get_data()


def _export(world: Any, query: str = "") -> str:
    client = world.client(AUDITOR)
    response = client.get(f"/audit/export.jsonl{query}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def _check(world: Any, content: str | bytes) -> set[str]:
    from iwrs.audit_anchor import load_public_key
    from iwrs.audit_export import verify_export

    return {p.code for p in verify_export(content, load_public_key(_public_pem(world))).problems}


def _resign(content: str, key: Ed25519PrivateKey, **changes: Any) -> str:
    first, _, body = content.partition("\n")
    header = {k: v for k, v in json.loads(first).items() if k != "signature"}
    header.update(
        events_sha256=hashlib.sha256(body.encode()).hexdigest(),
        count=len(body.splitlines()),
        **changes,
    )
    header["signature"] = key.sign(_canonical(header)).hex()
    return json.dumps(header, sort_keys=True) + "\n" + body


def test_the_public_key_is_published_at_stable_urls_and_by_the_cli(world):
    pem = _public_pem(world)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    api = world.app.test_client().get("/api/v1/audit/public-key")
    assert api.status_code == 200 and api.get_data() == pem
    printed = cli(world, "audit", "public-key")
    assert printed.exit_code == 0 and printed.output.encode() == pem


def test_a_genuine_export_verifies_with_the_public_key_alone(world, tmp_path):
    content = _export(world)
    pem = _public_pem(world)
    assert independent_verify_export(content, pem) == (True, "ok")
    assert _check(world, content) == set()
    header = json.loads(content.partition("\n")[0])
    assert header["filtered"] is False and header["first_seq"] == 1
    assert header["checkpoint"]["seq"] == header["last_seq"] == header["chain_head"]["seq"]
    (tmp_path / "trail.jsonl").write_text(content)
    (tmp_path / "key.pem").write_bytes(pem)
    result = cli(
        world,
        "audit",
        "verify-export",
        str(tmp_path / "trail.jsonl"),
        "--public-key",
        str(tmp_path / "key.pem"),
    )
    assert result.exit_code == 0, result.output
    filtered = _export(world, "?action=subject.")
    assert json.loads(filtered.partition("\n")[0])["filtered"] is True
    assert independent_verify_export(filtered, pem) == (True, "ok")


def test_every_forged_export_fails(world):
    content = _export(world)
    pem = _public_pem(world)
    first, _, body = content.partition("\n")
    lines = body.splitlines()
    middle = len(lines) // 2
    altered = json.loads(lines[middle])
    altered["reason"] = "nothing happened"
    swapped = lines.copy()
    swapped[middle], swapped[middle + 1] = swapped[middle + 1], swapped[middle]
    appended = json.loads(lines[-1])
    appended.update(seq=appended["seq"] + 1, prev_hash=appended["hash"], action="subject.withdrawn")
    header = json.loads(first)
    attacker = Ed25519PrivateKey.generate()
    forgeries = {
        "altered event": (first, [*lines[:middle], json.dumps(altered), *lines[middle + 1 :]]),
        "dropped tail": (first, lines[:-5]),
        "swapped lines": (first, swapped),
        "appended event": (first, [*lines, json.dumps(appended, sort_keys=True)]),
        "changed header": (json.dumps({**header, "exported_by": "someone"}), lines),
        "empty fabricated": (json.dumps({**header, "count": 0, "signature": "00" * 64}), []),
    }
    expected = {
        "altered event": {"digest", "hash"},
        "dropped tail": {"digest", "count"},
        "swapped lines": {"digest", "order"},
        "appended event": {"digest", "count"},
        "changed header": {"signature"},
        "empty fabricated": {"signature"},
    }
    for name, (top, events) in forgeries.items():
        forged = top + "\n" + "".join(f"{x}\n" for x in events)
        assert expected[name] <= _check(world, forged), name
        assert independent_verify_export(forged, pem)[0] is False, name
    # Re-signed with another key after dropping the tail: the published key refuses it.
    resigned = _resign(first + "\n" + "".join(f"{x}\n" for x in lines[:-5]), attacker)
    assert _check(world, resigned) == {"signature"}
    assert independent_verify_export(resigned, pem) == (False, "signature")
    # A dropped tail passed off as a filtered export: still refused.
    assert "signature" in _check(world, _resign(content, attacker, filtered=True))


def test_a_forged_csv_export_fails(world):
    from iwrs.audit_export import package_files

    client = world.client(AUDITOR)
    package = client.get("/audit/export.csv").get_data()
    assert _check(world, package) == set()
    rest, manifest = package_files(package)
    head = "# " + json.dumps(json.loads(manifest), sort_keys=True)  # the earlier one-file form
    assert _check(world, head + "\n" + rest) == set()
    rows = rest.splitlines()
    assert _check(world, head + "\n" + "\n".join(rows[:-1]) + "\n") >= {"digest", "count"}
    edited = rest.replace("dr.li", "dr.xx", 1)
    assert "digest" in _check(world, head + "\n" + edited)
    assert _check(world, package.replace(b"PK", b"PX", 2)) in ({"package"}, {"header"})
    assert _check(world, package[:-40]) == {"package"}
