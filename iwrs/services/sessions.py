"""Use cases for signing in and out, server-side sessions, and re-entered passwords
(e-signatures and re-authentication). OWASP ASVS v4 §2 and §3; README rules 10 and 11.

Two counters, two locks (how README rule 10, "repeated failed logins lock the account", is kept
without letting a stranger deny an e-signature):
- failed password sign-ins, which anyone who knows a username can cause, are first throttled
  per source and per username (iwrs/web/throttle.py); only a sustained run of them
  (`sign_in_lockout_after`, default 20 in a row, no success between) locks *password sign-in*
  for `lockout_for`. Open sessions and tokens, which already proved the password, go on, and so
  do their e-signatures: a stranger can delay a sign-in, never stop an emergency unblinding.
- wrong e-signatures (and re-entered passwords) come only from someone already authenticated as
  the owner; `lockout_after` (default 5) in a row suggest a stolen session, so the session they
  came from ends and the *account* is locked for `lockout_for`: sign-in refused, every session
  and token suspended, nothing signs, until the lock runs out.

Argon2 runs outside any write transaction: the user is read, the password checked, and only
then is the outcome recorded in a short transaction (so a storm of sign-ins never holds the
SQLite write lock or a PostgreSQL row lock while hashing). A sign-in's Argon2 runs at low CPU
priority, a signed-in owner's re-entered password at normal priority (iwrs/auth.py,
`run_at_low_priority`): a storm of sign-ins yields the CPU to writes and e-signatures."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from flask import current_app, g, has_request_context
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from iwrs import audit, clock
from iwrs.audit import Actor
from iwrs.auth import hash_password, password_hasher, password_matches, token_digest
from iwrs.db import transaction
from iwrs.errors import AccountLocked, AuthenticationFailed, Forbidden, InvalidInput
from iwrs.models.users import ApiToken, User, UserSession

WRONG_CREDENTIALS = "unknown username or wrong password"
SIGNATURE = "esign.signature"


def _settings():  # type: ignore[no-untyped-def]
    return current_app.extensions["iwrs.settings"]


def session_digest(key: str) -> str:
    """The stored form of a session key (256 random bits, so a fast hash is enough)."""
    return token_digest(key)


@dataclass(frozen=True)
class SignIn:
    """A successful sign-in: the user and the key of the new server-side session (for the
    session cookie only; the database keeps its SHA-256)."""

    user: User
    session_key: str


@dataclass(frozen=True)
class _Seen:
    """What is read before the password check, outside any write transaction."""

    id: int
    password_hash: str
    active: bool
    temporary: bool
    locked_until: datetime | None
    sign_in_locked_until: datetime | None
    failed_signatures: int


def _read_user(*, username: str | None = None, user_id: int | None = None) -> _Seen | None:
    with current_app.extensions["iwrs.sessionmaker"]() as session:
        return read_signer(session, username=username, user_id=user_id)


def read_signer(
    session: Session, *, username: str | None = None, user_id: int | None = None
) -> _Seen | None:
    """What the password checks need of a user (by username or id), read in `session` in one
    statement, without a lock (no User object, so none of its relationships is loaded): for a
    caller that already has a short transaction open before the check (an idempotency claim),
    to pass to `confirm_signature(seen=...)`."""
    query = select(
        User.id,
        User.password_hash,
        User.active,
        User.password_temporary,
        User.locked_until,
        User.sign_in_locked_until,
        User.failed_signatures,
    ).where(User.username == username if username is not None else User.id == user_id)
    row = session.execute(query).one_or_none()
    return None if row is None else _Seen(*row)


def _locked(until: datetime | None) -> bool:
    return until is not None and until > clock.now()


def _lock_message(until: datetime, what: str) -> str:
    return f"this account's {what} is locked until {clock.utc_text(until)}"


def sign_in(*, username: str, password: str) -> SignIn:
    """Authenticate with a password and open a server-side session of `session_max`.

    Refusals: unknown user, inactive or wrong password (rule credentials, one message for all);
    account locked (rule lockout) or password sign-in locked after sustained failures (rule
    sign_in_lockout). Every attempt is audited."""
    username = username.strip().lower()
    seen = _read_user(username=username)
    attempt = Actor(seen.id if seen else None, username[:64] or "(blank)", "unknown", "password")
    if seen is not None and (_locked(seen.locked_until) or _locked(seen.sign_in_locked_until)):
        account = _locked(seen.locked_until)
        until = seen.locked_until if account else seen.sign_in_locked_until
        assert until is not None
        with transaction() as session:
            audit.record(
                session,
                actor=attempt,
                action="auth.sign_in_refused_locked",
                entity_type="user",
                entity_id=seen.id,
            )
        raise AccountLocked(
            _lock_message(until, "account" if account else "password sign-in"),
            rule="lockout" if account else "sign_in_lockout",
        )
    # Anonymous: Argon2id at low CPU priority (iwrs/auth.py), for known and unknown users alike.
    matches = password_matches(seen.password_hash if seen else None, password, low_priority=True)
    # A hash made with older Argon2 costs is upgraded now, while the password is at hand; the
    # hashing runs here, outside the write transaction, like the check.
    rehashed = (
        hash_password(password, low_priority=True)
        if matches and seen and password_hasher().check_needs_rehash(seen.password_hash)
        else None
    )
    with transaction() as session:
        user = session.get(User, seen.id, with_for_update=True) if seen else None
        if user is not None:
            attempt = Actor(user.id, attempt.username, str(user.role), "password")
        # A password changed between the check and now: the check no longer proves anything.
        stale = user is not None and seen is not None and user.password_hash != seen.password_hash
        if user is None or not user.active or not matches or stale:
            _count_sign_in_failure(session, user, attempt)
            failed = True
        else:
            failed = False
            key = secrets.token_urlsafe(32)
            now = clock.now()
            user.failed_sign_ins = 0
            user.sign_in_locked_until = None
            user.last_sign_in_at = now
            if rehashed is not None:
                user.password_hash = rehashed
            row = UserSession(
                user_id=user.id,
                key_sha256=session_digest(key),
                created_at=now,
                expires_at=now + _settings().session_max,
            )
            session.add(row)
            session.flush()
            audit.record(
                session,
                actor=attempt,
                action="auth.signed_in",
                entity_type="user",
                entity_id=user.id,
                after={
                    "session": row.id,
                    "expires_at": row.expires_at.isoformat(),
                    **({"password_rehashed": True} if rehashed is not None else {}),
                },
            )
    if failed:
        raise AuthenticationFailed(WRONG_CREDENTIALS, field="password", rule="credentials")
    assert user is not None
    return SignIn(user, key)


def _count_sign_in_failure(session: Session, user: User | None, attempt: Actor) -> None:
    settings = _settings()
    if user is not None and user.active:
        user.failed_sign_ins += 1
        if user.failed_sign_ins >= settings.sign_in_lockout_after:
            user.sign_in_locked_until = clock.now() + settings.lockout_for
            user.failed_sign_ins = 0
            audit.record(
                session,
                actor=attempt,
                action="user.sign_in_locked",
                entity_type="user",
                entity_id=user.id,
                after={"sign_in_locked_until": user.sign_in_locked_until.isoformat()},
            )
    audit.record(
        session,
        actor=attempt,
        action="auth.sign_in_failed",
        entity_type="user",
        entity_id=user.id if user else None,
    )


def sign_out(*, actor: Actor, session_id: int | None, why: str = "signed_out") -> None:
    """End the server-side session: its cookie, even copied elsewhere, no longer works. `why`:
    signed_out (audited auth.signed_out) or idle (the idle rule ended it: auth.session_idle)."""
    with transaction() as session:
        row = session.get(UserSession, session_id, with_for_update=True) if session_id else None
        if row is not None and row.user_id == actor.user_id and row.ended_at is None:
            row.ended_at, row.end_reason = clock.now(), why
        audit.record(
            session,
            actor=actor,
            action="auth.signed_out" if why == "signed_out" else f"auth.session_{why}",
            entity_type="user",
            entity_id=actor.user_id,
            after={"session": session_id},
        )


def end_all_sessions(session: Session, *, user_id: int, reason: str) -> None:
    """End every open session of the user inside the caller's transaction (password change or
    reset, deactivation); the caller's audit event records why."""
    session.execute(
        update(UserSession)
        .where(UserSession.user_id == user_id, UserSession.ended_at.is_(None))
        .values(ended_at=clock.now(), end_reason=reason)
    )


def revoke_all_tokens(session: Session, *, actor: Actor, user_id: int, reason: str) -> None:
    """Revoke every live API token of the user inside the caller's transaction, one audit
    event per token (a password change ends every credential derived from the old one)."""
    now = clock.now()
    rows = session.scalars(
        select(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
    )
    for row in rows:
        row.revoked_at = now
        audit.record(
            session,
            actor=actor,
            action="api_token.revoked",
            entity_type="api_token",
            entity_id=row.id,
            after={"revoked_at": now.isoformat()},
            reason=reason,
        )


def confirm_signature(*, signer_id: int | None, password: str, seen: _Seen | None = None) -> None:
    """Check an e-signature's re-entered password (21 CFR 11.200) with its own counter: the
    sign-in counter and sign-in lock never refuse it. A temporary password never signs (rule
    temporary_password). `seen`: the signer as `read_signer` read them moments ago in the
    caller's own short transaction (else read here)."""
    if signer_id is None:
        raise AuthenticationFailed(
            "an electronic signature needs a signed-in user", field="password", rule="signer"
        )
    confirm_password(user_id=signer_id, password=password, action=SIGNATURE, seen=seen)


def confirm_password(
    *, user_id: int, password: str, action: str, seen: _Seen | None = None
) -> None:
    """Check the signed-in owner's re-entered password (signature, password change, token
    minting). `lockout_after` wrong ones in a row end the session they came from and lock the
    account (rule lockout); a correct one clears the count. Argon2 runs outside any write
    transaction; the outcome is recorded in a short one. `seen`: as confirm_signature."""
    if not password:
        raise InvalidInput(
            "password: re-enter your password to sign", field="password", rule="required"
        )
    if seen is None or seen.id != user_id:
        seen = _read_user(user_id=user_id)
    if seen is None or not seen.active:
        raise AuthenticationFailed("the signer's account is not active", rule="signer")
    if action == SIGNATURE and seen.temporary:
        raise Forbidden(
            "password: a temporary password cannot sign; change your password first",
            field="password",
            rule="temporary_password",
        )
    if _locked(seen.locked_until):
        assert seen.locked_until is not None
        raise AccountLocked(_lock_message(seen.locked_until, "account"), rule="lockout")
    matches = password_matches(seen.password_hash, password)
    if matches and not seen.failed_signatures:
        # Nothing to record: a correct password with no earlier failure to clear changes no
        # row, so no write transaction (and no lock of the user row) is taken. A password
        # changed while this one was checked (milliseconds) is not looked for again: the
        # check proves the owner knew the password read a moment ago, as it would have an
        # instant earlier; the change itself ends every session and token of the user.
        return
    with transaction() as session:
        user = session.get(User, user_id, with_for_update=True)
        assert user is not None
        if matches and user.password_hash == seen.password_hash:
            if user.failed_signatures:
                # A correct signature clears earlier failures: that is a change to audit.
                audit.record(
                    session,
                    actor=Actor.of(user),
                    action="auth.failures_cleared",
                    entity_type="user",
                    entity_id=user.id,
                    before={"failed_signatures": user.failed_signatures},
                    after={"failed_signatures": 0},
                )
                user.failed_signatures = 0
            return
        error = _count_signature_failure(session, user, action)
    raise error


def _count_signature_failure(session: Session, user: User, action: str) -> AuthenticationFailed:
    settings = _settings()
    actor = Actor.of(user)
    user.failed_signatures += 1
    audit.record(
        session, actor=actor, action=f"{action}_failed", entity_type="user", entity_id=user.id
    )
    if user.failed_signatures < settings.lockout_after:
        return AuthenticationFailed(
            "password: the password is wrong; nothing was signed",
            field="password",
            rule="credentials",
        )
    user.failed_signatures = 0
    user.locked_until = clock.now() + settings.lockout_for
    session_id = g.get("user_session_id") if has_request_context() else None
    if session_id is not None:
        row = session.get(UserSession, session_id)
        if row is not None and row.ended_at is None:
            row.ended_at, row.end_reason = clock.now(), "signature_lockout"
    audit.record(
        session,
        actor=actor,
        action="user.locked",
        entity_type="user",
        entity_id=user.id,
        after={"locked_until": user.locked_until.isoformat(), "ended_session": session_id},
    )
    return AccountLocked(
        f"{settings.lockout_after} wrong passwords in a row: "
        + _lock_message(user.locked_until, "account")
        + "; this session has ended",
        field="password",
        rule="lockout",
    )
