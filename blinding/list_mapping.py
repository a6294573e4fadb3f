"""A column mapping for the list files statisticians already have: which column holds the
sequence, the block, its size, each stratification factor and the arm, and which raw values
stand for which arm code and factor level. Reading a file through a mapping gives the same
slots the native layout gives; verify_schedule then runs unchanged (import, then verify).

Layouts this reads (tests/unit/test_list_mapping.py holds one file of each):
- REDCap allocation table: redcap_randomization_number (ignored), redcap_randomization_group
  (raw codes, e.g. 1/2), one column per factor (raw codes), any notes column (ignored). No
  sequence and no blocks: a slot's sequence is its row order within its stratum.
- clinicedc list: sid (numbers the whole list), assignment (active/placebo), site_name. The sid
  numbers the whole file, so a slot's sequence is the rank of its sid within its stratum
  (sequence_scope "list").
- R blockrand output: id, stratum, block.id, block.size, treatment. Decision: one file with the
  stratum column blockrand itself writes when called with `stratum=`; a statistician who ran it
  once per stratum stacks the outputs (rbind) into one file. id numbers each stratum
  (sequence_scope "stratum").
Columns the mapping does not name are ignored. Every fault is a RowError naming the mapping
field or the column, the rule, and the value (row 1 is the header: mapping faults are row 1).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from blinding.schedule_import import _records, _values, verify_schedule
from blinding.schedules import UNKNOWN, RowError, Slot, row_error, shown, stratum_key

SEQUENCE_SCOPES = ("stratum", "list")
_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class FactorSource:
    """The column holding one factor's level and its raw value -> level code map (empty: the
    values are the level codes)."""

    column: str
    levels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ListMapping:
    """Columns to the parts of a slot, raw values to arm codes and factor levels."""

    arm_column: str
    arm_values: Mapping[str, str] = field(default_factory=dict)
    factors: Mapping[str, FactorSource] = field(default_factory=dict)
    sequence_column: str = ""  # "" = row order within the stratum
    sequence_scope: str = "stratum"  # the column numbers each stratum, or the whole list
    block_column: str = ""  # "" = blocks unknown (block rules skipped)
    block_size_column: str = ""  # "" with a block column = the block's row count

    def columns(self) -> dict[str, str]:
        """The mapped columns by mapping field ("" left out)."""
        named = {
            "arm_column": self.arm_column,
            "sequence_column": self.sequence_column,
            "block_column": self.block_column,
            "block_size_column": self.block_size_column,
        }
        named |= {f"factor_{name}_column": f.column for name, f in self.factors.items()}
        return {key: column for key, column in named.items() if column}

    def to_json(self) -> str:
        """The mapping as canonical JSON (stored sealed with the list)."""
        return json.dumps(
            {
                "arm_column": self.arm_column,
                "arm_values": dict(self.arm_values),
                "factors": {
                    name: {"column": f.column, "levels": dict(f.levels)}
                    for name, f in self.factors.items()
                },
                "sequence_column": self.sequence_column,
                "sequence_scope": self.sequence_scope,
                "block_column": self.block_column,
                "block_size_column": self.block_size_column,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ListMapping:
        """The mapping to_json wrote."""
        data = json.loads(text)
        factors = {
            name: FactorSource(f["column"], dict(f["levels"]))
            for name, f in data.pop("factors").items()
        }
        return cls(factors=factors, **data)


# The layouts this module's docstring names, known by their columns: the mapping step starts
# from these column choices (the statistician still types the value maps and may change any).
KNOWN_LAYOUTS: tuple[tuple[str, frozenset[str], dict[str, str]], ...] = (
    (
        "REDCap allocation table",
        frozenset({"redcap_randomization_group"}),
        {"arm_column": "redcap_randomization_group"},
    ),
    (
        "clinicedc list",
        frozenset({"sid", "assignment"}),
        {"arm_column": "assignment", "sequence_column": "sid", "sequence_scope": "list"},
    ),
    (
        "R blockrand output",
        frozenset({"id", "block.id", "block.size", "treatment"}),
        {
            "arm_column": "treatment",
            "sequence_column": "id",
            "block_column": "block.id",
            "block_size_column": "block.size",
        },
    ),
)


def suggested_fields(
    columns: Sequence[str], factor_names: Sequence[str]
) -> tuple[str, dict[str, str]]:
    """The known layout the columns match ("" if none) and the mapping fields it suggests; a
    factor's column is the one named like the factor (or "stratum" when there is one factor)."""
    layout, fields = "", {}
    for name, needed, suggested in KNOWN_LAYOUTS:
        if needed <= set(columns):
            layout, fields = name, dict(suggested)
            break
    for factor in factor_names:
        if factor in columns:
            fields[f"factor_{factor}_column"] = factor
        elif len(factor_names) == 1 and "stratum" in columns:
            fields[f"factor_{factor}_column"] = "stratum"
    return layout, fields


def parse_value_map(text: str, *, field_name: str) -> tuple[dict[str, str], list[RowError]]:
    """A typed value map "1=A; 2=P" (or one pair a line) as {raw: code}; each fault named."""
    values: dict[str, str] = {}
    errors: list[RowError] = []
    for part in re.split(r"[;\n]", text):
        if not part.strip():
            continue
        raw, equals, code = part.partition("=")
        raw, code = raw.strip(), code.strip()
        if not equals or not raw or not code:
            text_ = f"{shown(part.strip())} is not written raw=code"
            errors.append(row_error(1, field_name, "value_map_syntax", text_))
        elif raw in values:
            text_ = f"{shown(raw)} is mapped twice"
            errors.append(row_error(1, field_name, "value_map_unique", text_))
        else:
            values[raw] = code
    return values, errors


def header_and_values(text: str, limit: int = 30) -> tuple[list[str], dict[str, list[str]]]:
    """The file's columns and up to `limit` distinct values of each (for the mapping step)."""
    records, _ = _records(text)
    if not records:
        return [], {}
    header = records[0][1]
    while header and not header[-1]:
        header = header[:-1]
    seen: dict[str, list[str]] = {column: [] for column in header}
    for _, cells in records[1:]:
        for column, value in zip(header, cells, strict=False):
            if value and value not in seen[column] and len(seen[column]) < limit:
                seen[column].append(value)
    return header, seen


def check_mapping(
    mapping: ListMapping,
    columns: Sequence[str],
    *,
    arms: Collection[str],
    factor_levels: Mapping[str, Collection[str]],
) -> list[RowError]:
    """The mapping's own faults against the file's header and the protocol: every mapped column
    exists and has one role, every factor is mapped, every mapped target is an arm or level."""
    errors: list[RowError] = []
    if not mapping.arm_column:
        errors.append(row_error(1, "arm_column", "required", "name the column of the arm"))
    if mapping.sequence_scope not in SEQUENCE_SCOPES:
        text = f"{shown(mapping.sequence_scope)} is not one of {', '.join(SEQUENCE_SCOPES)}"
        errors.append(row_error(1, "sequence_scope", "one_of", text))
    if mapping.block_size_column and not mapping.block_column:
        text = "a block size column needs a block column"
        errors.append(row_error(1, "block_size_column", "block_column_required", text))
    used: dict[str, str] = {}
    for key, column in mapping.columns().items():
        if column not in columns:
            text = f"{shown(column)} is not a column of the file"
            errors.append(row_error(1, key, "mapping_column_known", text))
        elif column in used:
            text = f"{shown(column)} is already mapped as {used[column]}"
            errors.append(row_error(1, key, "mapping_column_unique", text))
        used.setdefault(column, key)
    for name in factor_levels:
        if name not in mapping.factors or not mapping.factors[name].column:
            text = f"name the column of stratification factor {name}"
            errors.append(row_error(1, f"factor_{name}_column", "required", text))
    for name in mapping.factors:
        if name not in factor_levels:
            text = f"{shown(name)} is not a stratification factor of this protocol"
            errors.append(row_error(1, f"factor_{name}_column", "factor_known", text))
    for raw, code in mapping.arm_values.items():
        if code not in arms:
            text = f"{shown(raw)} is mapped to {shown(code)}, not an arm of this protocol"
            errors.append(row_error(1, "arm_values", "arm_known", text))
    for name, source in mapping.factors.items():
        for raw, level in source.levels.items():
            if level not in factor_levels.get(name, ()):
                text = f"{shown(raw)} is mapped to {shown(level)}, not a level of {name}"
                errors.append(row_error(1, f"factor_{name}_values", "level_known", text))
    return errors


def _mapped(
    row: int, column: str, raw: str, values: Mapping[str, str], known: Collection[str]
) -> tuple[str, RowError | None]:
    """The code a raw value maps to (itself when the map is empty), or the row's fault."""
    if not raw:
        return "", row_error(row, column, "required", "a value is required")
    code = values.get(raw, raw if not values else "")
    if code in known:
        return code, None
    what = "mapped to an arm or level" if values else "an arm or level of this protocol"
    return "", row_error(row, column, "value_mapped", f"{shown(raw)} is not {what}")


def _number(row: int, column: str, raw: str, errors: list[RowError]) -> int | None:
    if not _WHOLE_NUMBER.fullmatch(raw) or int(raw) < 1:
        errors.append(row_error(row, column, "integer", f"{shown(raw)} is not a whole number >= 1"))
        return None
    return int(raw)


def read_mapped(
    text: str,
    mapping: ListMapping,
    *,
    arms: Collection[str],
    factor_names: Sequence[str],
    factor_levels: Mapping[str, Collection[str]],
) -> tuple[list[Slot], list[RowError]]:
    """The slots of every readable row through the mapping, and every fault by row.
    Long because: one pass reads each row's arm, levels, sequence and block in file order."""
    records, errors = _records(text)
    if not records:
        return [], errors or [row_error(1, "header", "header_required", "the file has no header")]
    header, body = records[0][1], records[1:]
    while header and not header[-1]:
        header = header[:-1]
    mapping_errors = check_mapping(mapping, header, arms=arms, factor_levels=factor_levels)
    if mapping_errors:
        return [], mapping_errors + errors
    read: list[tuple[int, str, int | None, int, int | None, str]] = []
    row_errors: list[RowError] = []
    for row, cells in body:
        values = _values(row, cells, header)
        if isinstance(values, RowError):
            row_errors.append(values)
            continue
        found: list[RowError] = []
        arm, fault = _mapped(
            row, mapping.arm_column, values[mapping.arm_column], mapping.arm_values, arms
        )
        found += [fault] if fault else []
        levels: dict[str, str] = {}
        for name in factor_names:
            source = mapping.factors[name]
            level, fault = _mapped(
                row, source.column, values[source.column], source.levels, factor_levels[name]
            )
            found += [fault] if fault else []
            levels[name] = level
        sequence = (
            _number(row, mapping.sequence_column, values[mapping.sequence_column], found)
            if mapping.sequence_column
            else None
        )
        block = (
            _number(row, mapping.block_column, values[mapping.block_column], found)
            if mapping.block_column
            else UNKNOWN
        )
        size = (
            _number(row, mapping.block_size_column, values[mapping.block_size_column], found)
            if mapping.block_size_column
            else None
        )
        row_errors += found
        if found or block is None:
            continue
        read.append((row, stratum_key(levels, factor_names), sequence, block, size, arm))
    return _slots(read, mapping), row_errors + errors


def _slots(
    read: Sequence[tuple[int, str, int | None, int, int | None, str]], mapping: ListMapping
) -> list[Slot]:
    """Sequences within each stratum (as given, ranked from a whole-list number, or row order)
    and block sizes (as given, or the block's row count)."""
    by_stratum: dict[str, list[tuple[int, int | None]]] = defaultdict(list)
    for row, stratum, sequence, *_ in read:
        by_stratum[stratum].append((row, sequence))
    sequence_of: dict[int, int] = {}
    for rows in by_stratum.values():
        if mapping.sequence_column and mapping.sequence_scope == "stratum":
            sequence_of |= {row: sequence or 0 for row, sequence in rows}
        else:
            # A whole-list number keeps its order (a repeat stays a repeat); no column: file order.
            ranked = sorted(rows, key=lambda pair: (pair[1] or 0, pair[0]))
            rank, previous = 0, None
            for row, sequence in ranked:
                if sequence is None or sequence != previous:
                    rank += 1
                sequence_of[row] = rank
                previous = sequence
    block_rows = Counter((stratum, block) for _, stratum, _, block, _, _ in read)
    return [
        Slot(
            stratum,
            sequence_of[row],
            block,
            size if size is not None else (block_rows[(stratum, block)] if block else UNKNOWN),
            arm,
            source_row=row,
        )
        for row, stratum, _, block, size, arm in read
    ]


def import_mapped(
    text: str,
    mapping: ListMapping,
    *,
    arms: Sequence[tuple[str, int]],
    strata: Collection[str],
    factor_names: Sequence[str],
    factor_levels: Mapping[str, Collection[str]],
    block_sizes: Collection[int] | None,
) -> tuple[list[Slot], list[RowError]]:
    """Read through the mapping, then verify (verify_schedule, unchanged): the slots and every
    fault of the file by row, each reported once."""
    slots, errors = read_mapped(
        text,
        mapping,
        arms={code for code, _ in arms},
        factor_names=factor_names,
        factor_levels=factor_levels,
    )
    if errors and all(error.row == 1 for error in errors):
        return [], errors  # the mapping itself is wrong: no row was read
    reported = {(error.row, error.rule) for error in errors}
    verified = verify_schedule(slots, arms=arms, strata=strata, block_sizes=block_sizes)
    errors += [error for error in verified if (error.row, error.rule) not in reported]
    return slots, sorted(errors, key=lambda error: error.row)


__all__ = [
    "FactorSource",
    "ListMapping",
    "check_mapping",
    "header_and_values",
    "import_mapped",
    "parse_value_map",
    "read_mapped",
]
