"""Padding of every answer that shows arms, so its length does not depend on them (the rule and
its measures: blinding/padding.py). Where each kind of answer puts the padding:
  HTML  spaces right after the arm-dependent value (a browser shows none of them);
  JSON  whitespace after the document (RFC 8259 allows it; every parser ignores it);
  CSV   a last column `padding` holding spaces (the values stay exact for analysis programs).
The answers that show arms: the statistician's list page, allocations page and both CSV exports,
GET /api/v1/lists/status, and the unblinding investigator's arm (page and API).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from flask import Response, current_app
from markupsafe import Markup, escape

from blinding import padding
from iwrs.csv_export import neutralise

CODE, NAME = "code", "name"


def _labels(kind: str) -> list[str]:
    return [getattr(arm, kind) for arm in current_app.extensions["iwrs.protocol"].arms]


def _html_length(text: str) -> int:
    return len(str(escape(text)).encode("utf-8"))


def _json_length(text: str) -> int:
    # The default JSON provider escapes non-ASCII (ensure_ascii), as json.dumps does.
    return len(json.dumps(text).encode("utf-8"))


def _csv_length(text: str) -> int:
    text = neutralise(text)  # as written (iwrs/csv_export.py)
    quoted = any(c in text for c in ',"\r\n')
    return len(text.encode("utf-8")) + (2 + text.count('"') if quoted else 0)


def html_label_padding(label: str, kind: str = CODE) -> Markup:
    """Spaces to write right after an arm code (kind "code") or name ("name") in a page."""
    return Markup(" ") * padding.label_padding(label, _labels(kind), measure=_html_length)


def html_count_padding(count: int, total: int) -> Markup:
    """Spaces to write right after a per-arm count that is part of `total`."""
    return Markup(" ") * padding.count_padding(count, total)


def json_padding(
    *, labels: Iterable[tuple[str, str]] = (), counts: Iterable[tuple[int, int]] = ()
) -> int:
    """Bytes of whitespace a JSON document needs for its (label, kind) and (count, total)."""
    return sum(
        padding.label_padding(label, _labels(kind), measure=_json_length) for label, kind in labels
    ) + sum(padding.count_padding(count, total) for count, total in counts)


def csv_padding(
    *, labels: Iterable[tuple[str, str]] = (), counts: Iterable[tuple[int, int]] = ()
) -> str:
    """The `padding` field of one CSV row: spaces for its (label, kind) and (count, total)."""
    size = sum(
        padding.label_padding(label, _labels(kind), measure=_csv_length) for label, kind in labels
    )
    return " " * (size + sum(padding.count_padding(count, total) for count, total in counts))


def padded_json(payload: Any, *, pad: int, status: int = 200) -> Response:
    """`payload` (already dumped by its schema) as JSON, followed by `pad` spaces."""
    response = current_app.json.response(payload)
    response.set_data(response.get_data() + b" " * pad)
    response.status_code = status
    return response
