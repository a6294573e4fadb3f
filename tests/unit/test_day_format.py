"""Dates on pages read DD-MMM-YYYY (issue 15, problem 7): never a day/month order by locale."""

from datetime import date, datetime

from hypothesis import given
from hypothesis import strategies as st

from iwrs.web.calendar import day


def test_the_example_from_the_issue_reads_unambiguously() -> None:
    assert day(date(1965, 3, 5)) == "05-MAR-1965"
    assert day(datetime(2026, 12, 1, 23, 59)) == "01-DEC-2026"
    assert day(None) == ""


@given(st.dates(min_value=date(1000, 1, 1)))
def test_every_date_round_trips_through_its_text(value: date) -> None:
    assert datetime.strptime(day(value), "%d-%b-%Y").date() == value
