"""Every path an admin could take to another person's usable credential, signature or unblinded
access — pages, API, CLI — is refused (README rule 11); bearer tokens open /api/ only; events
say how their actor authenticated."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from iwrs.audit import Actor
from iwrs.db import read_session
from iwrs.models import (
    AccessRequestStatus,
    ApiToken,
    AuditEvent,
    UnblindedAccessRequest,
    User,
    UserNotice,
)
from iwrs.services import users
from tests.conftest import PASSWORD, csrf_from, sign_in
from tests.integration.test_separation_of_duties import outbox_password

PROBLEM = "application/problem+json"
NEW_PASSWORD = "my very own new password"


def _token(app, user) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    with app.app_context():
        token, row = users.create_api_token(
            actor=Actor.of(user), user_id=user.id, name="t", password=PASSWORD
        )
    return token, row.id


def _csrf(client, url: str) -> str:  # type: ignore[no-untyped-def]
    page = client.get(url)
    assert page.status_code == 200, (url, page.status_code)
    return csrf_from(page.get_data(as_text=True))


def _rule(response) -> str:  # type: ignore[no-untyped-def]
    assert response.mimetype == PROBLEM, response.get_data(as_text=True)
    return response.get_json()["type"].rsplit("/", 1)[1]


def _read(app, query):  # type: ignore[no-untyped-def]
    with app.app_context():
        return list(read_session().scalars(query))


def _give_email(app, user, address: str) -> None:  # type: ignore[no-untyped-def]
    from iwrs import audit
    from iwrs.db import transaction

    with app.app_context(), transaction() as session:
        session.get(User, user.id).email = address
        audit.record(session, actor=Actor.system("test"), action="test.email", entity_type="user")


# --- tokens open the API only --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/",
        "/lists/allocations.csv",
        "/lists/status.csv",
        "/lists/",
        "/account/",
        "/sign-in",
        "/audit/export.jsonl",
        "/admin/users",
    ],
)
def test_a_token_opens_no_page_or_csv_export(app, make_user, url):
    stat = make_user("unblinded_statistician")
    token, _ = _token(app, stat)
    client = app.test_client()
    response = client.get(url, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "token_api_only" in response.get_data(as_text=True)
    # Even beside a signed-in session, a bearer token on a page is refused.
    assert sign_in(client, stat.username).status_code == 302
    assert client.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert (
        app.test_client()
        .get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        .status_code
        == 200
    )


def test_events_record_session_or_token_id(app, make_user):
    user = make_user("auditor")
    token, token_id = _token(app, user)
    _, other_id = _token(app, user)
    by_token = app.test_client().delete(
        f"/api/v1/tokens/{other_id}", headers={"Authorization": f"Bearer {token}"}
    )
    assert by_token.status_code == 204
    client = app.test_client()
    sign_in(client, user.username)
    page = _csrf(client, "/account/")
    assert (
        client.post(
            "/account/tokens",
            data={"token-name": "by page", "token-password": PASSWORD, "csrf_token": page},
        ).status_code
        == 200
    )
    created = _read(
        app,
        select(AuditEvent).where(AuditEvent.action == "api_token.created").order_by(AuditEvent.seq),
    )
    assert [e.auth for e in created] == ["cli", "cli", "session"]
    (revoked,) = _read(app, select(AuditEvent).where(AuditEvent.action == "api_token.revoked"))
    assert revoked.auth == f"token:{token_id}"
    auditor = app.test_client()
    sign_in(auditor, make_user("auditor").username)
    detail = auditor.get(f"/audit/events/{revoked.seq}").get_data(as_text=True)
    assert f"token:{token_id}" in detail
    from iwrs.audit_export import package_files

    export, _ = package_files(auditor.get("/audit/export.csv").get_data())
    assert f",token:{token_id}," in export


# --- tokens are their owner's alone -------------------------------------------------------------


def test_the_admin_cannot_mint_a_token_for_another_person(app, login_as, make_user):
    client, admin = login_as("admin")
    stat = make_user("unblinded_statistician")
    page = client.get(f"/admin/users/{stat.id}").get_data(as_text=True)
    assert '/token"' not in page and "Issue token" not in page
    csrf = csrf_from(page)
    posted = client.post(
        f"/admin/users/{stat.id}/token", data={"token-name": "mine now", "csrf_token": csrf}
    )
    assert posted.status_code == 422 and "iwrs_" not in posted.get_data(as_text=True)
    admin_token, _ = _token(app, admin)
    api = app.test_client().post(
        "/api/v1/tokens",
        json={"name": "x", "user_id": stat.id},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    assert api.status_code == 422  # no such field: a token is always the caller's own
    assert _read(app, select(ApiToken).where(ApiToken.user_id == stat.id)) == []


def test_the_admin_lists_and_revokes_another_persons_token(app, login_as, make_user):
    client, _ = login_as("admin")
    owner = make_user("pharmacist", sites=["CN01"])
    token, token_id = _token(app, owner)
    page = client.get(f"/admin/users/{owner.id}").get_data(as_text=True)
    assert token[:12] in page and token not in page
    revoked = client.post(f"/admin/tokens/{token_id}/revoke", data={"csrf_token": csrf_from(page)})
    assert revoked.status_code == 302
    assert (
        app.test_client()
        .get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        .status_code
        == 401
    )


# --- passwords -----------------------------------------------------------------------------------


def test_an_admin_chosen_password_is_never_usable(app, login_as):
    client, _ = login_as("admin")
    csrf = _csrf(client, "/admin/users/new")
    form = {
        "username": "newuser",
        "full_name": "New User",
        "role": "auditor",
        "email": "new.user@example.org",
        "password": "the admin's choice",  # not a field any more: ignored
        "csrf_token": csrf,
    }
    created = client.post("/admin/users/new", data=form)
    assert created.status_code == 302
    assert "the admin's choice" not in client.get(created.headers["Location"]).get_data(
        as_text=True
    )
    assert sign_in(app.test_client(), "newuser", "the admin's choice").status_code == 401
    with app.app_context():
        temporary = outbox_password("new.user@example.org")
    fresh = app.test_client()
    assert sign_in(fresh, "newuser", temporary).status_code == 302
    assert fresh.get("/").headers["Location"] == "/account/password"


def test_admin_reset_forces_a_change_and_notifies_the_user(app, login_as, make_user):
    admin_client, admin = login_as("admin")
    user = make_user("investigator", sites=["CN01"])
    _give_email(app, user, "inv@example.org")
    victim = app.test_client()
    assert sign_in(victim, user.username).status_code == 302
    token, _ = _token(app, user)
    page = _csrf(admin_client, f"/admin/users/{user.id}")
    reset = admin_client.post(
        f"/admin/users/{user.id}/reset-password",
        data={"csrf_token": page, "reset-signature_password": PASSWORD},
    )
    assert reset.status_code == 302
    with app.app_context():
        temporary = outbox_password("inv@example.org")
    assert temporary not in admin_client.get(reset.headers["Location"]).get_data(as_text=True)
    assert victim.get("/").status_code == 302  # the user's session ended
    # Signed in with the temporary password: nothing but the change page.
    client = app.test_client()
    assert sign_in(client, user.username, temporary).status_code == 302
    for url in ("/", "/subjects/", "/account/", "/unblinding/"):
        response = client.get(url)
        assert (response.status_code, response.headers.get("Location")) == (
            302,
            "/account/password",
        ), url
    assert _rule(client.get("/api/v1/me")) == "password_change_required"
    # The reset revoked the user's tokens, as a change of password does.
    by_token = app.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert by_token.status_code == 401 and _rule(by_token) == "authentication_required"
    csrf = _csrf(client, "/account/password")
    changed = client.post(
        "/account/password",
        data={
            "csrf_token": csrf,
            "pw-current_password": temporary,
            "pw-new_password": NEW_PASSWORD,
        },
    )
    assert changed.status_code == 302
    assert sign_in(client, user.username, NEW_PASSWORD).status_code == 302
    home = client.get("/").get_data(as_text=True)
    assert f"reset by {admin.username}" in home
    (notice,) = _read(app, select(UserNotice).where(UserNotice.user_id == user.id))
    client.post(f"/account/notices/{notice.id}/read", data={"csrf_token": csrf_from(home)})
    assert f"reset by {admin.username}" not in client.get("/").get_data(as_text=True)


def test_the_admin_cannot_reset_their_own_password_or_one_without_email(app, login_as, make_user):
    client, admin = login_as("admin")
    no_mail = make_user("auditor")
    for target in (admin, no_mail):
        csrf = _csrf(client, f"/admin/users/{target.id}")
        response = client.post(
            f"/admin/users/{target.id}/reset-password",
            data={"csrf_token": csrf, "reset-signature_password": PASSWORD},
        )
        assert response.status_code == 422, target.username
    assert sign_in(app.test_client(), no_mail.username).status_code == 302
    assert sign_in(app.test_client(), admin.username).status_code == 302


# --- unblinded access: two persons ---------------------------------------------------------------


def test_unblinded_access_through_the_pages_needs_a_statisticians_signature(
    app, login_as, make_user
):
    admin_client, _ = login_as("admin")
    stat = make_user("unblinded_statistician")
    csrf = _csrf(admin_client, "/admin/users/new")
    direct = admin_client.post(
        "/admin/users/new",
        data={
            "username": "stat.new",
            "full_name": "S N",
            "role": "unblinded_statistician",
            "email": "sn@example.org",
            "csrf_token": csrf,
        },
    )
    assert direct.status_code == 403  # the service refuses: two_person_approval
    csrf = _csrf(admin_client, "/admin/unblinded-requests")
    filed = admin_client.post(
        "/admin/unblinded-requests",
        data={
            "request-username": "stat.new",
            "request-full_name": "S N",
            "request-email": "sn@example.org",
            "csrf_token": csrf,
        },
    )
    assert filed.status_code == 302
    (row,) = _read(app, select(UnblindedAccessRequest))
    assert (
        admin_client.post(
            f"/access-requests/{row.id}/decision",
            data={
                "decide-decision": "approve",
                "decide-signature_password": PASSWORD,
                "csrf_token": csrf,
            },
        ).status_code
        == 403
    )
    assert _read(app, select(User).where(User.username == "stat.new")) == []
    stat_client = app.test_client()
    sign_in(stat_client, stat.username)
    csrf = _csrf(stat_client, "/access-requests/")
    approved = stat_client.post(
        f"/access-requests/{row.id}/decision",
        data={
            "decide-decision": "approve",
            "decide-signature_password": PASSWORD,
            "csrf_token": csrf,
        },
    )
    assert approved.status_code == 302
    (created,) = _read(app, select(User).where(User.username == "stat.new"))
    assert created.password_temporary
    (decided,) = _read(app, select(UnblindedAccessRequest))
    assert decided.status is AccessRequestStatus.APPROVED and decided.decided_by_id == stat.id


def test_unblinded_access_through_the_api_needs_a_statisticians_signature(app, make_user):
    admin, stat = make_user("admin"), make_user("unblinded_statistician")
    admin_auth = {"Authorization": f"Bearer {_token(app, admin)[0]}"}
    stat_auth = {"Authorization": f"Bearer {_token(app, stat)[0]}"}
    client = app.test_client()
    body = {"username": "stat.api", "full_name": "S A", "email": "sa@example.org"}
    direct = client.post(
        "/api/v1/users", json={**body, "role": "unblinded_statistician"}, headers=admin_auth
    )
    assert direct.status_code == 403 and _rule(direct) == "two_person_approval"
    filed = client.post("/api/v1/unblinded-access-requests", json=body, headers=admin_auth)
    assert filed.status_code == 201 and filed.get_json()["status"] == "pending"
    url = f"/api/v1/unblinded-access-requests/{filed.get_json()['id']}/decision"
    decision = {"decision": "approve", "signature_password": PASSWORD}
    by_admin = client.post(url, json=decision, headers=admin_auth)
    assert by_admin.status_code == 403 and _rule(by_admin) == "permission"
    by_stat = client.post(url, json=decision, headers=stat_auth)
    assert by_stat.status_code == 200 and by_stat.get_json()["status"] == "approved"
    assert _read(app, select(User.id).where(User.username == "stat.api"))
    events = _read(app, select(AuditEvent).where(AuditEvent.action == "unblinded_access.approved"))
    assert [e.auth.split(":")[0] for e in events] == ["token"]


# --- the CLI -------------------------------------------------------------------------------------


def _cli_create(app, username: str, *extra: str):  # type: ignore[no-untyped-def]
    return app.test_cli_runner().invoke(
        args=[
            "iwrs",
            "user",
            "create",
            "--username",
            username,
            "--full-name",
            "S",
            "--role",
            "unblinded_statistician",
            *extra,
        ]
    )


def test_the_cli_creates_the_first_unblinded_user_then_only_files_requests(app, make_user):
    first = _cli_create(app, "stat.first", "--password", PASSWORD)
    assert first.exit_code == 0, first.output
    second = _cli_create(app, "stat.second", "--password", PASSWORD, "--email", "s2@example.org")
    assert second.exit_code == 0 and "filed request" in second.output, second.output
    assert _read(app, select(User).where(User.username == "stat.second")) == []
    (row,) = _read(app, select(UnblindedAccessRequest))
    assert row.requested_by.startswith("cli:") and row.status is AccessRequestStatus.PENDING
    (stat,) = _read(app, select(User).where(User.username == "stat.first"))
    assert stat.password_temporary  # the operator's password is changed at the first sign-in
    created = _read(app, select(AuditEvent).where(AuditEvent.action == "user.created"))
    assert created[-1].auth == "cli" and created[-1].username.startswith("cli:")


def test_the_cli_set_password_is_temporary(app, make_user):
    user = make_user("investigator", sites=["CN01"])
    result = app.test_cli_runner().invoke(
        args=["iwrs", "user", "set-password", user.username, "--password", NEW_PASSWORD]
    )
    assert result.exit_code == 0, result.output
    client = app.test_client()
    assert sign_in(client, user.username, NEW_PASSWORD).status_code == 302
    assert client.get("/").headers["Location"] == "/account/password"
