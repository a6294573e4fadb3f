"""RFC 9457 problem details: every API error names the field and the rule."""

from __future__ import annotations

from typing import Any

from flask import jsonify, request

PROBLEM_TYPE = "https://iwrs.example/problems/"


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
    response.content_type = "application/problem+json"
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="iwrs"'
    return response


def flatten_validation_messages(messages: Any, prefix: str = "") -> list[dict[str, str]]:
    """Turn webargs/marshmallow's nested messages into a list of {field, rule, message}."""
    out: list[dict[str, str]] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            if key in ("json", "query", "form", "view_args", "headers") and not prefix:
                out.extend(flatten_validation_messages(value, ""))
            else:
                name = f"{prefix}.{key}" if prefix else str(key)
                out.extend(flatten_validation_messages(value, name))
    elif isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict | list):
                out.extend(flatten_validation_messages(message, prefix))
            else:
                out.append(
                    {
                        "field": prefix or "body",
                        "rule": "schema",
                        "message": f"{prefix or 'body'}: {message}",
                    }
                )
    else:
        out.append({"field": prefix or "body", "rule": "schema", "message": str(messages)})
    return out
