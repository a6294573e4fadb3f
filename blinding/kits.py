"""Blinded kit numbers and kit lists: generation, vendor CSV import, and verification.

Kit numbers carry no pattern by treatment. Algorithm "kit-numbers-v1", reproducible from a seed:
  number = a 6-digit body 100000..999999 + its Damm check digit (the Damm check catches every
           single-digit error and every adjacent transposition)
  draw   = body = 100000 + randbelow(900000) from the Drbg, redrawn while already drawn or taken;
           when more than half of the free bodies are wanted, instead a partial Fisher-Yates
           shuffle (i = 0, 1, ...: swap i with i + randbelow(free - i)) of the free bodies in
           ascending order, so the draw always ends
  list   = numbers from Drbg(seed, label=f"kits/{lot}"); then the same stream shuffles the
           treatments (codes in sorted order, each repeated its count), again while the rank
           test of kit numbers by treatment (`blinding.ranks`) warns; kit i gets treatment i;
           the list is returned sorted by kit number, so neither order nor number says the arm
Algorithm "kit-numbers-v2" (issue 13: v1 holds 900,000 numbers; a trial of 2,000,000 kits needs
more): the same, with an 8-digit body 10000000..99999999 and its Damm check digit (9 digits,
90,000,000 numbers); the draw is v1's (redraw while taken; past half of the free bodies, the same
partial Fisher-Yates over the free bodies in ascending order, kept as a map of the swapped
positions so memory follows the count, not the space). A 7-digit and a 9-digit number never
collide, and each algorithm ignores the other's numbers in `taken`. v1 is unchanged, byte for
byte (tests/unit/test_kit_numbers_v2.py holds its output): a list re-derives from its seed with
the algorithm recorded with it (`ALGORITHMS`; the app stores it on the lot).
A lot holds every treatment in the allocation ratio, within the protocol's tolerance
(`check_lot_balance`); a generated lot holds them exactly in the ratio asked.
"""

from __future__ import annotations

import csv
import io
import re
from bisect import bisect_right
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from blinding.drbg import Drbg
from blinding.ranks import RankTest, kit_number_rank_test

ALGORITHM = "kit-numbers-v1"
BODY_MIN = 100_000
BODY_MAX = 999_999
NUMBER_SPACE = BODY_MAX - BODY_MIN + 1
ALGORITHM_V2 = "kit-numbers-v2"
BODY_MIN_V2 = 10_000_000
BODY_MAX_V2 = 99_999_999
NUMBER_SPACE_V2 = BODY_MAX_V2 - BODY_MIN_V2 + 1
ALGORITHMS = (ALGORITHM, ALGORITHM_V2)
COLUMNS = ("kit_number", "kit_type", "treatment", "lot", "expiry")
_DIGITS = frozenset("0123456789")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_SHOWN_MAX = 40

# The Damm quasigroup (weakly totally anti-symmetric, order 10), H. M. Damm 2004.
_DAMM = (
    (0, 3, 1, 7, 5, 9, 8, 6, 4, 2),
    (7, 0, 9, 2, 1, 5, 4, 8, 6, 3),
    (4, 2, 0, 6, 8, 7, 1, 3, 5, 9),
    (1, 7, 5, 0, 9, 8, 3, 4, 2, 6),
    (6, 1, 2, 3, 0, 4, 5, 9, 7, 8),
    (3, 6, 7, 4, 2, 0, 9, 5, 8, 1),
    (5, 8, 6, 9, 7, 2, 0, 1, 3, 4),
    (8, 9, 4, 5, 3, 6, 2, 0, 1, 7),
    (9, 4, 3, 8, 6, 1, 7, 2, 0, 5),
    (2, 5, 8, 1, 4, 3, 6, 7, 9, 0),
)


def _damm_interim(digits: str) -> int:
    interim = 0
    for digit in digits:
        interim = _DAMM[interim][ord(digit) - 48]
    return interim


def damm_check_digit(digits: str) -> str:
    """The Damm check digit to append to a string of ASCII digits."""
    if not digits or not set(digits) <= _DIGITS:
        raise ValueError("a check digit needs one or more ASCII digits")
    return str(_damm_interim(digits))


def _is_valid(number: str, length: int) -> bool:
    return (
        isinstance(number, str)
        and len(number) == length
        and set(number) <= _DIGITS
        and number[0] != "0"
        and _damm_interim(number) == 0
    )


def is_valid_kit_number(number: str) -> bool:
    """True for a kit number of either scheme: 7 (v1) or 9 (v2) ASCII digits, the first not 0,
    whose last digit is the Damm check of the rest."""
    return kit_number_algorithm(number) is not None


def kit_number_algorithm(number: str) -> str | None:
    """The scheme whose format `number` has and whose check digit it passes, or None."""
    if _is_valid(number, 7):
        return ALGORITHM
    if _is_valid(number, 9):
        return ALGORITHM_V2
    return None


def kit_number(body: int) -> str:
    """The kit number for a 6-digit body: the body and its check digit."""
    if not BODY_MIN <= body <= BODY_MAX:
        raise ValueError(f"a kit number body is {BODY_MIN}..{BODY_MAX}")
    text = str(body)
    return text + damm_check_digit(text)


def kit_number_v2(body: int) -> str:
    """The kit-numbers-v2 number for an 8-digit body: the body and its check digit."""
    if not BODY_MIN_V2 <= body <= BODY_MAX_V2:
        raise ValueError(f"a kit number body is {BODY_MIN_V2}..{BODY_MAX_V2}")
    text = str(body)
    return text + damm_check_digit(text)


def draw_kit_numbers(
    count: int, rng: Drbg, *, taken: Collection[str] = (), algorithm: str = ALGORITHM
) -> list[str]:
    """`count` distinct random kit numbers, none in `taken`, in draw order, by `algorithm`."""
    if algorithm == ALGORITHM_V2:
        return _draw_v2(count, rng, taken)
    if algorithm != ALGORITHM:
        raise ValueError(f"unknown kit number algorithm {algorithm!r} ({', '.join(ALGORITHMS)})")
    return _draw_v1(count, rng, taken)


def _draw_v1(count: int, rng: Drbg, taken: Collection[str]) -> list[str]:
    """kit-numbers-v1, unchanged (a 9-digit number in `taken` is not one of its bodies)."""
    if count < 0:
        raise ValueError("count must not be negative")
    taken_bodies = {int(number[:6]) for number in taken if _is_valid(number, 7)}
    free = NUMBER_SPACE - len(taken_bodies)
    if count > free:
        raise ValueError(f"kit number space exhausted: {count} wanted, {free} free")
    if 2 * count > free:
        pool = [b for b in range(BODY_MIN, BODY_MAX + 1) if b not in taken_bodies]
        for i in range(count):
            j = i + rng.randbelow(len(pool) - i)
            pool[i], pool[j] = pool[j], pool[i]
        return [kit_number(body) for body in pool[:count]]
    drawn: list[int] = []
    used = set(taken_bodies)
    while len(drawn) < count:
        body = BODY_MIN + rng.randbelow(NUMBER_SPACE)
        if body not in used:
            used.add(body)
            drawn.append(body)
    return [kit_number(body) for body in drawn]


def _draw_v2(count: int, rng: Drbg, taken: Collection[str]) -> list[str]:
    """kit-numbers-v2: v1's draw over the 8-digit bodies (see the module doc)."""
    if count < 0:
        raise ValueError("count must not be negative")
    taken_bodies = sorted({int(number[:8]) for number in taken if _is_valid(number, 9)})
    free = NUMBER_SPACE_V2 - len(taken_bodies)
    if count > free:
        raise ValueError(f"kit number space exhausted: {count} wanted, {free} free")
    if 2 * count > free:
        chosen = partial_shuffle(count, free, rng)
        return [kit_number_v2(free_body_v2(index, taken_bodies)) for index in chosen]
    drawn: list[int] = []
    used = set(taken_bodies)
    while len(drawn) < count:
        body = BODY_MIN_V2 + rng.randbelow(NUMBER_SPACE_V2)
        if body not in used:
            used.add(body)
            drawn.append(body)
    return [kit_number_v2(body) for body in drawn]


def partial_shuffle(count: int, size: int, rng: Drbg) -> list[int]:
    """The first `count` places of v1's partial Fisher-Yates over range(size) (i = 0, 1, ...:
    swap i with i + randbelow(size - i)), the array kept virtual: only the places swapped so
    far are held, so memory follows `count`, not `size`."""
    swapped: dict[int, int] = {}
    chosen: list[int] = []
    for i in range(count):
        j = i + rng.randbelow(size - i)
        at_j = swapped.get(j, j)
        swapped[j] = swapped.get(i, i)
        chosen.append(at_j)
    return chosen


def free_body_v2(index: int, taken_sorted: Sequence[int]) -> int:
    """The `index`-th (from 0) v2 body not in `taken_sorted`, in ascending order: the least
    fixed point of body = BODY_MIN_V2 + index + (taken bodies <= body)."""
    body = BODY_MIN_V2 + index
    while True:
        moved = BODY_MIN_V2 + index + bisect_right(taken_sorted, body)
        if moved == body:
            return body
        body = moved


@dataclass(frozen=True)
class KitSpec:
    """One kit of a kit list: its blinded number, type, treatment (arm code), packaging lot."""

    number: str
    kit_type: str
    treatment: str
    lot: str
    expiry: date


def generate_kit_list(
    *,
    seed: bytes,
    kit_type: str,
    lot: str,
    expiry: date,
    per_treatment: Mapping[str, int],
    taken: Collection[str] = (),
    algorithm: str = ALGORITHM,
) -> list[KitSpec]:
    """A blinded packaging lot: random numbers (by `algorithm`, one of ALGORITHMS), treatments
    shuffled in, sorted by kit number."""
    if not kit_type or not lot:
        raise ValueError("kit_type and lot must not be empty")
    if any(not code for code in per_treatment):
        raise ValueError("treatment codes must not be empty")
    if any(not isinstance(n, int) or n < 0 for n in per_treatment.values()):
        raise ValueError("kit counts per treatment must be whole numbers, 0 or more")
    rng = Drbg(seed, label=f"kits/{lot}")
    treatments = [code for code in sorted(per_treatment) for _ in range(per_treatment[code])]
    numbers = draw_kit_numbers(len(treatments), rng, taken=taken, algorithm=algorithm)
    rng.shuffle(treatments)
    while _numbers_tell_treatment(numbers, treatments):
        rng.shuffle(treatments)
    kits = [
        KitSpec(number=number, kit_type=kit_type, treatment=treatment, lot=lot, expiry=expiry)
        for number, treatment in zip(numbers, treatments, strict=True)
    ]
    return sorted(kits, key=lambda kit: kit.number)


def _numbers_tell_treatment(numbers: Sequence[str], treatments: Sequence[str]) -> bool:
    return number_rank_test(
        [KitSpec(n, "", t, "", date.min) for n, t in zip(numbers, treatments, strict=True)]
    ).warning


def number_rank_test(kits: Sequence[KitSpec]) -> RankTest:
    """The rank test of kit numbers by treatment over a kit list (see `blinding.ranks`)."""
    by_treatment: dict[str, list[int]] = {}
    for kit in kits:
        by_treatment.setdefault(kit.treatment, []).append(int(kit.number))
    return kit_number_rank_test(by_treatment)


def format_kit_list_csv(kits: Sequence[KitSpec]) -> str:
    """The kit list as CSV text in the vendor format that `parse_kit_list_csv` reads."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for kit in kits:
        writer.writerow((kit.number, kit.kit_type, kit.treatment, kit.lot, kit.expiry.isoformat()))
    return out.getvalue()


@dataclass(frozen=True)
class RowError:
    """One broken rule in a kit list: where (row, field), which rule, and a readable message."""

    row: int
    field: str
    rule: str
    message: str


def _error(row: int, field: str, rule: str, text: str) -> RowError:
    where = f"row {row}" if row else "file"
    if field != "file":
        where += f", {field}"
    return RowError(row=row, field=field, rule=rule, message=f"{where}: {text}")


def _shown(value: str) -> str:
    # Echo a cell so that a control character or a megabyte of junk cannot garble the message.
    if value.isprintable() and len(value) <= _SHOWN_MAX:
        return value
    return repr(value[:_SHOWN_MAX]) + ("..." if len(value) > _SHOWN_MAX else "")


def _read_records(text: str) -> tuple[list[list[str]], list[RowError]]:
    # Records are numbered as read (header = 0), blank lines included, so a row number is the
    # line number a vendor sees less one, as long as no quoted cell spans lines.
    records: list[list[str]] = []
    try:
        # strict: an unclosed or stray quote is refused, never silently merged into a cell
        source = io.StringIO(text.removeprefix("\ufeff"), newline="")
        for record in csv.reader(source, strict=True, skipinitialspace=True):
            records.append(record)
    except csv.Error as exc:
        reason = f"not readable as CSV from here on ({exc})"
        return records, [_error(len(records), "file", "malformed_csv", reason)]
    return records, []


def _check_number(
    row: int, number: str, seen: dict[str, int], taken: Collection[str]
) -> list[RowError]:
    errors: list[RowError] = []
    if len(number) not in (7, 9) or not set(number) <= _DIGITS or number[0] == "0":
        text = f"{_shown(number)} is not 7 or 9 digits (first not 0)"
        errors.append(_error(row, "kit_number", "format", text))
    elif not is_valid_kit_number(number):
        errors.append(_error(row, "kit_number", "check_digit", f"{number} fails its check digit"))
    if number in seen:
        errors.append(
            _error(
                row,
                "kit_number",
                "duplicate_number",
                f"{_shown(number)} repeats row {seen[number]}",
            )
        )
    elif number in taken:
        errors.append(
            _error(row, "kit_number", "duplicate_number", f"{_shown(number)} is already in use")
        )
    seen.setdefault(number, row)
    return errors


def _parse_expiry(row: int, value: str, today: date) -> tuple[date | None, list[RowError]]:
    if not _ISO_DATE.fullmatch(value):
        return None, [_error(row, "expiry", "bad_date", f"{_shown(value)} is not YYYY-MM-DD")]
    try:
        expiry = date.fromisoformat(value)
    except ValueError:
        return None, [_error(row, "expiry", "bad_date", f"{value} is not a calendar date")]
    if expiry < today:
        text = f"{value} is in the past (today is {today.isoformat()})"
        return None, [_error(row, "expiry", "expired", text)]
    return expiry, []


def _parse_row(
    row: int,
    cells: Mapping[str, str],
    *,
    kit_types: Collection[str],
    treatments: Collection[str],
    today: date,
    seen: dict[str, int],
    taken: Collection[str],
) -> tuple[KitSpec | None, list[RowError]]:
    errors = [
        _error(row, name, "empty", "required value is empty") for name, v in cells.items() if not v
    ]
    number = cells.get("kit_number", "")
    if number:
        errors += _check_number(row, number, seen, taken)
    kit_type = cells.get("kit_type", "")
    if kit_type and kit_type not in kit_types:
        errors.append(
            _error(row, "kit_type", "unknown_type", f"{_shown(kit_type)} is not a kit type")
        )
    treatment = cells.get("treatment", "")
    if treatment and treatment not in treatments:
        text = f"{_shown(treatment)} is not a treatment of this trial"
        errors.append(_error(row, "treatment", "unknown_treatment", text))
    expiry = None
    if cells.get("expiry"):
        expiry, expiry_errors = _parse_expiry(row, cells["expiry"], today)
        errors += expiry_errors
    if errors or expiry is None or len(cells) < len(COLUMNS):
        return None, errors
    kit = KitSpec(
        number=number, kit_type=kit_type, treatment=treatment, lot=cells["lot"], expiry=expiry
    )
    return kit, []


def parse_kit_list_csv(
    text: str,
    *,
    kit_types: Collection[str],
    treatments: Collection[str],
    today: date,
    taken: Collection[str] = (),
) -> tuple[list[KitSpec], list[RowError]]:
    """Import a vendor's kit list CSV: every kit, or no kit and every bad row (all-or-nothing)."""
    if not isinstance(text, str):
        return [], [_error(0, "file", "not_text", "the file is not text")]
    records, errors = _read_records(text)
    if not any(cell.strip() for record in records for cell in record):
        return [], errors or [_error(0, "file", "empty", "the file is empty")]
    header = [cell.strip().lower() for cell in records[0]]
    columns: dict[str, int] = {}
    for name in COLUMNS:
        if header.count(name) > 1:
            errors.append(_error(0, name, "duplicate_column", "the column appears more than once"))
        if name in header:
            columns[name] = header.index(name)
        else:
            errors.append(_error(0, name, "missing_column", "required column is missing"))
    kits: list[KitSpec] = []
    seen: dict[str, int] = {}
    taken_set = frozenset(taken)
    for row, record in enumerate(records[1:], start=1):
        cells = [cell.strip() for cell in record]
        if not any(cells):
            continue
        if any(cells[len(header) :]):
            errors.append(
                _error(
                    row, "file", "column_count", f"{len(cells)} cells under {len(header)} columns"
                )
            )
        values = {name: cells[i] if i < len(cells) else "" for name, i in columns.items()}
        kit, row_errors = _parse_row(
            row,
            values,
            kit_types=kit_types,
            treatments=treatments,
            today=today,
            seen=seen,
            taken=taken_set,
        )
        errors += row_errors
        if kit is not None:
            kits.append(kit)
    if not kits and not errors:
        errors.append(_error(0, "file", "empty", "no kit rows below the header"))
    return ([], sorted(errors, key=lambda error: error.row)) if errors else (kits, [])


def check_numbers_valid(kits: Sequence[KitSpec]) -> list[RowError]:
    """Every kit number is 7 or 9 digits, first not 0, with a valid Damm check digit."""
    return [
        _error(row, "kit_number", "check_digit", f"{_shown(kit.number)} fails its check digit")
        for row, kit in enumerate(kits, start=1)
        if not is_valid_kit_number(kit.number)
    ]


def check_no_duplicate_numbers(kits: Sequence[KitSpec]) -> list[RowError]:
    """No kit number appears twice."""
    first: dict[str, int] = {}
    errors: list[RowError] = []
    for row, kit in enumerate(kits, start=1):
        if kit.number in first:
            text = f"{_shown(kit.number)} repeats row {first[kit.number]}"
            errors.append(_error(row, "kit_number", "duplicate_number", text))
        first.setdefault(kit.number, row)
    return errors


def check_treatments_known(kits: Sequence[KitSpec], treatments: Collection[str]) -> list[RowError]:
    """Every kit holds a treatment of the trial."""
    return [
        _error(row, "treatment", "unknown_treatment", f"{_shown(kit.treatment)} is not a treatment")
        for row, kit in enumerate(kits, start=1)
        if kit.treatment not in treatments
    ]


def check_every_treatment_in_every_lot(
    kits: Sequence[KitSpec], treatments: Collection[str]
) -> list[RowError]:
    """Every blinded lot holds every treatment, so a lot never tells the arm."""
    held: dict[str, set[str]] = {}
    for kit in kits:
        held.setdefault(kit.lot, set()).add(kit.treatment)
    return [
        _error(0, "lot", "lot_missing_treatment", f"lot {_shown(lot)} holds no kit of {code}")
        for lot in sorted(held)
        for code in sorted(treatments)
        if code not in held[lot]
    ]


def check_lot_balance(
    kits: Sequence[KitSpec], *, ratios: Mapping[str, int], tolerance: int
) -> list[RowError]:
    """Every lot holds the treatments in the allocation ratio: each treatment's count divided
    by its ratio differs from every other's by at most `tolerance` kits (rule lot_balance).
    For 1:1 that is the difference of the two counts: 49 + 1 differs by 48."""
    counts: dict[str, dict[str, int]] = {}
    for kit in kits:
        held = counts.setdefault(kit.lot, dict.fromkeys(ratios, 0))
        held[kit.treatment] = held.get(kit.treatment, 0) + 1
    errors = []
    for lot in sorted(counts):
        shares = [counts[lot].get(code, 0) / ratio for code, ratio in ratios.items()]
        spread = max(shares) - min(shares)
        if spread > tolerance:
            text = (
                f"lot {_shown(lot)}: its treatment counts differ by {spread:g} kits (per unit "
                f"of the allocation ratio), more than the tolerance {tolerance}"
            )
            errors.append(_error(0, "lot", "lot_balance", text))
    return errors


def verify_kit_list(
    kits: Sequence[KitSpec],
    *,
    treatments: Collection[str],
    ratios: Mapping[str, int] | None = None,
    lot_balance_tolerance: int = 0,
) -> list[RowError]:
    """The verify step after import: run every kit list check and report every problem (the
    lot balance check when `ratios`, treatment -> ratio, is given)."""
    return [
        *check_numbers_valid(kits),
        *check_no_duplicate_numbers(kits),
        *check_treatments_known(kits, treatments),
        *check_every_treatment_in_every_lot(kits, treatments),
        *(
            check_lot_balance(kits, ratios=ratios, tolerance=lot_balance_tolerance)
            if ratios is not None
            else []
        ),
    ]
