"""The link between consecutive audit events is checked by each verifier (issue 14): the
server's walk (iwrs.audit.verify_chain, `iwrs audit verify`), the offline export check
(iwrs.audit_export.verify_export, `iwrs audit verify-export`) and the independent verifier of
tests/integration/test_audit_anchors.py.

The forgery breaks one link and nothing else: event k's prev_hash is not event k-1's hash, while
its own hash and MAC, every later event's hash, link and MAC, and the chain head are recomputed
with the audit key (an attacker who holds it). Only a link check can find it; the tests assert
the finding's kind and seq, never its wording."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from flask import current_app
from sqlalchemy import select, update

from iwrs import audit
from iwrs.models.audit import AuditChainHead, AuditEvent
from tests.integration import test_audit_anchors as anchors
from tests.integration import test_unblinding

built_trials = test_unblinding.built_trials  # fixtures, under the names the world fixture asks
world = anchors.world


def break_one_link(seq: int) -> None:
    """Point event `seq` at a hash that is not its predecessor's, and re-chain everything after
    it (hashes, MACs, links, head) so that this link is the only thing wrong."""
    key = current_app.extensions["iwrs.settings"].audit_key
    columns = [getattr(AuditEvent, name) for name in audit.EVENT_FIELDS]
    with anchors.engine().begin() as connection:
        anchors.disable_guard(connection)
        rows = connection.execute(
            select(*columns).where(AuditEvent.seq >= seq).order_by(AuditEvent.seq)
        ).all()
        prev = hashlib.sha256(b"not the previous event").hexdigest()
        for row in rows:
            fields = {**row._asdict(), "prev_hash": prev}
            fields["hash"] = audit.event_hash(fields)
            connection.execute(
                update(AuditEvent)
                .where(AuditEvent.seq == fields["seq"])
                .values(
                    prev_hash=prev, hash=fields["hash"], mac=audit.event_mac(key, fields["hash"])
                )
            )
            prev = fields["hash"]
        connection.execute(update(AuditChainHead).where(AuditChainHead.id == 1).values(hash=prev))


def middle_seq() -> int:
    last = test_unblinding.head_seq()
    assert last > 4
    return last // 2


def test_the_server_finds_a_broken_link_and_only_there(world):
    seq = middle_seq()
    assert audit.verify_chain(test_unblinding.fresh()).ok
    break_one_link(seq)
    found = audit.verify_chain(test_unblinding.fresh())
    assert (found.ok, found.kind, found.first_bad_seq) == (False, "link", seq)
    walked, problems = anchors.full_walk()
    assert (walked.kind, walked.first_bad_seq) == ("link", seq)
    assert ("chain", seq) in {(p.code, p.seq) for p in problems}
    result = anchors.cli(world, "audit", "verify")
    assert result.exit_code == 1, result.output


def test_the_export_checks_find_a_broken_link(world, tmp_path: Path):
    seq = middle_seq()
    break_one_link(seq)
    content = anchors._export(world)
    header = json.loads(content.partition("\n")[0])
    assert header["filtered"] is False and header["last_seq"] > seq
    from iwrs.audit_anchor import load_public_key
    from iwrs.audit_export import verify_export

    pem = anchors._public_pem(world)
    check = verify_export(content, load_public_key(pem))
    assert ("link", seq) in {(p.code, p.seq) for p in check.problems}
    assert "hash" not in {p.code for p in check.problems}, "only the link is wrong"
    assert anchors.independent_verify_export(content, pem) == (False, f"link {seq}")
    (tmp_path / "trail.jsonl").write_text(content)
    (tmp_path / "key.pem").write_bytes(pem)
    result = anchors.cli(
        world,
        "audit",
        "verify-export",
        str(tmp_path / "trail.jsonl"),
        "--public-key",
        str(tmp_path / "key.pem"),
    )
    assert result.exit_code == 1, result.output
