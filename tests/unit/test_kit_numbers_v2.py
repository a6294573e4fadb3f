"""kit-numbers-v2 (issue 13: 2,000,000 kits do not fit in v1's 900,000 numbers): 9-digit numbers
with a Damm check digit, distinct, never one already taken, reproducible from the seed; and
kit-numbers-v1 byte-identical to its output before v2 existed (a list re-derives from its seed
with the scheme recorded on its lot)."""

from __future__ import annotations

import hashlib
import itertools
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blinding.drbg import Drbg
from blinding.kits import (
    ALGORITHM,
    ALGORITHM_V2,
    ALGORITHMS,
    BODY_MAX_V2,
    BODY_MIN_V2,
    draw_kit_numbers,
    format_kit_list_csv,
    free_body_v2,
    generate_kit_list,
    is_valid_kit_number,
    kit_number,
    kit_number_algorithm,
    kit_number_v2,
    parse_kit_list_csv,
    partial_shuffle,
)

PROPERTY = settings(deadline=None, max_examples=80)
BODIES_V2 = st.integers(min_value=BODY_MIN_V2, max_value=BODY_MAX_V2)
EXPIRY = date(2027, 6, 30)

# sha256 of the CSV of three v1 lists, computed on the code before kit-numbers-v2 was added.
V1_LISTS_SHA256 = "599050fe85b30645a974186c64a9a714f3b32d11e7fe15b03ee2d3f9f91b6752"


def lot(seed: bytes, counts: dict[str, int], taken=(), algorithm: str = ALGORITHM):  # type: ignore[no-untyped-def]
    return generate_kit_list(
        seed=seed,
        kit_type="GSK-SC",
        lot="PL-001",
        expiry=EXPIRY,
        per_treatment=counts,
        taken=taken,
        algorithm=algorithm,
    )


def test_v1_lists_are_byte_identical_to_before_v2():
    digest = hashlib.sha256()
    for seed, counts, taken in [
        (bytes(range(32)), {"A": 100, "P": 100}, ()),
        (bytes(range(1, 33)), {"A": 500, "P": 250}, ()),
        (b"\x07" * 32, {"A": 60, "P": 60}, tuple(kit_number(b) for b in range(100_000, 100_500))),
    ]:
        digest.update(format_kit_list_csv(lot(seed, counts, taken)).encode())
    assert digest.hexdigest() == V1_LISTS_SHA256


def test_v1_ignores_v2_numbers_in_taken_and_v2_ignores_v1():
    v2_taken = [kit_number_v2(b) for b in range(BODY_MIN_V2, BODY_MIN_V2 + 300)]
    v1_taken = [kit_number(b) for b in range(100_000, 100_300)]
    for algorithm, other in ((ALGORITHM, v2_taken), (ALGORITHM_V2, v1_taken)):
        plain = draw_kit_numbers(50, Drbg(b"\x03" * 32, label="x"), algorithm=algorithm)
        mixed = draw_kit_numbers(
            50, Drbg(b"\x03" * 32, label="x"), taken=other, algorithm=algorithm
        )
        assert plain == mixed


@PROPERTY
@given(body=BODIES_V2)
def test_a_v2_number_is_9_digits_with_a_check_digit_that_catches_any_one_typo(body: int):
    number = kit_number_v2(body)
    assert len(number) == 9 and number[0] != "0" and number[:8] == str(body)
    assert is_valid_kit_number(number) and kit_number_algorithm(number) == ALGORITHM_V2
    for position, digit in itertools.product(range(9), "0123456789"):
        if number[position] != digit:
            assert not is_valid_kit_number(number[:position] + digit + number[position + 1 :])
    swapped = number[1] + number[0] + number[2:]
    assert swapped == number or not is_valid_kit_number(swapped)


@pytest.mark.parametrize("body", [BODY_MIN_V2 - 1, BODY_MAX_V2 + 1, 100_000])
def test_a_v2_body_outside_8_digits_is_refused(body: int):
    with pytest.raises(ValueError):
        kit_number_v2(body)


@pytest.mark.parametrize(
    "number", ["12345678", "1234567890", "012345674", "12345678a", kit_number_v2(BODY_MIN_V2)[:-1]]
)
def test_other_lengths_and_forms_are_no_kit_number(number: str):
    assert kit_number_algorithm(number) is None and not is_valid_kit_number(number)


@PROPERTY
@given(
    count=st.integers(min_value=0, max_value=200),
    taken=st.lists(BODIES_V2, max_size=50),
    seed=st.binary(min_size=32, max_size=32),
)
def test_v2_draws_distinct_valid_numbers_none_taken_same_from_the_same_seed(
    count: int, taken: list[int], seed: bytes
):
    taken_numbers = {kit_number_v2(b) for b in taken}
    drawn = draw_kit_numbers(
        count, Drbg(seed, label="kits/L"), taken=taken_numbers, algorithm=ALGORITHM_V2
    )
    assert len(drawn) == count == len(set(drawn))
    assert all(kit_number_algorithm(n) == ALGORITHM_V2 for n in drawn)
    assert not set(drawn) & taken_numbers
    again = draw_kit_numbers(
        count, Drbg(seed, label="kits/L"), taken=taken_numbers, algorithm=ALGORITHM_V2
    )
    assert again == drawn


@PROPERTY
@given(
    size=st.integers(min_value=1, max_value=300),
    share=st.floats(min_value=0, max_value=1),
    seed=st.binary(min_size=32, max_size=32),
)
def test_the_virtual_shuffle_is_v1s_list_shuffle(size: int, share: float, seed: bytes):
    count = int(size * share)
    pool = list(range(size))
    rng = Drbg(seed, label="shuffle")
    for i in range(count):
        j = i + rng.randbelow(len(pool) - i)
        pool[i], pool[j] = pool[j], pool[i]
    assert partial_shuffle(count, size, Drbg(seed, label="shuffle")) == pool[:count]


@PROPERTY
@given(taken=st.sets(st.integers(min_value=0, max_value=200), max_size=120))
def test_the_nth_free_body_skips_every_taken_body_in_order(taken: set[int]):
    taken_bodies = sorted(BODY_MIN_V2 + t for t in taken)
    free = [b for b in range(BODY_MIN_V2, BODY_MIN_V2 + 400) if b not in set(taken_bodies)]
    assert [free_body_v2(i, taken_bodies) for i in range(len(free) - 200)] == free[:-200]


def test_a_v2_list_is_balanced_sorted_9_digit_and_reproducible():
    first = lot(b"\x05" * 32, {"A": 150, "P": 150}, algorithm=ALGORITHM_V2)
    again = lot(b"\x05" * 32, {"A": 150, "P": 150}, algorithm=ALGORITHM_V2)
    assert first == again
    assert [k.number for k in first] == sorted(k.number for k in first)
    assert all(kit_number_algorithm(k.number) == ALGORITHM_V2 for k in first)
    assert sum(k.treatment == "A" for k in first) == 150
    assert first != lot(b"\x05" * 32, {"A": 150, "P": 150})  # v1 from the same seed differs


def test_an_unknown_scheme_is_refused():
    assert set(ALGORITHMS) == {"kit-numbers-v1", "kit-numbers-v2"}
    with pytest.raises(ValueError):
        draw_kit_numbers(1, Drbg(b"\x00" * 32, label="x"), algorithm="kit-numbers-v3")


def test_a_vendor_list_of_v2_numbers_imports_and_a_bad_one_names_its_rule():
    good = lot(b"\x06" * 32, {"A": 2, "P": 2}, algorithm=ALGORITHM_V2)
    text = format_kit_list_csv(good)
    kits, errors = parse_kit_list_csv(
        text, kit_types={"GSK-SC"}, treatments={"A", "P"}, today=date(2026, 3, 1)
    )
    assert errors == [] and kits == good
    bad_check = good[0].number[:-1] + str((int(good[0].number[-1]) + 1) % 10)
    rows = [f"{bad_check},GSK-SC,A,PL-001,2027-06-30", "12345678,GSK-SC,A,PL-001,2027-06-30"]
    _, errors = parse_kit_list_csv(
        "kit_number,kit_type,treatment,lot,expiry\n" + "\n".join(rows) + "\n",
        kit_types={"GSK-SC"},
        treatments={"A", "P"},
        today=date(2026, 3, 1),
    )
    assert [(e.row, e.field, e.rule) for e in errors] == [
        (1, "kit_number", "check_digit"),
        (2, "kit_number", "format"),
    ]
