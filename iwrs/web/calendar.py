"""Jinja filters that show stored UTC times with their zone and the site's local time."""

from __future__ import annotations

from datetime import date, datetime

from flask import Flask

from iwrs import clock


def day(value: date | datetime | str | None) -> str:
    """A date as DD-MMM-YYYY ("05-MAR-1965"), the unambiguous form trial sites use; empty for none
    (iwrs.clock.day_text)."""
    return clock.day_text(value)


def utc_time(moment: datetime | None, seconds: bool = False) -> str:
    """ "02-MAR-2026 23:30 UTC" (with `seconds`, "23:30:05 UTC"; empty for no time)."""
    return clock.utc_text(moment, seconds=seconds)


def site_time(moment: datetime | None, site: clock.Zoned | None) -> str:
    """The site's local time with its zone, then UTC: "03-MAR-2026 07:30 CST (Asia/Shanghai) ·
    02-MAR-2026 23:30 UTC"; UTC alone when no site (or zone) is concerned."""
    if moment is None:
        return ""
    if site is None or not getattr(site, "time_zone", None):
        return utc_time(moment)
    local = clock.local_time(moment, site)
    return f"{day(local)} {local:%H:%M %Z} ({site.time_zone}) · {utc_time(moment)}"


def day_input(value: object) -> str:
    """A date field's value as the person reads it: a date, or a stored YYYY-MM-DD text, as
    DD-MMM-YYYY; anything else (what was typed and refused) exactly as typed."""
    if isinstance(value, date):
        return day(value)
    text = "" if value is None else str(value)
    if len(text) == 10 and text[4] == "-" and text[7] == "-":
        try:
            return day(date.fromisoformat(text))
        except ValueError:
            return text
    return text


def site_today(site: clock.Zoned) -> date:
    """The site's current local date."""
    return clock.today(site)


def init_app(app: Flask) -> None:
    app.add_template_filter(day, "day")
    app.add_template_filter(day_input, "day_input")
    app.add_template_filter(site_time, "site_time")
    app.add_template_filter(utc_time, "utc_time")
    app.add_template_filter(site_today, "site_today")
