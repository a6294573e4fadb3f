"""A column mapping for a packaging vendor's own kit list: which column holds the kit number,
kit type, treatment, lot and expiry, which raw values stand for which kit type and treatment,
and how the expiry date is written. The file is rewritten row for row (blank rows kept, so row
numbers stay those of the vendor's file) in the native layout that
blinding.kits.parse_kit_list_csv reads; the import and its verification then run unchanged.
Every fault is a RowError naming the vendor's column and value (row 0 is the header).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from blinding.kits import COLUMNS, RowError, _error, _read_records, _shown

# The expiry formats a mapping may name, as a person writes them -> strptime's.
EXPIRY_FORMATS = {
    "YYYY-MM-DD": "%Y-%m-%d",
    "DD/MM/YYYY": "%d/%m/%Y",
    "MM/DD/YYYY": "%m/%d/%Y",
    "DD.MM.YYYY": "%d.%m.%Y",
    "DD-MMM-YYYY": "%d-%b-%Y",
    "YYYYMMDD": "%Y%m%d",
}


@dataclass(frozen=True)
class KitListMapping:
    """Kit fields to the vendor's columns; raw values to kit type and treatment codes (empty:
    the values are the codes); the expiry's format (one of EXPIRY_FORMATS)."""

    columns: Mapping[str, str]
    kit_types: Mapping[str, str] = field(default_factory=dict)
    treatments: Mapping[str, str] = field(default_factory=dict)
    expiry_format: str = "YYYY-MM-DD"

    def to_json(self) -> str:
        return json.dumps(
            {
                "columns": dict(self.columns),
                "kit_types": dict(self.kit_types),
                "treatments": dict(self.treatments),
                "expiry_format": self.expiry_format,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> KitListMapping:
        """A mapping file's JSON; ValueError naming what is wrong."""
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("columns"), dict):
            raise ValueError("a kit list mapping is an object with a 'columns' object")
        unknown = set(data) - {"columns", "kit_types", "treatments", "expiry_format"}
        if unknown:
            raise ValueError(f"not a field of a kit list mapping: {', '.join(sorted(unknown))}")
        return cls(
            columns={str(k): str(v) for k, v in data["columns"].items()},
            kit_types={str(k): str(v) for k, v in (data.get("kit_types") or {}).items()},
            treatments={str(k): str(v) for k, v in (data.get("treatments") or {}).items()},
            expiry_format=str(data.get("expiry_format", "YYYY-MM-DD")),
        )


def check_kit_mapping(
    mapping: KitListMapping,
    header: list[str],
    *,
    kit_types: Collection[str],
    treatments: Collection[str],
) -> list[RowError]:
    """The mapping's own faults: every kit field mapped to one existing column, a known date
    format, every mapped target a kit type or treatment of the trial."""
    errors: list[RowError] = []
    used: dict[str, str] = {}
    for name in COLUMNS:
        column = mapping.columns.get(name, "")
        if not column:
            errors.append(_error(0, name, "required", "name the vendor's column for it"))
        elif column not in header:
            errors.append(
                _error(0, name, "mapping_column_known", f"{_shown(column)} is not a column")
            )
        elif column in used:
            text = f"{_shown(column)} is already mapped as {used[column]}"
            errors.append(_error(0, name, "mapping_column_unique", text))
        used.setdefault(column, name)
    for name in sorted(set(mapping.columns) - set(COLUMNS)):
        errors.append(_error(0, name, "field_known", f"not a kit field ({', '.join(COLUMNS)})"))
    if mapping.expiry_format not in EXPIRY_FORMATS:
        text = f"{_shown(mapping.expiry_format)} is not one of {', '.join(EXPIRY_FORMATS)}"
        errors.append(_error(0, "expiry_format", "one_of", text))
    for raw, code in mapping.kit_types.items():
        if code not in kit_types:
            text = f"{_shown(raw)} is mapped to {_shown(code)}, not a kit type"
            errors.append(_error(0, "kit_types", "unknown_type", text))
    for raw, code in mapping.treatments.items():
        if code not in treatments:
            text = f"{_shown(raw)} is mapped to {_shown(code)}, not a treatment of this trial"
            errors.append(_error(0, "treatments", "unknown_treatment", text))
    return errors


def _value(
    row: int, column: str, raw: str, values: Mapping[str, str], errors: list[RowError]
) -> str:
    if not values or not raw:
        return raw  # no map (or empty: the native check names it)
    if raw not in values:
        errors.append(_error(row, column, "value_mapped", f"{_shown(raw)} is not mapped"))
        return ""
    return values[raw]


def _expiry(row: int, column: str, raw: str, pattern: str, errors: list[RowError]) -> str:
    if not raw:
        return raw
    try:
        return datetime.strptime(raw, EXPIRY_FORMATS[pattern]).date().isoformat()
    except ValueError:
        errors.append(_error(row, column, "bad_date", f"{_shown(raw)} is not {pattern}"))
        return ""


def remap_kit_list(
    text: str,
    mapping: KitListMapping,
    *,
    kit_types: Collection[str],
    treatments: Collection[str],
) -> tuple[str, list[RowError]]:
    """The vendor's file in the native layout, row for row, or every fault of the mapping and
    of the mapped values (then no text)."""
    records, errors = _read_records(text)
    if errors or not records:
        return "", errors or [_error(0, "file", "empty", "the file is empty")]
    header = [cell.strip() for cell in records[0]]
    errors = check_kit_mapping(mapping, header, kit_types=kit_types, treatments=treatments)
    if errors:
        return "", errors
    where = {name: header.index(mapping.columns[name]) for name in COLUMNS}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row, record in enumerate(records[1:], start=1):
        cells = [cell.strip() for cell in record]
        if not any(cells):
            writer.writerow([])
            continue
        raw = {name: cells[i] if i < len(cells) else "" for name, i in where.items()}
        column = mapping.columns
        writer.writerow(
            (
                raw["kit_number"],
                _value(row, column["kit_type"], raw["kit_type"], mapping.kit_types, errors),
                _value(row, column["treatment"], raw["treatment"], mapping.treatments, errors),
                raw["lot"],
                _expiry(row, column["expiry"], raw["expiry"], mapping.expiry_format, errors),
            )
        )
    return ("", errors) if errors else (out.getvalue(), [])
