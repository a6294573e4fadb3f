"""Idempotency keys for the signed POSTs that change trial state (issue 13), with Stripe's
semantics as the anchor: the first outcome of a key, success *or refusal*, is stored and every
retry of that key gets it back byte-for-byte; a key is never executed twice.

The rules, each decided here:
- **Scope.** A key belongs to the user who sent it (unique per user, not globally): two users'
  keys never meet, and a stored outcome is only ever replayed to its own user, so a replay shows
  nobody anything they were not shown the first time.
- **Binding.** First use binds the key to the operation, its subject and the SHA-256 digest of
  the canonical JSON of the request's meaningful fields (never the signature password). The same
  key with anything else is refused 422 `idempotency_key_reused`, whatever the key's state.
- **Claim.** First use claims the key (`in_progress`, `claimed_at`, claim number 1) in its
  own short committed transaction, before the signature is checked and before any trial row is
  locked. A claim that fails the signature (401) or meets a transient refusal (one that carries
  `Retry-After`, e.g. a lock timeout) or an unexpected error is released: nothing was decided,
  so the same key may be sent again (Stripe saves no result for requests that never executed);
  the key stays bound to its subject and request (state `released`).
- **Outcome.** A success is stored in the same transaction as the change it made (`settle`), so
  the change and its answer commit together or not at all. A refusal is stored in a short
  transaction right after its own transaction rolled back (or committed only its alert), with an
  audit event `<operation's event>_refused` naming the rule (the rule code and status only: never
  the message, which may name a stratum or site, and nothing that depends on an arm). Both store
  only if this request still holds the claim (a conditional update on the claim number); a request
  that lost its claim (its lease ran out and another request re-claimed the key) rolls back its
  change, and answers the key's stored outcome or `in_progress` — one key, one answer.
- **Concurrent duplicates.** Decision: a duplicate *waits* for the first request's outcome, up to
  `Settings.idempotency_wait` (IWRS_IDEMPOTENCY_WAIT_SECONDS, default 10 s), polling the key row
  (never holding a lock while it waits), and then replays it; a first request still running after
  that gets 409 `in_progress` with `Retry-After: 1`. Waiting spares well-behaved clients a retry
  loop in the common case (a double-click, a proxy retry) and costs one idle worker thread.
- **Lease.** A claim older than `Settings.idempotency_lease` (IWRS_IDEMPOTENCY_LEASE_SECONDS,
  default 120 s: above the worker timeout and the database's lock and idle-in-transaction
  timeouts) belongs to a request that crashed or was killed; the next request with the key
  re-claims it and executes. A re-claim never randomizes twice: the old request, if still alive,
  can no longer settle (its claim number is not the key's), and the use case's own rule holds
  (the subject row lock and "subject already randomized: the first result").
- **A new attempt after a refusal needs a new key** (the page form makes a fresh key on every
  render).
- **Retention.** A key is kept `Settings.idempotency_retention` (IWRS_IDEMPOTENCY_RETENTION_DAYS,
  default 30 days) after it was last claimed or settled, far longer than any client retries a
  request, then deleted by the worker's daily `idempotency_purge` job (`purge`); the same key
  sent after that is a new key.
- The key row is technical, not trial state: it is exempt from the audit guard
  (iwrs.audit.UNAUDITED_ROWS); what it settles is audited as said above.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from iwrs import audit, clock
from iwrs.audit import Actor
from iwrs.db import transaction
from iwrs.errors import Conflict, Forbidden, InvalidInput, IWRSError
from iwrs.models.idempotency import IdempotencyKey, KeyState
from iwrs.models.subjects import Subject

log = logging.getLogger("iwrs.idempotency")

REPLAYED_HEADER = "Idempotent-Replayed"
RETRY_AFTER_SECONDS = 1
KEY_LENGTH = (1, 100)
# The audit event that records a stored refusal, by operation.
REFUSED_EVENTS = {
    "randomize": "subject.randomization_refused",
    "dispense": "subject.dispensing_refused",
}
# Refusals that depend on the subject's arm: a dispensing refused for stock (only the subject's
# own treatment is out at the site) or a failed kit cross-check. Their audit event names the
# site, never the subject: the trail is read by blinded auditors and admins, who could otherwise
# group the subjects refused together as sharing an arm. (A randomization's stock refusal is
# decided on every arm, so it names its subject.)
ARM_DEPENDENT_REFUSALS = {
    "dispense": frozenset({"site_stock", "kit_check"}),
    "randomize": frozenset({"kit_check"}),
}
_POLL_SECONDS = (0.02, 0.5)  # first and longest pause between two looks at a busy key


@dataclass(frozen=True)
class Request:
    """What a key is bound to: the operation, its subject and the digest of the request."""

    operation: str
    subject_id: int | None
    digest: str


def request_of(operation: str, subject_id: int | None, fields: Mapping[str, Any]) -> Request:
    """The request to bind a key to; `fields` are the request's meaningful fields (JSON
    values; never a password). Digest: SHA-256 (hex) of their canonical JSON."""
    canonical = audit.canonical_json(
        {"operation": operation, "subject_id": subject_id, "fields": dict(fields)}
    )
    assert canonical is not None
    return Request(operation, subject_id, hashlib.sha256(canonical.encode()).hexdigest())


def check_key(key: str) -> str:
    """The key as given, 1-100 characters; InvalidInput (422, rule `length`) otherwise."""
    low, high = KEY_LENGTH
    if not low <= len(key) <= high:
        raise InvalidInput(
            f"idempotency_key: {low}-{high} characters", field="idempotency_key", rule="length"
        )
    return key


@dataclass(frozen=True)
class Answer:
    """What the client is told: the status and the exact body (canonical JSON), and whether it
    is a replay of a stored outcome (then the API adds `Idempotent-Replayed: true`)."""

    status: int
    body: str
    replayed: bool


@dataclass(frozen=True)
class _Claim:
    key_id: int
    number: int
    read: Any = None  # what `read(session)` returned in the claim's transaction


class _Busy:
    """The key is claimed by a request still within its lease."""


class ClaimLost(Exception):
    """This request's claim was taken over (its lease ran out): it must change nothing."""


class InProgress(Conflict):
    """Another request with the same key is still running (409, rule `in_progress`)."""

    def __init__(self) -> None:
        super().__init__(
            "idempotency_key: a request with this key is still in progress; retry later",
            field="idempotency_key",
            rule="in_progress",
        )
        self.headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}


class StoredRefusal(IWRSError):
    """A stored refusal replayed: the same status, title, message and problems as the first
    answer, so it renders to the same bytes, plus `Idempotent-Replayed: true`."""

    def __init__(self, stored: Mapping[str, Any]) -> None:
        super().__init__(stored["detail"], field=stored["field"], rule=stored["rule"])
        self.status, self.title = int(stored["status"]), str(stored["title"])
        self.errors: list[dict[str, str]] = list(stored["errors"])
        self.headers = {REPLAYED_HEADER: "true"}

    def problems(self) -> list[dict[str, str]]:
        return self.errors


def refusal_body(refusal: IWRSError) -> str:
    """A refusal as stored: every field the problem+json answer is made of."""
    body = audit.canonical_json(
        {
            "status": refusal.status,
            "title": refusal.title,
            "detail": refusal.message,
            "field": refusal.field,
            "rule": refusal.rule,
            "errors": refusal.problems(),
        }
    )
    assert body is not None
    return body


def replay(status: int, body: str) -> Answer:
    """A stored outcome answered again: a success as an Answer; a refusal raised again."""
    if status >= 400:
        raise StoredRefusal(json.loads(body))
    return Answer(status, body, replayed=True)


Perform = Callable[[Callable[[Session, int, str], None]], tuple[int, str]]


def run(
    *,
    actor: Actor,
    key: str,
    request: Request,
    verify: Callable[[Any], None],
    perform: Perform,
    read: Callable[[Session], Any] | None = None,
) -> Answer:
    """Run one keyed request exactly once: replay the key's stored outcome, or claim it (and
    `read(session)` in the claim's transaction: a plain read, e.g. the signer's password hash,
    so that it costs no transaction of its own), `verify(what read returned)` (the signature;
    after the claim committed, outside every transaction), then `perform(settle)`, which opens
    the use case's transaction and calls `settle(session, status, body)` in it on success, and
    returns (status, body) or raises the refusal. Raises InvalidInput
    `idempotency_key_reused`, InProgress, StoredRefusal, or the new refusal (then stored);
    Forbidden `signer` for the system actor (a key is scoped to a signed-in user)."""
    if actor.user_id is None:
        raise Forbidden("an idempotency key belongs to a signed-in user", rule="signer")
    check_key(key)
    for _ in range(3):  # a lost claim looks again; three times lost is answered in_progress
        found = _begin(actor, key, request, read)
        if not isinstance(found, _Claim):
            return replay(*found)
        try:
            verify(found.read)  # a wrong signature (401) is not an outcome: the key is given back
        except BaseException:
            _release(found)
            raise
        try:
            return _perform(actor, key, request, found, perform)
        except ClaimLost:
            continue
    raise InProgress()


def _perform(actor: Actor, key: str, request: Request, claim: _Claim, perform: Perform) -> Answer:
    try:
        status, body = perform(lambda session, s, b: _settle(session, claim, s, b))
    except ClaimLost:
        raise
    except IWRSError as refusal:
        if _transient(refusal):
            _release(claim)
            raise
        try:
            stored = _store_refusal(actor, key, request, claim, refusal)
        except Exception:  # noqa: BLE001 - the database failed: the refusal still answers
            log.exception("could not store the refusal under idempotency key %s", claim.key_id)
            _release(claim)  # nothing stored, so nothing may be replayed: the key is free
            raise refusal from None
        if not stored:
            raise ClaimLost() from None
        raise
    except BaseException:
        _release(claim)
        raise
    return Answer(status, body, replayed=False)


def _transient(refusal: IWRSError) -> bool:
    """A refusal that says "try again" (it carries Retry-After): not an outcome to store."""
    headers = getattr(refusal, "headers", None) or {}
    return getattr(refusal, "retry_after", None) is not None or "Retry-After" in headers


def _begin(
    actor: Actor, key: str, request: Request, read: Callable[[Session], Any] | None = None
) -> _Claim | tuple[int, str]:
    """Claim the key, or its stored (status, body); waits while another request holds it."""
    settings = current_app.extensions["iwrs.settings"]
    deadline = time.monotonic() + settings.idempotency_wait.total_seconds()
    pause, longest = _POLL_SECONDS
    while True:
        found = _claim_once(actor, key, request, settings.idempotency_lease, read)
        if not isinstance(found, _Busy):
            return found
        if time.monotonic() >= deadline:
            raise InProgress()
        time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
        pause = min(pause * 2, longest)


def _claim_once(
    actor: Actor, key: str, request: Request, lease: Any, read: Any = None
) -> _Claim | tuple[int, str] | _Busy:
    """One look at the key in one short transaction: claimed (then `read(session)` too),
    stored outcome, or busy.

    Decision: on PostgreSQL the claim commits without waiting for its WAL flush
    (`synchronous_commit = off` for this transaction alone: one disk flush less per keyed
    request). Safe because nothing is answered on the strength of a claim: the success that
    settles it, or the stored refusal, commits later, synchronously, and PostgreSQL's WAL is
    written in order, so it is never durable without the claim; a crash that loses a claim
    loses a request that had decided nothing (its key is free again, as after a release)."""
    assert actor.user_id is not None, "an idempotency key belongs to a signed-in user"
    try:
        with transaction() as session:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("SET LOCAL synchronous_commit TO OFF"))
            found = _claim_or_outcome(session, actor, key, request, lease)
            if isinstance(found, _Claim) and read is not None:
                found = _Claim(found.key_id, found.number, read(session))
            return found
    except IntegrityError:  # a concurrent first use inserted the key first (PostgreSQL)
        return _Busy()


def _claim_or_outcome(
    session: Session, actor: Actor, key: str, request: Request, lease: Any
) -> _Claim | tuple[int, str] | _Busy:
    now = clock.now()
    # A fresh key (the common case) is claimed by its insert alone; a key already there
    # (or inserted meanwhile: PostgreSQL waits for that transaction) is read and locked.
    new_id = session.execute(
        _insert_if_absent(session)
        .values(
            user_id=actor.user_id,
            key=key,
            operation=request.operation,
            subject_id=request.subject_id,
            request_digest=request.digest,
            state=KeyState.IN_PROGRESS,
            claim=1,
            claimed_at=now,
        )
        .returning(IdempotencyKey.id)
    ).scalar_one_or_none()
    if new_id is not None:
        return _Claim(new_id, 1)
    row = session.scalars(
        select(IdempotencyKey)
        .where(IdempotencyKey.user_id == actor.user_id, IdempotencyKey.key == key)
        .with_for_update()
    ).first()
    if row is None:  # gone again: cannot happen (keys are never deleted); look again
        return _Busy()
    _same_request(row, request)
    if row.state in (KeyState.SUCCEEDED, KeyState.REFUSED):
        assert row.status_code is not None and row.body is not None
        return row.status_code, row.body
    if row.state == KeyState.IN_PROGRESS:
        if now - row.claimed_at < lease:
            return _Busy()
        log.warning("idempotency key %s of user %s re-claimed (lease over)", key, row.user_id)
    row.state, row.claim, row.claimed_at = KeyState.IN_PROGRESS, row.claim + 1, now
    return _Claim(row.id, row.claim)


def _insert_if_absent(session: Session):  # type: ignore[no-untyped-def]
    """INSERT ... ON CONFLICT (user, key) DO NOTHING, on either backend."""
    if session.get_bind().dialect.name == "postgresql":
        return pg_insert(IdempotencyKey).on_conflict_do_nothing(index_elements=["user_id", "key"])
    return sqlite_insert(IdempotencyKey).on_conflict_do_nothing(index_elements=["user_id", "key"])


def _same_request(row: IdempotencyKey, request: Request) -> None:
    if (row.operation, row.subject_id, row.request_digest) != (
        request.operation,
        request.subject_id,
        request.digest,
    ):
        raise InvalidInput(
            "idempotency_key: already used for another request; send a new key",
            field="idempotency_key",
            rule="idempotency_key_reused",
        )


def _settle(session: Session, claim: _Claim, status: int, body: str) -> None:
    """Store a success in the use case's own transaction; ClaimLost if the claim was taken."""
    done = session.execute(
        update(IdempotencyKey)
        .where(
            IdempotencyKey.id == claim.key_id,
            IdempotencyKey.claim == claim.number,
            IdempotencyKey.state == KeyState.IN_PROGRESS,
        )
        .values(state=KeyState.SUCCEEDED, settled_at=clock.now(), status_code=status, body=body)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise ClaimLost()


def _store_refusal(
    actor: Actor, key: str, request: Request, claim: _Claim, refusal: IWRSError
) -> bool:
    """Store a refusal and its audit event (own transaction); False if the claim was lost."""
    with transaction() as session:
        done = session.execute(
            update(IdempotencyKey)
            .where(
                IdempotencyKey.id == claim.key_id,
                IdempotencyKey.claim == claim.number,
                IdempotencyKey.state == KeyState.IN_PROGRESS,
            )
            .values(
                state=KeyState.REFUSED,
                settled_at=clock.now(),
                status_code=refusal.status,
                body=refusal_body(refusal),
            )
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            return False
        # Linked to the subject only when it was the caller's to ask for (not a 404).
        subject = (
            session.get(Subject, request.subject_id)
            if request.subject_id is not None and refusal.status != 404
            else None
        )
        named = refusal.rule not in ARM_DEPENDENT_REFUSALS.get(request.operation, frozenset())
        audit.record(
            session,
            actor=actor,
            action=REFUSED_EVENTS.get(request.operation, f"{request.operation}.refused"),
            entity_type="subject" if named else "site",
            entity_id=request.subject_id if named else (subject.site_id if subject else None),
            site_id=subject.site_id if subject else None,
            subject_id=subject.id if subject and named else None,
            after={
                "rule": refusal.rule,
                "field": refusal.field,
                "status": refusal.status,
                "idempotency_key": key,
            },
        )
    return True


def purge(session: Session, *, before: datetime) -> int:
    """Delete the keys last claimed or settled before `before`, in the caller's transaction
    (the worker's idempotency_purge job, which audits the run); returns how many."""
    last_used = func.coalesce(IdempotencyKey.settled_at, IdempotencyKey.claimed_at)
    deleted = session.execute(delete(IdempotencyKey).where(last_used < before))
    return int(deleted.rowcount or 0)  # type: ignore[attr-defined]


def _release(claim: _Claim) -> None:
    """Give the key back (nothing was decided): `released`, claimed again at once by the next
    request with it (never deleted, so a claim number is never handed out twice); best
    effort: the lease covers a failure."""
    try:
        with transaction() as session:
            session.execute(
                update(IdempotencyKey)
                .where(
                    IdempotencyKey.id == claim.key_id,
                    IdempotencyKey.claim == claim.number,
                    IdempotencyKey.state == KeyState.IN_PROGRESS,
                )
                .values(state=KeyState.RELEASED)
            )
    except Exception:  # noqa: BLE001 - the original error must reach the client
        log.exception("could not release idempotency key %s", claim.key_id)
