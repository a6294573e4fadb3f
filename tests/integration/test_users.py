"""Accounts: validation with clear messages, lockout, session invalidation, tokens."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from iwrs.audit import Actor
from iwrs.auth import password_matches, token_digest
from iwrs.db import read_session
from iwrs.errors import AccountLocked, AuthenticationFailed, Conflict, InvalidInput, NotFound
from iwrs.models import ApiToken, User
from iwrs.services import users
from tests.conftest import PASSWORD

ADMIN = Actor.system("test-admin")  # the bootstrap path: the system may give a password


def create(**overrides):
    values = {
        "actor": ADMIN,
        "username": "some.one",
        "full_name": "Some One",
        "role": "pharmacist",
        "password": PASSWORD,
        "site_codes": ["CN01"],
    }
    values.update(overrides)
    return users.create_user(**values)


@pytest.mark.parametrize(
    "overrides, field, words",
    [
        ({"role": "superuser"}, "role", "is not a role"),
        ({"password": "x" * 11}, "password", "at least 12 characters (got 11)"),
        ({"password": "some.one-password"}, "password", "must not contain the username"),
        ({"password": "aaaaaaaaaaaaaa"}, "password", "at least 4 different characters"),
        ({"username": "A"}, "username", "3-64 characters"),
        ({"username": "bad name!"}, "username", "3-64 characters"),
        ({"full_name": "  "}, "full_name", "must not be empty"),
        ({"site_codes": ["CN09"]}, "sites", "unknown site code(s) CN09"),
        ({"role": "auditor"}, "sites", "only investigators and pharmacists"),
    ],
)
def test_bad_account_input_is_refused_naming_the_field(ctx, overrides, field, words):
    with pytest.raises(InvalidInput) as refused:
        create(**overrides)
    assert refused.value.field == field
    assert words in refused.value.message
    assert read_session().scalars(select(User).where(User.username == "some.one")).first() is None


def test_username_is_unique_case_insensitively(ctx):
    create()
    with pytest.raises(Conflict, match="already taken"):
        create(username="Some.One")


def test_password_is_stored_as_argon2id_not_in_clear(ctx):
    user = create()
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert password_matches(user.password_hash, PASSWORD)
    assert not password_matches(user.password_hash, PASSWORD + "x")


def test_sustained_failures_lock_password_sign_in_for_fifteen_minutes(ctx, clock):
    user = create()
    for _ in range(20):  # sign_in_lockout_after: the throttle meets bursts long before
        with pytest.raises(AuthenticationFailed):
            users.sign_in(username=user.username, password="wrong password!")
    with pytest.raises(AccountLocked, match="locked until 02-MAR-2026 09:15 UTC") as locked:
        users.sign_in(username=user.username, password=PASSWORD)
    assert locked.value.rule == "sign_in_lockout"
    clock.advance(minutes=14, seconds=59)
    with pytest.raises(AccountLocked):
        users.sign_in(username=user.username, password=PASSWORD)
    clock.advance(seconds=2)
    assert users.sign_in(username=user.username, password=PASSWORD).user.id == user.id


def test_success_resets_the_failure_count(ctx):
    user = create()
    for _ in range(4):
        with pytest.raises(AuthenticationFailed):
            users.sign_in(username=user.username, password="wrong password!")
    users.sign_in(username=user.username, password=PASSWORD)
    for _ in range(4):
        with pytest.raises(AuthenticationFailed):
            users.sign_in(username=user.username, password="wrong password!")
    assert users.sign_in(username=user.username, password=PASSWORD).user.id == user.id


def test_wrong_signatures_count_towards_lockout(ctx, make_user):
    admin = make_user("admin")
    target = create()
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            users.deactivate_user(
                actor=Actor.of(admin),
                user_id=target.id,
                reason="r",
                signer_password="wrong password!",
                understood=True,
            )
    with pytest.raises(AccountLocked) as locked:
        users.sign_in(username=admin.username, password=PASSWORD)
    assert locked.value.rule == "lockout"


def test_unknown_user_and_wrong_password_get_the_same_answer(ctx):
    create()
    with pytest.raises(AuthenticationFailed) as unknown:
        users.sign_in(username="nobody", password=PASSWORD)
    with pytest.raises(AuthenticationFailed) as wrong:
        users.sign_in(username="some.one", password="wrong password!")
    assert unknown.value.message == wrong.value.message == users.WRONG_CREDENTIALS


def test_deactivated_user_cannot_sign_in_and_sessions_end(ctx, make_user):
    admin = make_user("admin")
    user = create()
    version = user.session_version
    users.deactivate_user(
        actor=Actor.of(admin),
        user_id=user.id,
        reason="left the trial",
        signer_password=PASSWORD,
        understood=True,
    )
    read_session().expire_all()
    stored = read_session().get(User, user.id)
    assert not stored.active and stored.session_version == version + 1
    with pytest.raises(AuthenticationFailed):
        users.sign_in(username=user.username, password=PASSWORD)


def test_deactivation_needs_a_reason_and_not_oneself(ctx, make_user):
    admin = make_user("admin")
    with pytest.raises(InvalidInput, match="reason"):
        users.deactivate_user(
            actor=Actor.of(admin),
            user_id=create().id,
            reason=" ",
            signer_password=PASSWORD,
            understood=True,
        )
    with pytest.raises(InvalidInput, match="your own account"):
        users.deactivate_user(
            actor=Actor.of(admin),
            user_id=admin.id,
            reason="x",
            signer_password=PASSWORD,
            understood=True,
        )


@pytest.mark.parametrize("understood", [False, None, 1, "true"])
def test_deactivation_is_refused_unless_confirmed_as_irreversible(ctx, make_user, understood):
    admin, target = make_user("admin"), create()
    with pytest.raises(InvalidInput) as refusal:
        users.deactivate_user(
            actor=Actor.of(admin),
            user_id=target.id,
            reason="left the trial",
            signer_password=PASSWORD,
            understood=understood,
        )
    assert (refusal.value.field, refusal.value.rule) == ("understood", "required")
    read_session().expire_all()
    assert read_session().get(User, target.id).active


def test_token_is_stored_only_as_digest_and_revocable_by_owner_only(ctx, make_user):
    owner, other = create(), make_user("auditor")
    token, row = users.create_api_token(
        actor=Actor.of(owner), user_id=owner.id, name="EDC", password=PASSWORD
    )
    stored = read_session().get(ApiToken, row.id)
    assert stored.token_sha256 == token_digest(token) and token not in stored.prefix + "x"
    assert len(token) > 40 and token.startswith("iwrs_")
    with pytest.raises(NotFound):
        users.revoke_api_token(actor=Actor.of(other), token_id=row.id, owner_id=other.id)
    users.revoke_api_token(actor=Actor.of(owner), token_id=row.id, owner_id=owner.id)
    with pytest.raises(Conflict, match="already revoked"):
        users.revoke_api_token(actor=Actor.of(owner), token_id=row.id, owner_id=owner.id)
