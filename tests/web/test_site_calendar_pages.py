"""The site's calendar through the pages and the API (issue 12): stated dates with their
refusals by field and rule, times shown in the site's zone beside UTC, the admin's zone edit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from iwrs.audit import Actor
from iwrs.db import read_session
from iwrs.demo import eligible_answers
from iwrs.eligibility import Engine
from iwrs.models import AuditEvent, Site, SiteStatus, Subject
from iwrs.protocol import load_protocol
from iwrs.services import sites, users
from tests.conftest import PASSWORD, csrf_from, next_initials

ENGINE = Engine(load_protocol())


@pytest.fixture
def site_ids(app, make_user):
    admin = make_user("admin")
    with app.app_context():
        ids = {s.code: s.id for s in read_session().scalars(select(Site))}
        sites.change_site_status(
            actor=Actor.of(admin),
            site_id=ids["CN01"],
            status=SiteStatus.ACTIVE,
            signer_password=PASSWORD,
            understood=True,
        )
    return ids


@pytest.fixture
def api(app, site_ids, make_user):
    user = make_user("investigator", sites=["CN01"])
    with app.app_context():
        token, _ = users.create_api_token(
            actor=Actor.of(user), user_id=user.id, name="edc", password=PASSWORD
        )
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def rules(response) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.get_data(as_text=True)
    return [(e["field"], e["rule"]) for e in response.get_json()["errors"]]


def screen_body(**extra: str) -> dict[str, str]:
    return {
        "site_code": "CN01",
        "date_of_birth": "1966-09-30",
        "sex": "male",
        "initials": next_initials(),
        **extra,
    }


def test_api_screening_date_stated_refused_by_field_and_rule(app, api, clock):
    clock.current = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)  # 07:30 on 3 March in Beijing
    future = api.post("/api/v1/subjects", json=screen_body(screening_date="2026-03-04"))
    assert rules(future) == [("screening_date", "future_date")]
    unexplained = api.post("/api/v1/subjects", json=screen_body(screening_date="2026-03-01"))
    assert rules(unexplained) == [("backdate_reason", "backdate_reason_required")]
    malformed = api.post("/api/v1/subjects", json=screen_body(screening_date="1/3/2026"))
    assert rules(malformed) == [("screening_date", "date_format")]  # 1 March or 3 January?
    today = api.post("/api/v1/subjects", json=screen_body())
    assert today.status_code == 201
    assert today.get_json()["screening_date"] == "2026-03-03"  # Beijing's date, not UTC's
    assert today.get_json()["site_time_zone"] == "Asia/Shanghai"
    stated = api.post(
        "/api/v1/subjects",
        json=screen_body(screening_date="2026-03-01", backdate_reason="EDC batch"),
    )
    assert stated.status_code == 201 and stated.get_json()["screening_date"] == "2026-03-01"


def test_api_assessment_returns_utc_entry_and_the_sites_local_date(app, api, clock):
    clock.current = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)
    subject = api.post("/api/v1/subjects", json=screen_body()).get_json()
    answers = eligible_answers(ENGINE, datetime(2026, 3, 3).date())
    url = f"/api/v1/subjects/{subject['id']}/assessments"
    early = api.post(url, json={"answers": answers, "assessment_date": "2026-03-02"})
    assert rules(early) == [("assessment_date", "before_previous_step")]
    body = api.post(url, json={"answers": answers}).get_json()
    assert body["assessment_date"] == "2026-03-03"
    assert datetime.fromisoformat(body["assessed_at"]) == clock.current  # UTC, ISO 8601
    assert datetime.fromisoformat(body["assessed_at"]).utcoffset().total_seconds() == 0


def test_pages_show_the_sites_local_time_with_its_zone_and_utc(app, site_ids, login_as, clock):
    clock.current = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)
    client, _ = login_as("investigator", ["CN01"])
    token = csrf_from(client.get("/subjects/").get_data(as_text=True))
    back = client.post(
        "/subjects/", data={**screen_body(screening_date="2026-03-02"), "csrf_token": token}
    )
    assert back.status_code == 422  # back-dated without a reason: refused, nothing saved
    with app.app_context():
        assert read_session().scalar(select(Subject.id)) is None
    created = client.post("/subjects/", data={**screen_body(), "csrf_token": token})
    assert created.status_code == 302
    subject_id = int(created.headers["Location"].rsplit("/", 1)[1])
    answers = eligible_answers(ENGINE, datetime(2026, 3, 3).date())
    from tests.web.test_subject_pages import form_fields

    assessed = client.post(
        f"/subjects/{subject_id}/assessment", data={**form_fields(answers), "csrf_token": token}
    )
    assert assessed.status_code == 302, assessed.get_data(as_text=True)
    page = client.get(f"/subjects/{subject_id}").get_data(as_text=True)
    assert "03-MAR-2026 07:30 CST (Asia/Shanghai) · 02-MAR-2026 23:30 UTC" in page
    assert "03-MAR-2026" in page  # the screening date, DD-MMM-YYYY


def test_the_admin_changes_a_sites_zone_on_the_site_page(app, site_ids, login_as):
    client, admin = login_as("admin")
    url = f"/sites/{site_ids['CN02']}"
    page = client.get(url).get_data(as_text=True)
    assert "Asia/Shanghai" in page
    token = csrf_from(page)
    bad = client.post(
        f"{url}/time-zone", data={"time_zone": "UTC+8", "reason": "x", "csrf_token": token}
    )
    assert bad.status_code == 422
    good = client.post(
        f"{url}/time-zone",
        data={"time_zone": "Asia/Urumqi", "reason": "site clock", "csrf_token": token},
    )
    assert good.status_code == 302
    assert "Asia/Urumqi" in client.get(url).get_data(as_text=True)
    with app.app_context():
        event = (
            read_session()
            .scalars(select(AuditEvent).where(AuditEvent.action == "site.time_zone_changed"))
            .one()
        )
        assert (event.reason, event.username) == ("site clock", admin.username)
