"""Sessions and sign-in (issue 11; OWASP ASVS v4 §2, §3): server-side sessions ended at sign-out,
an absolute lifetime, the sign-in throttle, the e-signature's own counter, suspended sessions
and tokens, token expiry, revocation and minting."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from iwrs.audit import Actor
from iwrs.db import read_session
from iwrs.models import ApiToken, AuditEvent, User, UserSession
from iwrs.services import passwords, users
from tests.conftest import PASSWORD, csrf_from, sign_in

PROBLEM = "application/problem+json"
NEW_PASSWORD = "a brand new passphrase for spring"


def _rule(response) -> str:  # type: ignore[no-untyped-def]
    assert response.mimetype == PROBLEM, response.get_data(as_text=True)
    return response.get_json()["type"].rsplit("/", 1)[1]


def _signed_in(app: Flask, username: str, source: str = "127.0.0.1") -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = source
    assert sign_in(client, username).status_code == 302
    return client


def _cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie("iwrs_session")
    assert cookie is not None
    return cookie.value


def _with_cookie(app: Flask, value: str) -> FlaskClient:
    thief = app.test_client()
    thief.set_cookie("iwrs_session", value)
    return thief


def _token(app: Flask, user) -> str:  # type: ignore[no-untyped-def]
    with app.app_context():
        token, _ = users.create_api_token(
            actor=Actor.of(user), user_id=user.id, name="edc", password=PASSWORD
        )
    return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _events(app: Flask, action: str) -> list[AuditEvent]:
    with app.app_context():
        session = read_session()
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
            )
        )


def _sign_out(client: FlaskClient) -> None:
    csrf = csrf_from(client.get("/").get_data(as_text=True))
    assert client.post("/sign-out", data={"csrf_token": csrf}).status_code == 302


# --- the server-side session --------------------------------------------------------------------


def test_a_cookie_copied_before_sign_out_no_longer_works_after_it(app, make_user):
    user = make_user("auditor")
    client = _signed_in(app, user.username)
    copied = _cookie(client)
    assert _with_cookie(app, copied).get("/api/v1/me").status_code == 200
    _sign_out(client)
    replayed = _with_cookie(app, copied)
    api = replayed.get("/api/v1/me")
    assert api.status_code == 401 and _rule(api) == "authentication_required"
    page = replayed.get("/audit/")
    assert page.status_code == 302 and page.headers["Location"].startswith("/sign-in")
    with app.app_context():
        row = read_session().scalars(select(UserSession)).one()
        assert (row.user_id, row.end_reason) == (user.id, "signed_out")


def test_the_idle_rule_ends_the_session_server_side_for_every_copy(app, make_user, clock):
    client = _signed_in(app, make_user("auditor").username)
    thief = _with_cookie(app, _cookie(client))
    clock.advance(minutes=10)
    assert thief.get("/api/v1/me").status_code == 200  # the copy is kept busy
    clock.advance(minutes=6)
    assert client.get("/audit/").status_code == 302  # the owner's browser was idle
    assert thief.get("/api/v1/me").status_code == 401
    with app.app_context():
        assert read_session().scalars(select(UserSession.end_reason)).one() == "idle"


def test_signing_out_ends_only_that_session(app, make_user):
    user = make_user("auditor")
    first, second = _signed_in(app, user.username), _signed_in(app, user.username)
    _sign_out(first)
    assert second.get("/api/v1/me").status_code == 200


def test_a_session_ends_after_its_absolute_lifetime_however_active(app, make_user, clock):
    settings = app.extensions["iwrs.settings"]
    settings.session_idle = timedelta(hours=24)  # so only the absolute lifetime can end it
    assert settings.session_max == timedelta(hours=12)  # the default
    client = _signed_in(app, make_user("auditor").username)
    clock.advance(hours=11, minutes=59)
    assert client.get("/api/v1/me").status_code == 200
    clock.advance(minutes=2)
    assert _rule(client.get("/api/v1/me")) == "authentication_required"
    page = client.get("/audit/")
    assert page.status_code == 302 and page.headers["Location"].startswith("/sign-in")


def test_a_password_change_ends_every_session_and_revokes_every_token(app, make_user):
    user = make_user("investigator", sites=["CN01"])
    other_session = _signed_in(app, user.username)
    token = _token(app, user)
    with app.app_context():
        passwords.change_own_password(
            actor=Actor.of(user), current_password=PASSWORD, new_password=NEW_PASSWORD
        )
    assert other_session.get("/api/v1/me").status_code == 401
    assert _rule(app.test_client().get("/api/v1/me", headers=_bearer(token))) == (
        "authentication_required"
    )
    with app.app_context():
        assert read_session().scalars(select(ApiToken.revoked_at)).one() is not None
        row = read_session().scalars(select(UserSession)).one()
        assert row.end_reason == "password_changed"
    (revoked,) = _events(app, "api_token.revoked")
    assert revoked.reason == "password_changed"


# --- the throttle -----------------------------------------------------------------------------


def _attempt(app: Flask, username: str, source: str, password: str = "wrong password!!") -> int:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = source
    return sign_in(client, username, password).status_code


def test_one_username_is_throttled_from_every_source_together(app, make_user):
    user = make_user("auditor")
    for attempt in range(10):  # 10 a minute per username, 3-4 from each of three places
        assert _attempt(app, user.username, f"10.0.0.{attempt % 3}") == 401
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "10.0.9.9"
    refused = sign_in(client, user.username, PASSWORD)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert _attempt(app, make_user("auditor").username, "10.0.9.9", PASSWORD) == 302


def test_one_source_trying_many_usernames_is_throttled(app, make_user):
    for attempt in range(30):  # 30 a minute per source, whatever the usernames
        assert _attempt(app, f"nobody{attempt}", "10.1.1.1") == 401
    assert _attempt(app, "nobody-else", "10.1.1.1") == 429
    assert _attempt(app, "nobody-else", "10.1.1.2") == 401
    # One audit event for the throttled source in this window, however many attempts.
    assert _attempt(app, "and-another", "10.1.1.1") == 429
    throttled = _events(app, "auth.sign_in_throttled")
    assert [e.after for e in throttled].count(throttled[0].after) == 1


def test_successful_sign_ins_are_not_throttled(app, make_user):
    user = make_user("auditor")
    for _ in range(12):
        assert _attempt(app, user.username, "10.2.2.2", PASSWORD) == 302


def _statements(app: Flask) -> list[str]:
    """Every SQL statement the application's engine runs from now on (appended as it runs)."""
    from sqlalchemy import event

    seen: list[str] = []
    event.listen(
        app.extensions["iwrs.engine"],
        "before_cursor_execute",
        lambda _conn, _cursor, statement, *_: seen.append(statement),
    )
    return seen


def test_a_throttled_attempt_is_answered_before_the_session_csrf_and_database(app, make_user):
    """Over a limit, an attempt costs the server neither a password check nor a statement
    (but the first of the window, which audits it), reads no session, needs no CSRF token and
    renders no template: 429, Retry-After and a small fixed page."""
    user = make_user("auditor")
    for attempt in range(30):
        assert _attempt(app, f"nobody{attempt}", "10.6.6.6") == 401
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "10.6.6.6"
    first = client.post("/sign-in", data={"username": user.username, "password": PASSWORD})
    assert first.status_code == 429  # the right password, no CSRF token: refused unseen
    assert len(_events(app, "auth.sign_in_throttled")) == 1
    statements = _statements(app)
    for _ in range(3):
        refused = client.post("/sign-in", data={"username": user.username, "password": "x"})
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        assert "Set-Cookie" not in refused.headers  # no session was opened or written
        assert len(refused.get_data()) < 1024
    assert statements == []
    assert len(_events(app, "auth.sign_in_throttled")) == 1
    # The limit is per source: another place still gets its password checked.
    assert _attempt(app, user.username, "10.6.6.7", PASSWORD) == 302


def test_only_failed_sign_ins_count_and_not_throttled_ones(app, make_user):
    """Five failures for one username from one place reach that pair's limit; the 429s that
    follow are not counted again (the window's count stays at its limit, so one more
    failure elsewhere does not breach the username's own limit of 10 early)."""
    user = make_user("auditor")
    for _ in range(5):
        assert _attempt(app, user.username, "10.7.0.1") == 401
    for _ in range(20):
        assert _attempt(app, user.username, "10.7.0.1", PASSWORD) == 429
    for attempt in range(5):  # 5 + 5 = the username's 10 a minute
        assert _attempt(app, user.username, f"10.7.1.{attempt}") == 401
    assert _attempt(app, user.username, "10.7.2.1", PASSWORD) == 429


# --- the e-signature's own counter --------------------------------------------------------------


def _reset(client: FlaskClient, user_id: int, password: str):  # type: ignore[no-untyped-def]
    csrf = csrf_from(client.get(f"/admin/users/{user_id}").get_data(as_text=True))
    return client.post(
        f"/admin/users/{user_id}/reset-password",
        data={"csrf_token": csrf, "reset-signature_password": password},
    )


def _with_email(app: Flask, user) -> None:  # type: ignore[no-untyped-def]
    from iwrs import audit
    from iwrs.db import transaction

    with app.app_context(), transaction() as session:
        session.get(User, user.id).email = f"{user.username}@example.org"
        audit.record(session, actor=Actor.system("test"), action="test.email", entity_type="user")


def test_anonymous_failures_cannot_stop_a_signature_in_an_open_session(app, make_user):
    """dr.wu (here an admin) is signed in; strangers fail her password from many places until
    password sign-in itself locks. Her open session and her e-signature still work."""
    wu = make_user("admin", username="dr.wu")
    target = make_user("investigator", sites=["CN01"])
    _with_email(app, target)
    session = _signed_in(app, wu.username, "10.3.0.1")
    for attempt in range(25):
        assert _attempt(app, "dr.wu", f"10.4.{attempt}.1") in (401, 429)
        app.extensions["iwrs.limiter"].reset()  # a patient stranger: every window waited out
    with app.app_context():
        stored = read_session().get(User, wu.id)
        assert stored.sign_in_locked_until is not None and stored.locked_until is None
    assert _attempt(app, "dr.wu", "10.3.0.1", PASSWORD) == 401  # new sign-ins: locked
    assert session.get("/api/v1/me").status_code == 200
    assert _reset(session, target.id, PASSWORD).status_code == 302
    assert len(_events(app, "user.password_reset")) == 1


def test_wrong_signatures_end_the_session_and_suspend_the_account(app, make_user, clock):
    app.extensions["iwrs.settings"].session_idle = timedelta(hours=1)  # outlive the lock idle
    admin = make_user("admin")
    target = make_user("investigator", sites=["CN01"])
    _with_email(app, target)
    signing, other = _signed_in(app, admin.username), _signed_in(app, admin.username)
    token = _token(app, admin)
    for _ in range(4):
        assert _reset(signing, target.id, "not my password!").status_code == 401
    assert other.get("/api/v1/me").status_code == 200  # four are not yet a lock
    assert _events(app, "user.locked") == []
    assert _reset(signing, target.id, "not my password!").status_code == 401
    (locked,) = _events(app, "user.locked")
    assert locked.entity_id == str(admin.id)
    # Locked: every session and token suspended, sign-in refused.
    assert signing.get("/api/v1/me").status_code == 401
    assert other.get("/api/v1/me").status_code == 401
    assert app.test_client().get("/api/v1/me", headers=_bearer(token)).status_code == 401
    assert _attempt(app, admin.username, "10.5.0.1", PASSWORD) == 401
    # The lock runs out: the other session and the token resume; the signing session is over.
    clock.advance(minutes=10)
    assert other.get("/api/v1/me").status_code == 401
    clock.advance(minutes=6)
    assert other.get("/api/v1/me").status_code == 200
    assert app.test_client().get("/api/v1/me", headers=_bearer(token)).status_code == 200
    assert signing.get("/api/v1/me").status_code == 401
    with app.app_context():
        reasons = set(read_session().scalars(select(UserSession.end_reason)))
    assert reasons == {None, "signature_lockout"}


def test_deactivation_stops_sessions_and_tokens(app, make_user):
    admin = make_user("admin")
    user = make_user("auditor")
    client, token = _signed_in(app, user.username), _token(app, user)
    with app.app_context():
        users.deactivate_user(
            actor=Actor.of(admin),
            user_id=user.id,
            reason="left",
            signer_password=PASSWORD,
            understood=True,
        )
    assert client.get("/api/v1/me").status_code == 401
    assert app.test_client().get("/api/v1/me", headers=_bearer(token)).status_code == 401
    with app.app_context():
        assert read_session().scalars(select(UserSession.end_reason)).one() == "deactivated"


# --- tokens -----------------------------------------------------------------------------------


def test_a_token_expires_after_ninety_days(app, make_user, clock):
    user = make_user("auditor")
    token = _token(app, user)
    clock.advance(days=89, hours=23)
    assert app.test_client().get("/api/v1/me", headers=_bearer(token)).status_code == 200
    clock.advance(hours=2)
    assert _rule(app.test_client().get("/api/v1/me", headers=_bearer(token))) == (
        "authentication_required"
    )
    listing = _signed_in(app, user.username).get("/api/v1/tokens").get_json()
    assert listing[0]["expires_at"].startswith("2026-05-31")


def test_a_token_cannot_mint_a_token(app, make_user):
    user = make_user("auditor")
    token = _token(app, user)
    response = app.test_client().post(
        "/api/v1/tokens", json={"name": "child", "password": PASSWORD}, headers=_bearer(token)
    )
    assert response.status_code == 403 and _rule(response) == "session_required"
    with app.app_context():
        assert len(list(read_session().scalars(select(ApiToken)))) == 1


def test_minting_needs_the_password_re_entered_in_a_session(app, make_user):
    user = make_user("auditor")
    client = _signed_in(app, user.username)
    csrf = {"X-CSRFToken": csrf_from(client.get("/account/").get_data(as_text=True))}
    missing = client.post("/api/v1/tokens", json={"name": "ci"}, headers=csrf)
    assert missing.status_code == 422
    wrong = client.post(
        "/api/v1/tokens", json={"name": "ci", "password": "not my password!"}, headers=csrf
    )
    assert wrong.status_code == 401 and _rule(wrong) == "credentials"
    made = client.post("/api/v1/tokens", json={"name": "ci", "password": PASSWORD}, headers=csrf)
    assert made.status_code == 201 and made.get_json()["token"].startswith("iwrs_")
