"""The one date entry of pages and API (issue 15, problem 7): DD-MMM-YYYY or YYYY-MM-DD, and
never a guess: 05031965 became 3 May 1965 in a browser's locale date input."""

from __future__ import annotations

from datetime import date

import pytest

from iwrs.errors import InvalidInput
from iwrs.inputs import DayDate, Input, load


class _Birth(Input):
    date_of_birth = DayDate(required=True)


ACCEPTED = [
    ("05-MAR-1965", date(1965, 3, 5)),
    ("05-mar-1965", date(1965, 3, 5)),
    ("5-Mar-1965", date(1965, 3, 5)),
    (" 29-FEB-2024 ", date(2024, 2, 29)),
    ("1965-03-05", date(1965, 3, 5)),
    ("31-DEC-2026", date(2026, 12, 31)),
]
REFUSED = [
    ("05031965", "date_format"),  # the example: day-month or month-day?
    ("05/03/1965", "date_format"),
    ("03/05/1965", "date_format"),
    ("5.3.1965", "date_format"),
    ("1965/03/05", "date_format"),
    ("19650305", "date_format"),
    ("05-03-1965", "date_format"),
    ("5 March 1965", "date_format"),
    ("05-MÄR-1965", "date_format"),
    ("05-MAR-65", "date_format"),
    ("1965-W10-5", "date_format"),
    ("", "required"),
    ("31-FEB-2026", "date"),
    ("00-MAR-2026", "date"),
    ("05-XYZ-1965", "date"),
    ("2026-02-30", "date"),
]


@pytest.mark.parametrize(("typed", "meant"), ACCEPTED)
def test_an_unambiguous_date_is_accepted_as_its_day(typed, meant):
    assert load(_Birth, {"date_of_birth": typed}) == {"date_of_birth": meant.isoformat()}


@pytest.mark.parametrize(("typed", "rule"), REFUSED)
def test_an_ambiguous_or_impossible_date_is_refused_by_field_and_rule(typed, rule):
    with pytest.raises(InvalidInput) as refused:
        load(_Birth, {"date_of_birth": typed})
    (problem,) = refused.value.problems()
    assert (problem["field"], problem["rule"]) == ("date_of_birth", rule)
