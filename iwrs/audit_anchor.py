"""Signed checkpoints of the audit chain, anchored outside the database.

A checkpoint (an "anchor") is the chain head (seq, hash) at a time, signed with the Ed25519
audit signing key (a key file or IWRS_AUDIT_SIGNING_KEY, never the database). It is written to
the `audit_anchor` table and appended to the witness file (one JSON line, fsynced). Anyone with
the public key can check a checkpoint; a trail shorter than, or different from, any signed
checkpoint is found by `check_anchors`, so deleting the newest events and rewinding the head,
wiping the table, or re-creating it no longer verifies.

Checkpoints are taken after the commit of a transaction that brought the chain N events or M
minutes past the last one (settings), at every export and notification send, and by
`iwrs audit checkpoint` / `iwrs audit verify --record` from cron. Rotating the signing key is
not supported yet: checkpoints are checked with the current key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from flask import current_app, has_app_context
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from iwrs import clock
from iwrs.models.audit import AuditAnchor, AuditChainHead, AuditCheckpoint, AuditEvent

log = logging.getLogger("iwrs.audit")
CHECKPOINT_FORMAT = "iwrs-audit-checkpoint/1"
VERIFICATION_FORMAT = "iwrs-audit-verification/1"
_DUE = "iwrs_checkpoint_due"


def canonical(value: dict[str, Any]) -> bytes:
    """The exact bytes a signature covers: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _settings() -> Any:
    return current_app.extensions["iwrs.settings"]


def signing_key() -> Ed25519PrivateKey:
    """The server's Ed25519 signing key (its 32-byte seed comes from the settings)."""
    seed = _settings().audit_signing_key
    if not seed:
        raise RuntimeError("no audit signing key configured")
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key() -> Ed25519PublicKey:
    return signing_key().public_key()


def public_key_pem(key: Ed25519PublicKey | None = None) -> str:
    """The public key as PEM (SubjectPublicKeyInfo): all a verifier of exports needs."""
    return (
        (key or public_key())
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """Parse a PEM public key; ValueError when it is not an Ed25519 public key."""
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def key_id(key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of SHA-256 of the raw public key (names the key, proves nothing)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(message: dict[str, Any]) -> str:
    return signing_key().sign(canonical(message)).hex()


def signature_holds(key: Ed25519PublicKey, message: dict[str, Any], signature: object) -> bool:
    try:
        key.verify(bytes.fromhex(str(signature)), canonical(message))
    except (InvalidSignature, ValueError):
        return False
    return True


def _iso(moment: datetime) -> str:
    return clock.as_utc(moment).isoformat(timespec="microseconds")


def checkpoint_message(seq: int, digest: str, signed_at: datetime | str) -> dict[str, Any]:
    """What a checkpoint's signature covers: the format, the head (seq, hash) and the time."""
    when = signed_at if isinstance(signed_at, str) else _iso(signed_at)
    return {"format": CHECKPOINT_FORMAT, "seq": seq, "hash": digest, "signed_at": when}


def checkpoint_record(row: AuditAnchor) -> dict[str, Any]:
    """A checkpoint as a witness line, export header entry or notification footer."""
    return {
        **checkpoint_message(row.seq, row.hash, row.signed_at),
        "key_id": row.key_id,
        "signature": row.signature,
    }


def take_checkpoint(*, occasion: str) -> AuditAnchor:
    """Sign the committed chain head, store it, then append it to the witness file.

    A short transaction of its own: the head is read, not locked (a committed head always
    matches its events). Stored first, witnessed second: a witness line always has its row."""
    from iwrs.db import transaction

    with transaction() as session:
        row = store_checkpoint(session, occasion=occasion)
    append_to_witness(checkpoint_record(row))
    return row


def store_checkpoint(session: Session, *, occasion: str) -> AuditAnchor:
    """The checkpoint row of the head as `session` sees it (committed), added to `session`;
    the caller appends `checkpoint_record(row)` to the witness once it has committed."""
    now = clock.now()
    head = session.get(AuditChainHead, 1)
    seq, digest = (head.seq, head.hash) if head else (0, "0" * 64)
    row = AuditAnchor(
        seq=seq,
        hash=digest,
        signed_at=now,
        occasion=occasion[:16],
        key_id=key_id(public_key()),
        signature=sign(checkpoint_message(seq, digest, now)),
    )
    session.add(row)
    session.flush()
    return row


def append_to_witness(record: dict[str, Any]) -> None:
    """Append one JSON line to the witness file and fsync it (O_APPEND: never rewritten)."""
    path = _settings().witness_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def latest_checkpoint(session: Session) -> AuditAnchor | None:
    return session.scalars(select(AuditAnchor).order_by(AuditAnchor.id.desc()).limit(1)).first()


def note_due(session: Session, last: tuple[int, datetime] | None, new_seq: int) -> None:
    """Called by the chain writer with the last checkpoint (read before the head was locked):
    mark the session so a checkpoint is taken once it has committed."""
    settings = _settings()
    due = (
        last is None
        or new_seq - last[0] >= settings.checkpoint_every_events
        or clock.now() - clock.as_utc(last[1]) >= settings.checkpoint_every
    )
    if due:
        session.info[_DUE] = True


@event.listens_for(Session, "after_commit")
def _checkpoint_after_commit(session: Session) -> None:
    # After commit: the chain head lock is already released when the checkpoint is signed.
    if session.info.pop(_DUE, False) and has_app_context():
        try:
            take_checkpoint(occasion="interval")
        except Exception:  # the use case has committed: never report it failed for this
            log.exception("the interval checkpoint failed; the next due commit retries")


@event.listens_for(Session, "after_rollback")
def _forget_due(session: Session) -> None:
    session.info.pop(_DUE, None)


@dataclass(frozen=True)
class Problem:
    """One finding: `code` (stable, for tests and tooling), the event it concerns, the detail."""

    code: str
    seq: int | None
    detail: str

    def __str__(self) -> str:
        return f"[{self.code}] {self.detail}"


@dataclass(frozen=True)
class Signed:
    seq: int
    hash: str
    signed_at: str
    source: str  # "witness" or "database"


def read_witness(path: Path, key: Ed25519PublicKey) -> tuple[list[dict[str, Any]], list[Problem]]:
    """The witness file's checkpoints whose signature holds, and a problem for each other line."""
    good: list[dict[str, Any]] = []
    problems: list[Problem] = []
    if not path.exists():
        return good, problems
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)
                message = checkpoint_message(
                    int(record["seq"]), str(record["hash"]), str(record["signed_at"])
                )
                holds = signature_holds(key, message, record["signature"])
            except (ValueError, KeyError, TypeError):
                holds, record = False, {}
            if holds:
                good.append(record)
            else:
                problems.append(
                    Problem(
                        "witness_forged", None, f"witness line {number} is not a signed checkpoint"
                    )
                )
    return good, problems


def read_witness_now() -> tuple[list[dict[str, Any]], list[Problem]]:
    """The witness file as of now: read it before the database snapshot the check uses, so
    every witnessed checkpoint is in that snapshot (a witness line follows its row's commit)."""
    return read_witness(_settings().witness_file(), public_key())


def check_anchors(
    session: Session, witness: tuple[list[dict[str, Any]], list[Problem]] | None = None
) -> list[Problem]:
    """Every signed checkpoint (database and witness) against the events in the database.

    Reports a database checkpoint whose signature fails, a witness checkpoint missing from the
    database, events missing after the trail's end, and an event whose hash differs from the
    signed one at its seq."""
    key = public_key()
    problems: list[Problem] = []
    trusted: list[Signed] = []
    stored: set[tuple[int, str, str]] = set()
    for row in session.scalars(select(AuditAnchor).order_by(AuditAnchor.id)):
        message = checkpoint_message(row.seq, row.hash, row.signed_at)
        if not signature_holds(key, message, row.signature):
            problems.append(
                Problem(
                    "checkpoint_forged",
                    row.seq,
                    f"checkpoint row {row.id} (seq {row.seq}) does not carry a valid signature",
                )
            )
            continue
        stored.add((row.seq, row.hash, message["signed_at"]))
        trusted.append(Signed(row.seq, row.hash, message["signed_at"], "database"))
    witnessed, witness_problems = witness or read_witness_now()
    problems += witness_problems
    for record in witnessed:
        signed = Signed(record["seq"], record["hash"], record["signed_at"], "witness")
        trusted.append(signed)
        if (signed.seq, signed.hash, signed.signed_at) not in stored:
            problems.append(
                Problem(
                    "checkpoint_deleted",
                    signed.seq,
                    f"the witness checkpoint of {signed.signed_at} (seq {signed.seq}) has no "
                    "row in the database (deleted)",
                )
            )
    problems += _against_events(session, trusted)
    return problems


def _against_events(session: Session, trusted: list[Signed]) -> list[Problem]:
    last = session.scalar(select(func.max(AuditEvent.seq))) or 0
    problems: list[Problem] = []
    for source in ("witness", "database"):
        beyond = [s for s in trusted if s.source == source and s.seq > last]
        if beyond:
            newest = max(beyond, key=lambda s: s.seq)
            problems.append(
                Problem(
                    "truncated",
                    last + 1,
                    f"events {last + 1}-{newest.seq} are missing: the {source} checkpoint of "
                    f"{newest.signed_at} signed seq {newest.seq}",
                )
            )
    wanted = {s.seq: s for s in trusted if 0 < s.seq <= last}
    found: dict[int, str] = {}
    for batch in _batches(sorted(wanted), 500):
        rows = session.execute(
            select(AuditEvent.seq, AuditEvent.hash).where(AuditEvent.seq.in_(batch))
        )
        found.update((row.seq, row.hash) for row in rows)
    for seq in sorted(wanted):
        mismatched = [s for s in trusted if s.seq == seq and found.get(seq) != s.hash]
        if mismatched:
            signed = mismatched[0]
            what = "is missing" if seq not in found else "differs from"
            problems.append(
                Problem(
                    "rewritten",
                    seq,
                    f"event {seq} {what} the {signed.source} checkpoint of {signed.signed_at}",
                )
            )
    return problems


def _batches(values: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def verification_message(row: AuditCheckpoint) -> dict[str, Any]:
    """What a verification record's signature covers."""
    return {
        "format": VERIFICATION_FORMAT,
        "seq": row.seq,
        "hash": row.hash,
        "ok": bool(row.ok),
        "verified_at": _iso(row.verified_at),
        "full_walk": bool(row.full_walk),
    }


def verification_holds(row: AuditCheckpoint) -> bool:
    return signature_holds(public_key(), verification_message(row), row.signature or "")


def check_verifications(rows: Iterable[AuditCheckpoint]) -> list[Problem]:
    """A problem for each verification record whose signature fails (a forged "intact")."""
    return [
        Problem(
            "verification_forged",
            row.seq,
            f"verification record {row.id} (up to event {row.seq}) is not signed by the server",
        )
        for row in rows
        if not verification_holds(row)
    ]
