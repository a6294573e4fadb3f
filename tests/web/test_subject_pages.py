"""Screening and eligibility through the pages and the API, as an investigator would use them;
nobody else — other sites, blinded or sponsor roles — can read or change an assessment."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from iwrs.audit import Actor
from iwrs.db import read_session
from iwrs.demo import eligible_answers
from iwrs.eligibility import Engine
from iwrs.models import EligibilityAssessment, Site, SiteStatus, Subject
from iwrs.protocol import load_protocol
from iwrs.services import sites, subjects, users
from tests.conftest import PASSWORD, csrf_from, next_initials

ENGINE = Engine(load_protocol())


@pytest.fixture
def site_ids(app, make_user):
    admin = make_user("admin")
    with app.app_context():
        ids = {s.code: s.id for s in read_session().scalars(select(Site))}
        for code in ("CN01", "CN02"):
            sites.change_site_status(
                actor=Actor.of(admin),
                site_id=ids[code],
                status=SiteStatus.ACTIVE,
                signer_password=PASSWORD,
                understood=True,
            )
    return ids


def form_fields(answers: dict) -> dict:
    """Answers as the assessment form posts them (checkbox words, medication rows)."""
    data = {}
    with_words = {spec.name: spec for spec in ENGINE.fields()}
    for name, value in answers.items():
        if name == "medications":
            data["medications-none"] = "y" if value == [] else ""
            for i, med in enumerate(value):
                for key, item in med.items():
                    data[f"med-{i}-{key}"] = "y" if item is True else str(item)
        elif value in ("not_done", *with_words[name].choices) and with_words[name].kind != "choice":
            data[f"{name}--{value}"] = "y"
        else:
            data[name] = value
    return data


def post(client, url, data):
    token = csrf_from(client.get("/subjects/").get_data(as_text=True))
    return client.post(url, data={**data, "csrf_token": token})


@pytest.fixture
def investigator(login_as, site_ids):
    return login_as("investigator", ["CN01"])


def register(client, site_code="CN01"):
    response = post(
        client,
        "/subjects/",
        {
            "site_code": site_code,
            "date_of_birth": "1966-09-30",
            "sex": "male",
            "initials": next_initials(),
        },
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    return int(response.headers["Location"].rsplit("/", 1)[1])


def subject_row(app, subject_id):
    with app.app_context():
        return read_session().get(Subject, subject_id)


def test_investigator_screens_assesses_and_confirms_through_the_pages(app, investigator):
    client, _ = investigator
    subject_id = register(client)
    page = client.get(f"/subjects/{subject_id}").get_data(as_text=True)
    assert "CN01-001" in page and "Eligibility assessment" in page
    subject = subject_row(app, subject_id)
    answers = eligible_answers(ENGINE, subject.screening_date)
    saved = post(client, f"/subjects/{subject_id}/assessment", form_fields(answers))
    assert saved.status_code == 302
    page = client.get(f"/subjects/{subject_id}").get_data(as_text=True)
    assert "Latest assessment: eligible" in page and "Sign: eligible" in page
    with app.app_context():
        assessment_id = read_session().scalar(select(func.max(EligibilityAssessment.id)))
    signed = post(
        client,
        f"/subjects/{subject_id}/decision",
        {
            "assessment_id": assessment_id,
            "decision": "eligible",
            "understood": "y",
            "signature_password": PASSWORD,
        },
    )
    assert signed.status_code == 302
    assert subject_row(app, subject_id).status == "eligible"
    assert "disease: RA" in client.get(f"/subjects/{subject_id}").get_data(as_text=True)


def test_failing_criteria_are_listed_with_their_text(app, investigator):
    client, _ = investigator
    subject_id = register(client)
    answers = eligible_answers(ENGINE, subject_row(app, subject_id).screening_date)
    answers.update(fvc_pct="39.9", qt_ms="", platelets="74")
    post(client, f"/subjects/{subject_id}/assessment", form_fields(answers))
    page = client.get(f"/subjects/{subject_id}").get_data(as_text=True)
    assert "Latest assessment: not eligible" in page
    assert "I5" in page and "E14.2" in page and "qt_ms" in page
    assert "Sign: screen failure" in page and "Sign: eligible" not in page


def test_implausible_value_is_refused_on_the_page_and_nothing_saved(app, investigator):
    client, _ = investigator
    subject_id = register(client)
    response = post(
        client,
        f"/subjects/{subject_id}/assessment",
        {"fvc_pct": "400", "wbc": "5000", "diagnosis_ra": "yes"},
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "fvc_pct" in page and "% predicted" in page and "wbc" in page
    assert 'value="400"' in page  # what was typed is kept for correction
    with app.app_context():
        assert read_session().scalar(select(func.count()).select_from(EligibilityAssessment)) == 0


def test_not_eligible_subject_cannot_be_signed_eligible_by_page_or_api(app, investigator):
    client, user = investigator
    subject_id = register(client)
    with app.app_context():
        answers = eligible_answers(ENGINE, subject_row(app, subject_id).screening_date)
        answers["attest_E18"] = "yes"  # investigator judges the subject unsuitable
        record = subjects.record_assessment(
            actor=Actor.of(user), subject_id=subject_id, answers=answers
        )
        token, _ = users.create_api_token(
            actor=Actor.of(user), user_id=user.id, name="edc", password=PASSWORD
        )
    assert record.result.outcome == "not_eligible"
    page = post(
        client,
        f"/subjects/{subject_id}/decision",
        {
            "assessment_id": record.row.id,
            "decision": "eligible",
            "understood": "y",
            "signature_password": PASSWORD,
        },
    )
    assert page.status_code == 409
    api = client.post(
        f"/api/v1/subjects/{subject_id}/eligibility-decision",
        headers={"Authorization": f"Bearer {token}"},
        json={
            "assessment_id": record.row.id,
            "decision": "eligible",
            "understood": True,
            "signature_password": PASSWORD,
        },
    )
    assert api.status_code == 409 and api.content_type == "application/problem+json"
    assert api.get_json()["errors"][0]["field"] == "decision"
    assert subject_row(app, subject_id).status == "screening"


@pytest.mark.parametrize(
    "role", ["pharmacist", "supply_manager", "unblinded_statistician", "auditor", "admin"]
)
def test_other_roles_cannot_read_or_change_assessments(app, investigator, login_as, role):
    client, _ = investigator
    subject_id = register(client)
    other, _ = login_as(role, ["CN01"] if role == "pharmacist" else None)
    assert other.get("/subjects/").status_code == 403
    assert other.get(f"/subjects/{subject_id}").status_code == 403
    token = csrf_from(other.get("/account/").get_data(as_text=True))
    assert (
        other.post(
            f"/subjects/{subject_id}/assessment", data={"csrf_token": token, "fvc_pct": "50"}
        ).status_code
        == 403
    )
    assert other.get(f"/api/v1/subjects/{subject_id}/assessments").status_code == 403


def test_other_site_investigator_gets_not_found_on_page_and_api(app, investigator, login_as):
    client, _ = investigator
    subject_id = register(client)
    outsider, _ = login_as("investigator", ["CN02"])
    assert outsider.get(f"/subjects/{subject_id}").status_code == 404
    assert outsider.get(f"/api/v1/subjects/{subject_id}/assessments").status_code == 404
    assert "CN01-001" not in outsider.get("/subjects/").get_data(as_text=True)
    token = csrf_from(outsider.get("/subjects/").get_data(as_text=True))
    refused = outsider.post(
        f"/subjects/{subject_id}/withdraw", data={"csrf_token": token, "reason": "x"}
    )
    assert refused.status_code == 404
    assert subject_row(app, subject_id).status == "screening"


def test_api_screens_and_assesses_with_every_failure_named(app, site_ids, make_user):
    user = make_user("investigator", sites=["CN02"])
    with app.app_context():
        token, _ = users.create_api_token(
            actor=Actor.of(user), user_id=user.id, name="edc", password=PASSWORD
        )
    client = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    created = client.post(
        "/api/v1/subjects",
        headers=auth,
        json={"site_code": "CN02", "date_of_birth": "1971-01-20", "sex": "female"},
    )
    assert created.status_code == 201 and created.get_json()["screening_number"] == "CN02-001"
    subject_id = created.get_json()["id"]
    fields = client.get("/api/v1/subjects/fields", headers=auth).get_json()
    assert {"fvc_pct", "qt_ms", "medications", "attest_E18"} <= {f["name"] for f in fields}
    answers = eligible_answers(
        ENGINE, subject_row(app, subject_id).screening_date, childbearing_potential=True
    )
    answers.update(dlco_pct="39", pregnancy_test="positive")
    result = client.post(
        f"/api/v1/subjects/{subject_id}/assessments", headers=auth, json={"answers": answers}
    )
    body = result.get_json()
    assert result.status_code == 201 and body["outcome"] == "not_eligible"
    assert body["failing"] == ["I6", "E17a"]
    assert {r["number"] for r in body["results"] if r["status"] == "fail"} == {"I6", "E17a"}
    bad = client.post(
        f"/api/v1/subjects/{subject_id}/assessments",
        headers=auth,
        json={"answers": {"fvc_pct": 400, "no_such_field": 1}},
    )
    assert bad.status_code == 422
    assert {e["field"] for e in bad.get_json()["errors"]} == {"fvc_pct", "no_such_field"}
    other_site = client.post(
        "/api/v1/subjects",
        headers=auth,
        json={"site_code": "CN01", "date_of_birth": "1971-01-20", "sex": "female"},
    )
    assert other_site.status_code == 404


def test_junk_assessment_id_on_the_decision_form_is_refused_not_a_500(app, investigator):
    client, _ = investigator
    subject_id = register(client)
    app.config["IWRS_PROPAGATE_UNEXPECTED"] = False
    response = post(
        client,
        f"/subjects/{subject_id}/decision",
        {
            "assessment_id": "abc",
            "decision": "eligible",
            "understood": "y",
            "signature_password": PASSWORD,
        },
    )
    assert response.status_code == 422
    assert "assessment_id" in response.get_data(as_text=True)
    assert subject_row(app, subject_id).status == "screening"
