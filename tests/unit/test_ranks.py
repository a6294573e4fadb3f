"""The rank test of kit numbers by treatment (Mann-Whitney U): exact and approximate p-values
agree with known values; a p-value never says which treatment numbers low."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blinding.ranks import (
    ALPHA,
    EXACT_MAX,
    chi_square_independence,
    chi_square_sf,
    kit_number_rank_test,
    rank_sum_p_value,
)


def test_exact_p_values_match_the_u_distribution():
    # 3 vs 3 completely separated: 2 orderings of C(6, 3) = 20 are as extreme, both sides.
    assert rank_sum_p_value([1, 2, 3], [4, 5, 6]) == pytest.approx(2 / 20)
    assert rank_sum_p_value([1, 5, 3], [4, 2, 6]) == pytest.approx(1.0, abs=0.7)
    assert rank_sum_p_value([], [1, 2]) == 1.0


def test_the_normal_approximation_takes_over_for_large_samples():
    low, high = list(range(0, 100)), list(range(100, 200))
    assert len(low) * len(high) > EXACT_MAX
    assert rank_sum_p_value(low, high) < 1e-30
    interleaved = rank_sum_p_value(list(range(0, 200, 2)), list(range(1, 200, 2)))
    assert interleaved > 0.5


@given(st.lists(st.integers(0, 10**6), min_size=2, max_size=60, unique=True), st.data())
@settings(deadline=None, max_examples=200)
def test_the_p_value_is_symmetric_in_the_treatments(numbers, data):
    cut = data.draw(st.integers(1, len(numbers) - 1))
    first, second = numbers[:cut], numbers[cut:]
    p = rank_sum_p_value(first, second)
    assert 0 <= p <= 1
    assert p == pytest.approx(rank_sum_p_value(second, first))
    # Mirroring the numbers (low <-> high) gives the same p: no direction is recorded.
    assert p == pytest.approx(rank_sum_p_value([-n for n in first], [-n for n in second]))


def test_a_random_numbering_warns_about_as_often_as_alpha():
    rng = random.Random(2026)
    warnings = 0
    for _ in range(2000):
        numbers = rng.sample(range(1_000_000, 10_000_000), 40)
        result = kit_number_rank_test({"A": numbers[:20], "P": numbers[20:]})
        warnings += result.warning
    assert warnings <= 10  # 2 expected at ALPHA = 0.001


def test_three_treatments_take_the_smallest_pair_with_bonferroni():
    result = kit_number_rank_test({"A": [1, 2, 3, 4], "B": [5, 6, 7, 8], "C": [2.5, 6.5]})  # type: ignore[list-item]
    assert result.p_value == pytest.approx(min(1.0, 3 * 2 / math.comb(8, 4)))
    assert not kit_number_rank_test({"A": [1, 2]}).warning
    assert kit_number_rank_test({"A": list(range(30)), "P": list(range(30, 60))}).p_value < ALPHA


# --- numbers that encode the treatment without ranking it (issue 10, finding 5) -------------


def _numbers(rng: random.Random, count: int) -> list[int]:
    return rng.sample(range(10**5, 10**6), count)


@pytest.mark.parametrize(
    "code",
    [
        lambda n, arm: n * 2 + arm,  # parity: interleaved, so the rank sums are alike
        lambda n, arm: n * 10 + (3 if arm else 7),  # the last digit
        lambda n, arm: n // 10**4 * 10**4 + (arm * 3 + 2) * 10**3 + n % 10**3,  # a middle digit
        lambda n, arm: n * 3 + arm,  # a residue modulo 3
    ],
)
def test_numbers_that_encode_the_treatment_in_a_digit_or_residue_warn(code):
    rng = random.Random(20261129)
    numbers = {arm: [code(n, index) for n in _numbers(rng, 50)] for index, arm in enumerate("AP")}
    result = kit_number_rank_test(numbers)
    assert result.warning and result.p_value < ALPHA


def test_a_parity_code_passes_the_rank_sum_alone_but_not_the_kit_number_test():
    rng = random.Random(7)
    pool = sorted(_numbers(rng, 100))
    numbers = {"A": [n * 2 for n in pool[::2]], "P": [n * 2 + 1 for n in pool[1::2]]}
    assert rank_sum_p_value(numbers["A"], numbers["P"]) > 0.5  # the rank test is blind to it
    assert kit_number_rank_test(numbers).warning


def test_random_numberings_with_digit_checks_still_warn_about_as_often_as_alpha():
    rng = random.Random(11)
    warnings = 0
    for _ in range(300):
        numbers = _numbers(rng, 100)
        warnings += kit_number_rank_test({"A": numbers[:50], "P": numbers[50:]}).warning
    assert warnings <= 2


def test_a_small_lot_never_warns_on_digits_alone():
    # 4 + 4 kits cannot show a digit pattern at ALPHA, whatever their digits.
    assert not kit_number_rank_test({"A": [10, 12, 14, 16], "P": [11, 13, 15, 17]}).warning


def test_the_chi_square_tail_matches_known_values():
    assert chi_square_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-9)
    assert chi_square_sf(16.918977604620448, 9) == pytest.approx(0.05, rel=1e-9)
    assert chi_square_sf(2.0, 2) == pytest.approx(math.exp(-1), rel=1e-12)
    assert chi_square_sf(0.5, 9) == pytest.approx(0.99999, abs=1e-4)
    assert chi_square_sf(0, 3) == 1.0
    assert chi_square_independence([[0, 1] * 20, [0, 1] * 20]) == pytest.approx(1.0)
