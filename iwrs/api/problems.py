"""RFC 9457 problem details: every API error names the field and the rule."""

from __future__ import annotations

from typing import Any

from flask import jsonify, request

PROBLEM_TYPE = "https://iwrs.example/problems/"
PROBLEM_JSON = "application/problem+json"


def problem_response(
    status: int,
    title: str,
    detail: str,
    problems: list[dict[str, str]] | None = None,
    rule: str | None = None,
) -> Any:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + (rule or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.path,
    }
    if problems:
        body["errors"] = problems
    response = jsonify(body)
    response.status_code = status
    response.content_type = PROBLEM_JSON
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="iwrs"'
    return response
