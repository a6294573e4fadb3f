"""The server-rendered pages through the Flask test client: sign-in, lockout, idle sessions,
CSRF, site scoping, role gates, user administration and response hardening."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pytest
from sqlalchemy import select

from iwrs.models import AuditEvent, Site, User
from iwrs.models.users import Role
from tests.conftest import PASSWORD, csrf_from, sign_in

ROLES = [role.value for role in Role]  # the six: investigator … admin
SITE_ROLES = {"investigator", "pharmacist"}
WRONG = "unknown username or wrong password"
NEW_USER = {"username": "newuser", "full_name": "New User", "role": "investigator"}
STRONG = "a long enough password"


def _site_ids(app) -> dict[str, int]:  # type: ignore[no-untyped-def]
    from iwrs.db import read_session

    with app.app_context():
        return {s.code: s.id for s in read_session().scalars(select(Site))}


def _user(app, username: str) -> User | None:  # type: ignore[no-untyped-def]
    from iwrs.db import read_session

    with app.app_context():
        return read_session().scalars(select(User).where(User.username == username)).one_or_none()


def _actions(app, user_id: int) -> list[str]:  # type: ignore[no-untyped-def]
    from iwrs.db import read_session

    with app.app_context():
        return list(
            read_session().scalars(
                select(AuditEvent.action)
                .where(AuditEvent.user_id == user_id)
                .order_by(AuditEvent.seq)
            )
        )


def _flashes(html: str) -> list[str]:
    return re.findall(r'<p class="flash [^"]*"[^>]*>([^<]*)</p>', html)


def _csrf(client, url: str) -> str:  # type: ignore[no-untyped-def]
    page = client.get(url)
    assert page.status_code == 200, page.status_code
    return csrf_from(page.get_data(as_text=True))


def _sign_in_to(client, username: str, target: str):  # type: ignore[no-untyped-def]
    data = {"username": username, "password": PASSWORD, "csrf_token": _csrf(client, "/sign-in")}
    return client.post("/sign-in", query_string={"next": target}, data=data)


def _answer_unexpected_errors_with_500(app) -> None:  # type: ignore[no-untyped-def]
    app.config["IWRS_PROPAGATE_UNEXPECTED"] = False
    app.config["PROPAGATE_EXCEPTIONS"] = False


# --- sign-in ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_each_role_signs_in_and_sees_its_home_page(app, make_user, role):
    user = make_user(role, sites=["CN01"] if role in SITE_ROLES else None)
    client = app.test_client()
    response = sign_in(client, user.username)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 200
    html = home.get_data(as_text=True)
    assert role.replace("_", " ") in html
    assert user.username in html


def test_wrong_password_and_unknown_username_get_the_same_refusal(app, make_user):
    user = make_user("investigator", sites=["CN01"])
    wrong = sign_in(app.test_client(), user.username, "not the password at all")
    unknown = sign_in(app.test_client(), "nobody-here", "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    for response in (wrong, unknown):
        assert _flashes(response.get_data(as_text=True)) == [WRONG[0].upper() + WRONG[1:] + "."]

    def normalise(html: str, username: str) -> str:
        html = re.sub(r'value="[^"]*"', 'value=""', html)
        return html.replace(username, "USERNAME")

    # Nothing else differs: no attempt counts, no "inactive", no "locked".
    assert normalise(wrong.get_data(as_text=True), user.username) == normalise(
        unknown.get_data(as_text=True), "nobody-here"
    )


def test_a_burst_of_failures_is_throttled_not_locked(app, make_user):
    """Five failures from one source for one username: further attempts, the right password
    included, get 429 and Retry-After with the sign-in page; the account is not locked, and
    the throttle writes one audit event per window, not one per attempt."""
    user = make_user("pharmacist", sites=["CN01"])
    for _ in range(5):
        assert sign_in(app.test_client(), user.username, "wrong password!!").status_code == 401
    for _ in range(3):
        refused = sign_in(app.test_client(), user.username)
        assert refused.status_code == 429
        assert 0 < int(refused.headers["Retry-After"]) <= 61
        assert "Too many failed sign-in attempts" in refused.get_data(as_text=True)
    stored = _user(app, user.username)
    assert stored.locked_until is None and stored.sign_in_locked_until is None
    actions = _actions(app, user.id)
    assert actions.count("auth.sign_in_failed") == 5
    assert "user.locked" not in actions and "user.sign_in_locked" not in actions
    with app.app_context():
        from iwrs.db import read_session

        throttled = read_session().scalars(
            select(AuditEvent).where(AuditEvent.action == "auth.sign_in_throttled")
        )
        assert [e.username for e in throttled] == [user.username]
    app.extensions["iwrs.limiter"].reset()  # the window has passed
    assert sign_in(app.test_client(), user.username).status_code == 302


# --- sessions ---------------------------------------------------------------------------------


def test_idle_session_expires_after_fifteen_minutes(login_as, clock):
    client, _ = login_as("auditor")
    assert client.get("/").status_code == 200
    clock.advance(minutes=16)
    expired = client.get("/")
    assert expired.status_code == 302
    assert expired.headers["Location"].startswith("/sign-in")
    page = client.get(expired.headers["Location"])
    assert "expired" in " ".join(_flashes(page.get_data(as_text=True)))
    assert client.get("/").status_code == 302  # and the session stays ended


def test_activity_keeps_the_session_alive(login_as, clock):
    client, _ = login_as("auditor")
    for _ in range(4):
        clock.advance(minutes=14)
        assert client.get("/").status_code == 200


# --- CSRF -------------------------------------------------------------------------------------


def test_post_without_csrf_token_is_refused_and_changes_nothing(app, login_as):
    client, _ = login_as("admin")
    response = client.post("/admin/users/new", data={**NEW_USER, "password": STRONG})
    assert response.status_code == 400
    assert _user(app, "newuser") is None


def test_sign_out_without_csrf_token_is_refused(login_as):
    client, _ = login_as("auditor")
    assert client.post("/sign-out").status_code == 400
    assert client.get("/").status_code == 200  # still signed in


# --- site scoping and role gates ----------------------------------------------------------------


@pytest.mark.parametrize("role", sorted(SITE_ROLES))
def test_site_roles_see_only_their_own_sites(app, login_as, role):
    sites = _site_ids(app)
    client, _ = login_as(role, ["CN01"])
    assert client.get(f"/sites/{sites['CN01']}").status_code == 200
    assert client.get(f"/sites/{sites['CN02']}").status_code == 404
    listing = client.get("/sites/").get_data(as_text=True)
    assert "CN01" in listing
    assert not {"CN02", "CN03", "CN04"} & set(re.findall(r"CN0\d", listing))


def test_admin_sees_all_four_sites(app, login_as):
    client, _ = login_as("admin")
    listing = client.get("/sites/").get_data(as_text=True)
    assert set(re.findall(r"CN0\d", listing)) == {"CN01", "CN02", "CN03", "CN04"}
    for site_id in _site_ids(app).values():
        assert client.get(f"/sites/{site_id}").status_code == 200


def test_pharmacist_may_not_manage_users(login_as):
    client, _ = login_as("pharmacist", ["CN01"])
    assert client.get("/admin/users").status_code == 403


def test_anonymous_user_is_sent_to_sign_in(app):
    response = app.test_client().get("/admin/users")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/sign-in")


# --- user administration ------------------------------------------------------------------------


def _new_user_form(token: str, **fields: object) -> dict[str, object]:
    email = "new@example.org"
    return {**NEW_USER, "csrf_token": token, "site_codes": ["CN02"], "email": email, **fields}


def test_new_user_page_offers_every_role_and_site(login_as):
    # Every role and every site is offered (the select is written by _macros.html).
    client, _ = login_as("admin")
    page = client.get("/admin/users/new")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert all(f'value="{value}"' in html for value in [*ROLES, "CN01", "CN04"])


def test_admin_creates_user_through_the_form(app, login_as):
    client, _ = login_as("admin")
    token = _csrf(client, "/admin/users/new")
    response = client.post("/admin/users/new", data=_new_user_form(token))
    assert response.status_code == 302
    created = _user(app, "newuser")
    assert created is not None
    assert str(created.role) == "investigator"
    assert created.site_ids == {_site_ids(app)["CN02"]}


def test_new_user_without_email_is_refused_by_the_form(app, login_as):
    client, _ = login_as("admin")
    token = _csrf(client, "/admin/users/new")
    response = client.post("/admin/users/new", data=_new_user_form(token, email=""))
    assert response.status_code == 422
    assert 'data-field="email"' in response.get_data(as_text=True)  # named in words on the page
    assert _user(app, "newuser") is None


def test_only_site_roles_can_be_given_sites(app, login_as):
    client, _ = login_as("admin")
    token = _csrf(client, "/admin/users/new")
    form = _new_user_form(token, role="auditor", site_codes=["CN01"])
    response = client.post("/admin/users/new", data=form)
    assert response.status_code == 422
    assert "only investigators and pharmacists" in response.get_data(as_text=True)
    assert _user(app, "newuser") is None


def _deactivate(client, user_id: int, signature: str):  # type: ignore[no-untyped-def]
    token = _csrf(client, f"/admin/users/{user_id}")
    fields = {
        "csrf_token": token,
        "reason": "left the trial",
        "understood": "y",
        "signature_password": signature,
    }
    data = {f"deactivate-{name}": value for name, value in fields.items()}
    return client.post(f"/admin/users/{user_id}/deactivate", data={"csrf_token": token, **data})


def test_deactivation_ends_the_users_session_and_sign_in(app, login_as):
    admin, _ = login_as("admin")
    victim, user = login_as("investigator", ["CN01"])
    assert victim.get("/").status_code == 200
    response = _deactivate(admin, user.id, PASSWORD)
    assert response.status_code == 302
    assert _user(app, user.username).active is False
    ended = victim.get("/")
    assert ended.status_code == 302
    assert ended.headers["Location"].startswith("/sign-in")
    again = sign_in(app.test_client(), user.username)
    assert again.status_code == 401
    assert WRONG in again.get_data(as_text=True).lower()


def test_deactivation_with_wrong_signature_changes_nothing(app, login_as):
    admin, admin_user = login_as("admin")
    victim, user = login_as("investigator", ["CN01"])
    response = _deactivate(admin, user.id, "not my password at all")
    assert response.status_code == 401
    assert "the password is wrong" in response.get_data(as_text=True)
    assert _user(app, user.username).active is True
    assert victim.get("/").status_code == 200
    assert "user.deactivated" not in _actions(app, admin_user.id)


# --- hardening --------------------------------------------------------------------------------

TAB = pytest.param("/\t/evil.example", id="tab")


@pytest.mark.parametrize("target", ["//evil.example", "https://evil.example/", "/\\evil", TAB])
def test_sign_in_never_redirects_off_site(app, make_user, target):
    response = _sign_in_to(app.test_client(), make_user("auditor").username, target)
    assert response.status_code == 302
    location = response.headers["Location"]
    # As a browser reads it (backslash as slash, tabs dropped), it stays on this host.
    as_browser = location.replace("\\", "/").replace("\t", "")
    assert urlsplit(urljoin("https://iwrs.test/x", as_browser)).netloc == "iwrs.test"
    if target.startswith(("//", "https:")):
        assert location == "/"


def test_very_long_username_gets_no_server_error(app):
    response = sign_in(app.test_client(), "u" * 10_000, "whatever password")
    assert response.status_code == 422
    assert "Traceback" not in response.get_data(as_text=True)


def test_newline_in_next_gets_no_server_error(app, make_user):
    _answer_unexpected_errors_with_500(app)
    response = _sign_in_to(app.test_client(), make_user("auditor").username, "/\n/evil.example")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_nul_byte_in_username_gets_no_server_error(app):
    _answer_unexpected_errors_with_500(app)
    response = sign_in(app.test_client(), "ab\x00cd", "whatever password")
    assert response.status_code == 422
    assert 'data-rule="control_characters"' in response.get_data(as_text=True)


def test_session_cookie_and_frame_headers(app, make_user):
    user = make_user("auditor")
    client = app.test_client()
    assert client.get("/sign-in").headers["X-Frame-Options"] == "DENY"
    response = sign_in(client, user.username)
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("iwrs_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert response.headers["X-Frame-Options"] == "DENY"
