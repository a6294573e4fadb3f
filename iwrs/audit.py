"""Writing and verifying the tamper-evident audit trail (an HMAC-SHA256 hash chain).

Services call `record()`; the events are appended to the chain in the session's
before_commit hook, after every other row change of the transaction, so the chain head
row is locked last and held only through commit. A write transaction that changed rows
but recorded no event is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app, g, has_request_context
from sqlalchemy import event, inspect, select
from sqlalchemy.orm import Session

from iwrs import audit_anchor, clock
from iwrs.models.audit import AuditAnchor, AuditChainHead, AuditEvent
from iwrs.models.idempotency import IdempotencyKey
from iwrs.models.subjects import EligibilityDraft

GENESIS = "0" * 64
_PENDING = "iwrs_audit_pending"
_CHANGED = "iwrs_rows_changed"


class AuditMissing(RuntimeError):
    """A transaction changed rows without writing an audit event: a programming error."""


class AuditFieldTooLong(ValueError):
    """An audit field longer than its column: a programming error of the caller, which must
    build the field to fit (issue 12, finding 9). Raised by `record` before anything is
    written, so the use case's transaction rolls back whole instead of failing in the database
    (PostgreSQL) or storing an over-long value (SQLite). Decision: refused, never truncated: a
    cut entity id could name another entity."""

    def __init__(self, field: str, width: int, length: int) -> None:
        super().__init__(f"audit {field}: {length} characters, the column holds {width}")
        self.field, self.width, self.length = field, width, length


# The bounded text columns of an audit event, with their widths (read from the model).
BOUNDED_FIELDS = {
    name: AuditEvent.__table__.c[name].type.length
    for name in ("username", "role", "action", "entity_type", "entity_id", "auth")
}


@dataclass(frozen=True)
class Actor:
    """Who did it: a signed-in user, or the system for scheduled and set-up commands, and how
    they authenticated (`auth`): "session", "token:<id>", "password" (a sign-in attempt), "cli"
    or "system"; None only for events written before it was recorded."""

    user_id: int | None
    username: str
    role: str
    auth: str | None = None

    @classmethod
    def system(cls, name: str = "system", *, auth: str = "system") -> Actor:
        return cls(None, name, "system", auth)

    @classmethod
    def of(cls, user: Any) -> Actor:
        """The user as actor; in a request, by session or by the API token that authenticated
        it (set as `g.api_token_id` by the token loader); outside a request, the CLI."""
        if has_request_context():
            token_id = g.get("api_token_id")
            auth = f"token:{token_id}" if token_id is not None else "session"
        else:
            auth = "cli"
        return cls(user.id, user.username, str(user.role), auth)


def canonical_json(value: Any) -> str | None:
    """Stable JSON (sorted keys, no spaces) so the same content always hashes the same."""
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def record(
    session: Session,
    *,
    actor: Actor,
    action: str,
    entity_type: str,
    entity_id: object | None = None,
    before: Any = None,
    after: Any = None,
    reason: str | None = None,
    site_id: int | None = None,
    subject_id: int | None = None,
) -> None:
    """Queue one audit event on the transaction; it is chained and written at commit.

    Raises AuditFieldTooLong when username, role, action, entity_type, entity_id or auth is
    longer than its column (BOUNDED_FIELDS), naming the field; nothing is queued then."""
    fields = {
        "username": actor.username,
        "role": actor.role,
        "action": action,
        "entity_type": entity_type,
        "entity_id": None if entity_id is None else str(entity_id),
        "auth": actor.auth,
    }
    for name, width in BOUNDED_FIELDS.items():
        value = fields[name]
        if value is not None and width is not None and len(value) > width:
            raise AuditFieldTooLong(name, width, len(value))
    session.info.setdefault(_PENDING, []).append(
        {
            "occurred_at": clock.now(),
            "user_id": actor.user_id,
            "username": actor.username,
            "role": actor.role,
            "action": action,
            "entity_type": entity_type,
            "entity_id": fields["entity_id"],
            "site_id": site_id,
            "subject_id": subject_id,
            "before": canonical_json(before),
            "after": canonical_json(after),
            "reason": reason,
            "auth": actor.auth,
        }
    )


def event_message(fields: dict[str, Any]) -> bytes:
    """The exact bytes the hash covers: every field of the event but its own hash; `auth` only
    when it is set, so events written before it existed still verify."""
    moment: datetime = fields["occurred_at"]
    body = {
        "seq": fields["seq"],
        "occurred_at": clock.as_utc(moment).isoformat(timespec="microseconds"),
        "user_id": fields["user_id"],
        "username": fields["username"],
        "role": fields["role"],
        "action": fields["action"],
        "entity_type": fields["entity_type"],
        "entity_id": fields["entity_id"],
        "site_id": fields["site_id"],
        "subject_id": fields["subject_id"],
        "before": fields["before"],
        "after": fields["after"],
        "reason": fields["reason"],
        "prev_hash": fields["prev_hash"],
    }
    if fields.get("auth") is not None:
        body["auth"] = fields["auth"]
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_hash(fields: dict[str, Any]) -> str:
    """SHA-256 of the event (its previous event's hash included): anyone can recompute it, so an
    exported trail can be verified offline, without the server's key."""
    return hashlib.sha256(event_message(fields)).hexdigest()


def event_mac(key: bytes, digest: str) -> str:
    """HMAC-SHA256 of the event hash under the audit key (not in the database): only the server
    can make it, so rewriting the trail and recomputing every hash is still found."""
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def _audit_key() -> bytes:
    key = current_app.extensions["iwrs.settings"].audit_key
    if not key:
        raise RuntimeError("no audit key configured")
    return key


def _append_pending(session: Session) -> None:
    pending = session.info.pop(_PENDING, [])
    changed = session.info.pop(_CHANGED, False)
    if not pending:
        if changed:
            raise AuditMissing("a transaction changed rows without recording an audit event")
        return
    key = _audit_key()
    # Locked last, so concurrent use cases serialize on the chain only for their commit. The
    # last checkpoint is read in the same statement (one round trip): from the statement's
    # snapshot, taken before any wait for the lock, as a separate read before it would be.
    last = select(AuditAnchor).order_by(AuditAnchor.id.desc()).limit(1).subquery()
    head, last_seq, last_signed_at = session.execute(
        select(
            AuditChainHead,
            select(last.c.seq).scalar_subquery(),
            select(last.c.signed_at).scalar_subquery(),
        )
        .where(AuditChainHead.id == 1)
        .with_for_update(of=AuditChainHead)
        .execution_options(populate_existing=True)  # never a head read earlier in the session
    ).one()
    last_checkpoint = (last_seq, last_signed_at) if last_seq is not None else None
    seq, prev = head.seq, head.hash
    for fields in pending:
        seq += 1
        fields = {**fields, "seq": seq, "prev_hash": prev}
        digest = event_hash(fields)
        session.add(AuditEvent(**fields, hash=digest, mac=event_mac(key, digest)))
        prev = digest
    head.seq, head.hash = seq, prev
    session.flush()
    audit_anchor.note_due(session, last_checkpoint, seq)
    session.info.pop(_CHANGED, None)


# Rows a transaction may change without an audit event. The chain's own rows; and idempotency
# keys (iwrs.services.idempotency), a technical record of requests, not of the trial: a claim
# changes no trial state, and auditing it would put a second chain append (the global point of
# contention) on every signed POST. What a key settles is audited where it matters: a success in
# the same transaction as its use case's event, a stored refusal with its own event.
# And eligibility drafts (iwrs.services.eligibility_drafts, issue 15): the form as it is being
# typed, saved every few seconds, no decision and not the record; the assessment recorded from
# it is audited with every answer (and removes the draft in that audited transaction).
UNAUDITED_ROWS = (AuditEvent, AuditChainHead, AuditAnchor, IdempotencyKey, EligibilityDraft)


@event.listens_for(Session, "after_flush")
def _note_row_changes(session: Session, _context: Any) -> None:
    for obj in (*session.new, *session.dirty, *session.deleted):
        if not isinstance(obj, UNAUDITED_ROWS) and (
            obj in session.new
            or obj in session.deleted
            or (session.is_modified(obj) and not _bookkeeping_only(obj))
        ):
            session.info[_CHANGED] = True
            return


def _bookkeeping_only(obj: object) -> bool:
    """Whether an updated row changed only columns its model names as `bookkeeping_columns`
    (an outbox message's delivery claim): machinery of delivery, not a state of the trial, so
    it needs no audit event of its own (the delivery and a failure are audited)."""
    allowed = getattr(type(obj), "bookkeeping_columns", None)
    if not allowed:
        return False
    state = inspect(obj)
    changed = {a.key for a in state.attrs if a.history.has_changes()}
    if not changed <= allowed:
        return False
    # A model may bound its `state` column's exempt moves (`bookkeeping_states`): a move to any
    # other state is a change of the record, audited like any other.
    states = getattr(type(obj), "bookkeeping_states", None)
    if states is None or "state" not in changed:
        return True
    history = state.attrs.state.history
    return all(value in states for value in (*history.added, *history.deleted))


@event.listens_for(Session, "before_commit")
def _chain_on_commit(session: Session) -> None:
    session.flush()
    _append_pending(session)


@event.listens_for(Session, "after_rollback")
def _forget_on_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)
    session.info.pop(_CHANGED, None)


@dataclass(frozen=True)
class Verification:
    """The outcome of walking the chain: OK with the count, or the first bad event and what is
    wrong with it: `kind` is "missing" (a seq absent), "link" (its prev_hash is not the previous
    event's hash), "hash" (its content), "mac" (its MAC) or "head" (the chain head disagrees)."""

    ok: bool
    count: int
    first_bad_seq: int | None = None
    problem: str | None = None
    last_hash: str = GENESIS
    kind: str | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"OK: {self.count} audit events verified, chain intact"
        if self.first_bad_seq is None:
            return f"FAILED: {self.problem}"
        return f"FAILED at event {self.first_bad_seq}: {self.problem}"


def verify_events(
    key: bytes | None,
    events: Iterable[dict[str, Any]],
    *,
    head: tuple[int, str] | None = None,
    start: tuple[int, str] = (0, GENESIS),
) -> Verification:
    """Walk events in order of seq and report the first altered, removed or inserted one.

    With the key, each event's MAC is checked too; without it (offline) the hashes and links
    alone are checked. `start` is a verified (seq, hash) to continue from."""
    expected, prev, count = start[0] + 1, start[1], start[0]
    for fields in events:
        seq = fields["seq"]
        if seq != expected:
            return Verification(
                False,
                count,
                expected,
                f"event {expected} is missing (the next event is {seq})",
                prev,
                "missing",
            )
        if fields["prev_hash"] != prev:
            return Verification(
                False,
                count,
                seq,
                "its link to the previous event is broken "
                "(an event before it was removed, replaced or inserted)",
                prev,
                "link",
            )
        if event_hash(fields) != fields["hash"]:
            return Verification(
                False, count, seq, "its content does not match its hash (altered)", prev, "hash"
            )
        if key is not None and not hmac.compare_digest(
            event_mac(key, fields["hash"]), fields.get("mac") or ""
        ):
            return Verification(
                False,
                count,
                seq,
                "its MAC does not match (forged without the audit key)",
                prev,
                "mac",
            )
        prev, expected, count = fields["hash"], expected + 1, count + 1
    if head is not None:
        head_seq, head_hash = head
        if head_seq > count:
            return Verification(
                False,
                count,
                count + 1,
                f"event {count + 1} is missing: the chain head records {head_seq} events",
                prev,
                "missing",
            )
        if head_seq < count or head_hash != prev:
            return Verification(
                False,
                count,
                head_seq + 1 if head_seq < count else head_seq,
                "the chain head does not match the last event "
                "(an event was inserted after the head or the head was altered)",
                prev,
                "head",
            )
    return Verification(True, count, None, None, prev)


# The stored columns of an event, in the order exports and bulk loaders (bench/scale.py) write them.
EVENT_FIELDS = (
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
    "auth",
    "prev_hash",
    "hash",
    "mac",
)


def event_fields(row: AuditEvent) -> dict[str, Any]:
    return {name: getattr(row, name) for name in EVENT_FIELDS}


def verify_chain(session: Session) -> Verification:
    """Verify the whole trail in the database against the server's audit key and chain head."""
    head = session.get(AuditChainHead, 1)
    columns = [getattr(AuditEvent, name) for name in EVENT_FIELDS]
    # Plain rows streamed in batches (a server-side cursor on PostgreSQL): flat memory.
    result = session.execute(
        select(*columns).order_by(AuditEvent.seq).execution_options(yield_per=5000)
    )
    try:
        return verify_events(
            _audit_key(),
            (row._asdict() for row in result),
            head=(head.seq, head.hash) if head else (0, GENESIS),
        )
    finally:
        result.close()


def export_line(fields: dict[str, Any]) -> str:
    """One event as a JSON Lines record (everything but the server-side MAC)."""
    body = {name: fields[name] for name in EVENT_FIELDS if name != "mac"}
    body["occurred_at"] = clock.as_utc(fields["occurred_at"]).isoformat(timespec="microseconds")
    return json.dumps(body, sort_keys=True, ensure_ascii=False)
