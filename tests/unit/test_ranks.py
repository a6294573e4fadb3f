"""The rank test of kit numbers by treatment (Mann-Whitney U): exact and approximate p-values
agree with known values; a p-value never says which treatment numbers low."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blinding.ranks import ALPHA, EXACT_MAX, kit_number_rank_test, rank_sum_p_value


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
