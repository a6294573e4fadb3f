"""The eligibility engine: criteria as data, checks as code; each threshold judged on both sides."""

from __future__ import annotations

import ast
import copy
import dataclasses
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iwrs.eligibility as eligibility
from iwrs.eligibility import Assessment, Context, Engine, FieldSpec, ckd_epi_2021
from iwrs.eligibility_checks import CHECKS
from iwrs.protocol import Criterion, Protocol, load_protocol

PROTOCOL = load_protocol()
ENGINE = Engine(PROTOCOL)
SCREENING = date(2026, 3, 2)
TODAY = date(2026, 3, 10)
DAY1 = date(2026, 3, 20)
BORN = date(1970, 6, 15)
CTX = Context(screening_date=SCREENING, today=TODAY, date_of_birth=BORN, sex="female")
INCLUSION_ATTESTATIONS = ("attest_I1", "attest_I7b", "attest_I8")

# A fully eligible woman of childbearing potential with RA-ILD, as a web form would post it.
BASELINE: dict[str, Any] = {
    "planned_day1": DAY1.isoformat(),
    "childbearing_potential": "yes",
    "diagnosis_ra": "yes",
    "diagnosis_ssc": "no",
    "hrct_date": "2025-10-01",
    "fvc_pct": "70",
    "dlco_pct": "55",
    "fev1_fvc": "0.82",
    "medications": [
        {"drug": "methotrexate", "ongoing": True, "dose_stable_since": "2025-06-01"},
        {"drug": "prednisone", "ongoing": "yes", "max_daily_dose_mg": "10"},
        {"drug": "hydroxychloroquine", "ongoing": True},
    ],
    "cardiac_index": "not_done",
    "lvef_pct": "60",
    "qt_ms": "400",
    "rr_ms": "900",
    "mi_acs_pe_date": "never",
    "revascularisation_date": "never",
    "wbc": "6.5",
    "neutrophils": "3.8",
    "platelets": "250",
    "bilirubin": "12",
    "bilirubin_uln": "21",
    "alt": "25",
    "alt_uln": "40",
    "ast": "22",
    "ast_uln": "40",
    "egfr": "90",
    "pregnancy_test": "negative",
    "hbsag": "negative",
    "hbcab": "negative",
    "hcv_ab": "negative",
    "hiv_ab": "negative",
    "treponemal_ab": "negative",
    "infection_treatment_end": "never",
    "live_vaccine_date": "never",
    "covid_vaccine_date": "2025-01-10",
    "malignancy_date": "never",
    "investigational_product_date": "never",
    **{
        spec.name: "yes" if spec.name in INCLUSION_ATTESTATIONS else "no"
        for spec in ENGINE.fields()
        if spec.section == "Attestations"
    },
}


def baseline(**changes: Any) -> dict[str, Any]:
    """The eligible answers with some changed; a value of None removes the answer."""
    raw = copy.deepcopy(BASELINE)
    for name, value in changes.items():
        if value is None:
            raw.pop(name, None)
        else:
            raw[name] = value
    return raw


def assess(
    raw: dict[str, Any] | None = None, ctx: Context = CTX, engine: Engine = ENGINE
) -> Assessment:
    """Parse, validate (nothing may be refused) and assess."""
    answers, errors = engine.parse(baseline() if raw is None else raw)
    assert errors == []
    assert engine.validate(answers, ctx) == []
    return engine.assess(answers, ctx)


def result(assessment: Assessment, number: str) -> eligibility.CriterionResult:
    return next(r for r in assessment.results if r.number == number)


def status(raw: dict[str, Any], number: str, ctx: Context = CTX) -> str:
    return result(assess(raw, ctx), number).status


def refusals(raw: dict[str, Any], ctx: Context = CTX) -> list[eligibility.FieldError]:
    answers, errors = ENGINE.parse(raw)
    return errors + ENGINE.validate(answers, ctx)


def with_criterion(number: str, **params: Any) -> Protocol:
    """The shipped protocol with one criterion's params replaced (a key set to None is removed)."""
    criteria = []
    for c in PROTOCOL.criteria:
        if c.number == number:
            merged = {**c.params, **params}
            c = dataclasses.replace(c, params={k: v for k, v in merged.items() if v is not None})
        criteria.append(c)
    return dataclasses.replace(PROTOCOL, criteria=tuple(criteria))


# ---------------------------------------------------------------- the protocol and the engine


def test_baseline_is_eligible_with_its_stratum():
    assessment = assess()
    assert assessment.outcome == "eligible"
    assert assessment.failing == () and assessment.missing_fields == ()
    assert assessment.stratum == {"disease": "RA"}
    assert [r.number for r in assessment.results] == [c.number for c in PROTOCOL.criteria]
    assert assessment.computed["age"] == 55
    assert assessment.computed["egfr_source"] == "entered"


def test_ssc_subject_is_in_the_ssc_stratum():
    assessment = assess(baseline(diagnosis_ra="no", diagnosis_ssc="yes"))
    assert assessment.outcome == "eligible"
    assert assessment.stratum == {"disease": "SSc"}


def test_every_criterion_of_the_shipped_protocol_has_a_known_check():
    for criterion in PROTOCOL.criteria:
        assert criterion.params.get("check") in CHECKS, criterion.number
        assert ENGINE.fields_for(criterion.number) or criterion.params["check"] == "age_between"


def test_module_docstring_lists_every_check():
    for name in CHECKS:
        assert f"\n  {name} " in eligibility.__doc__


def test_fields_have_no_duplicates_and_attestations_come_last():
    names = [spec.name for spec in ENGINE.fields()]
    assert len(names) == len(set(names))
    sections = [spec.section for spec in ENGINE.fields()]
    assert sections[-1] == "Attestations" and sections[0] == "Demographics"
    # a section is never split across the form
    assert sections == sorted(sections, key=sections.index)
    kinds = {spec.kind for spec in ENGINE.fields()}
    assert kinds == {"date", "number", "choice", "yesno", "medications"}
    assert all(isinstance(spec, FieldSpec) for spec in ENGINE.fields())


def test_every_field_the_engine_asks_for_is_read_by_a_criterion():
    read = {name for c in PROTOCOL.criteria for name in ENGINE.fields_for(c.number)}
    assert read == {spec.name for spec in ENGINE.fields()}


@pytest.mark.parametrize(
    "module", ["iwrs/eligibility.py", "iwrs/eligibility_checks.py", "iwrs/drugs.py"]
)
def test_engine_is_pure(module: str):
    tree = ast.parse((Path(__file__).resolve().parents[2] / module).read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    outside = {name for name in imported if name.split(".")[0] in ("flask", "sqlalchemy", "iwrs")}
    assert outside <= {"iwrs.protocol", "iwrs.eligibility_checks", "iwrs.drugs"}
    assert not imported & {"os", "pathlib", "io", "time", "random", "socket", "subprocess"}


@pytest.mark.parametrize(
    ("number", "params", "message"),
    [
        ("I5", {"check": None}, "criterion I5: param 'check'"),
        ("I5", {"check": "vibes"}, "criterion I5: param 'check': 'vibes' is not a check"),
        ("I5", {"limit": None}, "criterion I5: param 'limit': is required"),
        ("I5", {"limit": "forty"}, "criterion I5: param 'limit': must be a number"),
        ("I5", {"op": "=>"}, "criterion I5: param 'op': must be one of"),
        ("I5", {"limt": 40}, "criterion I5: param 'limt': is not a parameter of check 'compare'"),
        ("I5", {"value": "fvc"}, "criterion I5: param 'value': 'fvc' is not a number field"),
        ("I4", {"weeks": 2}, "criterion I4: param 'days': exactly one of"),
        ("I4", {"reference": "consent"}, "criterion I4: param 'reference': must be one of"),
        ("I3", {"levels": ["RA", "ILD"]}, "criterion I3: param 'levels': 'ILD' is not a level"),
        ("E3.3c", {"drugs": ["baricitinib"]}, "criterion E3.3c: param 'half_lives'"),
        ("E15.1b", {"and_positive": "yes"}, "criterion E15.1b: param 'and_positive'"),
        ("E3.2", {"drugs": ["Azathioprine"]}, "criterion E3.2: param 'drugs': 'Azathioprine' must"),
        ("E17a", {"only_sex": "women"}, "criterion E17a: param 'only_sex'"),
    ],
)
def test_engine_refuses_a_criterion_with_wrong_params(number: str, params: dict, message: str):
    with pytest.raises(ValueError) as refused:
        Engine(with_criterion(number, **params))
    assert message in str(refused.value)


def test_engine_refuses_unknown_settings_and_bad_field_definitions():
    tables = copy.deepcopy(PROTOCOL.eligibility_tables)
    with pytest.raises(ValueError, match="eligibility.prednisone_equivalents: unknown setting"):
        Engine(
            dataclasses.replace(
                PROTOCOL, eligibility_tables={**tables, "prednisone_equivalents": {}}
            )
        )
    tables["fields"]["fvc_pct"]["kind"] = "float"
    with pytest.raises(ValueError, match="eligibility.fields.fvc_pct.kind: must be one of"):
        Engine(dataclasses.replace(PROTOCOL, eligibility_tables=tables))
    tables = copy.deepcopy(PROTOCOL.eligibility_tables)
    del tables["fields"]["qt_ms"]
    with pytest.raises(ValueError, match="criterion E13.4a: field 'qt_ms': not defined"):
        Engine(dataclasses.replace(PROTOCOL, eligibility_tables=tables))


# ---------------------------------------------------------------- outcome rule


def test_every_failing_and_missing_criterion_is_reported():
    raw = baseline(fvc_pct="30", wbc="2", hbsag=None, attest_E18="yes")
    assessment = assess(raw)
    assert assessment.outcome == "not_eligible"
    assert [r.number for r in assessment.failing] == ["I5", "E14.1a", "E18"]
    assert assessment.missing_fields == ("hbsag",)
    assert result(assessment, "E15.1a").status == "missing"


def test_missing_answers_make_the_assessment_incomplete_never_eligible():
    assessment = assess(baseline(fvc_pct=None, medications=None))
    assert assessment.outcome == "incomplete"
    assert set(assessment.missing_fields) == {"fvc_pct", "medications"}
    assert result(assessment, "E3.2").missing == ("medications",)


def test_no_answers_at_all_is_incomplete():
    assessment = ENGINE.assess({}, CTX)
    assert assessment.outcome == "incomplete"
    assert assessment.stratum is None
    assert "planned_day1" in assessment.missing_fields


def test_an_empty_medication_list_means_none_taken():
    assert assess(baseline(medications=[])).outcome == "eligible"


# ---------------------------------------------------------------- attestations


ATTESTATIONS = [c for c in PROTOCOL.criteria if c.params["check"] == "attestation"]


@pytest.mark.parametrize("criterion", ATTESTATIONS, ids=lambda c: c.number)
def test_attestation_yes_passes_an_inclusion_and_fails_an_exclusion(criterion: Criterion):
    field = "attest_" + criterion.number.replace(".", "_")
    inclusion = criterion.type == "inclusion"
    assert status(baseline(**{field: "yes"}), criterion.number) == ("pass" if inclusion else "fail")
    assert status(baseline(**{field: "no"}), criterion.number) == ("fail" if inclusion else "pass")
    assert status(baseline(**{field: None}), criterion.number) == "missing"
    assert ENGINE.fields_for(criterion.number) == (field,)


# ---------------------------------------------------------------- age


def born_years_before(years: int, on: date = SCREENING, days: int = 0) -> date:
    return date(on.year - years, on.month, on.day) + timedelta(days=days)


@pytest.mark.parametrize(
    ("born", "expected", "detail"),
    [
        (born_years_before(18), "pass", "age 18 at 2026-03-02: within 18-75"),
        (born_years_before(18, days=1), "fail", "age 17 at 2026-03-02: below 18"),
        (born_years_before(75), "pass", "age 75 at 2026-03-02: within 18-75"),
        (born_years_before(76, days=1), "pass", "age 75 at 2026-03-02: within 18-75"),
        (born_years_before(76), "fail", "age 76 at 2026-03-02: above 75"),
    ],
)
def test_age_18_to_75_inclusive_in_completed_years_at_screening(
    born: date, expected: str, detail: str
):
    ctx = dataclasses.replace(CTX, date_of_birth=born)
    found = result(assess(ctx=ctx), "I2")
    assert (found.status, found.detail) == (expected, detail)


@pytest.mark.parametrize(
    ("screening", "age"),
    [
        (date(2026, 2, 28), 17),
        (date(2026, 3, 1), 18),
        (date(2028, 2, 28), 19),
        (date(2028, 2, 29), 20),
    ],
)
def test_a_29_february_birthday_is_reached_on_1_march_in_common_years(screening: date, age: int):
    ctx = Context(screening, screening, date(2008, 2, 29), "male")
    assert eligibility.completed_years(date(2008, 2, 29), screening) == age
    assert ENGINE.assess({}, ctx).computed["age"] == age


# ---------------------------------------------------------------- diagnosis and stratum


@pytest.mark.parametrize(
    ("ra", "ssc", "expected", "stratum"),
    [
        ("yes", "no", "pass", {"disease": "RA"}),
        ("no", "yes", "pass", {"disease": "SSc"}),
        ("yes", "yes", "fail", None),
        ("no", "no", "fail", None),
        ("yes", None, "missing", None),
        (None, "yes", "missing", None),
    ],
)
def test_exactly_one_diagnosis_and_it_is_the_stratum(ra, ssc, expected, stratum):
    assessment = assess(baseline(diagnosis_ra=ra, diagnosis_ssc=ssc))
    assert result(assessment, "I3").status == expected
    assert assessment.stratum == stratum


def test_stratum_is_derived_even_when_not_eligible():
    assessment = assess(baseline(fvc_pct="20"))
    assert assessment.outcome == "not_eligible" and assessment.stratum == {"disease": "RA"}


# ---------------------------------------------------------------- numeric thresholds


@pytest.mark.parametrize(
    ("number", "changes", "expected"),
    [
        ("I5", {"fvc_pct": "40"}, "pass"),
        ("I5", {"fvc_pct": "39.9"}, "fail"),
        ("I5", {"fvc_pct": "40.1"}, "pass"),
        ("I6", {"dlco_pct": "40"}, "pass"),
        ("I6", {"dlco_pct": "39.9"}, "fail"),
        ("I6", {"dlco_pct": "40.1"}, "pass"),
        ("E2a", {"fev1_fvc": "0.70"}, "pass"),
        ("E2a", {"fev1_fvc": "0.69"}, "fail"),
        ("E2a", {"fev1_fvc": "0.71"}, "pass"),
        ("E5.2", {"cardiac_index": "2.0"}, "fail"),
        ("E5.2", {"cardiac_index": "2.01"}, "pass"),
        ("E5.2", {"cardiac_index": "1.99"}, "fail"),
        ("E5.2", {"cardiac_index": "not_done"}, "not_applicable"),
        ("E5.2", {"cardiac_index": None}, "missing"),
        ("E13.1b", {"lvef_pct": "30"}, "pass"),
        ("E13.1b", {"lvef_pct": "29.9"}, "fail"),
        ("E13.1b", {"lvef_pct": "30.1"}, "pass"),
        ("E13.1b", {"lvef_pct": "NOT_DONE"}, "not_applicable"),
        ("E13.4a", {"qt_ms": "480", "rr_ms": "1000"}, "fail"),
        ("E13.4a", {"qt_ms": "479.9", "rr_ms": "1000"}, "pass"),
        ("E13.4a", {"qt_ms": "480.1", "rr_ms": "1000"}, "fail"),
        ("E13.4a", {"qt_ms": "480", "rr_ms": None, "heart_rate_bpm": "60"}, "fail"),
        ("E13.4a", {"qt_ms": "479.9", "rr_ms": None, "heart_rate_bpm": "60"}, "pass"),
        ("E13.4a", {"rr_ms": None}, "missing"),
        ("E14.1a", {"wbc": "3.0"}, "pass"),
        ("E14.1a", {"wbc": "2.99"}, "fail"),
        ("E14.1a", {"wbc": "3.01"}, "pass"),
        ("E14.1b", {"neutrophils": "1.5"}, "pass"),
        ("E14.1b", {"neutrophils": "1.49"}, "fail"),
        ("E14.1b", {"neutrophils": "1.51"}, "pass"),
        ("E14.2", {"platelets": "75"}, "pass"),
        ("E14.2", {"platelets": "74.9"}, "fail"),
        ("E14.2", {"platelets": "75.1"}, "pass"),
        ("E14.3a", {"bilirubin": "31.5", "bilirubin_uln": "21"}, "pass"),
        ("E14.3a", {"bilirubin": "31.6", "bilirubin_uln": "21"}, "fail"),
        ("E14.3a", {"bilirubin": "25.65", "bilirubin_uln": "17.1"}, "pass"),  # 1.5 × ULN exactly
        ("E14.3a", {"bilirubin": "25.66", "bilirubin_uln": "17.1"}, "fail"),
        ("E14.3a", {"bilirubin_uln": None}, "missing"),
        ("E14.3b", {"alt": "120", "alt_uln": "40"}, "pass"),
        ("E14.3b", {"alt": "120.1", "alt_uln": "40"}, "fail"),
        ("E14.3b", {"alt": "105.3", "alt_uln": "35.1"}, "pass"),  # 3 × ULN exactly
        ("E14.3b", {"alt": "105.31", "alt_uln": "35.1"}, "fail"),
        ("E14.3c", {"ast": "120", "ast_uln": "40"}, "pass"),
        ("E14.3c", {"ast": "120.1", "ast_uln": "40"}, "fail"),
        ("E14.3c", {"ast": "99", "ast_uln": "33"}, "pass"),
        ("E14.4", {"egfr": "60"}, "pass"),
        ("E14.4", {"egfr": "59.9"}, "fail"),
        ("E14.4", {"egfr": "60.1"}, "pass"),
    ],
)
def test_numeric_threshold_on_each_side_and_on_the_boundary(number, changes, expected):
    assert status(baseline(**changes), number) == expected


def test_qtcf_detail_and_value():
    assessment = assess(baseline(qt_ms="480", rr_ms="1000"))
    assert assessment.computed["qtcf_ms"] == 480.0
    assert result(assessment, "E13.4a").detail == "QTcF 480.0 ms (QT 480 ms, RR 1 s) ≥ 480"


def test_qtcf_prefers_the_rr_interval_over_the_heart_rate():
    both = assess(baseline(qt_ms="480", rr_ms="1000", heart_rate_bpm="75"))
    assert both.computed["qtcf_ms"] == 480.0


def test_qtcf_exponent_is_the_protocol_setting_not_fridericias_third():
    # 510 / 1.2^0.33 = 480.2 (excluded) but 510 / 1.2^(1/3) = 479.9 (not excluded)
    raw = baseline(qt_ms="510", rr_ms="1200")
    assert PROTOCOL.qtcf_exponent == 0.33
    assert 510 / 1.2**0.33 >= 480 > 510 / 1.2 ** (1 / 3)
    assert status(raw, "E13.4a") == "fail"
    fridericia = Engine(dataclasses.replace(PROTOCOL, qtcf_exponent=1 / 3))
    assert result(assess(raw, engine=fridericia), "E13.4a").status == "pass"


def test_ratio_to_uln_is_computed_on_the_decimals_entered():
    assessment = assess(
        baseline(bilirubin="25.65", bilirubin_uln="17.1", alt="105.3", alt_uln="35.1")
    )
    assert assessment.computed["bilirubin_x_uln"] == 1.5
    assert assessment.computed["alt_x_uln"] == 3.0
    assert "× ULN (17.1): not > 1.5" in result(assessment, "E14.3a").detail


# ---------------------------------------------------------------- eGFR


def ckd_epi(scr_mg_dl: float, age: int, female: bool) -> float:
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    value = 142 * min(scr_mg_dl / kappa, 1) ** alpha * max(scr_mg_dl / kappa, 1) ** -1.2
    return value * 0.9938**age * (1.012 if female else 1)


@pytest.mark.parametrize(
    ("umol", "age", "female", "about"),
    [(70.72, 50, True, 89.7), (106.08, 60, False, 69.0), (50.0, 30, True, 125.6)],
)
def test_ckd_epi_2021_matches_the_published_equation(umol, age, female, about):
    value = ckd_epi_2021(umol, age, female)
    assert value == pytest.approx(ckd_epi(umol / 88.4, age, female), abs=0.5)
    assert value == pytest.approx(about, abs=1.0)


def test_egfr_is_computed_from_creatinine_when_not_entered():
    ctx = dataclasses.replace(CTX, date_of_birth=born_years_before(50, days=-10))
    assessment = assess(baseline(egfr=None, creatinine="70.72"), ctx)
    assert assessment.computed["egfr_source"] == "ckd_epi_2021"
    assert assessment.computed["egfr"] == pytest.approx(ckd_epi(0.8, 50, True), abs=0.5)
    assert result(assessment, "E14.4").status == "pass"
    male = dataclasses.replace(ctx, sex="male", date_of_birth=born_years_before(60))
    high = assess(baseline(egfr=None, creatinine="130", childbearing_potential="no"), male)
    assert high.computed["egfr"] < 60 and result(high, "E14.4").status == "fail"


def test_an_entered_egfr_wins_over_creatinine():
    assessment = assess(baseline(egfr="75", creatinine="300"))
    assert assessment.computed["egfr"] == 75.0
    assert assessment.computed["egfr_source"] == "entered"
    assert result(assessment, "E14.4").status == "pass"


def test_egfr_without_either_input_is_missing():
    found = result(assess(baseline(egfr=None)), "E14.4")
    assert found.status == "missing" and found.missing == ("egfr", "creatinine")


# ---------------------------------------------------------------- serology and pregnancy


@pytest.mark.parametrize(
    ("number", "changes", "expected"),
    [
        ("E15.1a", {"hbsag": "positive"}, "fail"),
        ("E15.1a", {"hbsag": "negative"}, "pass"),
        ("E15.1b", {"hbcab": "positive"}, "missing"),
        ("E15.1b", {"hbcab": "positive", "hbv_dna": "undetectable"}, "pass"),
        ("E15.1b", {"hbcab": "positive", "hbv_dna": "detectable"}, "fail"),
        ("E15.1b", {"hbcab": "negative", "hbv_dna": "detectable"}, "pass"),
        ("E15.2", {"hcv_ab": "positive"}, "fail"),
        ("E15.3", {"hiv_ab": "Positive"}, "fail"),
        ("E15.4", {"treponemal_ab": "positive"}, "missing"),
        ("E15.4", {"treponemal_ab": "positive", "syphilis_needs_treatment": "no"}, "pass"),
        ("E15.4", {"treponemal_ab": "positive", "syphilis_needs_treatment": "yes"}, "fail"),
        ("E17a", {"pregnancy_test": "positive"}, "fail"),
        ("E17a", {"pregnancy_test": None}, "missing"),
        ("E17a", {"childbearing_potential": "no", "pregnancy_test": None}, "not_applicable"),
        ("E17a", {"childbearing_potential": None, "pregnancy_test": None}, "missing"),
    ],
)
def test_serology_and_pregnancy(number, changes, expected):
    assert status(baseline(**changes), number) == expected


def test_pregnancy_test_is_not_applicable_to_a_man():
    male = dataclasses.replace(CTX, sex="male")
    assessment = assess(baseline(pregnancy_test=None, childbearing_potential="yes"), male)
    assert result(assessment, "E17a").status == "not_applicable"
    assert assessment.outcome == "eligible"


# ---------------------------------------------------------------- glucocorticoids


def glucocorticoid(drug: str, mg: str, **entry: Any) -> dict[str, Any]:
    return {"drug": drug, "max_daily_dose_mg": mg, "ongoing": True, **entry}


@pytest.mark.parametrize(
    ("medications", "expected", "equivalent"),
    [
        ([glucocorticoid("prednisone", "15")], "pass", 15),
        ([glucocorticoid("prednisone", "15.01")], "fail", 15.01),
        ([glucocorticoid("prednisolone", "15")], "pass", 15),
        ([glucocorticoid("methylprednisolone", "12")], "pass", 15),
        ([glucocorticoid("methylprednisolone", "12.01")], "fail", 15.0125),
        ([glucocorticoid("dexamethasone", "2.25")], "pass", 15),
        ([glucocorticoid("betamethasone", "1.8")], "pass", 15),
        ([glucocorticoid("hydrocortisone", "60")], "pass", 15),
        ([glucocorticoid("hydrocortisone", "61")], "fail", 15.25),
        ([glucocorticoid("deflazacort", "18")], "pass", 15),
        ([glucocorticoid("prednisone", "10"), glucocorticoid("prednisolone", "5")], "pass", 15),
        (
            [glucocorticoid("prednisone", "10"), glucocorticoid("methylprednisolone", "4.1")],
            "fail",
            15.125,
        ),
        ([], "pass", 0),
    ],
)
def test_prednisone_equivalent_above_15_mg_is_excluded_and_several_are_summed(
    medications, expected, equivalent
):
    assessment = assess(baseline(medications=medications))
    assert result(assessment, "E3.1").status == expected
    assert assessment.computed["prednisone_equivalent_mg"] == pytest.approx(equivalent, abs=1e-12)


# ---------------------------------------------------------------- immunosuppressants (I7a)


def on(drug: str, stable: date | None = None, **entry: Any) -> dict[str, Any]:
    stable_since = {"dose_stable_since": stable.isoformat()} if stable else {}
    return {"drug": drug, "ongoing": True, **stable_since, **entry}


I7A_EDGE = date(2025, 12, 20)  # 20 March 2026 - 3 calendar months


@pytest.mark.parametrize(
    ("medications", "expected"),
    [
        ([], "pass"),
        ([on("methotrexate", I7A_EDGE)], "pass"),
        ([on("methotrexate", I7A_EDGE - timedelta(days=1))], "pass"),
        ([on("methotrexate", I7A_EDGE + timedelta(days=1))], "fail"),
        ([on("leflunomide", I7A_EDGE), on("methotrexate", date(2024, 1, 1))], "fail"),
        ([on("mycophenolate", I7A_EDGE), on("hydroxychloroquine")], "pass"),
        (
            [on("methotrexate", I7A_EDGE), {"drug": "leflunomide", "last_dose": "2025-12-19"}],
            "pass",
        ),
        (
            [on("methotrexate", I7A_EDGE), {"drug": "leflunomide", "last_dose": "2025-12-20"}],
            "fail",
        ),
        ([{"drug": "methotrexate", "last_dose": "2026-02-01"}], "fail"),
        ([on("hydroxychloroquine"), on("other:cyclophosphamide", I7A_EDGE)], "pass"),
        ([on("methotrexate", I7A_EDGE), on("other:cyclophosphamide", I7A_EDGE)], "fail"),
        ([on("methotrexate", I7A_EDGE), on("other:iguratimod")], "missing"),
    ],
)
def test_at_most_one_immunosuppressant_at_a_dose_stable_for_3_months(medications, expected):
    assert status(baseline(medications=medications), "I7a") == expected


# ---------------------------------------------------------------- parsing and plausibility


def refused(raw: dict[str, Any], ctx: Context = CTX) -> dict[str, eligibility.FieldError]:
    return {e.field: e for e in refusals(raw, ctx)}


def test_the_baseline_is_accepted_as_entered():
    assert refusals(baseline()) == []


@pytest.mark.parametrize(
    ("field", "value", "rule", "words"),
    [
        (
            "fvc_pct",
            "400",
            "range",
            "fvc_pct: 400 is outside the plausible range 1-200 % predicted",
        ),
        ("dlco_pct", "0.5", "range", "dlco_pct: 0.5 is outside the plausible range 1-200"),
        ("wbc", "5000", "range", "wbc: 5000 is outside the plausible range 0-1000 ×10⁹/L"),
        ("fev1_fvc", "70", "range", "enter as a fraction 0.10-1.50"),
        ("platelets", -1, "range", "platelets: -1 is outside the plausible range 0-5000 ×10⁹/L"),
        ("qt_ms", 1200, "range", "qt_ms: 1200 is outside the plausible range 100-1000 ms"),
        ("egfr", "300", "range", "mL/min/1.73 m²"),
        ("fvc_pct", "abc", "number", "fvc_pct: 'abc' is not a number (% predicted)"),
        ("fvc_pct", "nan", "number", "is not a number"),
        ("fvc_pct", True, "number", "is not a number"),
        ("fvc_pct", "not_done", "number", "is not a number"),
        ("cardiac_index", "n/a", "number", "is not a number or not_done (L/min/m²)"),
        ("hrct_date", "2026-13-45", "date", "hrct_date: '2026-13-45' is not a date DD-MMM-YYYY"),
        ("hrct_date", "01/02/2026", "date", "is not a date DD-MMM-YYYY"),
        ("hrct_date", "never", "date", "is not a date DD-MMM-YYYY"),
        ("live_vaccine_date", "ongoing", "date", "or 'never'"),
        ("hbsag", "pos", "choice", "hbsag: 'pos' is not one of positive, negative"),
        ("diagnosis_ra", "maybe", "yesno", "diagnosis_ra: 'maybe' is not yes or no"),
        ("bmi", "25", "unknown_field", "bmi: not a field of this protocol"),
    ],
)
def test_bad_values_are_refused_naming_the_field_the_rule_and_the_unit(field, value, rule, words):
    error = refused(baseline(**{field: value}))[field]
    assert error.rule == rule
    assert words in error.message


@pytest.mark.parametrize("field", ["hrct_date", "covid_vaccine_date", "malignancy_date"])
def test_a_date_in_the_future_is_refused(field):
    error = refused(baseline(**{field: "2026-03-11"}))[field]
    assert (error.rule, error.message) == (
        "future",
        f"{field}: 2026-03-11 is in the future (today is 2026-03-10)",
    )


def test_a_date_before_birth_is_refused():
    assert refused(baseline(malignancy_date="1969-12-31"))["malignancy_date"].rule == "before_birth"


def test_an_hrct_after_the_screening_date_is_refused():
    errors = refused(baseline(hrct_date="2026-03-03"))
    assert errors["hrct_date"].rule == "after_screening"
    assert "after the screening date 2026-03-02" in errors["hrct_date"].message
    assert refused(baseline(hrct_date="2026-03-02")) == {}


@pytest.mark.parametrize(
    ("day1", "ok"),
    [("2026-03-01", False), ("2026-03-02", True), ("2026-05-01", True), ("2026-05-02", False)],
)
def test_planned_day1_is_within_60_days_of_screening_and_may_be_in_the_future(day1, ok):
    errors = refused(baseline(planned_day1=day1))
    assert (errors == {}) is ok
    if not ok:
        assert errors["planned_day1"].rule == "day1_window"


@pytest.mark.parametrize(
    ("entry", "field", "rule"),
    [
        ({"drug": "other:", "ongoing": True}, "medications[0].drug", "required"),
        ({"drug": "  ", "ongoing": True}, "medications[0].drug", "required"),
        ({"drug": "rituximab", "last_dose": "2026-02-30"}, "medications[0].last_dose", "date"),
        ({"drug": "rituximab", "last_dose": "2026-03-11"}, "medications[0].last_dose", "future"),
        ({"drug": "rituximab", "ongoing": "perhaps"}, "medications[0].ongoing", "yesno"),
        ({"drug": "rituximab", "ongoing": True, "dose": 5}, "medications[0].dose", "unknown_field"),
        (glucocorticoid("prednisone", "5000"), "medications[0].max_daily_dose_mg", "range"),
        (glucocorticoid("prednisone", "lots"), "medications[0].max_daily_dose_mg", "number"),
        ("prednisone", "medications[0]", "medications"),
    ],
)
def test_bad_medication_entries_are_refused(entry, field, rule):
    errors = refused(baseline(medications=[entry]))
    assert errors[field].rule == rule
    assert errors[field].message.startswith(field + ":")


def test_medications_must_be_a_list_or_its_json():
    assert refused(baseline(medications="nonsense"))["medications"].rule == "medications"
    assert refused(baseline(medications={"drug": "x"}))["medications"].rule == "medications"
    as_json = json.dumps(BASELINE["medications"])
    assert ENGINE.parse(baseline(medications=as_json)) == ENGINE.parse(baseline())


def test_drug_names_are_canonical_and_other_drugs_are_kept_for_classification():
    answers, errors = ENGINE.parse(
        baseline(
            medications=[
                {"drug": " Azathioprine ", "last_dose": "2025-01-01"},
                on("Other: Iguratimod"),
            ]
        )
    )
    assert errors == []
    assert [e["drug"] for e in answers["medications"]] == ["azathioprine", "other:iguratimod"]
    assert "hydroxychloroquine" in ENGINE.drug_names()
    assert all(name == name.lower() for name in ENGINE.drug_names())


def test_blank_answers_are_not_answered():
    answers, errors = ENGINE.parse(baseline(fvc_pct="", hrct_date="  ", hbsag=None))
    assert errors == []
    assert {"fvc_pct", "hrct_date", "hbsag"}.isdisjoint(answers)


def test_parse_accepts_json_values_and_its_own_output_after_a_json_round_trip():
    answers, _ = ENGINE.parse(
        baseline(fvc_pct=70, wbc=6.5, diagnosis_ra=True, hrct_date=date(2025, 10, 1))
    )
    assert answers["fvc_pct"] == 70.0 and answers["diagnosis_ra"] is True
    assert answers["hrct_date"] == date(2025, 10, 1)
    again, errors = ENGINE.parse(json.loads(json.dumps(answers, default=str)))
    assert errors == [] and again == answers


def test_context_sex_must_be_female_or_male():
    answers, _ = ENGINE.parse(baseline())
    errors = ENGINE.validate(answers, dataclasses.replace(CTX, sex="F"))
    assert [e.field for e in errors] == ["sex"]


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.dates().map(str),
    st.lists(
        st.dictionaries(
            st.sampled_from(["drug", "last_dose", "ongoing", "x"]), st.text(max_size=8)
        ),
        max_size=3,
    ),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@settings(deadline=None, max_examples=200)
@given(st.dictionaries(st.sampled_from([s.name for s in ENGINE.fields()] + ["zzz"]), JUNK))
def test_parse_and_validate_never_raise_on_junk(raw):
    answers, errors = ENGINE.parse(raw)
    assert all(isinstance(e, eligibility.FieldError) for e in errors)
    if not ENGINE.validate(answers, CTX):  # assess() is for validated answers
        assert ENGINE.assess(answers, CTX).outcome in ("eligible", "not_eligible", "incomplete")
