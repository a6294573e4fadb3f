"""schemathesis over every operation of /api/v1 as every role (issue 15: the API matches its
document). Every check is enabled; the only refusal a schema-valid request may meet is a rule
the operation lists under `x-rules-beyond-schema` (written in its description too, by
iwrs.api.document_errors), so a rule JSON Schema can state must be in the schema.

Decision: the app is served in this process by werkzeug's server on a thread, and schemathesis
calls it over HTTP: its in-process WSGI transport passes `max_redirects` to werkzeug's test
client when a check (ignored_auth) re-sends a request without credentials, and fails.
Decision: the budget is small and derandomized (a fixed seed, no example database): each
operation gets its explicit examples, the coverage phase (boundaries, missing and wrong-typed
fields, undeclared methods) and FUZZ_EXAMPLES generated requests per role; the stateful phase
is off (no links in the document).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from flask import Flask
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema
from werkzeug.serving import make_server

from iwrs.api import BEYOND_SCHEMA, PERMISSIONS
from iwrs.auth import ROLE_PERMISSIONS
from iwrs.models.users import Role
from tests.conftest import PASSWORD
from tests.web.test_api import bearer

FUZZ_EXAMPLES = 5
FORBIDDEN_EXAMPLES = 2
METHODS = ("get", "put", "post", "delete", "patch")
SEED = 204
SITE_ROLES = {Role.INVESTIGATOR, Role.PHARMACIST}


@dataclass(frozen=True)
class Failure:
    role: str
    operation: str
    check: str
    status: int | None
    request: str
    answer: str

    def __str__(self) -> str:
        return (
            f"{self.role} {self.operation} [{self.check}] -> {self.status}\n"
            f"  {self.request}\n  {self.answer}"
        )


@pytest.fixture
def served(app: Flask) -> Iterator[str]:
    """The app on a local port (one request at a time, like the test client)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def _allowed(operation: dict[str, Any], answer: bytes) -> bool:
    """A 422 to a schema-valid request is allowed only for rules the operation lists as beyond
    its schema (`rule`, or `field:rule` for one field)."""
    listed = set(operation.get(BEYOND_SCHEMA, []))
    try:
        errors = json.loads(answer).get("errors") or []
    except ValueError:
        return False
    return bool(errors) and all(
        e["rule"] in listed or f"{e['field']}:{e['rule']}" in listed for e in errors
    )


def fuzz(base: str, token: str, role: Role) -> tuple[set[str], Counter[str], list[Failure]]:
    """Run schemathesis as one caller: (operations, answers by status class, failures).
    Operations the role may call get every phase; those it may not (403 whatever is sent)
    FORBIDDEN_EXAMPLES generated requests, which still hold the 403 to the document."""
    held = {p.value for p in ROLE_PERMISSIONS[role]}
    labels, answers, failures = set(), Counter[str](), []
    for permitted in (True, False):
        config = SchemathesisConfig.from_dict(
            {
                "seed": SEED,
                "cache": {"enabled": False},  # no replay of an earlier run's cases
                "headers": bearer(token),
                "checks": {"enabled": True},
                "generation": {
                    "max-examples": FUZZ_EXAMPLES if permitted else FORBIDDEN_EXAMPLES,
                    "deterministic": True,
                    "mode": "all",
                    "database": "none",
                },
                "phases": {
                    "stateful": {"enabled": False},
                    "coverage": {"enabled": permitted},
                    "examples": {"enabled": permitted},
                },
            }
        )
        schema = schemathesis.openapi.from_url(base + "/api/v1/openapi.json", config=config)
        document = schema.raw_schema["paths"]
        chosen = [
            f"{method.upper()} {path}"
            for path, item in document.items()
            for method, operation in item.items()
            if method in METHODS and (set(operation.get(PERMISSIONS, [])) <= held) is permitted
        ]
        if not chosen:
            continue
        for event in from_schema(schema.include(name=chosen)).execute():
            if isinstance(event, events.NonFatalError):
                failures.append(Failure(role, event.label, "error", None, "", event.info.message))
            if isinstance(event, events.ScenarioFinished):
                labels.add(event.recorder.label)
                answers.update(
                    f"{i.response.status_code // 100}xx"
                    for i in event.recorder.interactions.values()
                    if i.response is not None
                )
                failures += _failures(role, event.recorder, document)
    return labels, answers, failures


def _failures(role: Role, recorder: Any, document: dict[str, Any]) -> list[Failure]:
    found = []
    for case_id, results in recorder.checks.items():
        interaction = recorder.interactions.get(case_id)
        response = interaction.response if interaction else None
        for result in results:
            if result.status.name != "FAILURE":
                continue
            method, path = recorder.label.split(" ", 1)
            operation = document.get(path, {}).get(method.lower(), {})
            answer = response.content if response is not None and response.content else b""
            status = response.status_code if response is not None else None
            if (
                result.name == "positive_data_acceptance"
                and status == 422
                and _allowed(operation, answer)
            ):
                continue
            request = interaction.request if interaction else None
            message = result.failure_info.failure.message if result.failure_info else ""
            found.append(
                Failure(
                    role.value,
                    recorder.label,
                    result.name,
                    status,
                    f"{request.method} {request.uri} {request.body!r:.300}" if request else "",
                    message[:300] + " | " + answer[:300].decode("utf-8", "replace"),
                )
            )
    return found


def _world(app: Flask, make_user: Any) -> None:
    """CN01 active with a subject screened there (id 1): the ids schemathesis tries first (1 at
    the lower bound) then reach a record, not only 404."""
    from sqlalchemy import select

    from iwrs.audit import Actor
    from iwrs.db import read_session
    from iwrs.models.sites import Site, SiteStatus
    from iwrs.services import sites, subjects

    admin = make_user("admin")
    investigator = make_user("investigator", sites=["CN01"])
    with app.app_context():
        site_id = read_session().scalars(select(Site.id).where(Site.code == "CN01")).one()
        sites.change_site_status(
            actor=Actor.of(admin),
            site_id=site_id,
            status=SiteStatus.ACTIVE,
            signer_password=PASSWORD,
            understood=True,
        )
        subjects.screen_subject(
            actor=Actor.of(investigator), site_id=site_id, date_of_birth="1966-09-30", sex="male"
        )


def _token(app: Flask, user: Any) -> str:
    from iwrs.audit import Actor
    from iwrs.services import users

    with app.app_context():
        token, _ = users.create_api_token(
            actor=Actor.of(user), user_id=user.id, name="fuzz", password=PASSWORD
        )
    return token


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_operation_as_every_role_matches_the_document(app, served, make_user):
    """All checks, every role: no 500, no undocumented status or content type, no response
    outside its schema, valid data accepted (but for listed rules), invalid data refused, 405
    with Allow, 401 without credentials."""
    _world(app, make_user)
    report, failures, operations = [], [], set()
    for role in Role:
        user = make_user(role.value, sites=["CN01"] if role in SITE_ROLES else None)
        labels, answers, found = fuzz(served, _token(app, user), role)
        operations |= labels
        counts = dict(sorted(answers.items()))
        report.append(f"{role.value}: {sum(answers.values())} requests {counts}")
        failures += found
    print(f"schemathesis: {len(operations)} operations;", "; ".join(report))
    print(f"schemathesis: {len(failures)} failures")
    assert not failures, "\n".join(str(f) for f in failures)
