"""Pages and API for reasons about an unblinded subject (iwrs/services/coded_reasons.py): a
select of the protocol's coded reasons instead of a text box, for every writer; free text posted
anyway is refused with the rule and writes nothing; a still-blinded subject keeps its text box."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markupsafe import escape

from tests.conftest import PASSWORD, csrf_from
from tests.integration.test_unblinding import (  # noqa: F401 - built_trials is a fixture
    _to_v2_window,
    built_trials,
    events_since,
    head_seq,
    open_trial,
    unblind,
)

RULE = "coded_reason_after_unblinding"
PROBLEM = "application/problem+json"


@pytest.fixture
def world(request, tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    request.getfixturevalue("built_trials")
    built = open_trial(tmp_path, database_url)
    with built.app.app_context():
        unblind(built, "dr.li", "R1")
        _to_v2_window(built, "R1")
        yield built
    built.dispose()


def _codes(world) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    return world.app.extensions["iwrs.protocol"].unblinding_coded_reasons


def _control(page: str, element_id: str) -> str:
    """The form control with this id: `select` (with its options) or `input`."""
    found = re.search(rf'<(select|input) id="{re.escape(element_id)}"[^>]*>(.*?</select>)?', page)
    assert found, element_id
    return found.group(0)


def _assert_select_of_codes(world, control: str) -> None:  # type: ignore[no-untyped-def]
    assert control.startswith("<select")
    options = re.findall(r'<option value="([^"]*)">', control)
    assert options == ["", *(str(escape(c)) for c in _codes(world))]


@pytest.mark.parametrize("username", ["dr.li", "dr.lin"])
def test_the_investigator_pages_offer_coded_reasons_for_an_unblinded_subject(world, username):
    client = world.client(username)
    unblinded = client.get(f"/subjects/{world.subjects['R1']}/randomization")
    page = unblinded.get_data(as_text=True)
    for element_id in ("k-reason", "reason"):  # the kit request, the discontinuation
        _assert_select_of_codes(world, _control(page, element_id))
    blinded = client.get(f"/subjects/{world.subjects['R2']}/randomization").get_data(as_text=True)
    for element_id in ("k-reason", "reason"):
        assert _control(blinded, element_id).startswith("<input")


def test_the_dispensing_page_offers_coded_reasons_for_an_unblinded_subject_only(world):
    client = world.client("ph.wang")
    r1, r2 = world.subjects["R1"], world.subjects["R2"]
    unblinded = client.get(f"/dispensing/{r1}").get_data(as_text=True)
    blinded = client.get(f"/dispensing/{r2}").get_data(as_text=True)
    for element_id in ("reason", "backdate_reason"):
        _assert_select_of_codes(world, _control(unblinded, element_id))
        assert _control(blinded, element_id).startswith("<input")


def test_free_text_posted_through_the_page_is_refused_and_a_code_is_accepted(world):
    client = world.client("dr.lin")
    url = f"/subjects/{world.subjects['R1']}/kit-requests"
    form = {"visit_code": "V2", "kind": "replacement", "signature_password": PASSWORD}
    token = csrf_from(client.get("/").get_data(as_text=True))
    seq = head_seq()
    refused = client.post(url, data={**form, "reason": "on placebo", "csrf_token": token})
    assert refused.status_code == 302
    assert [e.action for e in events_since(seq)] == []
    accepted = client.post(url, data={**form, "reason": _codes(world)[0], "csrf_token": token})
    assert accepted.status_code == 302
    events = [e for e in events_since(seq) if e.action == "kit.requested"]
    assert [e.reason for e in events] == [_codes(world)[0]]


@pytest.mark.parametrize(
    ("username", "path", "body"),
    [
        ("dr.lin", "subjects/{R1}/withdrawal", {}),
        ("dr.li", "subjects/{R1}/kit-requests", {"visit_code": "V2", "kind": "replacement"}),
        ("ph.wang", "subjects/{R1}/dispensations", {"visit_code": "V2"}),
    ],
)
def test_the_api_refuses_free_text_with_the_rule(world, username, path, body):
    token = world.token(username)
    url = "/api/v1/" + path.format(R1=world.subjects["R1"])
    full = {**body, "signature_password": PASSWORD} if "kit-requests" in path else body
    seq = head_seq()
    response = world.app.test_client().post(
        url, json={**full, "reason": "on placebo"}, headers=token
    )
    assert response.status_code == 422 and response.mimetype == PROBLEM
    errors = {(e["field"], e["rule"]) for e in response.get_json()["errors"]}
    assert errors == {("reason", RULE)}
    assert events_since(seq) == []


def test_the_api_documents_the_coded_reasons(world):
    spec = world.app.test_client().get("/api/v1/openapi.json").get_json()
    for name in ("WithdrawalSchema", "KitRequestSchema", "DispenseSchema"):
        reason = spec["components"]["schemas"][name.removesuffix("Schema")]["properties"]
        assert RULE in reason["reason"]["description"], name
