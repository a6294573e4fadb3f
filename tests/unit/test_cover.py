"""Days of cover (supply/cover.py): the first day the usable kits are short of what the visits
and the expected randomizations need, and the warning before it."""

from __future__ import annotations

import pytest

from supply.cover import days_of_cover


def test_cover_ends_on_the_first_day_the_need_exceeds_the_stock():
    cover = days_of_cover(
        2, [(0, 1), (3, 1), (5, 1)], randomizations_per_week=0, day1_kits=1, warn_within=12
    )
    assert (cover.total, cover.days, cover.warn) == (2, 5, True)


def test_open_windows_count_today_and_expected_randomizations_add_day1_kits():
    # one a week: a day-1 kit on days 7, 14, ...; a visit whose window opened counts on day 0
    cover = days_of_cover(3, [(-2, 1)], randomizations_per_week=1, day1_kits=1, warn_within=5)
    assert (cover.days, cover.warn) == (21, False)


def test_no_cover_end_within_the_horizon_is_none_and_no_warning():
    cover = days_of_cover(
        50, [(10, 1)], randomizations_per_week=0, day1_kits=1, warn_within=12, horizon=60
    )
    assert (cover.days, cover.warn) == (None, False)


def test_no_stock_and_a_visit_due_today_is_short_today():
    cover = days_of_cover(0, [(0, 1)], randomizations_per_week=0, day1_kits=1, warn_within=0)
    assert (cover.days, cover.warn) == (0, True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"total": -1},
        {"total": True},
        {"randomizations_per_week": float("nan")},
        {"warn_within": -1},
        {"demand": [(0, -1)]},
    ],
)
def test_bad_figures_are_refused(kwargs):
    given = {
        "total": 1,
        "demand": [],
        "randomizations_per_week": 0.0,
        "day1_kits": 1,
        "warn_within": 1,
    } | kwargs
    total, demand = given.pop("total"), given.pop("demand")
    with pytest.raises(ValueError):
        days_of_cover(total, demand, **given)
