"""Date windows and washouts: the edge day is inside, the day before it outside, months clamp."""

from __future__ import annotations

import copy
import dataclasses
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iwrs.drugs import DrugDictionary
from iwrs.eligibility import Context, Engine, add_months, months_before
from tests.unit.test_eligibility import CTX, DAY1, PROTOCOL, SCREENING, assess, baseline, result

ONE_DAY = timedelta(days=1)


def status(engine_ctx: Context = CTX, engine: Engine | None = None, **changes) -> dict[str, str]:
    kwargs = {"ctx": engine_ctx} if engine is None else {"ctx": engine_ctx, "engine": engine}
    assessment = assess(baseline(**changes), **kwargs)
    return {r.number: r.status for r in assessment.results}


# ---------------------------------------------------------------- the arithmetic


@pytest.mark.parametrize(
    ("day", "months", "edge"),
    [
        (date(2026, 5, 31), 3, date(2026, 2, 28)),
        (date(2028, 5, 31), 3, date(2028, 2, 29)),
        (date(2026, 3, 31), 1, date(2026, 2, 28)),
        (date(2026, 3, 30), 1, date(2026, 2, 28)),
        (date(2026, 7, 31), 1, date(2026, 6, 30)),
        (date(2026, 1, 15), 3, date(2025, 10, 15)),
        (date(2028, 2, 29), 12, date(2027, 2, 28)),
        (date(2026, 3, 2), 60, date(2021, 3, 2)),
        (date(2026, 3, 20), 0, date(2026, 3, 20)),
    ],
)
def test_months_before_is_calendar_months_clamped_to_the_month_end(day, months, edge):
    assert months_before(day, months) == edge


def test_add_months_clamps_forward_too():
    assert add_months(date(2026, 1, 31), 1) == date(2026, 2, 28)
    assert add_months(date(2027, 12, 31), 2) == date(2028, 2, 29)


@settings(deadline=None, max_examples=200)
@given(st.dates(date(1900, 1, 1), date(2100, 12, 31)), st.integers(0, 240))
def test_months_before_keeps_the_day_unless_the_month_is_shorter(day, months):
    edge = months_before(day, months)
    assert (day.year * 12 + day.month) - (edge.year * 12 + edge.month) == months
    assert edge.day == day.day or (edge.day < day.day and (edge + ONE_DAY).day == 1)


# ---------------------------------------------------------------- history windows


# (criterion, field, first day inside the window); reference = the screening date, 2 March 2026
HISTORY_WINDOWS = [
    ("E7a", "infection_treatment_end", date(2026, 2, 23)),  # 7 days
    ("E8a", "live_vaccine_date", date(2025, 12, 2)),  # 3 months
    ("E8c", "covid_vaccine_date", date(2026, 2, 16)),  # 2 weeks
    ("E11", "malignancy_date", date(2021, 3, 2)),  # 5 years
    ("E13.2a", "mi_acs_pe_date", date(2025, 12, 2)),  # 3 months
    ("E13.2b", "revascularisation_date", date(2025, 9, 2)),  # 6 months
    ("E16", "investigational_product_date", date(2025, 12, 2)),  # 3 months
]


@pytest.mark.parametrize(("number", "field", "edge"), HISTORY_WINDOWS)
def test_an_event_on_the_edge_day_excludes_and_the_day_before_does_not(number, field, edge):
    assert status(**{field: edge.isoformat()})[number] == "fail"
    assert status(**{field: (edge - ONE_DAY).isoformat()})[number] == "pass"
    assert status(**{field: (edge + ONE_DAY).isoformat()})[number] == "fail"
    assert status(**{field: SCREENING.isoformat()})[number] == "fail"
    # the window is open at its upper end: an event after screening (up to today) excludes
    assert status(**{field: (SCREENING + ONE_DAY).isoformat()})[number] == "fail"
    assert status(**{field: "never"})[number] == "pass"
    assert status(**{field: None})[number] == "missing"


def test_an_ongoing_infection_treatment_excludes():
    assert status(infection_treatment_end="ongoing")["E7a"] == "fail"


def test_hrct_must_be_within_12_months_before_screening():
    edge = date(2025, 3, 2)
    assert status(hrct_date=edge.isoformat())["I4"] == "pass"
    assert status(hrct_date=(edge - ONE_DAY).isoformat())["I4"] == "fail"
    assert status(hrct_date=(edge + ONE_DAY).isoformat())["I4"] == "pass"
    assert status(hrct_date=SCREENING.isoformat())["I4"] == "pass"
    assert status(hrct_date=None)["I4"] == "missing"


def test_hrct_window_clamps_from_a_29_february_screening():
    ctx = Context(date(2028, 2, 29), date(2028, 3, 1), date(1970, 6, 15), "female")
    changes = {"planned_day1": "2028-03-10", "medications": [], "covid_vaccine_date": "never"}
    assert status(ctx, hrct_date="2027-02-28", **changes)["I4"] == "pass"
    assert status(ctx, hrct_date="2027-02-27", **changes)["I4"] == "fail"


# ---------------------------------------------------------------- washouts


def last_dose(drug: str, day: date) -> list[dict]:
    return [{"drug": drug, "last_dose": day.isoformat()}]


# (criterion, first day inside the washout): E3.2-E3.3b before day 1 (20 March 2026), E3.3c before
# the screening date (2 March 2026)
WASHOUTS = [
    ("E3.2", date(2026, 1, 23)),  # 8 weeks = 56 days
    ("E3.3a", date(2025, 9, 20)),  # 6 months
    ("E3.3b", date(2025, 12, 20)),  # 3 months
    ("E3.3c", date(2026, 1, 31)),  # 30 days (longer than 5 half-lives of each drug)
]
DICTIONARY = DrugDictionary.from_table(PROTOCOL.eligibility_tables["drug_dictionary"])
WASHOUT_DRUGS = [
    (number, drug, edge)
    for number, edge in WASHOUTS
    for c in PROTOCOL.criteria
    if c.number == number
    for drug in DICTIONARY.in_classes(tuple(c.params["classes"]))
]


@pytest.mark.parametrize(("number", "drug", "edge"), WASHOUT_DRUGS)
def test_a_last_dose_on_the_edge_day_excludes_and_the_day_before_does_not(number, drug, edge):
    assert status(medications=last_dose(drug, edge))[number] == "fail"
    assert status(medications=last_dose(drug, edge - ONE_DAY))[number] == "pass"
    assert status(medications=last_dose(drug, edge + ONE_DAY))[number] == "fail"
    assert status(medications=[{"drug": drug, "ongoing": True}])[number] == "fail"


def test_washouts_need_the_planned_day1_and_the_medication_list():
    found = status(planned_day1=None)
    assert {found[n] for n in ("E3.1", "E3.2", "E3.3a", "E3.3b", "I7a")} == {"missing"}
    assert found["E3.3c"] == "pass"  # measured from the screening date
    assert status(medications=None)["E3.3c"] == "missing"


def test_a_drug_off_the_dictionary_stays_incomplete_until_the_investigator_classifies_it():
    meds = [{"drug": "other:baricitinib", "ongoing": True}]
    assessment = assess(baseline(medications=meds))
    assert assessment.outcome == "incomplete"
    assert "drug_class:baricitinib" in assessment.missing_fields
    classified = dataclasses.replace(CTX, drug_classes={"baricitinib": "washout_30_days"})
    assessment = assess(baseline(medications=meds), classified)
    assert assessment.outcome == "not_eligible"
    assert [r.number for r in assessment.failing] == ["E3.3c"]
    harmless = dataclasses.replace(CTX, drug_classes={"baricitinib": "not_restricted"})
    assert assess(baseline(medications=meds), harmless).outcome == "eligible"


def test_five_half_lives_apply_when_longer_than_30_days():
    tables = copy.deepcopy(PROTOCOL.eligibility_tables)
    tables["half_life_hours"]["tacrolimus"] = 200  # 5 x 200 h = 41.7 days -> 42 days
    engine = Engine(dataclasses.replace(PROTOCOL, eligibility_tables=tables))
    edge = SCREENING - timedelta(days=42)
    assert status(engine=engine, medications=last_dose("tacrolimus", edge))["E3.3c"] == "fail"
    assert (
        status(engine=engine, medications=last_dose("tacrolimus", edge - ONE_DAY))["E3.3c"]
        == "pass"
    )
    # the other drugs keep 30 days
    assert status(engine=engine, medications=last_dose("tofacitinib", edge))["E3.3c"] == "pass"


@pytest.mark.parametrize(
    ("screening", "day1", "edge"),
    [
        (date(2026, 5, 1), date(2026, 5, 31), date(2026, 2, 28)),
        (date(2028, 5, 1), date(2028, 5, 31), date(2028, 2, 29)),
    ],
)
def test_a_3_month_washout_from_31_may_starts_on_the_last_day_of_february(screening, day1, edge):
    ctx = Context(screening, screening + timedelta(days=9), date(1970, 6, 15), "female")
    changes = {"planned_day1": day1.isoformat(), "hrct_date": (screening - ONE_DAY).isoformat()}
    assert status(ctx, medications=last_dose("abatacept", edge), **changes)["E3.3b"] == "fail"
    assert (
        status(ctx, medications=last_dose("abatacept", edge - ONE_DAY), **changes)["E3.3b"]
        == "pass"
    )


@pytest.mark.parametrize(
    ("day", "expected"),
    [(date(2026, 3, 6), "fail"), (date(2026, 3, 5), "pass"), (date(2026, 3, 7), "fail")],
)
def test_glucocorticoid_window_is_the_14_days_before_day1(day, expected):
    meds = [{"drug": "prednisone", "last_dose": day.isoformat(), "max_daily_dose_mg": 20}]
    assert status(medications=meds)["E3.1"] == expected
    assert DAY1 - timedelta(days=14) == date(2026, 3, 6)


def test_glucocorticoid_detail_names_the_doses_and_the_window():
    meds = [
        {"drug": "prednisolone", "ongoing": True, "max_daily_dose_mg": 10},
        {"drug": "dexamethasone", "last_dose": "2026-03-08", "max_daily_dose_mg": 1.5},
    ]
    found = result(assess(baseline(medications=meds)), "E3.1")
    assert found.status == "fail"
    assert found.detail == (
        "prednisone-equivalent 20 mg/day within 2 weeks before day 1 (from 2026-03-06) "
        "(dexamethasone 10, prednisolone 10) > 15"
    )
