"""One schema per use-case input, shared by its page and its API endpoint (issue 14).

Decision: marshmallow is the one validation library. A use case that takes input from a person
has one schema, in this package by area (subjects.py, randomization.py, supply.py, users.py,
sites.py, lists.py), the inputs only a page takes among them.
Its API resource loads the JSON body through it (`@blp.arguments`, which also writes the OpenAPI
document) and its page loads `request.form` through the very same schema (`load_form`). The
fields call the validators of iwrs/validation.py, the ones the services call too, so the page,
the API and the service refuse a bad value with the same field and the same rule code.
A refusal is one `InvalidInput` whose `problems()` lists every {field, rule, message}: the API
answers problem+json with them (iwrs.web.handle_error), a page flashes each one with its field
and rule (iwrs.web.flash_refusal: `data-field`, `data-rule`).
Decision: no page validates otherwise. WTForms is gone: the templates write the fields by the
input's names (the `field`, `select`, `checkbox` and `signature` macros of _macros.html, a
form's `prefix` such as "token-" where a page holds several forms); flask-wtf remains only as
CSRFProtect, whose token every form carries.
Decision: the form and the JSON spelling of a value are both accepted: a page sends every value
as text (a number as digits, a ticked box as "y", an unticked one not at all), so the API now
also takes "5" for 5 where it took only the JSON integer.
Decision: a page's confirmation box ("understood", before an irreversible step the API signs
without) is a field of the page's schema, which extends the shared one (`Confirmation`).
Rule codes of the fields, beside those of iwrs/validation.py (required, max_length,
control_characters, date, date_format, integer, range, hex):
required (absent or null), type (not the expected
JSON type), choice (not one of the values), min_length, unknown_field (a JSON field the input
does not have; a page's extra form fields, the CSRF token among them, are ignored).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields

from iwrs import validation
from iwrs.errors import InvalidInput

# marshmallow's own error keys, as rule codes.
_RULE_OF_KEY = {"required": "required", "null": "required"}
_LOCATIONS = ("json", "query", "form", "view_args", "headers", "querystring")


@dataclass(frozen=True)
class Problem:
    """One refused value: the rule it broke and the message naming the field."""

    rule: str
    message: str


def _refused(rule: str, message: str) -> ValidationError:
    return ValidationError([Problem(rule, message)])  # type: ignore[list-item]


def _checked(check: Callable[..., Any], value: Any, **kwargs: Any) -> Any:
    """`check(value, ...)` from iwrs.validation, its InvalidInput as the field's Problem."""
    try:
        return check(value, **kwargs)
    except InvalidInput as refusal:
        raise _refused(refusal.rule or "invalid", refusal.message) from None


class _Refusals(fields.Field):
    """marshmallow's built-in refusals (absent, null, wrong type) as Problems with a rule."""

    def make_error(self, key: str, **kwargs: Any) -> ValidationError:
        error = super().make_error(key, **kwargs)
        rule = _RULE_OF_KEY.get(key, "type")
        texts = error.messages if isinstance(error.messages, list) else [error.messages]
        return ValidationError([Problem(rule, f"{self.name}: {text}") for text in texts])  # type: ignore[misc]


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class Text(_Refusals, fields.String):
    """A person's typed text of one kind (iwrs.validation.LIMITS), stripped. An optional one
    given blank loads as its `load_default`; a required one given blank is refused (with the
    `blank` message, when the use case words it)."""

    def __init__(
        self, *, kind: str, min_length: int = 0, blank: str | None = None, **kwargs: Any
    ) -> None:
        metadata = {"maxLength": validation.LIMITS[kind], **kwargs.pop("metadata", {})}
        if min_length or kwargs.get("required"):
            # Required text is refused blank: the document says "at least one non-blank
            # character" (surrounding blanks are stripped before any length is counted).
            metadata["minLength"] = max(min_length, 1)
            metadata.setdefault("pattern", validation.PATTERNS.get(kind, r"\S"))
        elif kind in validation.PATTERNS:  # optional: blank, or of its form
            metadata.setdefault("pattern", rf"^\s*$|{validation.PATTERNS[kind]}")
        super().__init__(metadata=metadata, **kwargs)
        self.kind, self.min_length, self.blank = kind, min_length, blank

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        limit = validation.LIMITS[self.kind]
        if isinstance(value, str) and len(value) > limit:  # blanks count: maxLength says so
            raise _refused("max_length", f"{self.name}: at most {limit} characters")
        if self.blank and self.required and _blank(value):
            raise _refused("required", f"{self.name}: {self.blank}")
        text = _checked(
            validation.text, value, field=self.name, kind=self.kind, required=self.required
        )
        if not text:
            return self.load_default
        if len(text) < self.min_length:
            raise _refused("min_length", f"{self.name}: at least {self.min_length} characters")
        return text


class Secret(_Refusals, fields.String):
    """A password or e-signature, exactly as typed (never stripped; checked by the service).
    Given empty: refused (rule required, `blank` message) where the use case says so, else
    left to the service, which refuses it as a failed signature (401)."""

    def __init__(
        self, *, max_length: int | None = None, blank: str | None = None, **kwargs: Any
    ) -> None:
        if max_length is not None:
            kwargs["metadata"] = {"maxLength": max_length, **kwargs.get("metadata", {})}
        super().__init__(load_only=True, **kwargs)
        self.max_length, self.blank = max_length, blank

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        if self.blank and self.required and text == "":
            raise _refused("required", f"{self.name}: {self.blank}")
        if self.max_length is not None and len(text) > self.max_length:
            raise _refused("max_length", f"{self.name}: at most {self.max_length} characters")
        return self.load_default if text == "" and not self.required else text


class Choice(_Refusals, fields.String):
    """One of a fixed set of values (rule choice)."""

    def __init__(self, values: Collection[str], **kwargs: Any) -> None:
        metadata = {"enum": list(values), **kwargs.pop("metadata", {})}
        super().__init__(metadata=metadata, **kwargs)
        self.values = tuple(values)

    def make_error(self, key: str, **kwargs: Any) -> ValidationError:
        if key in ("required", "null"):
            return _refused("required", f"{self.name}: must be one of {', '.join(self.values)}")
        return super().make_error(key, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        if text == "" and not self.required:
            return self.load_default
        if text not in self.values:
            raise _refused("choice", f"{self.name}: must be one of {', '.join(self.values)}")
        return text


BLANK_OR_DATE = [{"format": "date"}, {"pattern": r"^\s*$"}]


class DayDate(_Refusals, fields.String):
    """A date a person types, DD-MMM-YYYY (05-MAR-1965) or YYYY-MM-DD, loaded as its
    YYYY-MM-DD text (the services' form); any other writing, ambiguous as 05031965 or
    05/03/1965, is refused with rule date_format, a day that does not exist with rule date
    (iwrs.validation.day_date). Optional and blank: the `load_default` (the service then takes
    the site's local today). Every date field of pages and API is this one.

    The API document states YYYY-MM-DD (`format: date`, "or blank" when optional); the
    DD-MMM-YYYY writing is also taken, and named in `x-also-accepted`."""

    def __init__(self, **kwargs: Any) -> None:
        # Optional: blank (or null) means "not given", so the document says "a date or blank".
        form = {"format": "date"} if kwargs.get("required") else {"anyOf": BLANK_OR_DATE}
        metadata = {
            **form,
            "x-also-accepted": validation.DAY_FORMAT,
            **kwargs.pop("metadata", {}),
        }
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if _blank(value):
            if self.required:
                raise _refused("required", f"{self.name}: a date is required (DD-MMM-YYYY)")
            return self.load_default
        return _checked(validation.day_date, value, field=self.name).isoformat()


class WholeNumber(_Refusals, fields.Integer):
    """An integer (JSON number or ASCII digits) within minimum..maximum (rules integer, range)."""

    def __init__(self, *, minimum: int, maximum: int, **kwargs: Any) -> None:
        metadata = {"minimum": minimum, "maximum": maximum, **kwargs.pop("metadata", {})}
        super().__init__(metadata=metadata, **kwargs)
        self.minimum, self.maximum = minimum, maximum

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        return _checked(
            validation.integer, value, field=self.name, minimum=self.minimum, maximum=self.maximum
        )


class HexBytes(_Refusals, fields.String):
    """`length` bytes written as hex digits (rule hex); optional and blank: `load_default`."""

    def __init__(self, *, length: int, **kwargs: Any) -> None:
        pattern = f"^[0-9a-fA-F]{{{2 * length}}}$"
        super().__init__(metadata={"pattern": pattern, **kwargs.pop("metadata", {})}, **kwargs)
        self.length = length

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if _blank(value) and not self.required:
            return self.load_default
        return _checked(validation.hex_bytes, value, field=self.name, length=self.length)


class Flag(_Refusals, fields.Boolean):
    """A yes/no: JSON true/false, or a page's tick box ("y" when ticked, absent otherwise)."""


class Confirmation(_Refusals, fields.Boolean):
    """A tick box that must be ticked (JSON true) before an irreversible step (rule required,
    with the `message` the person reads)."""

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(required=True, **kwargs)
        self.message = message

    def make_error(self, key: str, **kwargs: Any) -> ValidationError:
        return _refused("required", f"{self.name}: {self.message}")

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        try:
            ticked = value in self.truthy
        except TypeError:  # a JSON list or object is not hashable: not a tick either
            ticked = False
        if not ticked:
            raise self.make_error("required")
        return True


class Many(_Refusals, fields.List):
    """A list (a page's repeated form field, e.g. a multiple select)."""


class One(_Refusals, fields.Nested):
    """One nested input."""


class Answers(_Refusals, fields.Dict):
    """An object of named answers (checked by the service's engine)."""


class Input(Schema):
    """The base of every shared input: an unknown JSON field is refused by name."""

    error_messages = {
        "unknown": Problem("unknown_field", "not a field of this input"),
        "type": Problem("type", "body: must be an object of named fields"),
    }


def problems(messages: Any, prefix: str = "") -> list[dict[str, str]]:
    """marshmallow's (or webargs') nested messages as a flat list of {field, rule, message}.
    Decision: a schema-wide refusal (`_schema`) names the object it is about: the body at the
    top, the item itself when nested ({"lines": [5]} -> field lines.0, rule type), never a
    field called `_schema`; its message names that item, not "body"."""
    field = prefix or "body"
    if isinstance(messages, Problem):
        message = messages.message
        if field != "body" and message.startswith("body: "):
            message = f"{field}: {message.removeprefix('body: ')}"
        return [{"field": field, "rule": messages.rule, "message": message}]
    if isinstance(messages, dict):
        found = []
        for key, value in messages.items():
            top = key == "_schema" or (not prefix and key in _LOCATIONS)
            name = prefix if top else f"{prefix}.{key}" if prefix else str(key)
            found.extend(problems(value, name))
        return found
    if isinstance(messages, list):
        return [problem for message in messages for problem in problems(message, prefix)]
    return [{"field": field, "rule": "schema", "message": f"{field}: {messages}"}]


def refusal(error: ValidationError) -> InvalidInput:
    """A schema's ValidationError as the app's refusal: every problem, the first one named."""
    found = problems(error.messages) or [
        {"field": "body", "rule": "schema", "message": "body: invalid"}
    ]
    return InvalidInput(
        "; ".join(p["message"] for p in found),
        field=found[0]["field"],
        rule=found[0]["rule"],
        errors=found,
    )


def load(schema: type[Schema], values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` loaded through `schema`; InvalidInput naming every refused field otherwise."""
    try:
        return schema().load(values, unknown=EXCLUDE)
    except ValidationError as error:
        raise refusal(error) from None


def load_form(schema: type[Schema], form: Any, *, prefix: str = "", **extra: Any) -> dict[str, Any]:
    """A page's submitted form (request.form) through the input's schema, as `load` does: the
    schema's fields only (a list field from every value of its repeated name), and `extra`
    values the page computed from the form (e.g. the eligibility answers). A browser sends
    every text field, empty or not: a form without one is read as if it were empty. `prefix`:
    the form's names carry it ("token-name"), the input's do not ("name")."""
    values: dict[str, Any] = {}
    for name, field in schema().load_fields.items():
        key = field.data_key or name
        if prefix + key in form:
            many = isinstance(field, fields.List) and hasattr(form, "getlist")
            values[key] = form.getlist(prefix + key) if many else form[prefix + key]
        elif isinstance(field, fields.String):
            values[key] = ""
    return load(schema, {**values, **extra})
