"""The one clock the application owns: every "now" and "today" comes from here (tests set it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

from flask import current_app, has_app_context


def system_now() -> datetime:
    return datetime.now(UTC)


def now() -> datetime:
    """Current time in UTC (timezone-aware), from the app's clock when one is set."""
    if has_app_context():
        source: Callable[[], datetime] = current_app.extensions.get("iwrs.clock", system_now)
        return source()
    return system_now()


def today() -> date:
    return now().date()


def set_clock(app, source: Callable[[], datetime]) -> None:  # type: ignore[no-untyped-def]
    """Replace the app's clock (tests, simulations)."""
    app.extensions["iwrs.clock"] = source


def as_utc(moment: datetime) -> datetime:
    """Treat a naive datetime read back from SQLite as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
