"""Unscheduled and replacement kits through the pages and the API: the investigator's signed
request (form and API), then the pharmacist dispenses it and confirms the kit in hand; refusals
name the field and rule; a pharmacist cannot make the request."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import PASSWORD, csrf_from
from tests.integration.test_unblinding import (  # noqa: F401 - built_trials is a fixture
    actions_since,
    built_trials,
    fresh,
    head_seq,
    open_trial,
)

PROBLEM = "application/problem+json"
BODY = {
    "visit_code": "V1",
    "kind": "replacement",
    "reason": "the syringe was dropped",
    "signature_password": PASSWORD,
}


@pytest.fixture
def world(request, tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    request.getfixturevalue("built_trials")
    built = open_trial(tmp_path, database_url)
    with built.app.app_context():
        yield built
    built.dispose()


def _extra_dispensations(subject_id: int) -> list[tuple[str, str | None]]:
    from iwrs.models import Dispensation

    rows = fresh().scalars(
        select(Dispensation)
        .where(Dispensation.subject_id == subject_id, Dispensation.kind != "scheduled")
        .order_by(Dispensation.id)
    )
    return [(d.kind, d.reason) for d in rows]


def test_the_investigator_requests_through_the_signed_form_and_the_pharmacist_dispenses(world):
    subject_id = world.subjects["R1"]
    pharmacist = world.client("ph.wang")
    token = csrf_from(pharmacist.get("/dispensing/").get_data(as_text=True))
    form = {"visit_code": "V1", "kind": "replacement", "reason": "mine", "csrf_token": token}
    pharmacist.post(f"/dispensing/{subject_id}", data=form)
    assert _extra_dispensations(subject_id) == []  # the pharmacist's free text is no request
    # The pharmacist cannot post the investigator's form.
    assert pharmacist.post(f"/subjects/{subject_id}/kit-requests", data=form).status_code == 403

    investigator = world.client("dr.li")
    page = investigator.get(f"/subjects/{subject_id}/randomization").get_data(as_text=True)
    assert f"/subjects/{subject_id}/kit-requests" in page
    seq = head_seq()
    response = investigator.post(
        f"/subjects/{subject_id}/kit-requests",
        data={**BODY, "csrf_token": csrf_from(page)},
    )
    assert response.status_code == 302
    assert actions_since(seq) == ["esign.signed", "kit.requested", "supply.alert_raised"]

    response = pharmacist.post(f"/dispensing/{subject_id}", data=form, follow_redirects=True)
    assert response.status_code == 200
    assert _extra_dispensations(subject_id) == [("replacement", "the syringe was dropped")]


def test_the_api_takes_the_request_from_the_investigator_only(world):
    subject_id = world.subjects["R1"]
    client = world.app.test_client()
    url = f"/api/v1/subjects/{subject_id}/kit-requests"
    response = client.post(url, json=BODY, headers=world.token("ph.wang"))
    assert response.status_code == 403 and response.mimetype == PROBLEM
    response = client.post(url, json={**BODY, "kind": "scheduled"}, headers=world.token("dr.li"))
    assert response.status_code == 422 and response.mimetype == PROBLEM
    response = client.post(url, json=BODY, headers=world.token("dr.li"))
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert (body["visit_code"], body["kind"]) == ("V1", "replacement")
    assert "signature_password" not in body
    again = client.post(url, json=BODY, headers=world.token("dr.li"))
    assert again.status_code == 409 and again.get_json()["type"].endswith("replacement_limit")
    response = client.post(
        f"/api/v1/subjects/{subject_id}/dispensations",
        json={"visit_code": "V1", "kind": "replacement"},
        headers=world.token("ph.wang"),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    assert _extra_dispensations(subject_id) == [("replacement", "the syringe was dropped")]
