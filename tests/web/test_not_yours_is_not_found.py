"""Another site's record answers exactly as a record that does not exist (issue 11): the same
status, the same body and the same rule, on every page and API path that takes its id, so a
site user cannot enumerate other sites' subjects, kits, shipments or sites."""

from __future__ import annotations

import re
from datetime import date

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from iwrs.audit import Actor
from iwrs.db import read_session
from iwrs.models import Kit, Shipment, Site
from tests.conftest import PASSWORD, csrf_from, sign_in
from tests.web.test_supply_pages import stock

MISSING = 987654  # an id no test row has, long enough not to occur by chance in a page
MISSING_KIT = "ZZ-987654"


def _world(app: Flask, make_user) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """CN01 and CN02 active with their initial shipments, one subject screened at CN01."""
    from iwrs.services import subjects

    admin = make_user("admin")
    stock(app, admin)
    investigator = make_user("investigator", sites=["CN01"])
    with app.app_context():
        session = read_session()
        cn01 = session.scalars(select(Site).where(Site.code == "CN01")).one()
        subject = subjects.screen_subject(
            actor=Actor.of(investigator),
            site_id=cn01.id,
            date_of_birth=date(1960, 5, 1),
            sex="female",
        )
        shipment = session.scalars(select(Shipment).where(Shipment.site_id == cn01.id)).first()
        kit = session.scalars(select(Kit.number).where(Kit.shipment_id == shipment.id)).first()
    return {"subject": subject.id, "site": cn01.id, "shipment": shipment.id, "kit": kit}


# (kind, method, url template with {id}, API?) — every path that takes a site-scoped id.
PATHS = [
    ("subject", "GET", "/subjects/{id}", False),
    ("subject", "GET", "/subjects/{id}/randomization", False),
    ("subject", "GET", "/subjects/{id}/unblinded", False),
    ("site", "GET", "/sites/{id}", False),
    ("site", "GET", "/supply/sites/{id}", False),
    ("shipment", "GET", "/supply/shipments/{id}", False),
    ("subject", "GET", "/api/v1/subjects/{id}", True),
    ("subject", "GET", "/api/v1/subjects/{id}/assessments", True),
    ("subject", "GET", "/api/v1/subjects/{id}/randomization", True),
    ("subject", "POST", "/api/v1/subjects/{id}/withdrawal", True),
    ("subject", "POST", "/api/v1/subjects/{id}/rescreen", True),
    ("subject", "POST", "/api/v1/subjects/{id}/kit-requests", True),
    ("subject", "POST", "/api/v1/subjects/{id}/unblinding", True),
    ("site", "GET", "/api/v1/sites/{id}", True),
    ("shipment", "GET", "/api/v1/shipments/{id}", True),
    ("shipment", "POST", "/api/v1/shipments/{id}/receipt", True),
    ("kit", "POST", "/supply/kits/{id}/report", False),
]
BODIES = {
    "/api/v1/subjects/{id}/withdrawal": {"reason": "moved away"},
    "/api/v1/subjects/{id}/rescreen": {"reason": "x"},
    "/api/v1/subjects/{id}/kit-requests": {
        "kind": "replacement",
        "reason": "damaged",
        "signature_password": PASSWORD,
    },
    "/api/v1/subjects/{id}/unblinding": {
        "category": "adverse_event",
        "reason": "anaphylaxis",
        "understood": True,
        "signature_password": PASSWORD,
    },
    "/api/v1/shipments/{id}/receipt": {"lines": [], "temperature_excursion": False},
}
_TOKEN = re.compile(r'(name="csrf_token"[^>]*value=|value=)"[\w.-]{40,}"')


def _ask(
    client: FlaskClient, method: str, template: str, key: object, api: bool
) -> tuple[int, str]:
    url = template.format(id=key)
    if api:
        csrf = csrf_from(client.get("/").get_data(as_text=True))
        response = client.open(
            url, method=method, json=BODIES.get(template), headers={"X-CSRFToken": csrf}
        )
    elif method == "POST":
        csrf = csrf_from(client.get("/supply/").get_data(as_text=True))
        response = client.post(
            url, data={"what": "lost", "reason": "x", "csrf_token": csrf}, follow_redirects=True
        )
    else:
        response = client.get(url)
    return response.status_code, _TOKEN.sub("TOKEN", response.get_data(as_text=True))


@pytest.mark.parametrize("role", ["investigator", "pharmacist"])
def test_another_sites_record_answers_as_one_that_does_not_exist(app, make_user, role):
    world = _world(app, make_user)
    user = make_user(role, sites=["CN02"])
    client = app.test_client()
    assert sign_in(client, user.username).status_code == 302
    for kind, method, template, api in PATHS:
        real, missing = (world[kind], MISSING_KIT if kind == "kit" else MISSING)
        theirs = _ask(client, method, template, real, api)
        absent = _ask(client, method, template, missing, api)
        expected = (absent[0], absent[1].replace(str(missing), str(real)))
        assert theirs == expected, (role, method, template)
        if api and theirs[0] == 404:
            assert "problems/exists" in theirs[1], theirs[1]
