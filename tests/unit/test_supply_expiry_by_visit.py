"""Do-not-dispense by visit (issue 12, finding 5) and the one definition of usable stock
(finding 6): a kit must last through the window end of the next dosing visit after the one
dispensed, plus the buffer, wherever in the window it is dispensed."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supply.expiry import ScheduleVisit, can_dispense, must_last_through, usable_kits
from supply.kit_choice import ShelfKit, choose_kit

DAY1 = date(2026, 3, 1)
BUFFER = 7
# The shipped protocol's schedule (iwrs/protocols/gensci048-204.toml).
SHIPPED = (
    ScheduleVisit("V1", 1, 0, 0, True),
    ScheduleVisit("V2", 29, 3, 3, True),
    ScheduleVisit("V3", 57, 3, 3, True),
    ScheduleVisit("V4", 85, 3, 3, True),
    ScheduleVisit("V5", 113, 3, 3, True),
    ScheduleVisit("V6", 141, 3, 3, True),
    ScheduleVisit("EOT", 169, 7, 7, False),
)


def on_day(day: int) -> date:
    return DAY1 + timedelta(days=day - 1)


@pytest.mark.parametrize(
    ("visit", "through"),
    [
        ("V1", on_day(32)),  # V2's window end: day 29 + 3
        ("V2", on_day(60)),  # V3's window end
        ("V5", on_day(144)),  # V6's
        ("V6", on_day(176)),  # the last dosing visit: the end-of-treatment visit's window end
    ],
)
def test_a_kit_lasts_through_the_next_dosing_visits_window_end(visit: str, through: date):
    assert must_last_through(SHIPPED, day1=DAY1, dispensed=visit) == through


def test_without_any_later_visit_the_kit_lasts_through_its_own_window_end():
    schedule = SHIPPED[:6]
    assert must_last_through(schedule, day1=DAY1, dispensed="V6") == on_day(144)


@pytest.mark.parametrize("visit", ["EOT", "V9"])
def test_a_visit_that_is_not_a_dosing_visit_is_refused(visit: str):
    with pytest.raises(ValueError):
        must_last_through(SHIPPED, day1=DAY1, dispensed=visit)


@pytest.mark.parametrize("day", [26, 29, 32])  # V2 early, on target, late
def test_the_issues_case_a_kit_expiring_between_v2_and_v3_is_never_dispensed_at_v2(day: int):
    through = must_last_through(SHIPPED, day1=DAY1, dispensed="V2")
    today = on_day(day)
    for expiry, dispensed in [
        (on_day(45), False),  # between V2 and V3: the issue's kit
        (on_day(66), False),  # V3's window end (day 60) + 6
        (on_day(67), True),  # V3's window end + 7
    ]:
        assert (
            can_dispense(expiry, today, through=through, do_not_dispense_days=BUFFER) is dispensed
        )


@st.composite
def schedules(draw: st.DrawFn) -> tuple[ScheduleVisit, ...]:
    """Visits whose windows do not overlap, some dosing; the first is a dosing visit on day 1."""
    visits = [ScheduleVisit("V1", 1, 0, draw(st.integers(0, 3)), True)]
    for n in range(draw(st.integers(1, 6))):
        before, after = draw(st.integers(0, 7)), draw(st.integers(0, 7))
        last = visits[-1]
        day = last.day + last.window_after + before + draw(st.integers(1, 40))
        visits.append(ScheduleVisit(f"V{n + 2}", day, before, after, draw(st.booleans())))
    return tuple(visits)


@given(
    schedule=schedules(),
    pick=st.integers(0, 10),
    shift=st.integers(-7, 7),
    expiries=st.lists(st.integers(-5, 400), min_size=1, max_size=12),
    buffer=st.integers(0, 14),
)
def test_no_kit_expiring_before_the_next_dosing_window_end_plus_buffer_is_dispensed_and_no_usable_kit_is_refused(  # noqa: E501
    schedule: tuple[ScheduleVisit, ...], pick: int, shift: int, expiries: list[int], buffer: int
) -> None:
    dosing = [v for v in schedule if v.doses]
    visit = dosing[pick % len(dosing)]
    # A dispensing day anywhere in the visit's window (early, on target, late).
    shift = max(-visit.window_before, min(visit.window_after, shift))
    today = DAY1 + timedelta(days=visit.day - 1 + shift)
    # The rule stated independently: the next dosing visit after this one, else the next
    # visit, else this one; the kit must be usable through its window end + the buffer.
    later = [v for v in schedule if v.day > visit.day]
    serves = next((v for v in later if v.doses), later[0] if later else visit)
    edge = DAY1 + timedelta(days=serves.day - 1 + serves.window_after + buffer)
    shelf = [
        ShelfKit(f"{n:07d}", f"L{offset:03d}", DAY1 + timedelta(days=offset))
        for n, offset in enumerate(expiries)
    ]
    through = must_last_through(schedule, day1=DAY1, dispensed=visit.code)
    usable = usable_kits(
        ((kit, kit.expiry) for kit in shelf),
        today=today,
        through=through,
        do_not_dispense_days=buffer,
    )
    assert usable == [kit for kit in shelf if kit.expiry >= edge]
    # The same kits pass whenever in the window the visit is done.
    for day in (visit.day - visit.window_before, visit.day, visit.day + visit.window_after):
        other = DAY1 + timedelta(days=day - 1)
        assert [
            kit
            for kit in shelf
            if can_dispense(kit.expiry, other, through=through, do_not_dispense_days=buffer)
        ] == usable
    # Kit choice over the usable shelf: never an unusable kit, and a kit whenever one is usable.
    chosen = choose_kit(usable, arm="A", treatment_of=lambda _: "A", rng_index=lambda n: n - 1)
    if usable:
        assert chosen is not None and next(k for k in shelf if k.number == chosen).expiry >= edge
    else:
        assert chosen is None
