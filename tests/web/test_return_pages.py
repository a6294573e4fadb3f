"""Issue 15 through the pages: a return recorded on the subject's dispensing page and verified
from the inventory; reporting a kit damaged or lost needs a choice, a reason and a tick;
destruction is reviewed (the kits, what will happen, the signature's meaning) then signed."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from iwrs import signatures
from tests.conftest import PASSWORD, csrf_from, sign_in
from tests.integration.randomization_worker import World, eligible_subject, make_world, randomize
from tests.integration.test_kit_counts import at_site
from tests.integration.test_returns_and_receipts import kit


@pytest.fixture
def world(tmp_path, database_url, clock) -> Iterator[World]:
    w = make_world(tmp_path, database_url, clock)
    with w.app.app_context():
        yield w
    w.app.extensions["iwrs.engine"].dispose()


def client_of(world: World, name: str) -> FlaskClient:
    client = world.app.test_client()
    with world.app.app_context():  # a request's own context: `g` is not the test's
        assert sign_in(client, world.people[name].username).status_code == 302
    return client


def post(client: FlaskClient, url: str, form: dict, page: str) -> str:
    """Post `form` from `page`; the page shown next (redirects followed)."""
    token = csrf_from(get(client, page))
    with client.application.app_context():  # a request's own context: `g` is not the test's
        response = client.post(url, data={**form, "csrf_token": token}, follow_redirects=True)
    assert response.status_code < 500
    return response.get_data(as_text=True)


def get(client: FlaskClient, url: str, **options: object) -> str:
    with client.application.app_context():
        response = client.get(url, **options)  # type: ignore[arg-type]
    assert response.status_code == 200, url
    return response.get_data(as_text=True)


def refusals(page: str) -> set[tuple[str, str]]:
    return set(re.findall(r'role="alert" data-field="([^"]+)" data-rule="([^"]+)"', page))


def test_return_verification_report_and_signed_destruction_through_the_pages(world):
    subject = eligible_subject(world, "CN01")
    number = randomize(world, subject).kit_number
    pharmacist, manager = client_of(world, "ph-CN01"), client_of(world, "manager")
    page = f"/dispensing/{subject}"
    shown = get(pharmacist, page)
    assert "Kits brought back" in shown and f'value="{number}"' in shown

    url = f"{page}/returns"
    assert refusals(post(pharmacist, url, {"kit_number": number, "visit_code": "V2"}, page)) == {
        ("condition", "choice")  # a blank choice is refused as off the list
    }
    assert kit(number).state == "dispensed"
    done = post(
        pharmacist,
        url,
        {"kit_number": number, "visit_code": "V2", "condition": "empty", "units_returned": "0"},
        page,
    )
    assert f"Kit {number} recorded as returned" in done and "empty" in done
    assert kit(number).state == "returned"
    inventory = get(pharmacist, f"/supply/sites/{world.sites['CN01']}")
    assert f"/supply/kits/{number}/verify" in inventory  # a returned kit stays in the inventory
    verify = f"/supply/kits/{number}/verify"
    post(pharmacist, verify, {"units_verified": "0"}, verify)
    assert kit(number).state == "pending_destruction"

    shelf = at_site(world, "CN01", "available")[0]
    report = f"/supply/kits/{shelf}/report"
    for form, expected in (
        ({"what": "damaged", "reason": "cracked"}, ("confirmed", "required")),
        ({"reason": "cracked", "confirmed": "y"}, ("what", "choice")),  # no default choice
    ):
        assert refusals(post(pharmacist, report, form, report)) == {expected}
        assert kit(shelf).state == "available"
    post(pharmacist, report, {"what": "damaged", "reason": "cracked", "confirmed": "y"}, report)
    assert kit(shelf).state == "damaged"

    listed = get(manager, "/supply/destruction")
    assert f'value="{number}"' in listed and f'value="{shelf}"' in listed
    query = {"kit_numbers": [number, shelf], "reference": "DC-7", "review": "1"}
    review = get(manager, "/supply/destruction", query_string=query)
    meaning = signatures.destroy_kits(kit_numbers=sorted([number, shelf]), reference="DC-7")
    assert html.escape(meaning) in review
    form = {"kit_numbers": [number, shelf], "reference": "DC-7"}
    wrong = post(manager, "/supply/destruction", {**form, "signature_password": "nope"}, "/")
    assert ("password", "wrong") in refusals(wrong) or any(
        f == "password" for f, _ in refusals(wrong)
    )
    assert kit(number).state == "pending_destruction"
    post(manager, "/supply/destruction", {**form, "signature_password": PASSWORD}, "/")
    assert {kit(number).state, kit(shelf).state} == {"destroyed"}


def test_a_kit_is_returned_only_on_the_page_of_the_subject_it_was_dispensed_to(world):
    """The subject in the URL is checked: another subject's kit is refused (kit_number `exists`),
    nothing changes and no event is written."""
    from sqlalchemy import func, select

    from iwrs.db import read_session
    from iwrs.models.audit import AuditEvent

    def events() -> int:
        read_session().rollback()
        return read_session().scalar(select(func.count()).select_from(AuditEvent)) or 0

    first, second = eligible_subject(world, "CN01"), eligible_subject(world, "CN01")
    theirs = randomize(world, first).kit_number
    randomize(world, second)
    pharmacist = client_of(world, "ph-CN01")
    page = f"/dispensing/{second}"
    form = {"kit_number": theirs, "visit_code": "V2", "condition": "empty", "units_returned": "0"}
    before = events()
    shown = post(pharmacist, f"{page}/returns", form, page)
    assert refusals(shown) == {("kit_number", "exists")}
    assert kit(theirs).state == "dispensed" and events() == before
    post(pharmacist, f"/dispensing/{first}/returns", form, f"/dispensing/{first}")
    assert kit(theirs).state == "returned"
