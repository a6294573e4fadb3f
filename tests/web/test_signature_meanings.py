"""One source for each e-signature meaning (issue 14): for every signed act, the meaning the
page shows before the password is entered equals, character for character, the `meaning`
recorded in the signature row (both come from iwrs/signatures.py). Where the form offers a
choice, the page shows one meaning per choice and the recorded one is the chosen one's."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from iwrs.audit import Actor
from iwrs.models.users import Signature
from tests.conftest import PASSWORD, csrf_from
from tests.integration.test_subjects import answers
from tests.integration.test_unblinding import (  # noqa: F401 - built_trials is a fixture
    built_trials,
    fresh,
    open_trial,
)

SHOWN = re.compile(r'<strong class="signature-meaning">(.*?)</strong>', re.DOTALL)


@pytest.fixture
def world(request, tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    request.getfixturevalue("built_trials")
    built = open_trial(tmp_path, database_url)
    with built.app.app_context():
        yield built
    built.dispose()


def shown(page: str) -> list[str]:
    """The meanings a page shows, as the reader sees them (entities decoded)."""
    return [html.unescape(text) for text in SHOWN.findall(page)]


def last_signature_id() -> int:
    return fresh().scalar(select(func.coalesce(func.max(Signature.id), 0)))


def recorded_since(before: int) -> list[str]:
    return list(
        fresh().scalars(
            select(Signature.meaning).where(Signature.id > before).order_by(Signature.id)
        )
    )


def sign(client, url: str, page: str, form: dict[str, str], prefix: str = "") -> list[str]:  # type: ignore[no-untyped-def]
    """Post the signed form (its fields under the WTForms `prefix`); the meanings recorded."""
    before = last_signature_id()
    data = {
        f"{prefix}{name}": value for name, value in {**form, "csrf_token": csrf_from(page)}.items()
    }
    response = client.post(url, data=data)
    assert response.status_code in (200, 302), response.get_data(as_text=True)[:500]
    return recorded_since(before)


def test_randomization(world):
    client, subject = world.client("dr.li"), world.subjects["E1"]
    page = client.get(f"/subjects/{subject}").get_data(as_text=True)
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page).group(1)
    form = {"understood": "y", "signature_password": PASSWORD, "idempotency_key": key}
    recorded = sign(client, f"/subjects/{subject}/randomize", page, form)
    assert recorded == shown(page)


def test_kit_request_and_emergency_unblinding(world):
    client, subject = world.client("dr.li"), world.subjects["R1"]
    url = f"/subjects/{subject}/randomization"
    page = client.get(url).get_data(as_text=True)
    form = {"visit_code": "V1", "kind": "replacement", "reason": "dropped"}
    (recorded,) = sign(client, f"/subjects/{subject}/kit-requests", page, form | _signed())
    assert recorded in shown(page)

    assert len(set(shown(page))) == len(shown(page))  # one meaning per choice, all different

    # The unblinding is signed on its confirmation page, which shows the chosen category's.
    form = {"category": "pregnancy", "reason": "Pregnancy reported"}
    confirm = client.post(
        f"/subjects/{subject}/unblind/confirm", data=form | {"csrf_token": csrf_from(page)}
    ).get_data(as_text=True)
    signed = form | {"understood": "y"} | _signed()
    assert sign(client, f"/subjects/{subject}/unblind", confirm, signed) == shown(confirm)


def test_eligibility_drug_classification_and_a_different_person(world):
    from iwrs.services import subjects

    client, actor = world.client("dr.li"), world.actor("dr.li")
    subject = subjects.screen_subject(
        actor=actor, site_id=world.sites["CN01"], date_of_birth="1970-02-03", sex="female",
        initials="QXW",
    )  # fmt: skip
    entry = {"drug": "iguratimod", "ongoing": True, "dose_stable_since": "2020-01-01"}
    subjects.record_assessment(
        actor=actor,
        subject_id=subject.id,
        answers=answers(subject, medications=json.dumps([entry])),
    )
    url = f"/subjects/{subject.id}"
    page = client.get(url).get_data(as_text=True)
    form = {"drug": "iguratimod", "drug_class": "washout_6_months"} | _signed()
    (recorded,) = sign(client, f"{url}/classify-drug", page, form)
    assert recorded in shown(page)

    row = subjects.record_assessment(
        actor=actor, subject_id=subject.id, answers=answers(subject)
    ).row
    page = client.get(url).get_data(as_text=True)
    form = {"assessment_id": str(row.id), "decision": "eligible", "understood": "y"}
    recorded = sign(client, f"{url}/decision", page, form | _signed())
    assert recorded == shown(page)

    same_person = {"site_code": "CN01", "date_of_birth": "1970-02-03", "sex": "female"}
    same_person["initials"] = "QXW"
    page = client.get("/subjects/").get_data(as_text=True)
    refused = client.post("/subjects/", data={**same_person, "csrf_token": csrf_from(page)})
    assert refused.status_code == 409
    page = refused.get_data(as_text=True)
    form = same_person | {"different_person_signature_password": PASSWORD}
    recorded = sign(client, "/subjects/", page, form)
    assert recorded == shown(page)


def test_site_activation_password_reset_and_deactivation(world):
    from iwrs.services import users

    client = world.client("admin")
    site = world.sites["CN03"]
    page = client.get(f"/sites/{site}").get_data(as_text=True)
    form = {"status": "active", "understood": "y"} | _signed()
    recorded = sign(client, f"/sites/{site}/status", page, form)
    assert recorded == shown(page)

    target = users.create_user(
        actor=Actor.system("test"), username="ph.new", full_name="New Pharmacist",
        role="pharmacist", password=PASSWORD, email="ph.new@example.org", site_codes=["CN01"],
    )  # fmt: skip
    url = f"/admin/users/{target.id}"
    page = client.get(url).get_data(as_text=True)
    (reset, deactivate) = shown(page)
    assert sign(client, f"{url}/reset-password", page, _signed(), "reset-") == [reset]
    form = {"reason": "Left the study", "understood": "y"} | _signed()
    assert sign(client, f"{url}/deactivate", page, form, "deactivate-") == [deactivate]


def test_a_decision_on_unblinded_access(world):
    admin = world.client("admin")
    page = admin.get("/admin/unblinded-requests").get_data(as_text=True)
    filed = {"username": "stat.two", "full_name": "Second Statistician"}
    filed["email"] = "stat.two@example.org"
    filed["csrf_token"] = csrf_from(page)
    response = admin.post(
        "/admin/unblinded-requests", data={f"request-{k}": v for k, v in filed.items()}
    )
    assert response.status_code == 302
    client = world.client("stat.liu")
    page = client.get("/access-requests/").get_data(as_text=True)
    request_id = re.search(r"/access-requests/(\d+)/decision", page).group(1)
    form = {"decision": "reject", "reason": "Not needed"} | _signed()
    (recorded,) = sign(client, f"/access-requests/{request_id}/decision", page, form, "decide-")
    assert recorded in shown(page) and len(shown(page)) == 2


def _signed() -> dict[str, str]:
    return {"signature_password": PASSWORD}


def _options(page: str, name: str) -> list[list[str]]:
    """The option values of every <select name=`name`> on the page, the empty one left out."""
    selects = re.findall(rf'<select[^>]* name="{name}"[^>]*>(.*?)</select>', page, re.DOTALL)
    return [[v for v in re.findall(r'<option value="([^"]*)"', s) if v] for s in selects]


def test_the_kinds_and_categories_a_page_offers_are_the_services_own(world):
    from iwrs.models.randomization import DispensationKind, KitRequestKind
    from iwrs.signatures import UNBLINDING_CATEGORIES

    page = world.client("dr.li").get(f"/subjects/{world.subjects['R1']}/randomization")
    page = page.get_data(as_text=True)
    assert _options(page, "kind") == [[str(k) for k in KitRequestKind]]
    form = world.client("dr.li").get(f"/subjects/{world.subjects['R1']}/unblind")
    assert _options(form.get_data(as_text=True), "category") == [list(UNBLINDING_CATEGORIES)]
    dispensing = world.client("ph.wang").get(f"/dispensing/{world.subjects['R1']}")
    dispensing = dispensing.get_data(as_text=True)
    offered = _options(dispensing, "kind")
    assert offered and all(kinds == [str(k) for k in DispensationKind] for kinds in offered)


def test_each_repeated_signed_form_has_its_own_password_id(world):
    admin = world.client("admin")
    for n in (2, 3):
        page = admin.get("/admin/unblinded-requests").get_data(as_text=True)
        filed = {"username": f"stat.n{n}", "full_name": f"Statistician {n}"}
        filed |= {"email": f"stat.n{n}@example.org", "csrf_token": csrf_from(page)}
        response = admin.post(
            "/admin/unblinded-requests", data={f"request-{k}": v for k, v in filed.items()}
        )
        assert response.status_code == 302
    page = world.client("stat.liu").get("/access-requests/").get_data(as_text=True)
    ids = re.findall(r'\sid="([^"]+)"', page)
    passwords = re.findall(r'<input type="password" id="([^"]+)"', page)
    assert len(passwords) == 2 and len(ids) == len(set(ids))
    assert set(re.findall(r'<label for="([^"]+)"', page)) <= set(ids)
