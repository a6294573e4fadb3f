"""Labels and messages in words on pages (issue 15, problem 8).

The API keeps its codes: a problem+json names the `field` and the `rule`, and the services
write their messages as "<field>: <what is wrong>" for it. A page shows the same refusal to a
person, so every message a page shows passes through `in_words` (the `words` filter of
base.html's flashes, error.html and the eligibility form): the field code that opens it becomes
the field's label, a list of choice codes becomes their labels, any other snake_case code
becomes words, a YYYY-MM-DD date reads DD-MMM-YYYY and a stratum key ("disease=RA") its
factor's label (`stratum_words`, also used where pages show a stratum). The codes stay in the
`data-field` and `data-rule` attributes, where tests and tools read them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import date
from typing import Any

from flask import Flask, current_app

from iwrs import clock
from iwrs.signatures import UNBLINDING_CATEGORIES

# Field codes whose words are not their code with spaces.
FIELD_WORDS = {
    "site_code": "Site",
    "site_id": "Site",
    "subject_id": "Subject",
    "shipment_id": "Shipment",
    "dispensation_id": "Dispensation",
    "visit_code": "Visit",
    "kit_number": "Kit number",
    "kit_numbers": "Kit numbers",
    "signature_password": "Your password (electronic signature)",
    "signer_password": "Your password (electronic signature)",
    "different_person_signature_password": "Your password (a different person)",
    "sae_led_to_unblinding": "A serious adverse event led to it",
    "backdate_reason": "Reason for an earlier date",
    "idempotency_key": "Form key",
    "csrf_token": "Form security token",
    "understood": "Confirmation",
    "category": "Reason category",
    "date_from": "From",
    "date_to": "To",
    "temperature_excursion": "Temperature excursion",
    "body": "Form",
}
# Choice codes whose words are not the code itself.
VALUE_WORDS: dict[str, str] = {**UNBLINDING_CATEGORIES, "not_done": "not done"}

_LEADING_CODE = re.compile(r"^([a-z][a-z0-9]*(?:[_.\[\]-]+[A-Za-z0-9]+\]?)*): ")
_ONE_OF = re.compile(r"((?i:must be one of):? )([a-z0-9_, ]+)")
_SNAKE = re.compile(r"\b[a-z][a-z0-9]*(?:_[A-Za-z0-9]+)+\b")
_ISO_DAY = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b(?!T\d|-)")
_STRATUM_KEY = re.compile(r"\b[a-z][a-z0-9_]*=[A-Za-z0-9]+(?:\|[a-z][a-z0-9_]*=[A-Za-z0-9]+)*")
_ITEM = re.compile(r"^(\w+)(?:\.|\[)(\d+)\]?\.(\w+)$")


def _engine_labels() -> dict[str, str]:
    """The eligibility form's labels by field (an attestation by its criterion's number)."""
    cached = current_app.extensions.get("iwrs.field_words")
    if cached is None:
        from iwrs.services.subjects import engine

        cached = {}
        for spec in engine().fields():
            label = spec.label
            if len(label) > 60 and spec.help and ":" in spec.help:
                label = spec.help.split(":", 1)[0]  # "Inclusion I1"
            cached[spec.name] = label
        current_app.extensions["iwrs.field_words"] = cached
    return cached


def label(field: str) -> str:
    """A field code in words: "kit_number" -> "Kit number", "fvc_pct" -> its form label,
    "medications.0.last_dose" -> "Medication 1, last dose"."""
    if ":" in field:  # "drug_class:<drug>", the class of a drug the dictionary lacks
        kind, _, what = field.partition(":")
        return f"{label(kind)} of {what}"
    item = _ITEM.match(field)
    if item:
        whole, index, part = item.groups()
        return f"{label(whole).rstrip('s')} {int(index) + 1}, {label(part).lower()}"
    if field in FIELD_WORDS:
        return FIELD_WORDS[field]
    known = _engine_labels().get(field)
    if known:
        return known
    words = field.replace("_", " ").replace(".", " ").strip()
    return words[:1].upper() + words[1:]


def in_words(message: object, field: str | None = None) -> str:
    """A refusal's message as a person reads it (see the module docstring)."""
    text = str(message or "")
    opening = _LEADING_CODE.match(text)
    if opening and (field is None or opening.group(1) == field or "_" in opening.group(1)):
        text = f"{label(opening.group(1))}: {text[opening.end() :]}"
    text = _ONE_OF.sub(
        lambda m: (
            m.group(1)
            + ", ".join(VALUE_WORDS.get(v.strip(), v.strip()) for v in m.group(2).split(","))
        ),
        text,
    )
    text = _STRATUM_KEY.sub(lambda m: f"({stratum_words(m.group(0))})", text)
    text = _SNAKE.sub(lambda m: _code_words(m.group(0)), text)
    return _ISO_DAY.sub(_day, text)


def _code_words(code: str) -> str:
    if code in VALUE_WORDS:
        return VALUE_WORDS[code]
    return label(code).lower() if code not in _engine_labels() else label(code)


def _day(match: re.Match[str]) -> str:
    try:
        return clock.day_text(date(*(int(g) for g in match.groups())))
    except ValueError:
        return match.group(0)


def stratum_words(stratum: Any) -> str:
    """A stratum ("disease=RA", its JSON or a dict) by the protocol's factor labels:
    "Underlying disease: RA"."""
    if isinstance(stratum, str) and stratum.startswith("{"):
        stratum = json.loads(stratum)
    if isinstance(stratum, str):
        pairs = [part.split("=", 1) for part in stratum.split("|") if "=" in part]
        stratum = dict(pairs) if pairs else {"": stratum}
    factors = {f.factor: f.label for f in current_app.extensions["iwrs.protocol"].stratification}
    levels: Mapping[str, Any] = stratum or {}
    return "; ".join(
        f"{factors.get(k, label(k)) + ': ' if k else ''}{v}" for k, v in levels.items()
    )


def init_app(app: Flask) -> None:
    app.add_template_filter(in_words, "words")
    app.add_template_filter(label, "field_label")
    app.add_template_filter(stratum_words, "stratum_words")
