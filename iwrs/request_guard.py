"""Checks on every request body before anything else runs (authentication included), except
that an anonymous call to an API operation that needs a caller gets its 401 first
(iwrs.auth.api_authentication_first).

In order, each refusal naming the field and the rule:
  body_size           413: a body larger than MAX_CONTENT_LENGTH (files) or, for a form without
                      files, MAX_FORM_BYTES; a page form's longest field is a 4,000-character text.
                      In a multipart body a text field is bounded by the body's limit, as a file
                      is: the list mapping step carries the uploaded file's text back in one.
  content_type        415: an API write whose body is not JSON (every /api/v1 body is JSON)
  json_depth          400: JSON nested deeper than MAX_JSON_DEPTH (found without parsing it)
  json_syntax         400: JSON that does not parse, or is not UTF-8
  control_characters  422: a value holding a character no person types (iwrs/validation.py);
                      multi-line text may hold TAB, LF and CR here, each service then applies its
                      field's own rule. Password fields are exempt (a password is never shown).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Flask, current_app, request

from iwrs.errors import InvalidInput, MalformedRequest, PayloadTooLarge, UnsupportedMediaType
from iwrs.validation import json_depth, refused_character

MAX_JSON_DEPTH = 32
MAX_CONTENT_LENGTH = 4 * 1024 * 1024  # an uploaded list or kit file (iwrs/uploads.py: 2 MB)
MAX_FORM_BYTES = 256 * 1024  # a page form without files, and an API JSON body


def init_app(app: Flask) -> None:
    app.config.update(MAX_CONTENT_LENGTH=MAX_CONTENT_LENGTH, MAX_FORM_MEMORY_SIZE=MAX_FORM_BYTES)
    # Registered before authentication's hooks, so an anonymous caller meets these first.
    app.before_request(guard_request)


def guard_request() -> None:
    """Refuse a malformed or oversized body, or a refused character, before any other work."""
    _check_size()
    payload = _check_json()
    fields = [
        name
        for name, value in request.values.items(multi=True)
        if _refused(name, value, multiline=True) or _refused("", name, multiline=False)
    ]
    if payload is not None:
        fields += [path for path, value in _strings(payload, "") if _refused(path, value)]
    if fields:
        message = (
            f"{fields[0]}: must not contain control or direction-changing characters "
            "(such as NUL or U+202E)"
        )
        raise InvalidInput(
            message,
            field=fields[0],
            rule="control_characters",
            errors=[{"field": f, "rule": "control_characters", "message": message} for f in fields],
        )


def _check_size() -> None:
    length = request.content_length or 0
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.mimetype == "multipart/form-data":
        request.max_form_memory_size = limit  # a file's text in a field: the file's bound
    else:
        limit = min(limit, current_app.config["MAX_FORM_MEMORY_SIZE"])
    if length > limit:
        raise PayloadTooLarge(
            f"body: the request is {length:,} bytes; at most {limit:,} are accepted",
            field="body",
            rule="body_size",
        )


def _check_json() -> Any:
    api_write = request.path.startswith("/api/") and request.method in ("POST", "PUT", "PATCH")
    raw = request.get_data(cache=True) if (request.is_json or api_write) else b""
    if api_write and raw and not request.is_json:
        raise UnsupportedMediaType(
            f"body: send JSON with Content-Type application/json (got {request.mimetype!r})",
            field="body",
            rule="content_type",
        )
    if not request.is_json or not raw:
        return None
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise MalformedRequest(
            f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels",
            field="body",
            rule="json_depth",
        )
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise MalformedRequest(
            f"body: not valid JSON ({str(error)[:80]})", field="body", rule="json_syntax"
        ) from None


def _refused(name: str, value: Any, *, multiline: bool = True) -> bool:
    if not isinstance(value, str) or "password" in name:
        return False
    return refused_character(value, multiline=multiline) is not None


def _strings(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            yield name, key
            yield from _strings(item, name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")
    else:
        yield path, value
