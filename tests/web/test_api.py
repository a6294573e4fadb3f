"""The JSON API (/api/v1): bearer tokens, problem+json errors, site scoping, user creation,
CSRF for session callers, personal tokens and the OpenAPI 3.1 document."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import func, select

from iwrs.models import AuditEvent, Site, User
from tests.conftest import PASSWORD, csrf_from, sign_in

PROBLEM = "application/problem+json"
NEW_USER = {
    "username": "apiuser",
    "full_name": "Api User",
    "role": "investigator",
    "email": "api.user@example.org",
    "site_codes": ["CN01"],
}


@pytest.fixture
def token_for(app):  # type: ignore[no-untyped-def]
    """Issue a personal API token for a user: token_for(user) -> (token, token id)."""
    from iwrs.audit import Actor
    from iwrs.services import users

    def _issue(user, name: str = "test token"):  # type: ignore[no-untyped-def]
        with app.app_context():
            token, row = users.create_api_token(
                actor=Actor.of(user), user_id=user.id, name=name, password=PASSWORD
            )
        return token, row.id

    return _issue


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _site_ids(app) -> dict[str, int]:  # type: ignore[no-untyped-def]
    from iwrs.db import read_session

    with app.app_context():
        return {s.code: s.id for s in read_session().scalars(select(Site))}


def _count_events(app, action: str, entity_id: object | None = None) -> int:  # type: ignore[no-untyped-def]
    from iwrs.db import read_session

    query = select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
    if entity_id is not None:
        query = query.where(AuditEvent.entity_id == str(entity_id))
    with app.app_context():
        return read_session().scalar(query)


def _user_exists(app, username: str) -> bool:  # type: ignore[no-untyped-def]
    from iwrs.db import read_session

    with app.app_context():
        return (
            read_session().scalar(
                select(func.count()).select_from(User).where(User.username == username)
            )
            == 1
        )


def assert_problem(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json(force=True)
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    return body


def _fields(body: dict) -> set[str]:
    return {problem["field"] for problem in body.get("errors", [])}


# --- authentication -----------------------------------------------------------------------------


def test_token_authenticates_me(app, make_user, token_for):
    user = make_user("pharmacist", sites=["CN01"])
    token, _ = token_for(user)
    response = app.test_client().get("/api/v1/me", headers=bearer(token))
    assert response.status_code == 200
    body = response.get_json()
    assert body["username"] == user.username
    assert body["role"] == "pharmacist"
    assert body["site_codes"] == ["CN01"]


def test_unknown_token_is_refused_with_problem(app):
    response = app.test_client().get("/api/v1/me", headers=bearer("iwrs_" + "x" * 43))
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_revoked_token_is_refused_with_problem(app, make_user, token_for):
    from iwrs.audit import Actor
    from iwrs.services import users

    user = make_user("auditor")
    token, token_id = token_for(user)
    client = app.test_client()
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200
    with app.app_context():
        users.revoke_api_token(actor=Actor.of(user), token_id=token_id)
    response = client.get("/api/v1/me", headers=bearer(token))
    assert_problem(response, 401)
    assert "WWW-Authenticate" in response.headers


def test_no_credentials_is_refused_with_problem(app):
    response = app.test_client().get("/api/v1/me")
    body = assert_problem(response, 401)
    assert "Authorization" in body["detail"]


# --- scoping and permissions --------------------------------------------------------------------


def test_investigator_token_sees_only_own_site(app, make_user, token_for):
    token, _ = token_for(make_user("investigator", sites=["CN01"]))
    client = app.test_client()
    sites = client.get("/api/v1/sites", headers=bearer(token))
    assert sites.status_code == 200
    assert [s["code"] for s in sites.get_json()] == ["CN01"]
    other = _site_ids(app)["CN02"]
    assert_problem(client.get(f"/api/v1/sites/{other}", headers=bearer(token)), 404)
    assert_problem(client.get("/api/v1/users", headers=bearer(token)), 403)


def test_out_of_range_site_id_is_not_found(app, make_user, token_for):
    app.config["IWRS_PROPAGATE_UNEXPECTED"] = False
    app.config["PROPAGATE_EXCEPTIONS"] = False
    token, _ = token_for(make_user("admin"))
    assert_problem(app.test_client().get(f"/api/v1/sites/{2**63}", headers=bearer(token)), 404)


# --- creating users ------------------------------------------------------------------------------


@pytest.fixture
def admin_client(app, make_user, token_for):  # type: ignore[no-untyped-def]
    token, _ = token_for(make_user("admin"))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def test_admin_creates_user_with_one_audit_event(app, admin_client):
    before = _count_events(app, "user.created")
    response = admin_client.post("/api/v1/users", json=NEW_USER)
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert body["username"] == "apiuser"
    assert body["site_codes"] == ["CN01"]
    assert "password" not in body
    assert _count_events(app, "user.created") == before + 1
    assert _count_events(app, "user.created", body["id"]) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"email": None}, "email"),
        ({"full_name": None}, "full_name"),
        ({"password": "an admin-chosen one"}, "password"),
        ({"role": "superuser"}, "role"),
    ],
    ids=["missing-email", "missing-full-name", "admin-chosen-password", "unknown-role"],
)
def test_invalid_user_is_refused_naming_the_field(app, admin_client, change, field):
    body = {k: v for k, v in {**NEW_USER, **change}.items() if v is not None}
    problem = assert_problem(admin_client.post("/api/v1/users", json=body), 422)
    assert field in _fields(problem)
    assert not _user_exists(app, "apiuser")


def test_duplicate_username_is_a_conflict(app, admin_client):
    assert admin_client.post("/api/v1/users", json=NEW_USER).status_code == 201
    before = _count_events(app, "user.created")
    problem = assert_problem(admin_client.post("/api/v1/users", json=NEW_USER), 409)
    assert "username" in _fields(problem)
    assert _count_events(app, "user.created") == before


def test_nul_byte_in_text_is_refused_not_a_server_error(app, admin_client):
    app.config["IWRS_PROPAGATE_UNEXPECTED"] = False
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = admin_client.post("/api/v1/users", json={**NEW_USER, "full_name": "Api\x00User"})
    problem = assert_problem(response, 422)
    assert "full_name" in _fields(problem)
    assert not _user_exists(app, "apiuser")


# --- CSRF ---------------------------------------------------------------------------------------


def test_token_post_needs_no_csrf_token(app, admin_client):
    response = admin_client.post("/api/v1/users", json=NEW_USER)
    assert response.status_code == 201
    assert _user_exists(app, "apiuser")


def test_session_post_without_csrf_header_is_refused(app, make_user):
    admin = make_user("admin")
    client = app.test_client()
    assert sign_in(client, admin.username).status_code == 302
    assert client.get("/api/v1/me").status_code == 200  # the session does authenticate
    problem = assert_problem(client.post("/api/v1/users", json=NEW_USER), 400)
    assert "csrf_token" in _fields(problem)
    assert not _user_exists(app, "apiuser")
    token = csrf_from(client.get("/").get_data(as_text=True))
    allowed = client.post("/api/v1/users", json=NEW_USER, headers={"X-CSRFToken": token})
    assert allowed.status_code == 201


# --- personal tokens ----------------------------------------------------------------------------


def test_new_token_is_shown_once_and_never_listed(app, make_user, token_for):
    user = make_user("supply_manager")
    token, _ = token_for(user)
    client = app.test_client()
    sign_in(client, user.username)
    created = client.post(
        "/api/v1/tokens",
        json={"name": "ci", "password": PASSWORD},
        headers={"X-CSRFToken": csrf_from(client.get("/account/").get_data(as_text=True))},
    )
    assert created.status_code == 201
    new = created.get_json()
    assert new["token"].startswith("iwrs_")
    assert client.get("/api/v1/me", headers=bearer(new["token"])).status_code == 200
    listing = client.get("/api/v1/tokens", headers=bearer(token))
    assert listing.status_code == 200
    assert {t["name"] for t in listing.get_json()} == {"test token", "ci"}
    text = listing.get_data(as_text=True)
    for secret in (token, new["token"]):
        assert secret not in text
        assert hashlib.sha256(secret.encode()).hexdigest() not in text
    assert all("token" not in t and "token_sha256" not in t for t in listing.get_json())


def test_deleting_a_token_revokes_it(app, make_user, token_for):
    user = make_user("auditor")
    keep, _ = token_for(user, "keep")
    doomed, doomed_id = token_for(user, "doomed")
    client = app.test_client()
    response = client.delete(f"/api/v1/tokens/{doomed_id}", headers=bearer(keep))
    assert response.status_code == 204
    assert_problem(client.get("/api/v1/me", headers=bearer(doomed)), 401)
    assert client.get("/api/v1/me", headers=bearer(keep)).status_code == 200
    assert _count_events(app, "api_token.revoked", doomed_id) == 1


def test_deleting_another_users_token_is_not_found(app, make_user, token_for):
    mine, _ = token_for(make_user("auditor"))
    theirs, their_id = token_for(make_user("auditor"))
    client = app.test_client()
    assert_problem(client.delete(f"/api/v1/tokens/{their_id}", headers=bearer(mine)), 404)
    assert client.get("/api/v1/me", headers=bearer(theirs)).status_code == 200
    assert _count_events(app, "api_token.revoked") == 0


# --- OpenAPI --------------------------------------------------------------------------------------


def test_openapi_document_is_valid_3_1_and_complete(app):
    from openapi_spec_validator import validate

    response = app.test_client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"].startswith("3.1")
    validate(spec)
    assert {"/api/v1/me", "/api/v1/sites", "/api/v1/users", "/api/v1/tokens"} <= spec[
        "paths"
    ].keys()
    schemes = spec["components"]["securitySchemes"]
    assert any(s.get("type") == "http" and s.get("scheme") == "bearer" for s in schemes.values())
