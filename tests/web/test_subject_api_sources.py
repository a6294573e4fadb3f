"""Issue 12 through the API: the fields listing with every accepted drug name, class and ATC
code; a possible duplicate person; a drug classified with a signature; a medication missing its
date is an incomplete assessment, not a 422."""

from __future__ import annotations

from datetime import date

from iwrs.audit import Actor
from iwrs.services import users
from tests.conftest import PASSWORD
from tests.web import test_subject_pages

site_ids = test_subject_pages.site_ids  # fixture


def api(app, make_user, sites):
    user = make_user("investigator", sites=sites)
    with app.app_context():
        token, _ = users.create_api_token(
            actor=Actor.of(user), user_id=user.id, name="edc", password=PASSWORD
        )
    return app.test_client(), {"Authorization": f"Bearer {token}"}


PERSON = {"site_code": "CN01", "date_of_birth": "1971-01-20", "sex": "female", "initials": "LM"}


def test_fields_list_every_unit_and_every_accepted_drug_with_class_and_atc(
    app, site_ids, make_user
):
    client, auth = api(app, make_user, ["CN01"])
    fields = {f["name"]: f for f in client.get("/api/v1/subjects/fields", headers=auth).json}
    assert {"hrct_ild_confirmed", "rhc_done", "malignancy_history"} <= set(fields)
    assert fields["fvc_pct"]["unit"] == "% predicted"
    drugs = {d["name"]: d for d in fields["medications"]["drugs"]}
    assert drugs["tolizumab"] == {
        "name": "tolizumab",
        "drug": "tocilizumab",
        "class": "washout_6_months",
        "class_label": drugs["tocilizumab"]["class_label"],
        "atc": "L04AC07",
    }
    assert drugs["cyclosporine"]["drug"] == "ciclosporin"
    assert drugs["mycophenolate mofetil"]["atc"] == "L04AA06"
    classes = {c["code"] for c in fields["medications"]["drug_classes"]}
    assert "not_restricted" in classes and "glucocorticoid" not in classes
    assert fields["fvc_pct"]["drugs"] == []


def test_a_duplicate_person_is_a_409_until_signed_as_different(app, site_ids, make_user):
    client, auth = api(app, make_user, ["CN01"])
    assert client.post("/api/v1/subjects", headers=auth, json=PERSON).status_code == 201
    again = client.post("/api/v1/subjects", headers=auth, json=PERSON)
    assert again.status_code == 409
    assert again.json["errors"][0]["rule"] == "possible_duplicate"
    signed = client.post(
        "/api/v1/subjects",
        headers=auth,
        json={**PERSON, "different_person_signature_password": PASSWORD},
    )
    assert signed.status_code == 201 and signed.json["screening_number"] == "CN01-002"


def test_a_drug_is_classified_then_judged_and_a_missing_date_is_incomplete(
    app, site_ids, make_user
):
    client, auth = api(app, make_user, ["CN01"])
    subject = client.post("/api/v1/subjects", headers=auth, json=PERSON).json
    url = f"/api/v1/subjects/{subject['id']}"
    with app.app_context():
        from iwrs.demo import eligible_answers
        from iwrs.services import subjects

        answers = eligible_answers(subjects.engine(), date.fromisoformat(subject["screening_date"]))
    answers["medications"] = [{"drug": "azathioprine"}, {"drug": "baricitinib", "ongoing": True}]
    first = client.post(f"{url}/assessments", headers=auth, json={"answers": answers})
    assert first.status_code == 201 and first.json["outcome"] == "incomplete"
    assert set(first.json["missing"]) == {"azathioprine.last_dose", "drug_class:baricitinib"}
    bad = client.post(
        f"{url}/drug-classifications",
        headers=auth,
        json={"drug": "baricitinib", "drug_class": "washout_30_days", "signature_password": "x"},
    )
    assert bad.status_code == 401
    done = client.post(
        f"{url}/drug-classifications",
        headers=auth,
        json={
            "drug": "Baricitinib",
            "drug_class": "washout_30_days",
            "signature_password": PASSWORD,
        },
    )
    assert done.status_code == 201 and done.json == {
        "drug": "baricitinib",
        "drug_class": "washout_30_days",
    }
    answers["medications"][0]["last_dose"] = "2020-01-01"
    second = client.post(f"{url}/assessments", headers=auth, json={"answers": answers})
    assert second.json["outcome"] == "not_eligible" and second.json["failing"] == ["E3.3c"]


def test_the_subject_page_offers_the_signed_classification_of_an_unknown_drug(
    app, site_ids, login_as
):
    client, _ = login_as("investigator", ["CN01"])
    subject_id = test_subject_pages.register(client)
    with app.app_context():
        from iwrs.demo import eligible_answers
        from iwrs.services import subjects

        screening = test_subject_pages.subject_row(app, subject_id).screening_date
        answers = eligible_answers(subjects.engine(), screening)
    answers["medications"] = [{"drug": "iguratimod", "ongoing": True}]
    data = test_subject_pages.form_fields(answers)
    test_subject_pages.post(client, f"/subjects/{subject_id}/assessment", data)
    page = client.get(f"/subjects/{subject_id}").get_data(as_text=True)
    assert "drug_class:iguratimod" in page and "classify-drug" in page
    form = {"drug": "iguratimod", "drug_class": "not_restricted"}
    wrong = test_subject_pages.post(
        client, f"/subjects/{subject_id}/classify-drug", {**form, "signature_password": "x"}
    )
    assert wrong.status_code == 401
    done = test_subject_pages.post(
        client, f"/subjects/{subject_id}/classify-drug", {**form, "signature_password": PASSWORD}
    )
    assert done.status_code == 302
    again = test_subject_pages.post(client, f"/subjects/{subject_id}/assessment", data)
    assert again.status_code in (200, 302)
    with app.app_context():
        from sqlalchemy import select

        from iwrs.db import read_session
        from iwrs.models import EligibilityAssessment

        outcomes = (
            read_session()
            .scalars(
                select(EligibilityAssessment.outcome)
                .where(EligibilityAssessment.subject_id == subject_id)
                .order_by(EligibilityAssessment.id)
            )
            .all()
        )
    assert [str(o) for o in outcomes] == ["incomplete", "eligible"]
