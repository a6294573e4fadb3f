"""The verify step names the offending value of every bad kit row, counts a lot one kit off
the ratio as unbalanced unless a tolerance is given, and writes the vendor CSV with bare line
feeds (found by `make mutation`; tests/MUTATION.md)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date

from blinding.kits import KitSpec, format_kit_list_csv, kit_number, verify_kit_list

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
