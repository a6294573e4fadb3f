"""The site's calendar (issue 12): local dates from the UTC clock, pure (no app context)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iwrs import clock


@dataclass(frozen=True)
class Place:
    time_zone: str


BEIJING = Place("Asia/Shanghai")
NEW_YORK = Place("America/New_York")
ZONES = ["Asia/Shanghai", "America/New_York", "UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"]


def test_0730_in_beijing_on_3_march_is_3_march_there_and_2_march_in_utc():
    moment = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)
    assert clock.local_date(moment, BEIJING) == date(2026, 3, 3)
    assert clock.local_time(moment, BEIJING).strftime("%H:%M %Z") == "07:30 CST"
    assert moment.date() == date(2026, 3, 2)  # the bug: the UTC date


def test_2200_in_new_york_is_still_the_day_before_utc():
    moment = datetime(2026, 3, 3, 3, 0, tzinfo=UTC)
    assert clock.local_date(moment, NEW_YORK) == date(2026, 3, 2)
    assert clock.local_date(moment, BEIJING) == date(2026, 3, 3)


def test_a_naive_value_read_back_from_sqlite_is_utc():
    assert clock.local_date(datetime(2026, 3, 2, 23, 30), BEIJING) == date(2026, 3, 3)


def test_new_york_days_follow_daylight_saving_time():
    # 8 March 2026: EST (UTC-5) -> EDT (UTC-4); the local day is 23 hours long.
    start = clock.start_of_day(date(2026, 3, 8), NEW_YORK)
    end = clock.end_of_day(date(2026, 3, 8), NEW_YORK)
    assert start == datetime(2026, 3, 8, 5, 0, tzinfo=UTC)
    assert end - start == timedelta(hours=23)


@pytest.mark.parametrize("name", ["Asia/Beijing", "Mars/Olympus", "", " UTC", "../etc/passwd", 8])
def test_unknown_zones_are_not_time_zones(name):
    assert not clock.is_time_zone(name)


@pytest.mark.parametrize("name", ZONES)
def test_known_zones_are_time_zones(name):
    assert clock.is_time_zone(name)


@given(
    moment=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    name=st.sampled_from(ZONES),
)
def test_every_instant_lies_inside_its_local_day(moment, name):
    place = Place(name)
    day = clock.local_date(moment, place)
    assert clock.start_of_day(day, place) <= moment < clock.end_of_day(day, place)
    # a local date is never more than a day away from the UTC date
    assert abs((day - moment.date()).days) <= 1


def test_there_is_no_today_without_a_place():
    with pytest.raises(TypeError):
        clock.today()  # type: ignore[call-arg]


def test_no_clinical_code_reads_a_bare_utc_date():
    """A later change cannot reintroduce a UTC "today": no `date.today()`, no `now().date()`."""
    from pathlib import Path

    root = Path(clock.__file__).resolve().parent
    offenders = [
        f"{path.relative_to(root)}: {needle}"
        for path in sorted(root.rglob("*.py"))
        for needle in ("date.today()", "now().date()", "clock.today()", "datetime.utcnow")
        if needle in path.read_text(encoding="utf-8")
    ]
    assert offenders == []
