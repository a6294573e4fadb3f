"""Sign-in and re-entered passwords at the service level (issue 11): Argon2 never runs under a
database write lock; the sign-in and e-signature counters are separate; guessable passwords are
refused."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from iwrs.audit import Actor
from iwrs.db import read_session
from iwrs.errors import AccountLocked, AuthenticationFailed, InvalidInput
from iwrs.models import User
from iwrs.services import users
from tests.conftest import PASSWORD

ADMIN = Actor.system("test")


class _LockProbingHasher(PasswordHasher):
    """The real Argon2id hasher, which also records, each time it verifies, whether another
    connection can take the database's write lock right then (it cannot while a write
    transaction of the caller holds it)."""

    def __init__(self, engine: Any) -> None:
        super().__init__(time_cost=1, memory_cost=8 * 1024, parallelism=1)
        self.engine, self.free = engine, []

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002
        self.free.append(self._write_lock_is_free())
        return super().verify(hash, password)

    def _write_lock_is_free(self) -> bool:
        result: list[bool] = []

        def probe() -> None:  # another connection, as another request would use
            if self.engine.dialect.name == "sqlite":
                raw = self.engine.raw_connection()  # our own BEGIN, not SQLAlchemy's
                try:
                    raw.execute("PRAGMA busy_timeout=0")
                    raw.execute("BEGIN IMMEDIATE")
                    raw.execute("ROLLBACK")
                    result.append(True)
                except sqlite3.OperationalError:
                    result.append(False)
                finally:
                    raw.close()
                return
            with self.engine.connect() as connection:
                try:
                    connection.execute(text("SELECT id FROM app_user FOR UPDATE NOWAIT"))
                    connection.execute(text("SELECT * FROM audit_chain_head FOR UPDATE NOWAIT"))
                    result.append(True)
                except OperationalError:
                    result.append(False)
                finally:
                    connection.rollback()

        thread = threading.Thread(target=probe)
        thread.start()
        thread.join()
        return result[0]


@pytest.fixture
def probe(ctx):  # type: ignore[no-untyped-def]
    hasher = _LockProbingHasher(ctx.extensions["iwrs.engine"])
    ctx.extensions["iwrs.password_hasher"] = hasher
    return hasher


def _user(**overrides: Any) -> User:
    values: dict[str, Any] = {
        "actor": ADMIN,
        "username": "dr.wu",
        "full_name": "Dr Wu",
        "role": "investigator",
        "password": PASSWORD,
        "site_codes": ["CN01"],
    }
    return users.create_user(**{**values, **overrides})


def test_password_checks_run_outside_any_write_lock(probe):
    user = _user()
    probe.free.clear()
    users.sign_in(username="dr.wu", password=PASSWORD)
    with pytest.raises(AuthenticationFailed):
        users.sign_in(username="dr.wu", password="wrong password!")
    with pytest.raises(AuthenticationFailed):
        users.sign_in(username="nobody.here", password="wrong password!")
    users.confirm_signature(signer_id=user.id, password=PASSWORD)
    with pytest.raises(AuthenticationFailed):
        users.confirm_signature(signer_id=user.id, password="wrong password!")
    assert probe.free == [True] * 5


def test_sign_in_failures_never_refuse_a_signature(ctx):
    user = _user()
    for _ in range(20):  # the sign-in lock: sustained anonymous failures
        with pytest.raises(AuthenticationFailed):
            users.sign_in(username="dr.wu", password="wrong password!")
    with pytest.raises(AccountLocked) as locked:
        users.sign_in(username="dr.wu", password=PASSWORD)
    assert locked.value.rule == "sign_in_lockout"
    users.confirm_signature(signer_id=user.id, password=PASSWORD)  # not refused
    stored = read_session().get(User, user.id)
    assert stored.failed_signatures == 0 and stored.locked_until is None


def test_signature_failures_have_their_own_count_and_lock_the_account(ctx, clock):
    user = _user()
    for _ in range(4):
        with pytest.raises(AuthenticationFailed) as wrong:
            users.sign_in(username="dr.wu", password="wrong password!")
        with pytest.raises(AuthenticationFailed) as wrong:
            users.confirm_signature(signer_id=user.id, password="wrong password!")
        assert wrong.value.rule == "credentials"
    read_session().expire_all()
    stored = read_session().get(User, user.id)
    assert (stored.failed_sign_ins, stored.failed_signatures) == (4, 4)
    with pytest.raises(AccountLocked) as locked:
        users.confirm_signature(signer_id=user.id, password="wrong password!")
    assert locked.value.rule == "lockout"
    with pytest.raises(AccountLocked):  # the right password does not sign while locked
        users.confirm_signature(signer_id=user.id, password=PASSWORD)
    with pytest.raises(AccountLocked) as refused:
        users.sign_in(username="dr.wu", password=PASSWORD)
    assert refused.value.rule == "lockout"
    clock.advance(minutes=15, seconds=1)
    users.confirm_signature(signer_id=user.id, password=PASSWORD)


@pytest.mark.parametrize(
    "password",
    [
        "password1234",
        "123456789012",
        "qwertyuiopas",
        "dr.wu1234567",
        "abcdefghijkl",
        "1q2w3e4r5t6y",
    ],
)
def test_guessable_passwords_are_refused(ctx, password):
    with pytest.raises(InvalidInput) as refused:
        _user(password=password)
    assert (refused.value.field, refused.value.rule) in {
        ("password", "weak_password"),
        ("password", "not_username"),
    }
    if password != "dr.wu1234567":
        assert refused.value.rule == "weak_password"


@pytest.mark.parametrize(
    "password", [PASSWORD, "a brand new passphrase for spring", "3fa9c1-07be42-d1e0aa-5c2f19"]
)
def test_strong_passwords_and_temporary_ones_pass(ctx, password):
    users.check_password_rules(password, username="dr.wu")


def test_a_hash_with_older_argon2_costs_is_upgraded_at_sign_in(ctx, make_user):
    """check_needs_rehash: a stored hash made with other costs than the configured ones is
    replaced at the next successful sign-in (the hasher's costs, same password)."""
    from iwrs import audit
    from iwrs.auth import password_hasher
    from iwrs.db import transaction

    user = make_user("pharmacist", sites=["CN01"])
    older = PasswordHasher(time_cost=2, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    with transaction() as session:
        session.get(User, user.id).password_hash = older
        audit.record(session, actor=ADMIN, action="test.older_hash", entity_type="user")
    assert password_hasher().check_needs_rehash(older)
    users.sign_in(username=user.username, password=PASSWORD)
    read_session().rollback()
    stored = read_session().get(User, user.id).password_hash
    assert stored != older and not password_hasher().check_needs_rehash(stored)
    assert password_hasher().verify(stored, PASSWORD)
    users.sign_in(username=user.username, password=PASSWORD)  # and it still signs in
    read_session().rollback()
    assert read_session().get(User, user.id).password_hash == stored  # no rehash again


# --- Argon2id at low CPU priority (the sign-in storm) ----------------------------------------


def _priority() -> int:
    import os

    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


class _PriorityRecordingHasher(PasswordHasher):
    """The real Argon2id hasher (the tests' costs), which also records the hash each
    verification was made against and the nice value of the thread that ran it."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8 * 1024, parallelism=1)
        self.verified: list[tuple[str, int]] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002
        self.verified.append((str(hash), _priority()))
        return super().verify(hash, password)


@pytest.fixture
def recording(ctx):  # type: ignore[no-untyped-def]
    hasher = _PriorityRecordingHasher()
    ctx.extensions["iwrs.password_hasher"] = hasher
    ctx.extensions["iwrs.dummy_hash"] = hasher.hash("not-a-real-password-for-timing")
    return hasher


def test_sign_ins_check_at_low_priority_and_unknown_users_still_cost_a_check(recording):
    """Known user (right or wrong password) and unknown user alike: one Argon2id verification
    each, on a thread niced to LOW_PRIORITY; the unknown user's against the dummy hash, so the
    time taken says nothing about whether the user exists."""
    from iwrs.auth import LOW_PRIORITY

    user = _user()
    recording.verified.clear()
    assert users.sign_in(username="dr.wu", password=PASSWORD).user.id == user.id
    with pytest.raises(AuthenticationFailed):
        users.sign_in(username="dr.wu", password="wrong password!")
    with pytest.raises(AuthenticationFailed) as unknown:
        users.sign_in(username="nobody.here", password=PASSWORD)
    assert unknown.value.rule == "credentials"
    stored = read_session().get(User, user.id).password_hash
    assert recording.verified == [
        (stored, LOW_PRIORITY),
        (stored, LOW_PRIORITY),
        (_dummy(), LOW_PRIORITY),
    ]


def _dummy() -> str:
    from flask import current_app

    return str(current_app.extensions["iwrs.dummy_hash"])


def test_re_entered_passwords_check_at_the_callers_priority(recording):
    """A signed-in owner's e-signature (an emergency unblinding, say) is not niced: no storm of
    sign-ins can slow it."""
    user = _user()
    recording.verified.clear()
    users.confirm_signature(signer_id=user.id, password=PASSWORD)
    assert [priority for _, priority in recording.verified] == [_priority()]


def test_the_low_priority_pool_hashes_and_verifies_correctly(ctx):
    from argon2.exceptions import VerifyMismatchError

    from iwrs.auth import (
        LOW_PRIORITY,
        hash_password,
        password_hasher,
        password_matches,
        run_at_low_priority,
    )

    hashed = hash_password(PASSWORD, low_priority=True)
    assert hashed.startswith("$argon2id$") and password_hasher().verify(hashed, PASSWORD)
    assert password_matches(hashed, PASSWORD, low_priority=True)
    assert not password_matches(hashed, PASSWORD + "x", low_priority=True)
    assert not password_matches(None, PASSWORD, low_priority=True)
    with pytest.raises(VerifyMismatchError):  # the pool passes exceptions back
        run_at_low_priority(password_hasher().verify, hashed, "other")
    assert run_at_low_priority(_priority) == LOW_PRIORITY


def _in_child(connection: Any) -> None:
    from iwrs.auth import run_at_low_priority

    connection.send(run_at_low_priority(_priority))


def test_a_forked_process_starts_its_own_low_priority_pool(ctx):
    """gunicorn --preload and the benchmark fork after the parent used the pool: the child's
    calls must not wait for threads it does not have."""
    import multiprocessing

    from iwrs.auth import LOW_PRIORITY, run_at_low_priority

    assert run_at_low_priority(_priority) == LOW_PRIORITY  # the parent's pool exists
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe()
    process = context.Process(target=_in_child, args=(child,))
    process.start()
    assert parent.poll(60), "the child's call never returned"
    assert parent.recv() == LOW_PRIORITY
    process.join(60)
    assert process.exitcode == 0
