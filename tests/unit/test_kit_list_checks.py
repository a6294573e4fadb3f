"""The verify step names the offending value of every bad kit row, counts a lot one kit off
the ratio as unbalanced unless a tolerance is given, and writes the vendor CSV with bare line
feeds (found by `make mutation`; tests/MUTATION.md)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date

from blinding.kits import (
    KitSpec,
    damm_check_digit,
    format_kit_list_csv,
    is_valid_kit_number,
    kit_number,
    parse_kit_list_csv,
    verify_kit_list,
)

EXPIRY = date(2027, 6, 30)


def kits(*treatments: str) -> list[KitSpec]:
    return [
        KitSpec(kit_number(100_001 + n), "GSK-SC", code, "PL-001", EXPIRY)
        for n, code in enumerate(treatments)
    ]


def errors_by_rule(listed: list[KitSpec], **options: object) -> dict[str, list[tuple[int, str]]]:
    found: dict[str, list[tuple[int, str]]] = {}
    for error in verify_kit_list(listed, treatments={"A", "P"}, **options):  # type: ignore[arg-type]
        found.setdefault(error.rule, []).append((error.row, error.message))
    return found


def test_each_bad_row_is_named_with_its_value():
    listed = kits("A", "P", "A", "P")
    listed[1] = replace(listed[1], number="1000000")
    listed[2] = replace(listed[2], treatment="Z9")
    listed[3] = replace(listed[3], number=listed[0].number)
    found = errors_by_rule(listed)
    [(row, message)] = found["check_digit"]
    assert row == 2 and "1000000" in message
    [(row, message)] = found["unknown_treatment"]
    assert row == 3 and "Z9" in message
    [(row, message)] = found["duplicate_number"]
    assert row == 4 and listed[0].number in message
    assert re.findall(r"\brow (\d+)\b", message) == ["4", "1"], "names the row it repeats"


def test_a_lot_one_kit_off_the_ratio_is_unbalanced_unless_a_tolerance_allows_it():
    listed = kits("A", "A", "P")
    assert "lot_balance" in errors_by_rule(listed, ratios={"A": 1, "P": 1})
    tolerant = errors_by_rule(listed, ratios={"A": 1, "P": 1}, lot_balance_tolerance=1)
    assert "lot_balance" not in tolerant


def test_the_vendor_csv_ends_its_lines_with_a_bare_line_feed():
    text = format_kit_list_csv(kits("A", "P"))
    assert "\r" not in text
    assert text.count("\n") == 3


def test_a_kit_of_an_unknown_treatment_is_reported_and_the_lot_balance_still_checked():
    listed = kits("A", "P", "Z9")
    found = errors_by_rule(listed, ratios={"A": 1, "P": 1})
    assert [row for row, _ in found["unknown_treatment"]] == [3]
    assert "lot_balance" not in found


HEADER = "kit_number,kit_type,treatment,lot,expiry\n"
TODAY = date(2026, 3, 1)


def import_faults(*rows: str, taken: tuple[str, ...] = ()) -> list[tuple[int, str, str]]:
    _, errors = parse_kit_list_csv(
        HEADER + "".join(row + "\n" for row in rows),
        kit_types={"GSK-SC"},
        treatments={"A", "P"},
        today=TODAY,
        taken=taken,
    )
    return [(e.row, e.field, e.rule) for e in errors]


def test_an_imported_kit_number_of_the_wrong_shape_or_in_use_is_refused_by_kit_number():
    good = kit_number(100_001)
    assert import_faults(f"{kit_number(100_002)}5,GSK-SC,A,PL-001,2027-06-30") == [
        (1, "kit_number", "format")
    ]
    assert import_faults(f"{good},GSK-SC,A,PL-001,2027-06-30", taken=(good,)) == [
        (1, "kit_number", "duplicate_number")
    ]


def test_a_leading_zero_never_makes_a_valid_kit_number():
    body = "012345"
    assert not is_valid_kit_number(body + damm_check_digit(body))


def test_a_repeated_imported_kit_number_names_the_row_it_repeats():
    good = kit_number(100_001)
    rows = [f"{kit_number(100_002)},GSK-SC,P,PL-001,2027-06-30"]
    rows += [f"{good},GSK-SC,A,PL-001,2027-06-30"] * 2
    _, errors = parse_kit_list_csv(
        HEADER + "\n".join(rows) + "\n",
        kit_types={"GSK-SC"},
        treatments={"A", "P"},
        today=TODAY,
    )
    [error] = errors
    assert (error.row, error.rule) == (3, "duplicate_number")
    assert re.findall(r"\brow (\d+)\b", error.message) == ["3", "2"]


def test_an_expiry_that_is_no_calendar_date_is_refused_and_today_is_accepted():
    good = kit_number(100_001)
    assert import_faults(f"{good},GSK-SC,A,PL-001,2027-02-30") == [(1, "expiry", "bad_date")]
    assert import_faults(f"{good},GSK-SC,A,PL-001,{TODAY.isoformat()}") == []
