"""Import, then verify: reading a randomization list from CSV text (the caller reads the file),
in the native layout or as a REDCap allocation table, each row checked on its own; and verifying
any list, read or generated, as a whole, one small named check per rule. import_schedule runs
both. (blinding.schedules re-exports parse_schedule_csv, verify_schedule and import_schedule.)

Native layout: columns stratum, sequence, block, arm in any order, and block_size optionally
  (without it a block's size is the number of its rows), as serialize() writes them.
REDCap allocation table: a "redcap_randomization_group" column (the arm: REDCap exports the
  group's raw value; `redcap_groups` maps raw values to arm codes when they differ), one column
  per stratification factor holding level codes, and optionally "redcap_randomization_number"
  (ignored). Such a table has no sequence and no block boundaries: a slot's sequence is its row
  order within its stratum, and block and block size are 0 (unknown), so block rules are skipped.
Rows are numbered as a spreadsheet numbers them: the header is row 1; blank rows count and are
skipped. Junk never raises: every fault comes back as a RowError.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence

from blinding.schedules import (
    UNKNOWN,
    RowError,
    Slot,
    row_error,
    shown,
    stratum_key,
    stratum_levels,
)

REDCAP_GROUP = "redcap_randomization_group"
REDCAP_NUMBER = "redcap_randomization_number"
NATIVE_COLUMNS = ("stratum", "sequence", "block", "arm")
NATIVE_OPTIONAL = ("block_size",)
FIXED_COLUMNS = {*NATIVE_COLUMNS, *NATIVE_OPTIONAL, REDCAP_GROUP, REDCAP_NUMBER}
_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")  # else the field is "column <n>"
_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")  # nine digits: more is junk, never a slot number

_Record = tuple[int, list[str]]


def _records(text: str) -> tuple[list[_Record], list[RowError]]:
    """The non-blank records with their row numbers, and the CSV fault that stopped reading."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    records: list[_Record] = []
    row = 0
    try:
        for row, cells in enumerate(reader, start=1):
            stripped = [cell.strip() for cell in cells]
            if any(stripped):
                records.append((row, stripped))
    except csv.Error as error:
        text = f"not readable as CSV ({error}); the rest of the file was not read"
        return records, [row_error(row + 1, "file", "csv_syntax", text)]
    return records, []


def _check_header(
    row: int, columns: Sequence[str], required: Sequence[str], optional: Collection[str]
) -> list[RowError]:
    errors: list[RowError] = []
    expected = ", ".join(required) + "".join(f" and optionally {name}" for name in optional)
    seen: set[str] = set()
    for position, name in enumerate(columns, start=1):
        column = name if _COLUMN_NAME.fullmatch(name) else f"column {position}"
        if name in seen:
            errors.append(row_error(row, column, "column_unique", "this column appears twice"))
        elif name not in required and name not in optional:
            text = f"{shown(name)} is not a column of this layout (expected {expected})"
            errors.append(row_error(row, column, "column_known", text))
        seen.add(name)
    errors += [
        row_error(row, name, "column_required", "this column is missing")
        for name in required
        if name not in seen
    ]
    return errors


def _values(row: int, cells: list[str], columns: Sequence[str]) -> dict[str, str] | RowError:
    """The row's values by column; extra empty cells (a spreadsheet's trailing commas) pass."""
    if len(cells) < len(columns) or any(cells[len(columns) :]):
        text = f"has {len(cells)} values; the header has {len(columns)}"
        return row_error(row, "row", "row_shape", text)
    return dict(zip(columns, cells, strict=False))


def _required(row: int, field: str, value: str, errors: list[RowError]) -> str | None:
    if not value:
        errors.append(row_error(row, field, "required", "a value is required"))
        return None
    return value


def _whole_number(row: int, field: str, value: str, errors: list[RowError]) -> int | None:
    if _required(row, field, value, errors) is None:
        return None
    if not _WHOLE_NUMBER.fullmatch(value):
        errors.append(row_error(row, field, "integer", f"{shown(value)} is not a whole number"))
        return None
    if int(value) < 1:
        errors.append(row_error(row, field, "positive", f"{value} is not >= 1"))
        return None
    return int(value)


def _native_slot(
    row: int,
    values: Mapping[str, str],
    *,
    arms: Collection[str],
    strata: Collection[str],
    errors: list[RowError],
) -> Slot | None:
    stratum = _required(row, "stratum", values["stratum"], errors)
    sequence = _whole_number(row, "sequence", values["sequence"], errors)
    block = _whole_number(row, "block", values["block"], errors)
    size = (
        _whole_number(row, "block_size", values["block_size"], errors)
        if "block_size" in values
        else UNKNOWN
    )
    arm = _required(row, "arm", values["arm"], errors)
    if stratum is None or sequence is None or block is None or size is None or arm is None:
        return None
    slot = Slot(stratum, sequence, block, size, arm, source_row=row)
    # Worded exactly as verify_schedule words them, so a caller running both sees each once.
    errors += check_arm_known([(row, slot)], arms) + check_stratum_known([(row, slot)], strata)
    return slot


def _redcap_slot(
    row: int,
    values: Mapping[str, str],
    *,
    arms: Collection[str],
    strata: Collection[str],
    factor_names: Sequence[str],
    levels_of: Mapping[str, Collection[str]],
    redcap_groups: Mapping[str, str] | None,
    taken: Counter[str],
    errors: list[RowError],
) -> Slot | None:
    found: list[RowError] = []
    levels = {name: _required(row, name, values[name], found) for name in factor_names}
    group = _required(row, REDCAP_GROUP, values[REDCAP_GROUP], found)
    errors += found
    if found or group is None:
        return None
    arm = group if redcap_groups is None else redcap_groups.get(group, group)
    if arm not in arms:
        what = "an arm of this protocol" if redcap_groups is None else "a group mapped to an arm"
        errors.append(row_error(row, REDCAP_GROUP, "arm_known", f"{shown(group)} is not {what}"))
    stratum = stratum_key({name: level or "" for name, level in levels.items()}, factor_names)
    if stratum not in strata:
        unknown = [
            row_error(row, name, "stratum_known", f"{shown(level or '')} is not a level of {name}")
            for name, level in levels.items()
            if level not in levels_of.get(name, ())
        ]
        text = f"{shown(stratum)} is not a stratum of this protocol"
        errors += unknown or [row_error(row, "stratum", "stratum_known", text)]
    taken[stratum] += 1
    return Slot(stratum, taken[stratum], UNKNOWN, UNKNOWN, arm, source_row=row)


def parse_schedule_csv(
    text: str,
    *,
    arms: Collection[str],
    strata: Collection[str],
    factor_names: Sequence[str],
    redcap_groups: Mapping[str, str] | None = None,
) -> tuple[list[Slot], list[RowError]]:
    """The slots of every readable row, in file order, and every row's faults (layout, missing
    or malformed values, unknown arm or stratum). A row with an unknown arm or stratum is still
    returned as a slot, so that verifying the list does not report a gap in its place."""
    records, errors = _records(text)
    if not records:
        return [], errors or [row_error(1, "header", "header_required", "the file has no header")]
    (header_row, header), body = records[0], records[1:]
    while header and not header[-1]:  # a spreadsheet's trailing empty columns
        header = header[:-1]
    columns = [name.lower() if name.lower() in FIXED_COLUMNS else name for name in header]
    redcap = REDCAP_GROUP in columns
    if redcap:
        required, optional = [*factor_names, REDCAP_GROUP], (REDCAP_NUMBER,)
    else:
        required, optional = list(NATIVE_COLUMNS), NATIVE_OPTIONAL
    header_errors = _check_header(header_row, columns, required, optional)
    if header_errors:
        return [], header_errors + errors
    levels_of: dict[str, set[str]] = defaultdict(set)
    for key in strata:
        for name, level in stratum_levels(key).items():
            levels_of[name].add(level)
    taken: Counter[str] = Counter()
    slots: list[Slot] = []
    row_errors: list[RowError] = []
    for row, cells in body:
        values = _values(row, cells, columns)
        if isinstance(values, RowError):
            row_errors.append(values)
            continue
        if redcap:
            slot = _redcap_slot(
                row,
                values,
                arms=arms,
                strata=strata,
                factor_names=factor_names,
                levels_of=levels_of,
                redcap_groups=redcap_groups,
                taken=taken,
                errors=row_errors,
            )
        else:
            slot = _native_slot(row, values, arms=arms, strata=strata, errors=row_errors)
        if slot is not None:
            slots.append(slot)
    if not redcap and "block_size" not in columns:
        sizes = Counter((slot.stratum, slot.block) for slot in slots)
        slots = [dataclasses.replace(s, block_size=sizes[(s.stratum, s.block)]) for s in slots]
    return slots, row_errors + errors


def import_schedule(
    text: str,
    *,
    arms: Sequence[tuple[str, int]],
    strata: Collection[str],
    factor_names: Sequence[str],
    block_sizes: Collection[int] | None,
    redcap_groups: Mapping[str, str] | None = None,
) -> tuple[list[Slot], list[RowError]]:
    """Read, then verify: the slots and every fault of the file by row, each reported once."""
    slots, errors = parse_schedule_csv(
        text,
        arms={code for code, _ in arms},
        strata=strata,
        factor_names=factor_names,
        redcap_groups=redcap_groups,
    )
    reported = {(error.row, error.rule) for error in errors}
    verified = verify_schedule(slots, arms=arms, strata=strata, block_sizes=block_sizes)
    errors += [error for error in verified if (error.row, error.rule) not in reported]
    return slots, sorted(errors, key=lambda error: error.row)


# --- verification: each rule a small check reporting every bad row --------------------------

_Row = tuple[int, Slot]


def numbered(slots: Sequence[Slot]) -> list[_Row]:
    """Each slot with its row: the file row it came from, else its row in serialize()."""
    order = sorted(range(len(slots)), key=lambda i: (slots[i].stratum, slots[i].sequence))
    canonical_row = {index: position + 2 for position, index in enumerate(order)}
    return [(slot.source_row or canonical_row[i], slot) for i, slot in enumerate(slots)]


def check_arm_known(rows: Sequence[_Row], codes: Collection[str]) -> list[RowError]:
    return [
        row_error(row, "arm", "arm_known", f"{shown(slot.arm)} is not an arm of this protocol")
        for row, slot in rows
        if slot.arm not in codes
    ]


def check_stratum_known(rows: Sequence[_Row], known: Collection[str]) -> list[RowError]:
    return [
        row_error(
            row,
            "stratum",
            "stratum_known",
            f"{shown(slot.stratum)} is not a stratum of this protocol",
        )
        for row, slot in rows
        if slot.stratum not in known
    ]


def check_sequences(stratum: str, rows: Sequence[_Row]) -> list[RowError]:
    """Sequences 1, 2, 3 … with no gap and no repeat (rows sorted by sequence)."""
    errors: list[RowError] = []
    first_row: dict[int, int] = {}
    expected = 1
    where = f"in stratum {shown(stratum)}"
    for row, slot in rows:
        if slot.sequence < 1:
            errors.append(
                row_error(row, "sequence", "sequence_positive", f"{slot.sequence} is not >= 1")
            )
            continue
        if slot.sequence in first_row:
            text = (
                f"{slot.sequence} appears again {where} (first at row {first_row[slot.sequence]})"
            )
            errors.append(row_error(row, "sequence", "sequence_unique", text))
            continue
        first_row[slot.sequence] = row
        if slot.sequence != expected:
            missing = (
                str(expected)
                if slot.sequence == expected + 1
                else f"{expected}-{slot.sequence - 1}"
            )
            text = (
                f"stratum {shown(stratum)} starts at {slot.sequence}, not 1"
                if expected == 1
                else f"{slot.sequence} follows {expected - 1} {where}; {missing} missing"
            )
            errors.append(row_error(row, "sequence", "sequence_contiguous", text))
        expected = slot.sequence + 1
    return errors


def check_block_order(stratum: str, rows: Sequence[_Row]) -> list[RowError]:
    """Known blocks numbered 1, 2, 3 … in sequence order, each a run of consecutive slots;
    block and block size both known (>= 1) or both unknown (0), unknown only before known."""
    errors: list[RowError] = []
    previous: int | None = None
    where = f"of stratum {shown(stratum)}"
    for row, slot in rows:
        if slot.block == UNKNOWN and slot.block_size == UNKNOWN:
            if previous is not None:
                text = f"an unknown block (0) follows block {previous} {where}"
                errors.append(row_error(row, "block", "block_contiguous", text))
            continue
        if slot.block < 1 or slot.block_size < 1:
            text = f"block {slot.block} of size {slot.block_size}: both must be >= 1, or both 0"
            errors.append(row_error(row, "block", "block_known", text))
            continue
        allowed = (1,) if previous is None else (previous, previous + 1)
        if slot.block not in allowed:
            text = (
                f"the first block {where} is {slot.block}, not 1"
                if previous is None
                else f"block {slot.block} follows block {previous} {where}"
            )
            errors.append(row_error(row, "block", "block_contiguous", text))
        previous = slot.block
    return errors


def _blocks_of(rows: Sequence[_Row]) -> dict[int, list[_Row]]:
    blocks: dict[int, list[_Row]] = defaultdict(list)
    for row, slot in rows:
        if slot.block >= 1 and slot.block_size >= 1:
            blocks[slot.block].append((row, slot))
    return blocks


def check_block_sizes(
    stratum: str, blocks: Mapping[int, Sequence[_Row]], allowed: Collection[int] | None
) -> list[RowError]:
    """Every slot of a block states the same size, the block has that many slots, and the size
    is one of the allowed sizes (when they are given)."""
    errors: list[RowError] = []
    for number, rows in blocks.items():
        where = f"block {number} of stratum {shown(stratum)}"
        first_row, first = rows[0]
        for row, slot in rows[1:]:
            if slot.block_size != first.block_size:
                text = f"{where}: size {slot.block_size}, but {first.block_size} on row {first_row}"
                errors.append(row_error(row, "block_size", "block_size_consistent", text))
        if allowed is not None and first.block_size not in allowed:
            sizes = ", ".join(map(str, sorted(allowed)))
            text = f"{where} has size {first.block_size}; the allowed sizes are {sizes}"
            errors.append(row_error(first_row, "block_size", "block_size_allowed", text))
        if len(rows) != first.block_size:
            text = f"{where} has {len(rows)} slots but its size is {first.block_size}"
            errors.append(row_error(first_row, "block", "block_complete", text))
    return errors


def check_block_balance(
    stratum: str, blocks: Mapping[int, Sequence[_Row]], arms: Sequence[tuple[str, int]]
) -> list[RowError]:
    """Every complete block holds each arm ratio * size / sum(ratios) times. Blocks that are
    incomplete or hold an unknown arm are left to those rules."""
    errors: list[RowError] = []
    codes = {code for code, _ in arms}
    total = sum(ratio for _, ratio in arms)
    ratio_text = ":".join(str(ratio) for _, ratio in arms)
    for number, rows in blocks.items():
        first_row, first = rows[0]
        size = first.block_size
        if len(rows) != size or any(slot.arm not in codes for _, slot in rows):
            continue
        where = f"block {number} of stratum {shown(stratum)}"
        counts = Counter(slot.arm for _, slot in rows)
        if total == 0 or size % total:
            text = f"{where} of size {size} cannot hold the ratio {ratio_text}"
            errors.append(row_error(first_row, "block", "block_balance", text))
        elif any(counts[code] != ratio * size // total for code, ratio in arms):
            found = ", ".join(f"{code} {counts[code]}" for code, _ in arms)
            expected = ", ".join(f"{code} {ratio * size // total}" for code, ratio in arms)
            text = f"{where} is not balanced to {ratio_text}: {found} (expected {expected})"
            errors.append(row_error(first_row, "block", "block_balance", text))
    return errors


def verify_schedule(
    slots: Sequence[Slot],
    *,
    arms: Sequence[tuple[str, int]],
    strata: Collection[str],
    block_sizes: Collection[int] | None,
) -> list[RowError]:
    """Every fault of a list, by row: arms and strata known; per stratum, sequences 1… with no
    gap or repeat; known blocks numbered 1… in order, of allowed sizes, complete and balanced to
    the ratio. A slot of an unknown stratum is reported once, as such."""
    rows = numbered(slots)
    errors = check_arm_known(rows, {code for code, _ in arms}) + check_stratum_known(rows, strata)
    by_stratum: dict[str, list[_Row]] = defaultdict(list)
    for row, slot in rows:
        if slot.stratum in strata:
            by_stratum[slot.stratum].append((row, slot))
    for stratum, stratum_rows in by_stratum.items():
        stratum_rows.sort(key=lambda pair: (pair[1].sequence, pair[0]))
        errors += check_sequences(stratum, stratum_rows)
        # A bad or repeated sequence is reported once above; its rows are left out of blocks.
        first_of = {slot.sequence: (row, slot) for row, slot in reversed(stratum_rows)}
        distinct = sorted(
            (pair for sequence, pair in first_of.items() if sequence >= 1),
            key=lambda pair: pair[1].sequence,
        )
        errors += check_block_order(stratum, distinct)
        blocks = _blocks_of(distinct)
        errors += check_block_sizes(stratum, blocks, block_sizes)
        errors += check_block_balance(stratum, blocks, arms)
    return sorted(errors, key=lambda error: error.row)
