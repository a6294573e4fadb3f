"""A kit list file's own faults, each by row, field and rule and nothing else: not text, empty,
a column twice or missing, a row too wide, a quote left open; a byte-order mark and spaces
after commas are harmless (found by `make mutation`; tests/MUTATION.md)."""

from __future__ import annotations

from datetime import date

import pytest

from blinding.kits import kit_number, parse_kit_list_csv

COLUMNS = ["kit_number", "kit_type", "treatment", "lot", "expiry"]
HEADER = ",".join(COLUMNS) + "\n"
ROW = f"{kit_number(100_001)},GSK-SC,A,PL-001,2027-06-30\n"


def faults(text: object) -> list[tuple[int, str, str]]:
    kits, errors = parse_kit_list_csv(
        text,  # type: ignore[arg-type]
        kit_types={"GSK-SC"},
        treatments={"A", "P"},
        today=date(2026, 3, 1),
    )
    assert not (kits and errors)
    return [(e.row, e.field, e.rule) for e in errors]


def without(column: str) -> str:
    keep = [i for i, name in enumerate(COLUMNS) if name != column]
    cells = ROW.strip().split(",")
    return ",".join(COLUMNS[i] for i in keep) + "\n" + ",".join(cells[i] for i in keep) + "\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ROW.encode(), [(0, "file", "not_text")]),
        ("", [(0, "file", "empty")]),
        (HEADER, [(0, "file", "empty")]),
        (
            "kit_number," + HEADER + ROW.split(",")[0] + "," + ROW,
            [(0, "kit_number", "duplicate_column")],
        ),
        (HEADER + ROW.strip() + ",extra\n", [(1, "file", "column_count")]),
        (HEADER + ROW + '"' + ROW, [(2, "file", "malformed_csv")]),
    ],
)
def test_each_file_fault_is_reported_by_row_field_and_rule(text, expected):
    assert faults(text) == expected


@pytest.mark.parametrize("column", ["kit_number", "kit_type", "treatment", "expiry"])
def test_a_missing_column_is_reported_alone(column):
    assert faults(without(column)) == [(0, column, "missing_column")]


def test_a_byte_order_mark_and_spaces_after_commas_are_harmless():
    assert faults("\ufeff" + HEADER + ROW.replace(",", ", ")) == []
    quoted = ", ".join(f'"{cell}"' for cell in ROW.strip().split(",")) + "\n"
    assert faults(HEADER + quoted) == []


def test_a_short_row_leaves_its_missing_cells_empty():
    assert faults(HEADER + ",".join(ROW.split(",")[:3]) + "\n") == [
        (1, "lot", "empty"),
        (1, "expiry", "empty"),
    ]
