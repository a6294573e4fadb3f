"""The admin's user pages (issue 15, problem 11): the e-mail is an address, a site role has at
least one site, sites are ticked as checkboxes and the user list names site codes."""

from __future__ import annotations

import re

from sqlalchemy import select

from iwrs.db import read_session
from iwrs.models.users import User
from tests.conftest import csrf_from

NEW = {"username": "newuser", "full_name": "New User", "email": "new@example.org"}


def refusals(html: str) -> set[tuple[str, str]]:
    return set(re.findall(r'data-field="([^"]+)" data-rule="([^"]+)"', html))


def created(app, username: str = "newuser") -> bool:  # type: ignore[no-untyped-def]
    with app.app_context():
        query = select(User).where(User.username == username)
        return read_session().scalars(query).one_or_none() is not None


def test_the_new_user_form_refuses_a_bad_address_and_a_site_role_without_a_site(app, login_as):
    client, _ = login_as("admin")
    page = client.get("/admin/users/new").get_data(as_text=True)
    token = csrf_from(page)
    # Sites are checkboxes, one per site, never a Ctrl-click multiple select.
    assert len(re.findall(r'type="checkbox" name="site_codes"', page)) == 4
    assert "multiple" not in page

    bad = {**NEW, "csrf_token": token, "role": "investigator", "site_codes": ["CN01"]}
    response = client.post("/admin/users/new", data={**bad, "email": "not-an-email"})
    assert response.status_code == 422
    assert refusals(response.get_data(as_text=True)) == {("email", "email_format")}

    for role in ("investigator", "pharmacist"):
        form = {**NEW, "csrf_token": token, "role": role}
        response = client.post("/admin/users/new", data=form)
        assert response.status_code == 422
        assert refusals(response.get_data(as_text=True)) == {("sites", "site_required")}
    assert not created(app)

    form = {**NEW, "csrf_token": token, "role": "pharmacist", "site_codes": ["CN01", "CN03"]}
    assert client.post("/admin/users/new", data=form).status_code == 302
    listing = client.get("/admin/users").get_data(as_text=True)
    row = re.search(r"newuser</a></td>(.*?)</tr>", listing, re.S)
    assert row and "<td>CN01, CN03</td>" in row.group(1)


def test_a_site_role_cannot_be_left_without_a_site(app, login_as, make_user):
    client, _ = login_as("admin")
    pharmacist = make_user("pharmacist", sites=["CN02"])
    page = client.get(f"/admin/users/{pharmacist.id}").get_data(as_text=True)
    assert re.search(r'name="assign-site_codes" value="CN02" checked', page)
    token = csrf_from(page)
    response = client.post(f"/admin/users/{pharmacist.id}/sites", data={"csrf_token": token})
    assert response.status_code == 422
    assert refusals(response.get_data(as_text=True)) == {("sites", "site_required")}
    with app.app_context():
        assert read_session().get(User, pharmacist.id).site_codes == ["CN02"]
