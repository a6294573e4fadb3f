"""One schema per input (issue 14): for every input a page and the API share, the page and the
API refuse the same bad value with the same field and rule code, and save nothing. On SQLite
and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import func, select

from iwrs.audit import Actor
from iwrs.db import read_session
from iwrs.models.audit import AuditEvent
from iwrs.models.sites import Site, SiteStatus
from tests.conftest import PASSWORD, csrf_from
from tests.web.test_api import bearer, token_for  # noqa: F401 - token_for is a fixture

RLO = "\u202e"
PERSON = {"site_code": "CN01", "date_of_birth": "1970-01-02", "sex": "female"}
SIGNED = {"signature_password": PASSWORD}
UNBLIND = {"category": "sae", "reason": "SAE", "understood": True, **SIGNED}
NEW_USER = {"full_name": "New User", "email": "new@example.org", "role": "auditor"}
KIT_REQUEST = {"visit_code": "V2", "kind": "replacement", "reason": "broken", **SIGNED}

# (role, input, page path, page form, API path, API body, the refused field, its rule).
# {subject} is a subject screened at CN01, {site} CN01's id; "y" ticks a page's box.
CASES: list[tuple[str, str, str, dict[str, Any], str, dict[str, Any], str, str]] = [
    (
        "investigator",
        "screen: an ISO week date",
        "/subjects/",
        {**PERSON, "date_of_birth": "1970-W01-1"},
        "/api/v1/subjects",
        {**PERSON, "date_of_birth": "1970-W01-1"},
        "date_of_birth",
        "date_format",
    ),
    (
        "investigator",
        "screen: a sex off the list",
        "/subjects/",
        {**PERSON, "sex": "other"},
        "/api/v1/subjects",
        {**PERSON, "sex": "other"},
        "sex",
        "choice",
    ),
    (
        "investigator",
        "screen: initials too long",
        "/subjects/",
        {**PERSON, "initials": "ABCDEFGHIJKLM"},
        "/api/v1/subjects",
        {**PERSON, "initials": "ABCDEFGHIJKLM"},
        "initials",
        "max_length",
    ),
    (
        "investigator",
        "assessment: a basic-format date",
        "/subjects/{subject}/assessment",
        {"assessment_date": "19700101"},
        "/api/v1/subjects/{subject}/assessments",
        {"answers": {}, "assessment_date": "19700101"},
        "assessment_date",
        "date_format",
    ),
    (
        "investigator",
        "eligibility decision: an assessment id that is no number",
        "/subjects/{subject}/decision",
        {"assessment_id": "x1", "decision": "eligible", "understood": "y", **SIGNED},
        "/api/v1/subjects/{subject}/eligibility-decision",
        {"assessment_id": "x1", "decision": "eligible", "understood": True, **SIGNED},
        "assessment_id",
        "integer",
    ),
    (
        "investigator",
        "eligibility decision: a decision off the list",
        "/subjects/{subject}/decision",
        {"assessment_id": "1", "decision": "maybe", "understood": "y", **SIGNED},
        "/api/v1/subjects/{subject}/eligibility-decision",
        {"assessment_id": 1, "decision": "maybe", "understood": True, **SIGNED},
        "decision",
        "choice",
    ),
    (
        "investigator",
        "withdrawal: a reason over 1,000 characters",
        "/subjects/{subject}/withdraw",
        {"reason": "x" * 1001, "understood": "y"},
        "/api/v1/subjects/{subject}/withdrawal",
        {"reason": "x" * 1001},
        "reason",
        "max_length",
    ),
    (
        "investigator",
        "withdrawal: a bidirectional override",
        "/subjects/{subject}/withdraw",
        {"reason": f"mistake {RLO}gnp.exe", "understood": "y"},
        "/api/v1/subjects/{subject}/withdrawal",
        {"reason": f"mistake {RLO}gnp.exe"},
        "reason",
        "control_characters",
    ),
    (
        "investigator",
        "drug classification: no drug",
        "/subjects/{subject}/classify-drug",
        {"drug": " ", "drug_class": "other", **SIGNED},
        "/api/v1/subjects/{subject}/drug-classifications",
        {"drug": " ", "drug_class": "other", **SIGNED},
        "drug",
        "required",
    ),
    (
        "investigator",
        "randomization: an idempotency key over 100 characters",
        "/subjects/{subject}/randomize",
        {"idempotency_key": "k" * 101, "understood": "y", **SIGNED},
        "/api/v1/subjects/{subject}/randomization",
        {"idempotency_key": "k" * 101, "understood": True, **SIGNED},
        "idempotency_key",
        "max_length",
    ),
    (
        "investigator",
        "kit request: a scheduled kit is not an extra one",
        "/subjects/{subject}/kit-requests",
        {**KIT_REQUEST, "kind": "scheduled"},
        "/api/v1/subjects/{subject}/kit-requests",
        {**KIT_REQUEST, "kind": "scheduled"},
        "kind",
        "choice",
    ),
    (
        "investigator",
        "unblinding: a category off the list",
        "/subjects/{subject}/unblind",
        {**UNBLIND, "understood": "y", "category": "curiosity"},
        "/api/v1/subjects/{subject}/unblinding",
        {**UNBLIND, "category": "curiosity"},
        "category",
        "choice",
    ),
    (
        "investigator",
        "unblinding: not confirmed",
        "/subjects/{subject}/unblind",
        {**UNBLIND, "understood": "n"},
        "/api/v1/subjects/{subject}/unblinding",
        {**UNBLIND, "understood": False},
        "understood",
        "required",
    ),
    (
        "pharmacist",
        "dispensing: a month 13",
        "/dispensing/{subject}",
        {"visit_code": "V2", "visit_date": "2026-13-01"},
        "/api/v1/subjects/{subject}/dispensations",
        {"visit_code": "V2", "visit_date": "2026-13-01"},
        "visit_date",
        "date",
    ),
    (
        "pharmacist",
        "kit confirmation: no kit number",
        "/dispensing/confirm/1",
        {"kit_number": ""},
        "/api/v1/dispensations/1/confirmation",
        {"kit_number": ""},
        "kit_number",
        "required",
    ),
    (
        "pharmacist",
        "receipt: a condition off the list",
        "/supply/shipments/1/receipt",
        {"kit-100001": "stolen", "temperature_excursion": "no", "received_on": "2026-01-01"},
        "/api/v1/shipments/1/receipt",
        {
            "lines": [{"kit_number": "100001", "condition": "stolen"}],
            "temperature_excursion": False,
        },
        "lines.0.condition",
        "choice",
    ),
    (
        "supply_manager",
        "shipping: no courier",
        "/supply/shipments/1/ship",
        {"courier": " ", "tracking_number": "T1"},
        "/api/v1/shipments/1/shipping",
        {"courier": " ", "tracking_number": "T1"},
        "courier",
        "required",
    ),
    (
        "supply_manager",
        "manual shipment: no kits",
        "/supply/sites/{site}/shipment",
        {"quantity": "0"},
        "/api/v1/shipments",
        {"site_code": "CN01", "quantity": 0},
        "quantity",
        "range",
    ),
    (
        "admin",
        "new user: a username of two characters",
        "/admin/users/new",
        {**NEW_USER, "username": "ab"},
        "/api/v1/users",
        {**NEW_USER, "username": "ab"},
        "username",
        "min_length",
    ),
    (
        "admin",
        "unblinded account request: no e-mail",
        "/admin/unblinded-requests",
        {"request-username": "stat.new", "request-full_name": "S N", "request-email": ""},
        "/api/v1/unblinded-access-requests",
        {"username": "stat.new", "full_name": "S N", "email": ""},
        "email",
        "required",
    ),
    (
        "unblinded_statistician",
        "unblinded account decision: a decision off the list",
        "/access-requests/1/decision",
        {"decide-decision": "maybe", "decide-signature_password": PASSWORD},
        "/api/v1/unblinded-access-requests/1/decision",
        {"decision": "maybe", **SIGNED},
        "decision",
        "choice",
    ),
    (
        "investigator",
        "API token: no name",
        "/account/tokens",
        {"token-name": " ", "token-password": PASSWORD},
        "/api/v1/tokens",
        {"name": " ", "password": PASSWORD},
        "name",
        "required",
    ),
]


@pytest.fixture
def places(app, make_user) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """CN01 active with one subject in screening: {"site": its id, "subject": the subject's,
    "user": the investigator's who screened it}."""
    from iwrs.services import sites, subjects

    admin = make_user("admin")
    with app.app_context():
        site_id = read_session().scalars(select(Site.id).where(Site.code == "CN01")).one()
        sites.change_site_status(
            actor=Actor.of(admin),
            site_id=site_id,
            status=SiteStatus.ACTIVE,
            signer_password=PASSWORD,
            understood=True,
        )
    investigator = make_user("investigator", sites=["CN01"])
    with app.app_context():
        subject = subjects.screen_subject(
            actor=Actor.of(investigator), site_id=site_id, date_of_birth="1966-09-30", sex="male"
        )
    return {"site": site_id, "subject": subject.id, "user": investigator.id}


def _event_count(app) -> int:  # type: ignore[no-untyped-def]
    with app.app_context():
        return read_session().scalar(select(func.count()).select_from(AuditEvent)) or 0


def _page_problems(client, path: str, form: dict[str, Any]) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """The (field, rule) pairs a page shows on refusing `form`: on the page it answers, or
    flashed on the page it redirects to (whose own refusals, if any, are not counted)."""
    token = csrf_from(client.get("/account/").get_data(as_text=True))  # a page recording nothing
    response = client.post(path, data={**form, "csrf_token": token})
    pattern = r'data-field="([^"]+)" data-rule="([^"]+)"'
    if response.status_code in (302, 303):
        response = client.get(response.headers["Location"])
        pattern = r'<p class="flash error" role="alert" ' + pattern
    html = response.get_data(as_text=True)
    assert "Traceback" not in html and response.status_code < 500, html[:500]
    return set(re.findall(pattern, html))


def _api_problems(app, path: str, body: dict[str, Any], token: str) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    response = app.test_client().post(path, json=body, headers=bearer(token))
    assert response.status_code == 422, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/problem+json"
    return {(e["field"], e["rule"]) for e in response.get_json()["errors"]}


def test_the_page_and_the_api_refuse_each_bad_value_with_the_same_field_and_rule(
    app,
    places,
    login_as,
    token_for,  # noqa: F811 - the fixture imported above
):
    doors: dict[str, tuple[Any, str]] = {}
    for role in sorted({case[0] for case in CASES}):
        client, user = login_as(role, ["CN01"] if role in ("investigator", "pharmacist") else None)
        doors[role] = (client, token_for(user)[0])
    for role, name, page, form, api, body, field, rule in CASES:
        client, token = doors[role]
        before = _event_count(app)
        on_page = _page_problems(client, page.format(**places), form)
        on_api = _api_problems(app, api.format(**places), body, token)
        assert on_page == on_api == {(field, rule)}, (name, on_page, on_api)
        assert _event_count(app) == before, f"{name}: a refused input saved something"


# Inputs only a page takes: (role, input, page path, form, the refused field, its rule).
PAGE_ONLY: list[tuple[str, str, str, dict[str, Any], str, str]] = [
    (
        "admin",
        "time zone: none",
        "/sites/{site}/time-zone",
        {"reason": "r"},
        "time_zone",
        "required",
    ),
    (
        "admin",
        "site status: off the list",
        "/sites/{site}/status",
        {"status": "open", "understood": "y", **SIGNED},
        "status",
        "choice",
    ),
    (
        "admin",
        "deactivation: not confirmed",
        "/admin/users/{user}/deactivate",
        {"deactivate-reason": "left", "deactivate-signature_password": PASSWORD},
        "understood",
        "required",
    ),
    (
        "supply_manager",
        "quarantine: no decision",
        "/supply/quarantine",
        {"reason": "x"},
        "decision",
        "choice",
    ),
    (
        "supply_manager",
        "lot expiry: 30 February",
        "/supply/lots/L1/expiry",
        {"expiry": "2027-02-30", "reason": "x"},
        "expiry",
        "date",
    ),
    (
        "pharmacist",
        "return: a condition off the list",
        "/dispensing/{subject}/returns",
        {"kit_number": "100001", "visit_code": "V2", "condition": "new"},
        "condition",
        "choice",
    ),
    (
        "unblinded_statistician",
        "list extension: no blocks",
        "/lists/extend",
        {"stratum": "disease=RA", "blocks": "0", "reason": "r"},
        "blocks",
        "range",
    ),
    (
        "unblinded_statistician",
        "list generation: a short seed",
        "/lists/generate",
        {"seed": "zz"},
        "seed",
        "hex",
    ),
    (
        "investigator",
        "discontinuation: no reason",
        "/subjects/{subject}/discontinue",
        {"reason": " "},
        "reason",
        "required",
    ),
]


def test_each_page_only_input_is_refused_by_field_and_rule(app, places, login_as):
    clients = {}
    for role in sorted({case[0] for case in PAGE_ONLY}):
        sites = ["CN01"] if role in ("investigator", "pharmacist") else None
        clients[role] = login_as(role, sites)[0]
    for role, name, page, form, field, rule in PAGE_ONLY:
        before = _event_count(app)
        shown = _page_problems(clients[role], page.format(**places), form)
        assert shown == {(field, rule)}, (name, shown)
        assert _event_count(app) == before, f"{name}: a refused input saved something"


@pytest.mark.parametrize(
    "body, field, rule",
    [
        ({"lines": [5], "temperature_excursion": False}, "lines.0", "type"),
        (
            {
                "lines": [{"kit_number": "100001", "condition": "good"}, "x"],
                "temperature_excursion": False,
            },
            "lines.1",
            "type",
        ),
        ([5], "body", "type"),
    ],
)
def test_a_bad_nested_item_is_refused_naming_the_item(
    app,
    places,
    login_as,
    token_for,  # noqa: F811 - the fixture imported above
    body,
    field,
    rule,
):
    _, user = login_as("pharmacist", ["CN01"])
    token = token_for(user)[0]
    before = _event_count(app)
    found = _api_problems(app, "/api/v1/shipments/1/receipt", body, token)
    assert found == {(field, rule)}
    assert _event_count(app) == before
