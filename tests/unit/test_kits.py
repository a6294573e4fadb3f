"""Kit rules: numbers carry no pattern by arm, lists are reproducible from their seed, and an
import reports every bad row."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blinding.drbg import Drbg
from blinding.kits import (
    BODY_MAX,
    BODY_MIN,
    NUMBER_SPACE,
    KitSpec,
    RowError,
    check_lot_balance,
    damm_check_digit,
    draw_kit_numbers,
    format_kit_list_csv,
    generate_kit_list,
    is_valid_kit_number,
    kit_number,
    number_rank_test,
    parse_kit_list_csv,
    verify_kit_list,
)
from blinding.ranks import ALPHA

SEED = bytes(range(32))
OTHER_SEED = bytes(range(1, 33))
TODAY = date(2026, 3, 1)
EXPIRY = date(2027, 6, 30)
KIT_TYPES = {"GSK-SC"}
TREATMENTS = {"A", "P"}
HEADER = "kit_number,kit_type,treatment,lot,expiry"
PROPERTY = settings(deadline=None, max_examples=300)
BODIES = st.integers(min_value=BODY_MIN, max_value=BODY_MAX)


def make_list(seed: bytes = SEED, lot: str = "PL-001", **counts: int) -> list[KitSpec]:
    return generate_kit_list(
        seed=seed,
        kit_type="GSK-SC",
        lot=lot,
        expiry=EXPIRY,
        per_treatment=counts or {"A": 100, "P": 100},
    )


def parse(text: str, taken: tuple[str, ...] = ()) -> tuple[list[KitSpec], list[RowError]]:
    return parse_kit_list_csv(
        text, kit_types=KIT_TYPES, treatments=TREATMENTS, today=TODAY, taken=taken
    )


# Damm check digits


def test_damm_matches_the_published_example():
    assert damm_check_digit("572") == "4"
    assert is_valid_kit_number("5724") is False  # right check, but not 7 digits
    assert damm_check_digit("100000") + "" == kit_number(100000)[-1]


@PROPERTY
@given(body=BODIES)
def test_damm_catches_every_single_digit_substitution(body: int):
    number = kit_number(body)
    assert is_valid_kit_number(number)
    for position, digit in itertools.product(range(7), "0123456789"):
        if number[position] != digit:
            assert not is_valid_kit_number(number[:position] + digit + number[position + 1 :])


@PROPERTY
@given(body=BODIES)
def test_damm_catches_every_adjacent_transposition(body: int):
    number = kit_number(body)
    for i in range(6):
        if number[i] != number[i + 1]:
            swapped = number[:i] + number[i + 1] + number[i] + number[i + 2 :]
            assert not is_valid_kit_number(swapped)


@pytest.mark.parametrize("bad", ["", "12a", "١٢٣", "12 3"])
def test_damm_needs_ascii_digits(bad: str):
    with pytest.raises(ValueError):
        damm_check_digit(bad)


@pytest.mark.parametrize("bad", ["", "0123456", "123456", "12345678", "12345a7", "١٢٣٤٥٦٧"])
def test_kit_number_shape_is_seven_ascii_digits_not_starting_with_zero(bad: str):
    assert not is_valid_kit_number(bad)


# Drawing numbers


def test_draw_returns_distinct_valid_numbers_not_taken():
    taken = draw_kit_numbers(300, Drbg(SEED, "kits/x"))
    numbers = draw_kit_numbers(500, Drbg(SEED, "kits/x"), taken=taken)
    assert len(set(numbers)) == 500
    assert all(is_valid_kit_number(n) for n in numbers)
    assert not set(numbers) & set(taken)


def test_draw_is_reproducible_from_the_seed():
    assert draw_kit_numbers(50, Drbg(SEED, "a")) == draw_kit_numbers(50, Drbg(SEED, "a"))
    assert draw_kit_numbers(50, Drbg(SEED, "a")) != draw_kit_numbers(50, Drbg(OTHER_SEED, "a"))
    assert draw_kit_numbers(50, Drbg(SEED, "a")) != draw_kit_numbers(50, Drbg(SEED, "b"))


def test_draw_refuses_when_the_number_space_is_exhausted():
    with pytest.raises(ValueError, match="exhausted"):
        draw_kit_numbers(NUMBER_SPACE + 1, Drbg(SEED))
    with pytest.raises(ValueError):
        draw_kit_numbers(-1, Drbg(SEED))


def test_draw_finds_the_last_free_numbers():
    every = [kit_number(body) for body in range(BODY_MIN, BODY_MAX + 1)]
    free, taken = every[:10], every[10:]
    assert sorted(draw_kit_numbers(10, Drbg(SEED), taken=taken)) == free
    with pytest.raises(ValueError, match="exhausted"):
        draw_kit_numbers(11, Drbg(SEED), taken=taken)


# Generating a kit list


def test_generated_list_is_reproducible_and_seed_dependent():
    assert make_list() == make_list()
    assert make_list() != make_list(seed=OTHER_SEED)
    assert make_list() != make_list(lot="PL-002")


def test_generated_list_has_the_counts_asked_for_sorted_by_number():
    kits = make_list(A=30, P=20)
    assert [k.number for k in kits] == sorted(k.number for k in kits)
    assert sum(k.treatment == "A" for k in kits) == 30
    assert sum(k.treatment == "P" for k in kits) == 20
    assert {(k.kit_type, k.lot, k.expiry) for k in kits} == {("GSK-SC", "PL-001", EXPIRY)}
    assert verify_kit_list(kits, treatments=TREATMENTS) == []


def test_generated_list_avoids_taken_numbers():
    first = make_list()
    second = generate_kit_list(
        seed=SEED,
        kit_type="GSK-SC",
        lot="PL-001",
        expiry=EXPIRY,
        per_treatment={"A": 100, "P": 100},
        taken=[k.number for k in first],
    )
    assert not {k.number for k in first} & {k.number for k in second}


def test_kit_numbers_do_not_depend_on_the_arms():
    # Noninterference: the numbers come from the seed, lot and kit count alone.
    numbers = [k.number for k in make_list(A=100, P=100)]
    assert [k.number for k in make_list(A=150, P=50)] == numbers
    assert [k.number for k in make_list(Active=100, Placebo=100)] == numbers


@pytest.mark.parametrize("seed", [SEED, OTHER_SEED, bytes(32), b"\xff" * 32, bytes(range(32, 64))])
def test_kit_numbers_are_not_separable_by_arm(seed: bytes):
    kits = make_list(seed=seed)
    arms = [k.treatment for k in kits]  # in kit number order
    changes = sum(a != b for a, b in itertools.pairwise(arms))
    longest_run = max(len(list(run)) for _, run in itertools.groupby(arms))
    assert changes > 60  # about 100 expected for a random interleaving
    assert longest_run < 20
    numbers = {arm: [int(k.number) for k in kits if k.treatment == arm] for arm in TREATMENTS}
    # No arm occupies a contiguous range: each arm's range contains kits of the other arm.
    for arm, other in (("A", "P"), ("P", "A")):
        low, high = min(numbers[arm]), max(numbers[arm])
        assert sum(low < n < high for n in numbers[other]) > 80


@pytest.mark.parametrize(
    "change",
    [{"lot": ""}, {"kit_type": ""}, {"per_treatment": {"A": -1}}, {"per_treatment": {"": 2}}],
)
def test_generate_refuses_bad_arguments(change: dict[str, object]):
    arguments: dict[str, object] = {
        "seed": SEED,
        "kit_type": "GSK-SC",
        "lot": "PL-001",
        "expiry": EXPIRY,
        "per_treatment": {"A": 1, "P": 1},
    }
    with pytest.raises(ValueError):
        generate_kit_list(**{**arguments, **change})  # type: ignore[arg-type]


# Importing a vendor CSV


def test_a_good_file_round_trips():
    kits = make_list(A=5, P=5)
    parsed, errors = parse(format_kit_list_csv(kits))
    assert errors == []
    assert parsed == kits


def test_import_accepts_any_column_order_extra_columns_spaces_bom_and_blank_lines():
    kits = make_list(A=2, P=2)
    lines = ["\ufeff vendor_ref , Expiry,lot,treatment,KIT_TYPE,kit_number "]
    for n, kit in enumerate(kits):
        lines.append(f"R{n}, {kit.expiry} ,{kit.lot}, {kit.treatment},{kit.kit_type} ,{kit.number}")
    lines.insert(2, "")
    parsed, errors = parse("\r\n".join(lines) + "\r\n")
    assert errors == []
    assert parsed == kits


def test_import_reports_every_bad_row_and_no_kits():
    good = make_list(A=2, P=2)
    bad_check = good[0].number[:6] + str((int(good[0].number[6]) + 1) % 10)
    rows = [
        f"{good[0].number},GSK-SC,A,PL-001,2027-06-30",  # row 1 good
        f"{bad_check},GSK-SC,A,PL-001,2027-06-30",  # row 2 check digit
        f"{good[1].number},GSK-XX,P,PL-001,2027-06-30",  # row 3 unknown type
        f"{good[2].number},GSK-SC,Z,PL-001,2027-06-30",  # row 4 unknown treatment
        f"{good[3].number},GSK-SC,A,PL-001,2025-01-01",  # row 5 expired
        f"{good[0].number},GSK-SC,P,PL-001,2027-06-30",  # row 6 duplicate of row 1
        "1000002,GSK-SC,P,,31/12/2027",  # row 7 empty lot, bad date
    ]
    parsed, errors = parse("\n".join([HEADER, *rows]))
    assert parsed == []
    found = {(e.row, e.field, e.rule) for e in errors}
    assert found == {
        (2, "kit_number", "check_digit"),
        (3, "kit_type", "unknown_type"),
        (4, "treatment", "unknown_treatment"),
        (5, "expiry", "expired"),
        (6, "kit_number", "duplicate_number"),
        (7, "lot", "empty"),
        (7, "expiry", "bad_date"),
    }
    for error in errors:
        assert error.message.startswith(f"row {error.row}, {error.field}: ")
    assert f"row 2, kit_number: {bad_check} fails its check digit" in [e.message for e in errors]


def test_import_refuses_numbers_already_in_use():
    kits = make_list(A=1, P=1)
    parsed, errors = parse(format_kit_list_csv(kits), taken=(kits[1].number,))
    assert parsed == []
    assert [(e.row, e.rule) for e in errors] == [(2, "duplicate_number")]


def test_import_reports_missing_columns_and_still_checks_the_rest():
    text = "kit_number,kit_type,lot\n1234567,GSK-SC,PL-001\n"
    parsed, errors = parse(text)
    assert parsed == []
    found = {(e.row, e.field, e.rule) for e in errors}
    assert (0, "treatment", "missing_column") in found
    assert (0, "expiry", "missing_column") in found
    assert (1, "kit_number", "check_digit") in found


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("", "empty"),
        ("  \n\n , \n", "empty"),
        (HEADER + "\n", "empty"),
        (HEADER + "\n1000002,GSK-SC,A,PL-001,2027-06-30,surplus\n", "column_count"),
        (HEADER + "\n1000002,GSK-SC,A,PL-001,2027-02-30\n", "bad_date"),
        (HEADER + "\n0100002,GSK-SC,A,PL-001,2027-06-30\n", "format"),
        ("kit_number,kit_number,kit_type,treatment,lot,expiry\n", "duplicate_column"),
        (HEADER + '\n"1000002,GSK-SC', "malformed_csv"),
    ],
)
def test_import_names_the_rule(text: str, rule: str):
    parsed, errors = parse(text)
    assert parsed == []
    assert rule in {e.rule for e in errors}


@PROPERTY
@given(text=st.text(max_size=300))
def test_import_never_raises_on_junk(text: str):
    parsed, errors = parse(text)
    assert (parsed == []) != (errors == [])


@PROPERTY
@given(rows=st.lists(st.lists(st.text(max_size=12), min_size=0, max_size=7), max_size=8))
def test_import_never_raises_on_junk_rows_under_a_good_header(rows: list[list[str]]):
    text = "\n".join([HEADER, *(",".join(row) for row in rows)])
    parsed, errors = parse(text)
    assert all(e.row >= 0 and e.message for e in errors)
    assert parsed == [] or errors == []


def test_long_junk_is_not_echoed_whole():
    junk = "x" * 10_000
    _, errors = parse(f"{HEADER}\n{junk},GSK-SC,A,PL-001,2027-06-30\n")
    assert errors and all(len(e.message) < 200 for e in errors)


# Verifying a kit list


def test_verify_passes_a_generated_list_of_several_lots():
    kits = make_list(lot="PL-001", A=3, P=3) + make_list(lot="PL-002", A=2, P=2)
    assert verify_kit_list(kits, treatments=TREATMENTS) == []


def test_verify_reports_every_problem():
    kits = make_list(A=3, P=3)
    one_arm_lot = [replace(k, lot="PL-009", treatment="A") for k in make_list(lot="PL-009", A=2)]
    broken = [
        *kits,
        replace(kits[0], lot="PL-001"),  # duplicate number
        replace(kits[1], number=kits[1].number[:6] + "x"),  # bad check digit
        replace(kits[2], number="1000002", treatment="Z"),  # unknown treatment
        *one_arm_lot,  # lot without placebo
    ]
    errors = verify_kit_list(broken, treatments=TREATMENTS)
    found = {(e.row, e.field, e.rule) for e in errors}
    assert (7, "kit_number", "duplicate_number") in found
    assert (8, "kit_number", "check_digit") in found
    assert (9, "treatment", "unknown_treatment") in found
    assert (0, "lot", "lot_missing_treatment") in found
    assert any("PL-009" in e.message and "P" in e.message for e in errors)


# Lot balance and the rank test of kit numbers by treatment


def test_a_lot_out_of_balance_is_named_by_lot_with_every_bad_lot():
    kits = [*make_list(lot="L1", A=49, P=1), *make_list(lot="L2", A=5, P=4)]
    kits += make_list(lot="L3", A=2, P=9)
    errors = check_lot_balance(kits, ratios={"A": 1, "P": 1}, tolerance=2)
    assert [(e.field, e.rule) for e in errors] == [("lot", "lot_balance")] * 2
    assert ["L1" in errors[0].message, "L3" in errors[1].message] == [True, True]
    assert verify_kit_list(kits, treatments=TREATMENTS) == []  # without ratios: not checked
    checked = verify_kit_list(
        kits, treatments=TREATMENTS, ratios={"A": 1, "P": 1}, lot_balance_tolerance=2
    )
    assert [e.rule for e in checked] == ["lot_balance", "lot_balance"]


@pytest.mark.parametrize(
    ("counts", "tolerance", "bad"),
    [
        ({"A": 5, "P": 3}, 2, False),
        ({"A": 5, "P": 2}, 2, True),
        ({"A": 3, "P": 2}, 0, True),
        ({"A": 3, "P": 3}, 0, False),
    ],
)
def test_lot_balance_compares_counts_with_the_tolerance(counts, tolerance, bad):
    errors = check_lot_balance(make_list(**counts), ratios={"A": 1, "P": 1}, tolerance=tolerance)
    assert bool(errors) is bad


def test_lot_balance_counts_per_unit_of_the_allocation_ratio():
    two_to_one = make_list(A=20, P=10)
    assert check_lot_balance(two_to_one, ratios={"A": 2, "P": 1}, tolerance=0) == []
    assert check_lot_balance(two_to_one, ratios={"A": 1, "P": 1}, tolerance=2) != []


@given(st.binary(min_size=32, max_size=32), st.integers(1, 30), st.integers(0, 1))
@settings(deadline=None, max_examples=100)
def test_generated_lots_pass_both_checks_by_construction(seed, per_arm, extra):
    kits = make_list(seed=seed, A=per_arm + extra, P=per_arm)
    assert check_lot_balance(kits, ratios={"A": 1, "P": 1}, tolerance=1) == []
    assert not number_rank_test(kits).warning


def test_a_list_numbered_by_arm_warns():
    kits = make_list(A=20, P=20)
    ordered = sorted(k.number for k in kits)
    split = [replace(k, treatment="A" if k.number in ordered[:20] else "P") for k in kits]
    result = number_rank_test(split)
    assert result.warning and result.p_value < ALPHA
