"""The one set of input validators shared by services, pages, the API and the CLI.

Services call them (the rule must hold whatever the door: page, API, CLI); pages and the API may
call the same functions for an early message. Every refusal is an `InvalidInput` naming the field
and the rule:
  required            nothing was given where something must be
  max_length          longer than the limit of its kind of field (LIMITS)
  control_characters  a character no person types into a field: the C0/C1 controls (Cc) except
                      TAB, LF and CR in multi-line text; format characters (Cf) such as the
                      bidirectional overrides and isolates U+202A-U+202E and U+2066-U+2069, which
                      make "gnp.exe" display as "exe.png"; surrogates (Cs); private use (Co);
                      line and paragraph separators (Zl, Zp)
  date                not YYYY-MM-DD exactly (ISO week dates 1970-W01-1, the basic format
                      19700101 and ordinal dates 1970-001 are refused: Python 3.11's
                      date.fromisoformat accepts them, a site's clerk never means them)
  date_format         a typed date neither DD-MMM-YYYY nor YYYY-MM-DD (day_date: 05031965 and
                      05/03/1965 are ambiguous, never guessed)
  digits / integer    not ASCII digits ("١٢٣" and "²" are digits to str.isdigit and int())
  hex                 not the expected number of hex digits
Decision: ZERO WIDTH NON-JOINER and JOINER (U+200C, U+200D), though format characters, are
allowed: Persian and Indic names need them and they cannot reorder text.
Decision: reasons, notes and free text are multi-line (a textarea); names, e-mails, codes and
courier/tracking references are one line.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime
from typing import Any

from iwrs.errors import InvalidInput

# The longest value of each kind of field, in characters (reasons: the API's long-standing 1,000).
LIMITS: dict[str, int] = {
    "username": 64,
    "name": 200,
    "email": 200,
    "code": 64,
    "kit": 64,
    "initials": 12,
    "drug": 120,
    "reference": 100,
    "reason": 1000,
    "note": 2000,
    "text": 4000,
}
MULTILINE_KINDS = frozenset({"reason", "note", "text"})
# The form of a kind of text, as a JSON Schema pattern too (the API document states it): an
# e-mail is one plain address (iwrs.services.users.clean_email); a username 3-64 letters,
# digits, '.', '_' or '-' starting with a letter or digit (case-insensitive: it is lower-cased).
PATTERNS: dict[str, str] = {
    "email": r"^\s*[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+\s*$",
    "username": r"^\s*[A-Za-z0-9][A-Za-z0-9._-]{2,63}\s*$",
    # 7 digits (kit-numbers-v1) or 9 (kit-numbers-v2), the last a check digit (blinding/kits.py)
    "kit": r"^\s*[1-9][0-9]{6}([0-9]{2})?\s*$",
    # 1-6 letters A-Z, with blanks, '.', '-' or "'" between (iwrs.services.persons)
    "initials": r"^[\s.'-]*([A-Za-z][\s.'-]*){1,6}$",
}

_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
_ALLOWED_FORMAT = frozenset({"\u200c", "\u200d"})
_LINE_BREAKS = frozenset({"\n", "\r", "\t"})
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DIGITS = re.compile(r"[0-9]+")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_HEX = re.compile(r"[0-9a-fA-F]*")


def refused_character(value: str, *, multiline: bool = False) -> str | None:
    """The first character of `value` no person types into a field, or None."""
    for char in value:
        if char in _ALLOWED_FORMAT or (multiline and char in _LINE_BREAKS):
            continue
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            return char
    return None


def check_characters(value: str, *, field: str, multiline: bool = False) -> str:
    """`value` unchanged, or InvalidInput (rule control_characters) naming the code point."""
    char = refused_character(value, multiline=multiline)
    if char is not None:
        name = unicodedata.name(char, "a control character")
        raise InvalidInput(
            f"{field}: must not contain control or direction-changing characters "
            f"(found U+{ord(char):04X} {name})",
            field=field,
            rule="control_characters",
        )
    return value


def text(value: Any, *, field: str, kind: str, required: bool = True) -> str:
    """A person's typed text of one `kind` (a key of LIMITS), stripped of surrounding blanks.

    Refuses (rule): not a string (type), empty when required (required), longer than
    LIMITS[kind] (max_length), a refused character (control_characters). Returns "" when
    empty and not required."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: must be text", field=field, rule="type")
    stripped = value.strip()
    if not stripped:
        if required:
            raise InvalidInput(f"{field}: is required", field=field, rule="required")
        return ""
    limit = LIMITS[kind]
    if len(stripped) > limit:
        raise InvalidInput(
            f"{field}: at most {limit} characters (got {len(stripped)})",
            field=field,
            rule="max_length",
        )
    return check_characters(stripped, field=field, multiline=kind in MULTILINE_KINDS)


def reason(value: Any, *, field: str = "reason", required: bool = True) -> str:
    """A reason typed by a person (multi-line, at most LIMITS["reason"] characters)."""
    return text(value, field=field, kind="reason", required=required)


def iso_date(value: Any, *, field: str) -> date:
    """A calendar date written exactly YYYY-MM-DD with ASCII digits (rule date)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    candidate = value.strip() if isinstance(value, str) else ""
    if _DATE.fullmatch(candidate):
        try:
            return date.fromisoformat(candidate)
        except ValueError:
            pass
    shown = repr(value)[:40]
    raise InvalidInput(
        f"{field}: {shown} is not a date written YYYY-MM-DD", field=field, rule="date"
    )


_DAY_MONTH_YEAR = re.compile(r"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_MONTH_NUMBERS = {
    name: number
    for number, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}
DAY_FORMAT = "DD-MMM-YYYY"  # the hint pages show beside a date field, e.g. 05-MAR-1965


def day_date(value: Any, *, field: str) -> date:
    """A calendar date a person typed: DD-MMM-YYYY (05-MAR-1965, any case, English months) or
    YYYY-MM-DD. Any other writing is refused with rule `date_format`, never guessed: 05031965
    and 05/03/1965 are 5 March or 3 May depending on who wrote them. A writing of the right
    form naming no day (31-FEB-2026, 2026-02-30) is refused with rule `date`."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    candidate = value.strip() if isinstance(value, str) else ""
    written = _DAY_MONTH_YEAR.fullmatch(candidate)
    if written is None and not _DATE.fullmatch(candidate):
        raise InvalidInput(
            f"{field}: write the date as {DAY_FORMAT}, e.g. 05-MAR-1965 (a date written with "
            "digits only or with slashes is ambiguous)",
            field=field,
            rule="date_format",
        )
    try:
        if written is None:
            return date.fromisoformat(candidate)
        day, month, year = written.groups()
        return date(int(year), _MONTH_NUMBERS.get(month.upper(), 0), int(day))
    except ValueError:
        raise InvalidInput(
            f"{field}: {candidate[:20]} is not a day of the calendar", field=field, rule="date"
        ) from None


def digits(value: Any, *, field: str, max_length: int = 32) -> str:
    """A string of ASCII digits 0-9 only, at most `max_length` of them (rule digits)."""
    candidate = value.strip() if isinstance(value, str) else ""
    if not _DIGITS.fullmatch(candidate) or len(candidate) > max_length:
        raise InvalidInput(
            f"{field}: ASCII digits 0-9 only (at most {max_length})", field=field, rule="digits"
        )
    return candidate


def integer(value: Any, *, field: str, minimum: int, maximum: int) -> int:
    """An integer given as int or as ASCII digits with an optional sign, within
    minimum..maximum (rules integer, range)."""
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()) and len(value) <= 20:
        number = int(value.strip())
    else:
        number = None
    if number is None:
        raise InvalidInput(f"{field}: a whole number (ASCII digits)", field=field, rule="integer")
    if not minimum <= number <= maximum:
        raise InvalidInput(f"{field}: between {minimum} and {maximum}", field=field, rule="range")
    return number


def hex_bytes(value: Any, *, field: str, length: int) -> bytes:
    """`length` bytes written as 2*length hex digits (rule hex)."""
    candidate = value.strip() if isinstance(value, str) else ""
    if len(candidate) != 2 * length or not _HEX.fullmatch(candidate):
        raise InvalidInput(
            f"{field}: {2 * length} hex digits 0-9 a-f (a {8 * length}-bit value)",
            field=field,
            rule="hex",
        )
    return bytes.fromhex(candidate)


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text, found without recursion and
    without parsing it (so a body nested 100,000 deep costs one pass, never a RecursionError)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def page_key(text: str) -> int:
    """A keyset page's `before`/`after` id from a query string: a positive integer that fits a
    64-bit column (SQLite cannot compare a larger one: it would be a 500). ValueError otherwise,
    which `request.args.get(..., type=page_key)` turns into "no key" (the first page)."""
    value = int(text)
    if not 0 < value < 2**63:
        raise ValueError("page key out of range")
    return value


def require_understood(understood: Any, *, step: str) -> None:
    """An irreversible step needs the caller's confirmation that it cannot be undone (field
    understood, rule required), from a page's checkbox or the API's `understood: true`.
    Decision: every irreversible service (eligibility decision, randomization, unblinding, site
    status, account deactivation) calls this one function, so the CLI and any caller get the
    same refusal as the pages; only `True` itself confirms (not 1, "yes" or a list)."""
    if understood is not True:
        raise InvalidInput(
            f"understood: confirm that {step} cannot be undone", field="understood", rule="required"
        )
