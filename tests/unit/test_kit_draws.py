"""Kit-number draws and lists at their lower bounds: none wanted, a treatment of count 0, and a
lot's balance reported for the file, not a row (found by `make mutation`)."""

from __future__ import annotations

from datetime import date

from blinding.drbg import Drbg
from blinding.kits import (
    KitSpec,
    damm_check_digit,
    draw_kit_numbers,
    generate_kit_list,
    kit_number,
    verify_kit_list,
)

SEED = bytes(range(32))


def test_drawing_no_kit_numbers_gives_none():
    assert draw_kit_numbers(0, Drbg(SEED)) == []


def test_a_treatment_of_count_zero_gives_a_list_of_the_others():
    kits = generate_kit_list(
        seed=SEED,
        kit_type="GSK-SC",
        lot="PL-001",
        expiry=date(2027, 6, 30),
        per_treatment={"A": 2, "P": 0},
    )
    assert sorted(k.treatment for k in kits) == ["A", "A"]


def test_a_lot_out_of_balance_is_reported_for_the_file_by_lot():
    kits = [
        KitSpec(kit_number(100_001 + n), "GSK-SC", code, "PL-001", date(2027, 6, 30))
        for n, code in enumerate("AAP")
    ]
    errors = verify_kit_list(kits, treatments={"A", "P"}, ratios={"A": 1, "P": 1})
    assert [(e.row, e.field, e.rule) for e in errors] == [(0, "lot", "lot_balance")]


def test_a_check_digit_takes_every_digit():
    assert damm_check_digit("572") == "4"  # the worked example of the Damm algorithm
    assert damm_check_digit("0123456789") in "0123456789"


def test_a_large_draw_never_repeats_a_number():
    # 5,000 of 900,000: about 14 repeats expected if drawn numbers were not set aside.
    drawn = draw_kit_numbers(5_000, Drbg(SEED, "large"))
    assert len(set(drawn)) == 5_000
