"""Properties of the engine: order never matters, failing answers stay failing, missing data is
never eligible."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from iwrs.eligibility import Assessment
from tests.unit.test_eligibility import BASELINE, CTX, ENGINE

PROPERTY = settings(deadline=None, max_examples=200)
OMIT = "<omitted>"
AZATHIOPRINE = [{"drug": "azathioprine", "last_dose": "2026-03-01"}]

# Plausible answers for every field (the baseline one first): passing, failing and boundary values.
CHOICES: dict[str, list[Any]] = {
    "planned_day1": ["2026-03-20", "2026-04-30", "2026-03-02"],
    "childbearing_potential": ["yes", "no"],
    "diagnosis_ra": ["yes", "no"],
    "diagnosis_ssc": ["no", "yes"],
    "hrct_ild_confirmed": [OMIT, "yes", "no"],
    "hrct_date": ["2025-10-01", "2025-03-01", "2026-03-02"],
    "fvc_pct": ["70", "39.9", "40"],
    "dlco_pct": ["55", "30", "40"],
    "fev1_fvc": ["0.82", "0.69", "0.70"],
    "medications": [
        BASELINE["medications"],
        [],
        AZATHIOPRINE,
        [{"drug": "prednisone", "ongoing": True, "max_daily_dose_mg": 20}],
        [{"drug": "methotrexate", "ongoing": True, "dose_stable_since": "2026-02-01"}],
        [
            {"drug": "methotrexate", "ongoing": True, "dose_stable_since": "2020-01-01"},
            {"drug": "leflunomide", "ongoing": True, "dose_stable_since": "2020-01-01"},
            {"drug": "prednisolone", "last_dose": "2026-03-08", "max_daily_dose_mg": 5},
        ],
        [
            {"drug": "rituximab", "last_dose": "2025-10-01"},
            {"drug": "other:iguratimod", "ongoing": True},
        ],
        [{"drug": "tolizumab", "last_dose": "2026-01-01"}],
        [{"drug": "azathioprine"}],
    ],
    "rhc_done": [OMIT, "no", "yes"],
    "cardiac_index": ["not_done", "2.0", "3.1"],
    "lvef_pct": ["60", "29", "not_done"],
    "qt_ms": ["400", "480", "520"],
    "rr_ms": ["900", "1000", "600"],
    "heart_rate_bpm": [OMIT, "60", "100"],
    "mi_acs_pe_date": ["never", "2026-01-15", "2025-06-01"],
    "revascularisation_date": ["never", "2026-01-01"],
    "wbc": ["6.5", "2.99", "3.0"],
    "neutrophils": ["3.8", "1.49"],
    "platelets": ["250", "74.9"],
    "bilirubin": ["12", "40"],
    "bilirubin_uln": ["21", "17"],
    "alt": ["25", "130"],
    "alt_uln": ["40", "33"],
    "ast": ["22", "130"],
    "ast_uln": ["40", "33"],
    "egfr": ["90", "59.9", "60"],
    "creatinine": [OMIT, "70", "200"],
    "pregnancy_test": ["negative", "positive"],
    "hbsag": ["negative", "positive"],
    "hbcab": ["negative", "positive"],
    "hbv_dna": [OMIT, "undetectable", "detectable"],
    "hcv_ab": ["negative", "positive"],
    "hiv_ab": ["negative", "positive"],
    "treponemal_ab": ["negative", "positive"],
    "syphilis_needs_treatment": [OMIT, "no", "yes"],
    "infection_treatment_end": ["never", "ongoing", "2026-02-23", "2026-02-22"],
    "live_vaccine_date": ["never", "2025-12-02", "2025-12-01"],
    "covid_vaccine_date": ["2025-01-10", "2026-02-16"],
    "malignancy_history": [OMIT, "no", "yes"],
    "malignancy_date": ["never", "2021-03-02", "2021-03-01"],
    "investigational_product_date": ["never", "2025-12-02"],
    **{
        name: [value, "no" if value == "yes" else "yes"]
        for name, value in BASELINE.items()
        if name.startswith("attest_")
    },
}

# One answer (or a few that belong together) that fails a criterion whatever else is answered.
FAILING: list[tuple[str, dict[str, Any]]] = [
    ("I3", {"diagnosis_ra": "yes", "diagnosis_ssc": "yes"}),
    ("I4", {"hrct_ild_confirmed": "yes", "hrct_date": "2025-03-01"}),
    ("I5", {"fvc_pct": "39.9"}),
    ("I6", {"dlco_pct": "39.9"}),
    ("I7a", {"planned_day1": "2026-03-20", "medications": CHOICES["medications"][4]}),
    ("E2a", {"fev1_fvc": "0.69"}),
    ("E3.1", {"planned_day1": "2026-03-20", "medications": CHOICES["medications"][3]}),
    ("E3.2", {"planned_day1": "2026-03-20", "medications": AZATHIOPRINE}),
    ("E5.2", {"rhc_done": "yes", "cardiac_index": "2.0"}),
    ("E7a", {"infection_treatment_end": "ongoing"}),
    ("E8a", {"live_vaccine_date": "2025-12-02"}),
    ("E8c", {"covid_vaccine_date": "2026-02-16"}),
    ("E11", {"malignancy_history": "yes", "malignancy_date": "2021-03-02"}),
    ("E13.1b", {"lvef_pct": "29.9"}),
    ("E13.2a", {"mi_acs_pe_date": "2026-01-15"}),
    ("E13.4a", {"qt_ms": "480", "rr_ms": "1000"}),
    ("E14.1a", {"wbc": "2.99"}),
    ("E14.1b", {"neutrophils": "1.49"}),
    ("E14.2", {"platelets": "74.9"}),
    ("E14.3a", {"bilirubin": "31.6", "bilirubin_uln": "21"}),
    ("E14.3b", {"alt": "121", "alt_uln": "40"}),
    ("E14.3c", {"ast": "121", "ast_uln": "40"}),
    ("E14.4", {"egfr": "59.9"}),
    ("E15.1a", {"hbsag": "positive"}),
    ("E15.1b", {"hbcab": "positive", "hbv_dna": "detectable"}),
    ("E15.4", {"treponemal_ab": "positive", "syphilis_needs_treatment": "yes"}),
    ("E16", {"investigational_product_date": "2025-12-02"}),
    ("E17a", {"childbearing_potential": "yes", "pregnancy_test": "positive"}),
    *[
        (name[len("attest_") :].replace("_", "."), {name: CHOICES[name][1]})
        for name in CHOICES
        if name.startswith("attest_")
    ],
]

answer_sets = st.fixed_dictionaries(
    {name: st.sampled_from([*values, OMIT]) for name, values in CHOICES.items()}
).map(lambda answers: {k: v for k, v in answers.items() if v is not OMIT})


def judge(raw: dict[str, Any]) -> Assessment:
    answers, errors = ENGINE.parse(raw)
    assert errors == [] and ENGINE.validate(answers, CTX) == []
    return ENGINE.assess(answers, CTX)


def test_the_choices_cover_every_field_and_start_with_an_eligible_set():
    assert set(CHOICES) == {spec.name for spec in ENGINE.fields()}
    first = {name: values[0] for name, values in CHOICES.items() if values[0] is not OMIT}
    assert judge(first).outcome == "eligible"
    for number, patch in FAILING:
        found = judge({**first, **patch})
        assert [r.number for r in found.failing] == [number], number


@PROPERTY
@given(answer_sets, st.randoms(use_true_random=False))
def test_the_outcome_never_depends_on_the_order_of_answers(raw, rng):
    names = list(raw)
    rng.shuffle(names)
    shuffled = {name: raw[name] for name in names}
    if isinstance(shuffled.get("medications"), list):
        shuffled["medications"] = rng.sample(shuffled["medications"], len(shuffled["medications"]))
    assert judge(shuffled) == judge(raw)


@PROPERTY
@given(answer_sets, st.sampled_from(FAILING))
def test_adding_a_failing_answer_always_makes_the_subject_not_eligible(raw, failing):
    number, patch = failing
    assessment = judge({**raw, **patch})
    assert assessment.outcome == "not_eligible"
    assert number in {r.number for r in assessment.failing}


@PROPERTY
@given(answer_sets, answer_sets)
def test_keeping_every_failing_answer_keeps_the_subject_not_eligible(first, other):
    assessment = judge(first)
    if assessment.outcome != "not_eligible":
        return
    kept = {name for r in assessment.failing for name in ENGINE.fields_for(r.number)}
    changed = {name: value for name, value in other.items() if name not in kept}
    changed.update({name: first[name] for name in kept if name in first})
    again = judge(changed)
    assert again.outcome == "not_eligible"
    assert {r.number for r in assessment.failing} <= {r.number for r in again.failing}


# The eligible baseline plus answers that are only needed when another is absent or positive.
EXTENDED = {
    **BASELINE,
    "heart_rate_bpm": "70",
    "creatinine": "70",
    "hbv_dna": "undetectable",
    "syphilis_needs_treatment": "no",
}
OPTIONAL = {"heart_rate_bpm", "rr_ms", "creatinine", "egfr", "hbv_dna", "syphilis_needs_treatment"}


def still_determined(removed: set[str]) -> bool:
    return (
        removed <= OPTIONAL
        and not {"rr_ms", "heart_rate_bpm"} <= removed
        and not {"egfr", "creatinine"} <= removed
    )


@PROPERTY
@given(st.sets(st.sampled_from(sorted(EXTENDED)), min_size=1))
def test_removing_answers_never_yields_eligible_unless_nothing_needed_was_removed(removed):
    assert judge(EXTENDED).outcome == "eligible"
    assessment = judge({name: value for name, value in EXTENDED.items() if name not in removed})
    assert assessment.outcome == ("eligible" if still_determined(removed) else "incomplete")
    assert set(assessment.missing_fields) <= removed


@PROPERTY
@given(answer_sets)
def test_missing_data_is_never_a_pass(raw):
    for r in judge(raw).results:
        if r.missing:
            assert r.status == "missing"
        assert r.status in ("pass", "fail", "missing", "not_applicable")
