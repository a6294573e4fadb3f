"""Input hygiene on every door (issue 11): each input case gets a clear 4xx naming the field and
the rule, never a 500 or a traceback; every CSV export neutralises formulas; answers are
`no-store`; the CSP names form-action and base-uri. On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from iwrs.audit import Actor
from iwrs.db import read_session
from iwrs.models.audit import AuditEvent
from iwrs.models.sites import Site, SiteStatus
from iwrs.models.subjects import Subject
from tests.conftest import PASSWORD, csrf_from, sign_in
from tests.web.test_api import bearer, token_for  # noqa: F401 - token_for is a fixture

PROBLEM = "application/problem+json"
HYPERLINK = '=HYPERLINK("http://x","y")'
RLO = "\u202e"
DEEP = ("[" * 1000 + "]" * 1000).encode()


@pytest.fixture
def cn01(app, make_user):  # type: ignore[no-untyped-def]
    """CN01 active; its id."""
    from iwrs.services import sites

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
    return site_id


def rules(response, status: int) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """The (field, rule) pairs of a problem+json answer of `status`."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == PROBLEM
    assert "Traceback" not in response.get_data(as_text=True)
    return {(e["field"], e["rule"]) for e in response.get_json().get("errors", [])}


def page_rules(response, status: int) -> set[str]:  # type: ignore[no-untyped-def]
    """The rules named on an error page of `status`."""
    assert response.status_code == status
    html = response.get_data(as_text=True)
    assert "Traceback" not in html
    return set(re.findall(r'data-rule="([a-z_]+)"', html))


def events(app, action: str) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    with app.app_context():
        return list(read_session().scalars(select(AuditEvent).where(AuditEvent.action == action)))


def subject_count(app) -> int:  # type: ignore[no-untyped-def]
    with app.app_context():
        return read_session().scalar(select(func.count()).select_from(Subject)) or 0


# --- bodies: depth, syntax, type, size (before the schema; an anonymous API call gets 401 first,
# tests/web/test_api_document.py) --------------------------------------------------------------


def _caller(app, make_user):  # type: ignore[no-untyped-def]
    """A test client that calls the API with an investigator's token (pages stay anonymous)."""
    client = app.test_client()
    user = make_user("investigator", sites=["CN01"])
    client.environ_base["HTTP_AUTHORIZATION"] = bearer(_token(app, user))["Authorization"]
    return client


def test_json_nested_1000_deep_gets_400_before_the_schema(app, make_user):
    client = _caller(app, make_user)  # unexpected errors propagate (the app fixture)
    for url in ("/api/v1/subjects", "/api/v1/users", "/api/v1/tokens"):
        response = client.post(url, data=DEEP, content_type="application/json")
        assert rules(response, 400) == {("body", "json_depth")}, url
    page = app.test_client().post("/sign-in", data=DEEP, content_type="application/json")
    assert page_rules(page, 400) == {"json_depth"}
    # 32 levels are within the limit: the body reaches the schema (which refuses a list).
    nested_32 = b"[" * 32 + b"]" * 32
    within = client.post("/api/v1/subjects", data=nested_32, content_type="application/json")
    assert within.status_code in (400, 401, 422)
    assert ("body", "json_depth") not in {
        (e["field"], e["rule"]) for e in within.get_json().get("errors", [])
    }


def test_malformed_json_wrong_content_type_and_huge_bodies_get_clear_4xx(app, make_user):
    client = _caller(app, make_user)
    for body in (b'{"site_code": ', b'{"a": "\xff"}', b"[1,]"):
        response = client.post("/api/v1/subjects", data=body, content_type="application/json")
        assert rules(response, 400) == {("body", "json_syntax")}, body
    plain = client.post("/api/v1/subjects", data="site_code=CN01", content_type="text/plain")
    assert rules(plain, 415) == {("body", "content_type")}
    form = client.post("/api/v1/subjects", data={"site_code": "CN01"})
    assert rules(form, 415) == {("body", "content_type")}
    huge = json.dumps({"reason": "x" * 300_000}).encode()
    response = client.post("/api/v1/subjects", data=huge, content_type="application/json")
    assert rules(response, 413) == {("body", "body_size")}
    page = app.test_client().post("/sign-in", data={"username": "x" * 5_000_000, "password": "y"})
    assert page_rules(page, 413) == {"body_size"}


# --- the withdraw page's 5 MB reason, and reasons everywhere ------------------------------------


def test_withdraw_refuses_a_5_mb_reason_and_one_over_1000_characters(app, cn01, login_as):
    from iwrs.services import subjects

    client, user = login_as("investigator", ["CN01"])
    with app.app_context():
        subject = subjects.screen_subject(
            actor=Actor.of(user), site_id=cn01, date_of_birth="1966-09-30", sex="male"
        )
    token = csrf_from(client.get("/subjects/").get_data(as_text=True))
    url = f"/subjects/{subject.id}/withdraw"
    huge = client.post(url, data={"csrf_token": token, "reason": "x" * 5 * 1024 * 1024})
    assert page_rules(huge, 413) == {"body_size"}
    long = client.post(url, data={"csrf_token": token, "reason": "x" * 1001})
    assert long.status_code in (302, 303, 422)
    api_token = bearer(_token(app, user))
    for reason, rule in (
        ("x" * 1001, "max_length"),
        (f"mistake {RLO}gnp.exe", "control_characters"),
    ):
        response = app.test_client().post(
            f"/api/v1/subjects/{subject.id}/withdrawal", json={"reason": reason}, headers=api_token
        )
        assert ("reason", rule) in rules(response, 422)
    with app.app_context():
        for reason, rule in (("x" * 1001, "max_length"), (f"a{RLO}b", "control_characters")):
            with pytest.raises(Exception) as refused:
                subjects.withdraw_subject(
                    actor=Actor.of(user), subject_id=subject.id, reason=reason
                )
            assert (refused.value.field, refused.value.rule) == ("reason", rule)
        assert read_session().get(Subject, subject.id).status == "screening"
    assert events(app, "subject.withdrawn") == []
    with app.app_context():  # exactly the limit is accepted
        subjects.withdraw_subject(actor=Actor.of(user), subject_id=subject.id, reason="x" * 1000)
    assert len(events(app, "subject.withdrawn")) == 1


def _token(app, user) -> str:  # type: ignore[no-untyped-def]
    from iwrs.services import users

    with app.app_context():
        token, _ = users.create_api_token(
            actor=Actor.of(user), user_id=user.id, name="t", password=PASSWORD
        )
    return token


# --- names: U+202E on the page, the API and the service ----------------------------------------


def test_a_bidi_override_in_a_name_is_refused_on_every_door(app, make_user):
    from iwrs.services import users

    admin = make_user("admin")
    body = {"username": "dr.rlo", "full_name": f"Dr {RLO}uW", "email": "rlo@example.org"}
    body |= {"role": "auditor", "site_codes": []}
    response = app.test_client().post(
        "/api/v1/users", json=body, headers=bearer(_token(app, admin))
    )
    assert ("full_name", "control_characters") in rules(response, 422)
    with app.app_context(), pytest.raises(Exception) as refused:
        users.create_user(
            actor=Actor.system("test"),
            username="dr.rlo",
            full_name=f"Dr {RLO}uW",
            role="auditor",
            password=PASSWORD,
        )
    assert (refused.value.field, refused.value.rule) == ("full_name", "control_characters")
    with app.app_context(), pytest.raises(Exception) as refused:
        users.create_user(
            actor=Actor.system("test"),
            username="dr.rlo2",
            full_name="Dr Wu",
            email=f"wu{RLO}@example.org",
            role="auditor",
            password=PASSWORD,
        )
    assert (refused.value.field, refused.value.rule) == ("email", "control_characters")
    with app.app_context():
        assert (
            read_session().scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "user.created", AuditEvent.after.like("%dr.rlo%"))
            )
            == 0
        )


# --- dates --------------------------------------------------------------------------------------


@pytest.mark.parametrize("written", ["1970-W01-1", "19700101", "1970-001"])
def test_week_basic_and_ordinal_dates_are_refused(app, cn01, login_as, written):
    from iwrs.services import subjects

    client, user = login_as("investigator", ["CN01"])
    response = client.post(
        "/api/v1/subjects",
        json={"site_code": "CN01", "date_of_birth": written, "sex": "male"},
        headers=bearer(_token(app, user)),
    )
    assert rules(response, 422) == {("date_of_birth", "date_format")}  # neither DD-MMM-YYYY nor ISO
    token = csrf_from(client.get("/subjects/").get_data(as_text=True))
    page = client.post(
        "/subjects/",
        data={"csrf_token": token, "site_code": "CN01", "date_of_birth": written, "sex": "male"},
    )
    assert page.status_code < 500
    with app.app_context(), pytest.raises(Exception) as refused:
        subjects.screen_subject(
            actor=Actor.of(user), site_id=cn01, date_of_birth=written, sex="male"
        )
    assert refused.value.rule == "date_format"
    assert subject_count(app) == 0
    auditor = make_auditor(app)
    query = app.test_client().get(
        f"/api/v1/audit/events?date_from={written}", headers=bearer(_token(app, auditor))
    )
    assert ("date_from", "date_format") in rules(query, 422)


def make_auditor(app):  # type: ignore[no-untyped-def]
    from iwrs.services import users

    with app.app_context():
        return users.create_user(
            actor=Actor.system("test"),
            username=f"aud{subject_count(app)}x",
            full_name="Auditor",
            role="auditor",
            password=PASSWORD,
        )


# --- CSV: the anonymous =HYPERLINK username, exported by the auditor ----------------------------


def test_an_anonymous_hyperlink_username_is_exported_as_text(app):
    from iwrs.audit_anchor import public_key
    from iwrs.audit_export import package_files, verify_export
    from iwrs.csv_export import original

    sign_in(app.test_client(), HYPERLINK, "not the password at all")
    stored = HYPERLINK.lower()
    assert any(e.username == stored for e in events(app, "auth.sign_in_failed"))
    auditor = make_auditor(app)
    client = app.test_client()
    sign_in(client, auditor.username)
    for response in (
        client.get("/audit/export.csv"),
        app.test_client().get(
            "/api/v1/audit/export?format=csv", headers=bearer(_token(app, auditor))
        ),
    ):
        assert response.status_code == 200 and response.mimetype == "application/zip"
        assert response.headers["Cache-Control"] == "no-store"
        package = response.get_data()
        body, _ = package_files(package)
        rows = list(csv.reader(io.StringIO(body, newline="")))
        cells = [cell for row in rows for cell in row]
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in cells)
        assert "'" + stored in cells  # the formula, written as text
        usernames = [original(r["username"]) for r in csv.DictReader(io.StringIO(body))]
        assert stored in usernames  # and read back exactly
        with app.app_context():
            assert verify_export(package, public_key()).ok


def test_every_csv_writer_goes_through_the_neutraliser():
    """No module of the application writes CSV but iwrs/csv_export.py, so no export can skip
    the neutraliser. (blinding/ writes two CSV texts that are not exports: the canonical bytes
    a list fingerprint covers, and a vendor's kit-list format used by tests.)"""
    root = Path(__file__).resolve().parents[2]
    writers = [
        str(path.relative_to(root))
        for path in (root / "iwrs").rglob("*.py")
        if re.search(r"csv\.(writer|DictWriter)\(", path.read_text())
    ]
    assert writers == ["iwrs/csv_export.py"]


def test_the_statisticians_csv_exports_neutralise_and_stay_padded(app, make_user):
    from iwrs.services import randomization

    stat = make_user("unblinded_statistician")
    with app.app_context():
        randomization.generate_list(actor=Actor.of(stat), name=HYPERLINK)
    client = app.test_client()
    sign_in(client, stat.username)
    status = client.get("/lists/status.csv")
    assert status.status_code == 200 and status.headers["Cache-Control"] == "no-store"
    rows = list(csv.reader(io.StringIO(status.get_data(as_text=True), newline="")))
    assert rows[0][-1] == "padding"
    assert {row[0] for row in rows[1:]} == {"'" + HYPERLINK}
    allocations = client.get("/lists/allocations.csv")
    assert allocations.status_code == 200
    assert allocations.get_data(as_text=True).startswith("randomization_number,")


# --- headers ------------------------------------------------------------------------------------


def test_every_answer_is_no_store_and_the_csp_names_form_action_and_base_uri(app, make_user):
    stat = make_user("unblinded_statistician")
    client = app.test_client()
    for response in (
        client.get("/sign-in"),
        client.get("/api/v1/lists/status", headers=bearer(_token(app, stat))),
        client.get("/api/v1/me", headers=bearer(_token(app, stat))),
        client.post("/api/v1/subjects", data=DEEP, content_type="application/json"),
    ):
        assert response.headers["Cache-Control"] == "no-store"
        csp = response.headers["Content-Security-Policy"]
        assert "form-action 'self'" in csp and "base-uri 'none'" in csp
    static = client.get("/static/style.css")
    assert "no-store" not in static.headers.get("Cache-Control", "")
    static.close()


def test_typed_answers_with_a_bidi_override_are_refused_by_the_service(app, cn01, login_as):
    from iwrs.errors import InvalidInput
    from iwrs.services import subjects

    _, user = login_as("investigator", ["CN01"])
    with app.app_context():
        subject = subjects.screen_subject(
            actor=Actor.of(user), site_id=cn01, date_of_birth="1966-09-30", sex="male"
        )
        answers = {"medications": [{"drug": f"other:{RLO}nimuda"}]}
        with pytest.raises(InvalidInput) as refused:
            subjects.record_assessment(actor=Actor.of(user), subject_id=subject.id, answers=answers)
    assert (refused.value.field, refused.value.rule) == (
        "medications[0].drug",
        "control_characters",
    )
    assert events(app, "eligibility.assessed") == []


def test_the_list_pages_refuse_a_bad_seed_and_a_badly_encoded_file(app, make_user):
    from iwrs.models.randomization import RandomizationList

    stat = make_user("unblinded_statistician")
    client = app.test_client()
    sign_in(client, stat.username)
    token = csrf_from(client.get("/lists/").get_data(as_text=True))
    seed = client.post("/lists/generate", data={"csrf_token": token, "name": "L", "seed": "zz"})
    upload = client.post(
        "/lists/import",
        data={
            "csrf_token": token,
            "name": "L",
            "file": (io.BytesIO("café".encode("latin-1")), "l.csv"),
        },
        content_type="multipart/form-data",
    )
    extend = client.post("/lists/extend", data={"csrf_token": token, "blocks": "١", "reason": "r"})
    for response in (seed, upload, extend):
        assert response.status_code == 302
    page = client.get("/lists/").get_data(as_text=True)
    for field in ("seed", "file", "blocks"):  # each refusal named by its field (in words)
        assert f'data-field="{field}"' in page
    with app.app_context():
        assert read_session().scalar(select(func.count()).select_from(RandomizationList)) == 0


@pytest.mark.parametrize(
    ("role", "sites", "path"),
    [
        ("investigator", ["CN01"], "/subjects/"),
        ("supply_manager", None, "/supply/"),
        ("auditor", None, "/audit/"),
    ],
)
@pytest.mark.parametrize("before", ["99999999999999999999", "-1", "0", "x"])
def test_a_page_key_out_of_range_gives_the_first_page(app, login_as, role, sites, path, before):
    # SQLite cannot compare an integer over 64 bits: such a key used to be a 500.
    client, _ = login_as(role, sites)
    first = client.get(path)
    keyed = client.get(f"{path}?before={before}")
    assert (first.status_code, keyed.status_code) == (200, 200)
