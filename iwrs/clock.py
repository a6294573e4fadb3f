"""The one clock the application owns: every "now" and every clinical "today" comes from here
(tests set it).

Times are UTC instants. A date a rule uses (screening, age, washouts, windows, dispensing,
expiry) is a *place's* local date: `today(place)` takes anything with an IANA `time_zone`
(a site row, the protocol's depot or site entry). There is deliberately no `today()` without a
place: a bare UTC date is the wrong day for half the world (README rule 13, issue 12).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import current_app, has_app_context


class Zoned(Protocol):
    """A place with an IANA time zone name: a site, the depot (protocol), a protocol site."""

    @property
    def time_zone(self) -> str: ...


def system_now() -> datetime:
    return datetime.now(UTC)


def now() -> datetime:
    """Current time in UTC (timezone-aware), from the app's clock when one is set."""
    if has_app_context():
        source: Callable[[], datetime] = current_app.extensions.get("iwrs.clock", system_now)
        return source()
    return system_now()


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """The IANA zone `name`; raises KeyError for a name the tz database does not know."""
    try:
        if not name or name != name.strip():
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise KeyError(name) from None


def is_time_zone(name: object) -> bool:
    """Whether `name` is an IANA time zone name known to this machine's tz database."""
    if not isinstance(name, str):
        return False
    try:
        zone(name)
    except KeyError:
        return False
    return True


def local_time(moment: datetime, place: Zoned) -> datetime:
    """The UTC instant `moment` as wall-clock time at `place` (naive SQLite values are UTC)."""
    return as_utc(moment).astimezone(zone(place.time_zone))


def local_now(place: Zoned) -> datetime:
    """The current wall-clock time at `place` (aware, in the place's zone)."""
    return local_time(now(), place)


def today(place: Zoned) -> date:
    """The current calendar date at `place`: the date every clinical rule there uses."""
    return local_now(place).date()


def local_date(moment: datetime, place: Zoned) -> date:
    """The calendar date at `place` of the UTC instant `moment` (reports by day)."""
    return local_time(moment, place).date()


def start_of_day(day: date, place: Zoned) -> datetime:
    """The UTC instant at which `day` begins at `place` (midnight local, DST-aware)."""
    return datetime.combine(day, time.min, tzinfo=zone(place.time_zone)).astimezone(UTC)


def end_of_day(day: date, place: Zoned) -> datetime:
    """The UTC instant at which `day` ends at `place` (the next local midnight)."""
    return start_of_day(day + timedelta(days=1), place)


def set_clock(app, source: Callable[[], datetime]) -> None:  # type: ignore[no-untyped-def]
    """Replace the app's clock (tests, simulations)."""
    app.extensions["iwrs.clock"] = source


def as_utc(moment: datetime) -> datetime:
    """Treat a naive datetime read back from SQLite as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def day_text(value: date | datetime | str | None) -> str:
    """A date as DD-MMM-YYYY ("05-MAR-1965"), the unambiguous form trial sites use; empty for
    none. English month abbreviations whatever the server's locale, upper case as on CRFs.
    Pages show it through the `day` filter (iwrs/web/calendar.py); messages and receipts call it."""
    if value is None:
        return ""
    if isinstance(value, str):  # a recorded YYYY-MM-DD (a view's date kept as text)
        try:
            value = date.fromisoformat(value)
        except ValueError:
            return value
    return f"{value.day:02d}-{MONTHS[value.month - 1]}-{value.year:04d}"


def utc_text(moment: datetime | None, *, seconds: bool = False) -> str:
    """A stored time in UTC: "02-MAR-2026 23:30 UTC" (with `seconds`: "23:30:05"); empty for
    none."""
    if moment is None:
        return ""
    utc = as_utc(moment)
    shown = f"{utc:%H:%M:%S}" if seconds else f"{utc:%H:%M}"
    return f"{day_text(utc)} {shown} UTC"
