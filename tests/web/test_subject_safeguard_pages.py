"""Safeguards of the subject page (issue 15): withdrawal and re-screening each on a page of its
own that states what will happen and asks for a reason and a confirmation, the refused value
beside its field with what was typed kept; and a session that ends while idle sends the person
back to the same subject once signed in again."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select

from iwrs.audit import Actor
from iwrs.db import read_session
from iwrs.models import Site, SiteStatus, Subject
from iwrs.services import sites, subjects
from tests.conftest import PASSWORD, csrf_from, sign_in


def test_withdrawal_and_rescreening_ask_for_a_reason_and_a_confirmation(app, make_user, clock):
    admin = make_user("admin")
    investigator = make_user("investigator", sites=["CN01"])
    with app.app_context():
        cn01 = read_session().scalars(select(Site).where(Site.code == "CN01")).one().id
        sites.change_site_status(
            actor=Actor.of(admin),
            site_id=cn01,
            status=SiteStatus.ACTIVE,
            signer_password=PASSWORD,
            understood=True,
        )
        subject_id = subjects.screen_subject(
            actor=Actor.of(investigator), site_id=cn01, date_of_birth="1961-04-02", sex="male"
        ).id
    client = app.test_client()
    assert sign_in(client, investigator.username).status_code == 302
    page = client.get(f"/subjects/{subject_id}").get_data(as_text=True)
    # Not a button beside "Sign: eligible": a link to its own page.
    assert f'action="/subjects/{subject_id}/withdraw"' not in page
    assert f'href="/subjects/{subject_id}/withdraw"' in page
    form = client.get(f"/subjects/{subject_id}/withdraw").get_data(as_text=True)
    assert 'class="what-happens"' in form
    token = csrf_from(form)

    refused = client.post(
        f"/subjects/{subject_id}/withdraw", data={"reason": "Moved away", "csrf_token": token}
    )
    html = refused.get_data(as_text=True)
    assert refused.status_code == 422
    assert 'data-field="understood" data-rule="required"' in html
    assert 'aria-describedby="err-understood"' in html and 'value="Moved away"' in html
    blank = client.post(
        f"/subjects/{subject_id}/rescreen",
        data={"reason": " ", "understood": "y", "csrf_token": token},
    )
    assert blank.status_code == 422
    assert 'data-field="reason" data-rule="required"' in blank.get_data(as_text=True)
    with app.app_context():
        assert read_session().get(Subject, subject_id).status == "screening"

    done = client.post(
        f"/subjects/{subject_id}/withdraw",
        data={"reason": "Moved away", "understood": "y", "csrf_token": token},
    )
    assert done.status_code == 302
    with app.app_context():
        assert read_session().get(Subject, subject_id).status == "withdrawn"

    clock.advance(minutes=16)  # idle past the limit
    expired = client.get(f"/subjects/{subject_id}")
    back_to = parse_qs(urlsplit(expired.headers["Location"]).query)["next"]
    assert expired.status_code == 302 and back_to == [f"/subjects/{subject_id}"]
    page = client.get(expired.headers["Location"]).get_data(as_text=True)
    again = client.post(
        expired.headers["Location"],
        data={
            "username": investigator.username,
            "password": PASSWORD,
            "csrf_token": csrf_from(page),
        },
    )
    assert again.headers["Location"] == f"/subjects/{subject_id}"
