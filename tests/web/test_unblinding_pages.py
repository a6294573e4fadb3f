"""Emergency unblinding through the pages and the API: the signed form, refusals that name the
field and change nothing, no permission for blinded roles (web 403, API 403), the fact of an
unblinding shown to the pharmacist and the auditor without the arm, the scoped report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from markupsafe import escape

from tests.conftest import PASSWORD, csrf_from
from tests.integration.test_unblinding import (  # noqa: F401 - built_trials is a fixture
    ARM_CODES,
    ARM_NAMES,
    REASON,
    RECIPIENTS,
    actions_since,
    assert_no_arm,
    built_trials,
    events_since,
    fresh,
    head_seq,
    open_trial,
    sealed_arm,
    state,
    unblind,
)

PROBLEM = "application/problem+json"
FORM = {
    "category": "sae",
    "reason": REASON,
    "sae_led_to_unblinding": "y",
    "understood": "y",
    "signature_password": PASSWORD,
}
BODY = {
    "category": "sae",
    "reason": REASON,
    "understood": True,
    "sae_led_to_unblinding": True,
    "signature_password": PASSWORD,
}


@pytest.fixture
def world(request, tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    request.getfixturevalue("built_trials")
    built = open_trial(tmp_path, database_url)
    with built.app.app_context():
        yield built
    built.dispose()


def _number(world, key: str) -> str:  # type: ignore[no-untyped-def]
    from iwrs.models.subjects import Subject

    return fresh().get(Subject, world.subjects[key]).screening_number


def _post_unblind(client, subject_id: int, **changes: str):  # type: ignore[no-untyped-def]
    # a page that records nothing (the statistician's home records its view of the arms)
    token = csrf_from(client.get("/account/").get_data(as_text=True))
    form = {**FORM, **changes, "csrf_token": token}
    return client.post(f"/subjects/{subject_id}/unblind", data={k: v for k, v in form.items() if v})


# --- the investigator's pages -------------------------------------------------------------------


def test_the_investigator_unblinds_through_the_signed_form_and_sees_the_arm_again(world):
    client = world.client("dr.li")
    subject_id = world.subjects["R1"]
    page = client.get(f"/subjects/{subject_id}/randomization").get_data(as_text=True)
    assert "Emergency unblinding" in page and 'name="signature_password"' in page
    assert_no_arm(page, names=False)
    arm = sealed_arm(subject_id)

    seq = head_seq()
    response = _post_unblind(client, subject_id)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert f'<strong class="arm">{ARM_NAMES[arm]}</strong>' in html
    other = next(c for c in ARM_CODES if c != arm)
    assert ARM_NAMES[other] not in html
    assert "the sponsor has been notified" in html
    assert actions_since(seq) == ["esign.signed", "subject.unblinded"]
    assert state().unblindings == 1 and state().notifications == 1  # one, to every contact

    # The subject's page now states the fact, with a way to see the treatment again (recorded),
    # and no unblinding form: a reason written now could name the arm.
    page = client.get(f"/subjects/{subject_id}/randomization").get_data(as_text=True)
    assert "emergency-unblinded" in page and f"/subjects/{subject_id}/unblinded" in page
    assert f'action="/subjects/{subject_id}/unblind"' not in page
    assert 'id="u-reason"' not in page and 'id="u-signature"' not in page
    assert_no_arm(page, names=False)
    colleague = world.client("dr.lin").get(f"/subjects/{subject_id}/randomization")
    assert f'action="/subjects/{subject_id}/unblind"' not in colleague.get_data(as_text=True)
    # A second submission (an old tab, a crafted post) is refused and records nothing.
    clients = (client, world.client("dr.lin"))
    before, seq = state(), head_seq()
    for colleague_client in clients:
        refused = _post_unblind(colleague_client, subject_id, reason="It was the active one")
        assert refused.status_code == 303
        followed = colleague_client.get(refused.headers["Location"])
        assert "already emergency-unblinded" in followed.get_data(as_text=True)
    assert state() == before and actions_since(seq) == []
    seq = head_seq()
    again = client.get(f"/subjects/{subject_id}/unblinded")
    assert again.status_code == 200
    assert f'<strong class="arm">{ARM_NAMES[arm]}</strong>' in again.get_data(as_text=True)
    assert "This view is recorded" in again.get_data(as_text=True)
    assert actions_since(seq) == ["unblinding.viewed"]
    # Another investigator of the site has not unblinded it: nothing to see again.
    assert world.client("dr.lin").get(f"/subjects/{subject_id}/unblinded").status_code == 404


WEB_REFUSALS = [
    # (case, username, subject, form changes, status, field beside which it shows, rule); a
    # refused value re-renders the form it was typed on (issue 15: beside its field, what was
    # typed kept); a refusal of the subject itself goes back to the subject's page (303).
    ("empty reason", "dr.li", "R1", {"reason": " "}, 422, "reason", "required"),
    ("not understood", "dr.li", "R1", {"understood": ""}, 422, "understood", "required"),
    ("unknown category", "dr.li", "R1", {"category": "curiosity"}, 422, "category", "choice"),
    ("no category", "dr.li", "R1", {"category": ""}, 422, "category", "choice"),
    (
        "wrong password",
        "dr.li",
        "R1",
        {"signature_password": "nope nope nope"},
        401,
        "signature_password",
        "credentials",
    ),
    (
        "no password",
        "dr.li",
        "R1",
        {"signature_password": ""},
        422,
        "signature_password",
        "required",
    ),
    ("another site", "dr.zhang", "R1", {}, 404, "subject_id", "exists"),
    ("not randomized", "dr.li", "E1", {}, 404, "subject_id", "randomized"),
]


def test_each_web_refusal_is_explained_and_changes_nothing(world):
    clients = {u: world.client(u) for u in ("dr.li", "dr.zhang")}
    for case, username, key, changes, status, field, rule in WEB_REFUSALS:
        before, seq = state(), head_seq()
        response = _post_unblind(clients[username], world.subjects[key], **changes)
        if field == "subject_id":
            assert response.status_code == 303, case
            response = clients[username].get(response.headers["Location"])
        assert response.status_code == status, case
        html = response.get_data(as_text=True)
        assert f'data-field="{field}" data-rule="{rule}"' in html, (case, html[:3000])
        if field != "subject_id":  # beside the field, which names it, and the reason kept
            assert f'aria-describedby="err-{field}"' in html, case
            if changes.get("reason") is None:
                assert BODY["reason"] in html, case
        assert state() == before, case
        # Refusals of who (a signature, a site, a subject) are audited, input errors are not.
        expected = {
            "wrong password": ["esign.signature_failed", "unblinding.refused"],
            "another site": ["unblinding.refused"],
        }.get(case, [])
        assert actions_since(seq) == expected, case
        assert_no_arm(html, names=False)


@pytest.mark.parametrize("username", ["ph.wang", "supply.chen", "audit.zhao", "stat.liu", "admin"])
def test_roles_without_the_permission_get_403_on_the_web_and_the_api(world, username):
    client = world.client(username)
    token = world.token(username)
    subject_id = world.subjects["R1"]
    before, seq = state(), head_seq()
    response = _post_unblind(client, subject_id)
    assert response.status_code == 403
    assert "may not emergency unblind" in response.get_data(as_text=True)
    assert client.get(f"/subjects/{subject_id}/unblinded").status_code == 403
    api = client.post(f"/api/v1/subjects/{subject_id}/unblinding", json=BODY, headers=token)
    assert api.status_code == 403 and api.mimetype == PROBLEM
    assert api.get_json()["detail"].endswith("may not emergency unblind")
    # Each refused request is audited once, with the rule and how the caller authenticated.
    assert state() == before and actions_since(seq) == ["unblinding.refused"] * 3
    events = events_since(seq)
    assert [json.loads(e.after)["rule"] for e in events] == ["permission"] * 3
    assert [e.auth for e in events][:2] == ["session", "session"]
    assert events[2].auth.startswith("token:") and events[2].username == username


# --- the API ------------------------------------------------------------------------------------


def test_the_api_unblinds_for_the_investigator_and_refuses_with_problems(world):
    token = world.token("dr.li")
    client = world.app.test_client()
    url = f"/api/v1/subjects/{world.subjects['R1']}/unblinding"
    cases = [
        ({"reason": ""}, 422, "reason"),
        ({"reason": "   "}, 422, "reason"),
        ({"understood": False}, 422, "understood"),
        ({"category": "curiosity"}, 422, "category"),
        ({"signature_password": "nope nope nope"}, 401, "password"),
    ]
    for changes, status, field in cases:
        before, seq = state(), head_seq()
        response = client.post(url, json={**BODY, **changes}, headers=token)
        assert response.status_code == status, (changes, response.get_data(as_text=True))
        assert response.mimetype == PROBLEM
        problem = response.get_json()
        fields = {p["field"] for p in problem.get("errors", [])}
        assert field in fields or field in problem["detail"], (changes, problem)
        assert state() == before
        expected = ["esign.signature_failed", "unblinding.refused"] if status == 401 else []
        assert actions_since(seq) == expected
    for key, username, status in (("R1", "dr.zhang", 404), ("E1", "dr.li", 409)):
        before = state()
        response = client.post(
            f"/api/v1/subjects/{world.subjects[key]}/unblinding",
            json=BODY,
            # dr.li's own token: minting another re-enters her password, which clears the count
            headers=token if username == "dr.li" else world.token(username),
        )
        assert response.status_code == status and response.mimetype == PROBLEM
        assert state() == before

    seq = head_seq()
    response = client.post(url, json=BODY, headers=token)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    arm = sealed_arm(world.subjects["R1"])
    assert body["arm_code"] == arm and body["arm_name"] == ARM_NAMES[arm]
    assert body["first_view"] is True and body["screening_number"] == _number(world, "R1")
    assert "signature_password" not in body
    # The good signature clears the earlier failed one (a change, audited), then the unblinding.
    assert actions_since(seq) == ["auth.failures_cleared", "esign.signed", "subject.unblinded"]
    # Once unblinded, a new request (a reason that could name the arm) is refused, unrecorded.
    tokens = {"dr.li": token, "dr.lin": world.token("dr.lin")}
    before, seq = state(), head_seq()
    for username in ("dr.li", "dr.lin"):
        again = client.post(url, json={**BODY, "reason": "again"}, headers=tokens[username])
        assert again.status_code == 409 and again.mimetype == PROBLEM
        problem = again.get_json()
        assert {(e["field"], e["rule"]) for e in problem["errors"]} == {
            ("subject_id", "already_unblinded")
        }
        assert_no_arm(again.get_data(as_text=True))
    assert state() == before and actions_since(seq) == []
    assert state().unblindings == 1


# --- what others see ----------------------------------------------------------------------------


def test_the_pharmacist_sees_the_fact_of_the_unblinding_but_not_the_arm(world):
    unblind(world, "dr.li", "R1")
    page = world.client("ph.wang").get("/dispensing/?due=all").get_data(as_text=True)
    row = re.search(rf"<td>{re.escape(_number(world, 'R1'))}[^<]*<span[^>]*>([^<]*)</span>", page)
    assert row and re.match(r"emergency-unblinded \d\d-[A-Z]{3}-20", row.group(1)), page
    other = re.search(rf"<td>{re.escape(_number(world, 'R2'))}</td>", page)
    assert other, "R2 (not unblinded) carries no mark"
    assert_no_arm(page, names=False)
    assert world.client("ph.wang").get("/unblinding/").status_code == 403


def test_the_unblinding_report_is_complete_scoped_and_never_shows_the_arm(world):
    unblind(world, "dr.li", "R1")
    world.clock.advance(minutes=5)
    unblind(world, "dr.zhang", "Z1", category="pregnancy", reason="Pregnancy at week 2")
    r1, z1 = _number(world, "R1"), _number(world, "Z1")
    for username, shown, hidden in [
        ("audit.zhao", [r1, z1], []),
        ("admin", [r1, z1], []),
        ("stat.liu", [r1, z1], []),
        ("dr.li", [r1], [z1]),
        ("dr.zhang", [z1], [r1]),
    ]:
        client = world.client(username)
        html = client.get("/unblinding/").get_data(as_text=True)
        for number in shown:
            assert f"<td>{number}</td>" in html, (username, number)
        for number in hidden:
            assert number not in html, (username, number)
        if r1 in shown:
            assert "dr.li" in html and str(escape(REASON)) in html
            assert "serious adverse event" in html
        if z1 in shown:
            assert "Pregnancy at week 2" in html
        assert_no_arm(html, names=False)
        api = client.get("/api/v1/unblindings", headers=world.token(username))
        assert api.status_code == 200
        assert [line["subject"] for line in api.get_json()] == [n for n in (z1, r1) if n in shown]
        assert_no_arm(api.get_data(as_text=True), names=False)


def test_the_auditor_sees_the_unblinding_in_the_trail_without_the_arm(world):
    unblind(world, "dr.li", "R1")
    client = world.client("audit.zhao")
    page = client.get("/audit/", query_string={"action": "subject.unblinded"})
    html = page.get_data(as_text=True)
    (seq,) = [e.seq for e in events_since(0) if e.action == "subject.unblinded"]
    assert f'href="/audit/events/{seq}?' in html and "dr.li" in html
    detail = client.get(f"/audit/events/{seq}").get_data(as_text=True)
    assert str(escape(REASON)) in detail and _number(world, "R1") in detail
    for recipient in RECIPIENTS:
        assert recipient in detail
    assert_no_arm(html + detail, names=False)
