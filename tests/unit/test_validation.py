"""The shared input validators, the CSV neutraliser and the upload decoder (pure; hypothesis)."""

from __future__ import annotations

import codecs
import csv
import io
import json
import unicodedata
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iwrs import validation
from iwrs.csv_export import TRIGGERS, neutralise, original, rows_csv
from iwrs.errors import InvalidInput
from iwrs.uploads import decode_text

BIDI = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))]


def rule_of(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as refused:
        call()
    return refused.value.rule  # type: ignore[return-value]


# --- characters ---------------------------------------------------------------------------------


@pytest.mark.parametrize("char", [*BIDI, "\x00", "\x1b", "\x7f", "\x85", "\u200b", "\ufeff"])
def test_bidi_and_control_characters_are_refused_naming_the_field(char):
    with pytest.raises(InvalidInput) as refused:
        validation.text(f"Dr{char}Wu", field="full_name", kind="name")
    assert (refused.value.field, refused.value.rule) == ("full_name", "control_characters")
    assert refused.value.message.startswith("full_name:")


def test_line_breaks_only_in_multi_line_kinds():
    assert validation.reason("first line\r\nsecond\tline") == "first line\r\nsecond\tline"
    assert rule_of(lambda: validation.text("a\nb", field="name", kind="name")) == (
        "control_characters"
    )


def test_joiners_and_chinese_names_are_kept():
    for name in ("王芳", "Zoë Ångström", "می\u200cخواهم", "👩\u200d⚕️"):
        assert validation.text(name, field="full_name", kind="name") == name


@given(st.text())
def test_text_accepts_exactly_what_has_no_refused_character(value):
    refused_categories = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}
    bad = any(
        unicodedata.category(c) in refused_categories and c not in "\u200c\u200d\n\r\t"
        for c in value.strip()
    )
    if not value.strip():
        assert rule_of(lambda: validation.reason(value)) == "required"
    elif len(value.strip()) > validation.LIMITS["reason"]:
        assert rule_of(lambda: validation.reason(value)) == "max_length"
    elif bad:
        assert rule_of(lambda: validation.reason(value)) == "control_characters"
    else:
        assert validation.reason(value) == value.strip()


@given(st.integers(min_value=0, max_value=3000))
def test_reason_length_limit_is_1000_characters(length):
    value = "x" * length
    if length == 0:
        assert rule_of(lambda: validation.reason(value)) == "required"
    elif length > 1000:
        assert rule_of(lambda: validation.reason(value)) == "max_length"
    else:
        assert validation.reason(value) == value


# --- dates and numbers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["1970-W01-1", "19700101", "1970-001", "1970W011", "1970-1-1", "٢٠٢٠-01-01", ""]
)
def test_only_yyyy_mm_dd_is_a_date(value):
    assert rule_of(lambda: validation.iso_date(value, field="date_of_birth")) == "date"


@given(st.dates())
def test_every_real_date_written_yyyy_mm_dd_is_accepted(day):
    written = f"{day.year:04d}-{day.month:02d}-{day.day:02d}"
    assert validation.iso_date(written, field="d") == day


@given(st.text(max_size=12))
def test_iso_date_accepts_only_ascii_yyyy_mm_dd(value):
    try:
        parsed = validation.iso_date(value, field="d")
    except InvalidInput as refused:
        assert refused.rule == "date"
    else:
        assert isinstance(parsed, date) and parsed.isoformat() == value.strip()


@given(st.text(max_size=8))
def test_digits_are_ascii_only(value):
    try:
        digits = validation.digits(value, field="n")
    except InvalidInput as refused:
        assert refused.rule == "digits"
        assert not (value.strip().isascii() and value.strip().isdigit())
    else:
        assert digits.isascii() and digits.isdigit()


def test_unicode_digits_are_not_numbers():
    for value in ("١٢٣", "²", "1_000", " "):
        assert rule_of(lambda v=value: validation.integer(v, field="n", minimum=0, maximum=9999))
    assert validation.integer("42", field="n", minimum=0, maximum=99) == 42
    assert rule_of(lambda: validation.integer("420", field="n", minimum=0, maximum=99)) == "range"


@pytest.mark.parametrize("value", ["zz", "", "ab" * 31, "ab" * 33, "g" * 64])
def test_hex_seed_needs_64_hex_digits(value):
    assert rule_of(lambda: validation.hex_bytes(value, field="--seed-hex", length=32)) == "hex"
    assert validation.hex_bytes("0f" * 32, field="s", length=32) == b"\x0f" * 32


# --- JSON depth ---------------------------------------------------------------------------------


def _nested(depth: int) -> object:
    value: object = 1
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@given(st.integers(min_value=0, max_value=200))
def test_json_depth_counts_nesting(depth):
    assert validation.json_depth(json.dumps(_nested(depth)).encode()) == depth


@given(st.recursive(st.text(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)))
def test_json_depth_ignores_brackets_inside_strings(value):
    def depth(v: object) -> int:
        if isinstance(v, list):
            return 1 + max(map(depth, v), default=0)
        if isinstance(v, dict):
            return 1 + max(map(depth, v.values()), default=0)
        return 0

    assert validation.json_depth(json.dumps(value).encode()) == depth(value)


def test_a_body_100000_deep_is_measured_without_recursion():
    assert validation.json_depth(b"[" * 100_000 + b"]" * 100_000) == 100_000


# --- CSV cells ----------------------------------------------------------------------------------


@given(st.text())
def test_a_neutralised_cell_never_starts_a_formula_and_is_reversible(value):
    cell = neutralise(value)
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert original(cell) == value
    assert cell == value or cell == "'" + value


@given(st.lists(st.lists(st.text(), min_size=1, max_size=4), min_size=1, max_size=5))
def test_every_cell_of_a_written_csv_is_safe_and_reads_back(rows):
    text = rows_csv(["a", "b", "c", "d"], rows)
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    for written, read in zip(rows, parsed[1:], strict=True):
        assert [original(c) for c in read] == written
        assert not any(c.startswith(TRIGGERS[:-1]) for c in read)


def test_the_hyperlink_username_is_written_as_text():
    assert neutralise('=HYPERLINK("http://x","y")') == '\'=HYPERLINK("http://x","y")'
    assert neutralise(None) == "" and neutralise(12) == "12" and neutralise("-1") == "'-1"


# --- uploaded files -----------------------------------------------------------------------------

KITS = "kit_number,kit_type,treatment,lot,expiry\n1234567,GSK-SC,A,批号01,2030-01-01\n"


@pytest.mark.parametrize(
    "data",
    [
        KITS.encode("utf-8"),
        codecs.BOM_UTF8 + KITS.encode("utf-8"),
        KITS.encode("utf-16"),  # with its BOM
        codecs.BOM_UTF16_BE + KITS.encode("utf-16-be"),
        KITS.encode("gbk"),
        KITS.encode("gb18030"),
    ],
)
def test_utf8_utf16_and_gbk_files_decode_to_the_same_text(data):
    assert decode_text(data) == KITS


@pytest.mark.parametrize(
    "data",
    [
        "café,naïve\n".encode("latin-1"),  # neither UTF-8 nor Chinese
        b"kit\x81\x20number\n",  # an invalid GB18030 sequence
        KITS.encode("utf-16-le"),  # UTF-16 without a byte-order mark: NUL bytes
        codecs.BOM_UTF16_LE + b"\x00\xd8",  # a lone surrogate
        codecs.BOM_UTF32_LE + KITS.encode("utf-32-le"),
        codecs.BOM_UTF8 + b"\xff\xfe",
        b"\x89PNG\r\n\x1a\n\x00\x00",
    ],
)
def test_other_encodings_are_refused_in_one_line_naming_the_encoding(data):
    with pytest.raises(InvalidInput) as refused:
        decode_text(data, field="file")
    assert (refused.value.field, refused.value.rule) == ("file", "encoding")
    assert "\n" not in refused.value.message


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_are_refused_with_rule_encoding(data):
    try:
        decoded = decode_text(data)
    except InvalidInput as refused:
        assert refused.rule == "encoding"
    else:
        assert validation.refused_character(decoded.replace("\ufeff", ""), multiline=True) is None


def test_a_file_over_the_size_limit_is_refused():
    assert rule_of(lambda: decode_text(b"a" * 11, max_bytes=10)) == "file_size"
