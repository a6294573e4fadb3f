"""The API's document is true to its errors (issue 15, problem 15): every error an operation
may answer is documented as application/problem+json, an anonymous write meets 401 before any
check of its body, and a method a route lacks gets 405 with `Allow`, API and pages alike.
Every table below is built from the app's own routes, so a new operation or page is covered."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from werkzeug.routing import IntegerConverter

from iwrs.api import BEYOND_SCHEMA, WRITES
from iwrs.auth import api_operation, required_permissions

PROBLEM = "application/problem+json"
PROBE_METHODS = ("PATCH", "PUT", "DELETE", "POST", "GET")


def _url(rule: Any) -> str:
    """The rule's URL with each argument filled (1 for a number, "x" otherwise)."""
    values = {
        name: 1 if isinstance(converter, IntegerConverter) else "x"
        for name, converter in rule._converters.items()
    }
    built = rule.build({**(rule.defaults or {}), **values}, append_unknown=False)
    assert built is not None, rule.rule
    return built[1]


def _api_writes(app: Flask) -> list[tuple[str, str]]:
    """(method, URL) of every API operation that changes something and needs a caller."""
    found = []
    with app.app_context():
        for rule in app.url_map.iter_rules():
            if not rule.rule.startswith("/api/"):
                continue
            for method in sorted((rule.methods or set()) & {m.upper() for m in WRITES}):
                operation = api_operation(rule.endpoint, method)
                if operation is not None and required_permissions(operation) is not None:
                    found.append((method, _url(rule)))
    return found


# Bodies each refused for its own reason, had the caller been known.
BODIES = {
    "json_syntax": {"data": b"{not json", "content_type": "application/json"},
    "content_type": {"data": b"a=1", "content_type": "application/x-www-form-urlencoded"},
    "control_characters": {"json": {"reason": "a\u202eb", "site_code": "\x00"}},
    "schema": {"json": {"unknown_field": [1, 2, 3]}},
    "json_depth": {"data": b"[" * 40 + b"]" * 40, "content_type": "application/json"},
}


def _assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == PROBLEM
    body = response.get_json(force=True)
    assert body["status"] == status
    return body


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_anonymous_write_gets_401_before_anything_reads_its_body(app):
    writes = _api_writes(app)
    assert len(writes) >= 15  # every POST and DELETE of /api/v1
    client = app.test_client()
    for method, url in writes:
        for name, body in BODIES.items():
            for headers in ({}, {"Authorization": "Bearer iwrs_" + "x" * 43}):
                response = client.open(url, method=method, headers=headers, **body)
                problem = _assert_problem(response, 401)
                assert response.headers["WWW-Authenticate"].startswith("Bearer"), (method, url)
                assert [e["rule"] for e in problem["errors"]] == ["authentication_required"], (
                    method,
                    url,
                    name,
                )


def _probes(app: Flask) -> list[tuple[str, str, set[str]]]:
    """(URL, a method no rule at that URL takes, the methods that are taken) for every route."""
    adapter = app.url_map.bind("localhost")
    probes = []
    for rule in app.url_map.iter_rules():
        url = _url(rule)
        allowed = set(adapter.allowed_methods(url))
        missing = [m for m in PROBE_METHODS if m not in allowed]
        if missing:
            probes.append((url, missing[0], allowed))
    return probes


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_route_answers_a_missing_method_405_with_allow(app, make_user):
    from tests.conftest import sign_in

    probes = _probes(app)
    assert len(probes) >= 60
    anonymous, signed_in = app.test_client(), app.test_client()
    sign_in(signed_in, make_user("admin").username)
    for url, method, allowed in probes:
        for client in (anonymous, signed_in):
            response = client.open(url, method=method)
            assert response.status_code == 405, (url, method, response.status_code)
            listed = {m.strip() for m in response.headers.get("Allow", "").split(",")}
            assert listed == allowed, (url, method, listed)
            if url.startswith("/api/"):
                _assert_problem(response, 405)


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in ("get", "put", "post", "delete", "patch")
    ]


def _resolved(spec: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    ref = response.get("$ref")
    return spec["components"]["responses"][ref.rsplit("/", 1)[1]] if ref else response


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_document_names_problem_json_for_every_error(app):
    spec = app.test_client().get("/api/v1/openapi.json").get_json()
    assert "Problem" in spec["components"]["schemas"]
    operations = _operations(spec)
    assert len(operations) >= 30
    for path, method, operation in operations:
        label = f"{method.upper()} {path}"
        responses = operation["responses"]
        assert "default" not in responses, label
        errors = {int(s): _resolved(spec, r) for s, r in responses.items() if int(s) >= 400}
        for status, response in errors.items():
            assert set(response["content"]) == {PROBLEM}, (label, status)
            schema = response["content"][PROBLEM]["schema"]
            assert schema == {"$ref": "#/components/schemas/Problem"}, (label, status)
        public = operation.get("security") == []
        expected = {422} if public else {401, 403, 422, 503}
        if method in WRITES:
            expected |= {400, 413} | ({415} if method != "delete" else set())
        if "{" in path:
            expected.add(404)
        assert expected <= errors.keys(), (label, sorted(errors))
        assert "control_characters" in operation[BEYOND_SCHEMA], label
        for rule in operation[BEYOND_SCHEMA]:
            assert f"`{rule}`" in operation["description"], (label, rule)
    public = {f"{m.upper()} {p}" for p, m, o in operations if o.get("security") == []}
    assert public == {"GET /api/v1/audit/public-key"}
