"""Dates a site states for a step it records later (screening, assessment, visit): the rule
that keeps them honest (issue 12).

A stated date is the site's calendar date of the step. It may not be in the future (the site's
local today) nor before the previous step (screening <= assessment <= randomization (day 1) <=
visits). A date before the site's local today is a back-dated entry and needs a reason. The
trail keeps both: the audit event's `after` has the stated date, its time is the entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from iwrs import clock
from iwrs.errors import InvalidInput

REASON_FIELD = "backdate_reason"


@dataclass(frozen=True)
class StatedDate:
    """The step's date and, if back-dated, the reason given (None when the date is today)."""

    on: date
    backdate_reason: str | None

    @property
    def backdated(self) -> bool:
        return self.backdate_reason is not None

    def audit_fields(self, field: str) -> dict[str, object]:
        """What the audit `after` records of the stated date."""
        return {field: self.on.isoformat(), "backdated": self.backdated}


def parse_stated_date_text(value: Any, field: str) -> date:
    """A `YYYY-MM-DD` string (or a date) as a date; anything else is refused by field + rule.
    Local helper until the shared date validators land (iwrs/validation.py)."""
    if isinstance(value, date):
        return value
    text = str(value).strip()
    try:
        if len(text) != 10:
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{field}: {value!r} is not a date (YYYY-MM-DD)", field=field, rule="date"
        ) from None


def stated_date(
    *,
    value: Any,
    field: str,
    site: clock.Zoned,
    not_before: date | None,
    previous_step: str,
    reason: str | None,
) -> StatedDate:
    """The step's date at `site`: `value` if given (checked), else the site's local today.

    Raises InvalidInput: `date` (not YYYY-MM-DD), `future_date` (after the site's today),
    `before_previous_step` (before `not_before`, the date of `previous_step`),
    `backdate_reason_required` (before the site's today without a reason)."""
    today = clock.today(site)
    if value is None or (isinstance(value, str) and not value.strip()):
        return StatedDate(today, None)
    on = parse_stated_date_text(value, field)
    if on > today:
        raise InvalidInput(
            f"{field}: {on} is in the future (today at the site is {today})",
            field=field,
            rule="future_date",
        )
    if not_before is not None and on < not_before:
        raise InvalidInput(
            f"{field}: {on} is before the {previous_step} ({not_before})",
            field=field,
            rule="before_previous_step",
        )
    if on == today:
        return StatedDate(on, None)
    why = (reason or "").strip()
    if not why:
        raise InvalidInput(
            f"{REASON_FIELD}: {field} {on} is before today at the site ({today}); "
            "a back-dated entry needs a reason",
            field=REASON_FIELD,
            rule="backdate_reason_required",
        )
    return StatedDate(on, why)
