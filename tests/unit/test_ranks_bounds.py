"""The kit-number rank test at its edges: one treatment, identical lists, a p-value equal to
alpha, the number 0, and Pearson's statistic summed over every cell with (r-1)(c-1) degrees
of freedom (found by `make mutation`; tests/MUTATION.md)."""

from __future__ import annotations

import math

import pytest

from blinding.ranks import RankTest, chi_square_independence, chi_square_sf, kit_number_rank_test


def test_one_treatment_alone_warns_of_nothing():
    assert kit_number_rank_test({"A": [5, 6, 7]}) == RankTest(p_value=1.0, warning=False)


def test_identical_lists_give_a_p_value_of_exactly_one():
    assert kit_number_rank_test({"A": [5, 6, 7], "P": [5, 6, 7]}).p_value == 1.0


def test_a_p_value_equal_to_alpha_is_no_warning():
    numbers = {"A": [3, 9, 14], "P": [4, 8, 20]}
    p_value = kit_number_rank_test(numbers).p_value
    assert not kit_number_rank_test(numbers, alpha=p_value).warning


def test_the_number_zero_takes_part_in_the_digit_and_residue_tests():
    evens, odds = list(range(0, 100, 2)), list(range(1, 100, 2))
    assert kit_number_rank_test({"A": evens, "P": odds}).warning


def test_pearsons_statistic_sums_every_cell_with_r_minus_1_times_c_minus_1_freedom():
    # 2 x 2, perfectly separated, 10 each: statistic 4 * 5 = 20 with 1 degree of freedom.
    assert chi_square_independence([[0] * 10, [1] * 10]) == pytest.approx(7.744216e-06, rel=1e-5)
    assert chi_square_independence([[1, 2]]) == 1.0


@pytest.mark.parametrize("x", [0.5, 1.5, 3.0, 10.0, 40.0])
def test_the_chi_square_tail_matches_its_closed_forms(x):
    # df 1: erfc(sqrt(x / 2)); df 2: exp(-x / 2). Small x take the series, large x the fraction.
    assert chi_square_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-9)
    assert chi_square_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-9)
