"""The engine's reading of a protocol: each refusal names the criterion (or the stratification
factor) and the param it is about, each default is the documented one, and a stratification
factor may come from a choice field. Written against the surviving mutants of
`make mutation-eligibility` (tests/MUTATION.md); the protocol's own wording is not asserted.
Each test builds its own engine: one built at import is built before mutmut switches a mutant
on, so it could kill none."""

from __future__ import annotations

import copy
import dataclasses
from datetime import date, timedelta
from typing import Any

import pytest

from iwrs.eligibility import Engine
from iwrs.protocol import Level, Protocol, StratificationFactor
from tests.unit.test_eligibility import (
    BASELINE,
    CTX,
    PROTOCOL,
    assess,
    baseline,
    with_criterion,
)


def refused_param(protocol: Protocol) -> str:
    """The "criterion N: param 'key'" (or "stratification ...") part of the engine's refusal."""
    with pytest.raises(ValueError) as refused:
        Engine(protocol)
    return str(refused.value).split(": ")[0] + ": " + str(refused.value).split(": ")[1]


def with_tables(**changes: Any) -> Protocol:
    tables = copy.deepcopy(PROTOCOL.eligibility_tables)
    for name, value in changes.items():
        if value is None:
            tables.pop(name, None)
        else:
            tables[name] = value
    return dataclasses.replace(PROTOCOL, eligibility_tables=tables)


# ---------------------------------------------------------------- drugs and classes


def test_a_washout_of_named_drugs_needs_no_class():
    engine = Engine(with_criterion("E3.3c", classes=None, drugs=["tacrolimus"], half_lives=None))
    answers, errors = engine.parse(baseline(medications=[{"drug": "tacrolimus", "ongoing": True}]))
    assert errors == []
    assessment = engine.assess(answers, CTX)
    assert next(r for r in assessment.results if r.number == "E3.3c").status == "fail"


@pytest.mark.parametrize(
    ("protocol", "param"),
    [
        (with_criterion("E3.3c", classes=None, half_lives=None), "criterion E3.3c: param 'drugs'"),
        (with_criterion("E3.3c", classes=["no_such_class"]), "criterion E3.3c: param 'classes'"),
        (with_criterion("E3.3c", drugs=["other:x"]), "criterion E3.3c: param 'drugs'"),
        (with_criterion("E3.3c", drugs=[" tacrolimus"]), "criterion E3.3c: param 'drugs'"),
        (with_tables(drug_dictionary=None), "criterion I7a: param 'classes'"),
    ],
)
def test_a_bad_drug_list_is_refused_naming_its_param(protocol: Protocol, param: str):
    assert refused_param(protocol) == param


# ---------------------------------------------------------------- tables


@pytest.mark.parametrize("bad", [0, -1, True, "5", None])
def test_a_glucocorticoid_table_needs_every_dose_above_zero(bad: Any):
    table = {**PROTOCOL.eligibility_tables["prednisone_equivalent_mg"], "cortisone": bad}
    assert refused_param(with_tables(prednisone_equivalent_mg=table)) == (
        "criterion E3.1: param 'table'"
    )


def test_the_glucocorticoid_table_and_reference_default_to_the_documented_ones():
    plain = Engine(with_criterion("E3.1", table=None, reference=None))
    assert plain.fields_for("E3.1") == ("planned_day1", "medications")
    prednisone = [{"drug": "prednisone", "ongoing": True, "max_daily_dose_mg": "20"}]
    answers, errors = plain.parse(baseline(medications=prednisone))
    assert errors == []
    result = plain.assess(answers, CTX)
    assert next(r for r in result.results if r.number == "E3.1").status == "fail"
    assert result.computed["prednisone_equivalent_mg"] == 20


def test_a_medication_check_from_the_screening_date_reads_no_day1():
    engine = Engine(PROTOCOL)
    assert engine.fields_for("E3.3c") == ("medications",)
    assert engine.fields_for("E3.3a") == ("planned_day1", "medications")
    assert Engine(with_criterion("E3.3a", reference=None)).fields_for("E3.3a") == (
        "planned_day1",
        "medications",
    )


# ---------------------------------------------------------------- lab


def test_a_lab_criterion_may_test_a_yes_no_field_for_no():
    engine = Engine(with_criterion("E15.1a", test="childbearing_potential", positive=False))
    answers, _ = engine.parse(baseline(childbearing_potential="no"))
    result = engine.assess(answers, CTX)
    assert next(r for r in result.results if r.number == "E15.1a").status == "fail"


@pytest.mark.parametrize(
    ("number", "params", "param"),
    [
        ("E15.1a", {"positive": "maybe"}, "criterion E15.1a: param 'positive'"),
        ("E15.1a", {"positive": 5}, "criterion E15.1a: param 'positive'"),
        ("E15.1a", {"and_positive": 5}, "criterion E15.1a: param 'and_positive'"),
        ("E15.1b", {"and_positive": "positive"}, "criterion E15.1b: param 'and_positive'"),
    ],
)
def test_a_lab_answer_not_of_its_field_is_refused(number: str, params: dict, param: str):
    assert refused_param(with_criterion(number, **params)) == param


def test_a_lab_criterion_without_a_second_test_ignores_a_second_value():
    engine = Engine(with_criterion("E15.1a", and_positive="detectable"))
    assert engine.fields_for("E15.1a") == ("hbsag",)


# ---------------------------------------------------------------- attestations


def test_each_attestation_is_a_yes_no_field_with_its_criterions_text():
    criteria = {c.number: c for c in PROTOCOL.criteria}
    attested = [s for s in Engine(PROTOCOL).fields() if s.name.startswith("attest_")]
    assert attested
    for spec in attested:
        number = spec.name[len("attest_") :].replace("_", ".")
        assert (spec.section, spec.kind, spec.label) == (
            "Attestations",
            "yesno",
            criteria[number].text,
        )
        assert spec.help is not None and number in spec.help


# ---------------------------------------------------------------- stratification


def with_factor(derived_from: str, codes: tuple[str, ...]) -> Protocol:
    levels = tuple(Level(code, code) for code in codes)
    factor = StratificationFactor("hepatitis_b", "HBsAg", derived_from, levels)
    return dataclasses.replace(PROTOCOL, stratification=(*PROTOCOL.stratification, factor))


def test_a_stratification_factor_may_come_from_a_choice_field():
    engine = Engine(with_factor("hbsag", ("positive", "negative")))
    assert assess(engine=engine).stratum == {"disease": "RA", "hepatitis_b": "negative"}
    answers, _ = engine.parse(BASELINE)
    narrower = Engine(with_factor("hbsag", ("positive",)))
    assert narrower.assess(answers, CTX).stratum is None


@pytest.mark.parametrize("derived_from", ["fvc_pct", "childbearing_potential", "no_such_field"])
def test_a_factor_from_a_field_that_is_not_a_choice_is_refused(derived_from: str):
    message = refused_param(with_factor(derived_from, ("yes", "no")))
    assert message == f"stratification 'hepatitis_b': derived_from {derived_from!r}"


def test_a_factor_from_the_diagnosis_needs_a_diagnosis_criterion():
    criteria = tuple(c for c in PROTOCOL.criteria if c.params.get("check") != "diagnosis")
    protocol = dataclasses.replace(PROTOCOL, criteria=criteria)
    assert refused_param(protocol) == "stratification 'disease': derived_from 'diagnosis'"


# ---------------------------------------------------------------- defaults of the medication checks


def test_the_immunosuppressant_check_allows_one_drug_by_default_from_day1():
    engine = Engine(with_criterion("I7a", max_count=None, reference=None))
    assert engine.fields_for("I7a") == ("planned_day1", "medications")
    stable = "2025-06-01"
    two = [
        {"drug": "methotrexate", "ongoing": True, "dose_stable_since": stable},
        {"drug": "leflunomide", "ongoing": True, "dose_stable_since": stable},
    ]
    one = two[:1]
    for medications, expected in ((one, "pass"), (two, "fail")):
        answers, errors = engine.parse(baseline(medications=medications))
        assert errors == []
        result = engine.assess(answers, CTX)
        assert next(r for r in result.results if r.number == "I7a").status == expected


def test_a_conditional_comparison_reads_its_condition_first():
    assert Engine(PROTOCOL).fields_for("E5.2")[0] == "rhc_done"


@pytest.mark.parametrize(
    "tables",
    [
        {"half_life_hours": [30]},
        {"half_life_hours": {"tacrolimus": 0}},
        {"half_life_hours": {"tacrolimus": -3}},
        {"half_life_hours": {"tacrolimus": True}},
        {"half_life_hours": None},
    ],
)
def test_a_half_life_washout_needs_a_half_life_above_zero_for_each_drug(tables: dict):
    protocol = with_tables(**tables)
    protocol = dataclasses.replace(
        protocol,
        criteria=tuple(
            dataclasses.replace(c, params={**c.params, "classes": [], "drugs": ["tacrolimus"]})
            if c.number == "E3.3c"
            else c
            for c in protocol.criteria
        ),
    )
    assert refused_param(protocol) == "criterion E3.3c: param 'half_lives'"


def test_a_glucocorticoid_table_without_prednisone_is_refused():
    table = dict(PROTOCOL.eligibility_tables["prednisone_equivalent_mg"])
    del table["prednisone"]
    assert refused_param(with_tables(prednisone_equivalent_mg=table)) == (
        "criterion E3.1: param 'table'"
    )


# ---------------------------------------------------------------- the eligibility tables


def with_field(field: str, **entry: Any) -> Protocol:
    """The shipped protocol with one field definition changed (a key set to None is removed)."""
    fields = copy.deepcopy(PROTOCOL.eligibility_tables["fields"])
    merged = {**fields.get(field, {}), **entry}
    fields[field] = {k: v for k, v in merged.items() if v is not None}
    return with_tables(fields=fields)


def refused_setting(protocol: Protocol) -> str:
    """The setting an engine's refusal names: the part of its message before the first ": "."""
    with pytest.raises(ValueError) as refused:
        Engine(protocol)
    return str(refused.value).split(": ")[0]


@pytest.mark.parametrize(
    ("protocol", "setting"),
    [
        (with_field("fvc_pct", name="fvc"), "eligibility.fields.fvc_pct.name"),
        (with_field("fvc_pct", label=None), "eligibility.fields.fvc_pct"),
        (with_field("fvc_pct", section=None), "eligibility.fields.fvc_pct"),
        (with_field("fvc_pct", minimum="1"), "eligibility.fields.fvc_pct.minimum"),
        (with_field("fvc_pct", maximum=True), "eligibility.fields.fvc_pct.maximum"),
        (with_field("fvc_pct", minimum=50, maximum=40), "eligibility.fields.fvc_pct.minimum"),
        (
            with_field("fvc_pct", not_done_allowed="yes"),
            "eligibility.fields.fvc_pct.not_done_allowed",
        ),
        (with_field("fvc_pct", unit=5), "eligibility.fields.fvc_pct.unit"),
        (with_field("fvc_pct", help=["x"]), "eligibility.fields.fvc_pct.help"),
        (with_field("hbsag", choices="positive"), "eligibility.fields.hbsag.choices"),
        (with_field("hbsag", choices=[]), "eligibility.fields.hbsag.choices"),
        (with_field("planned_day1", kind="number"), "eligibility.fields.planned_day1.kind"),
        (with_field("medications", kind="date"), "eligibility.fields.medications.kind"),
        (with_tables(drug_groups=["hydroxychloroquine"]), "eligibility.drug_groups"),
        (with_tables(drug_groups={"permitted": "abc"}), "eligibility.drug_groups"),
        (with_tables(drug_groups={"permitted": [5]}), "eligibility.drug_groups"),
        (with_tables(drug_groups={"permitted": ["Aspirin"]}), "eligibility"),
        (with_tables(drug_groups={"permitted": ["other:aspirin"]}), "eligibility"),
        (with_tables(screening_window_days=-1), "eligibility.screening_window_days"),
        (with_tables(screening_window_days="60"), "eligibility.screening_window_days"),
        (with_tables(screening_window_days=True), "eligibility.screening_window_days"),
    ],
)
def test_a_bad_eligibility_table_is_refused_naming_the_setting(protocol: Protocol, setting: str):
    assert refused_setting(protocol) == setting


def test_bounds_may_be_equal_and_no_window_is_allowed():
    Engine(with_field("fvc_pct", minimum=40, maximum=40))
    engine = Engine(with_tables(screening_window_days=0))
    answers, errors = engine.parse(baseline(planned_day1=CTX.screening_date.isoformat()))
    assert errors == [] and engine.validate(answers, CTX) == []


def test_without_fields_each_criterion_names_the_field_it_lacks():
    assert refused_setting(with_tables(fields=None)).startswith("criterion ")


def test_day1_may_be_60_days_after_screening_by_default():
    engine = Engine(with_tables(screening_window_days=None))
    for days, rules in ((60, []), (61, ["day1_window"])):
        day1 = CTX.screening_date + timedelta(days=days)
        answers, errors = engine.parse(baseline(planned_day1=day1.isoformat()))
        assert errors == []
        assert [e.rule for e in engine.validate(answers, CTX)] == rules


def test_a_scan_after_the_screening_date_is_refused_by_a_fresh_engine():
    engine = Engine(PROTOCOL)
    late = CTX.screening_date + timedelta(days=1)
    answers, _ = engine.parse(baseline(hrct_date=late.isoformat()))
    assert [e.field for e in engine.validate(answers, CTX)] == ["hrct_date"]


def test_the_drug_names_are_the_checks_the_groups_and_the_dictionarys():
    engine = Engine(with_tables(drug_groups={"permitted": ["hydroxychloroquine", "zz-aspirin"]}))
    names = engine.drug_names()
    assert names == tuple(sorted(set(names)))
    # a check's (glucocorticoid table), a group's only, the dictionary's only
    assert {"prednisone", "zz-aspirin", "epoprostenol", "methotrexate"} <= set(names)


@pytest.mark.parametrize(
    ("unit", "n", "edge"),
    [
        ("years", 1, date(2025, 3, 20)),
        ("months", 12, date(2025, 3, 20)),
        ("weeks", 4, date(2026, 2, 20)),
        ("days", 28, date(2026, 2, 20)),
    ],
)
def test_each_unit_of_a_washout_period_sets_its_edge_day(unit: str, n: int, edge: date):
    engine = Engine(with_criterion("E3.3a", **{"months": None, unit: n}))
    for last_dose, expected in ((edge, "fail"), (edge - timedelta(days=1), "pass")):
        rituximab = [{"drug": "rituximab", "ongoing": False, "last_dose": last_dose.isoformat()}]
        answers, errors = engine.parse(baseline(medications=BASELINE["medications"] + rituximab))
        assert errors == []
        result = engine.assess(answers, CTX)
        assert next(r for r in result.results if r.number == "E3.3a").status == expected


# ---------------------------------------------------------------- params of the other checks


@pytest.mark.parametrize(
    ("number", "params", "param"),
    [
        ("I3", {"fields": ["diagnosis_ra"], "levels": ["RA"]}, "criterion I3: param 'levels'"),
        ("I3", {"levels": ["RA"]}, "criterion I3: param 'levels'"),
        ("I3", {"fields": ["diagnosis_ra", "fvc_pct"]}, "criterion I3: param 'fields'"),
        ("I3", {"fields": ["diagnosis_ra", "no_such"]}, "criterion I3: param 'fields'"),
        ("I1", {"field": 5}, "criterion I1: param 'field'"),
        ("I1", {"field": ""}, "criterion I1: param 'field'"),
        ("E3.3c", {"drugs": [""]}, "criterion E3.3c: param 'drugs'"),
        ("E15.1a", {"test": None}, "criterion E15.1a: param 'test'"),
    ],
)
def test_a_bad_param_of_a_check_is_refused_naming_it(number: str, params: dict, param: str):
    assert refused_param(with_criterion(number, **params)) == param


def test_an_attestation_may_name_its_field():
    engine = Engine(with_criterion("I1", field="attest_consent"))
    assert engine.fields_for("I1") == ("attest_consent",)
    assert "attest_consent" in {spec.name for spec in engine.fields()}


def test_a_period_of_zero_days_is_allowed():
    Engine(with_criterion("E3.3a", months=None, days=0))


def test_a_date_window_from_day1_reads_day1():
    assert Engine(with_criterion("I4", reference="day1")).fields_for("I4")[0] == "planned_day1"
    assert "planned_day1" not in Engine(PROTOCOL).fields_for("I4")


def test_age_is_taken_at_screening_by_default():
    # 75 at screening (2026-03-02), 76 by day 1 (2026-03-20)
    ctx = dataclasses.replace(CTX, date_of_birth=date(1950, 3, 10))
    for reference, expected in ((None, "pass"), ("day1", "fail")):
        engine = Engine(with_criterion("I2", reference=reference))
        answers, _ = engine.parse(BASELINE)
        result = engine.assess(answers, ctx)
        assert next(r for r in result.results if r.number == "I2").status == expected


# ---------------------------------------------------------------- what a criterion reads


def test_an_age_from_day1_reads_day1_and_one_from_screening_reads_nothing():
    assert Engine(with_criterion("I2", reference="day1")).fields_for("I2") == ("planned_day1",)
    assert Engine(PROTOCOL).fields_for("I2") == ()


def test_a_date_window_reads_its_event_before_its_date():
    assert Engine(PROTOCOL).fields_for("I4")[-2:] == ("hrct_ild_confirmed", "hrct_date")


def test_drug_groups_are_optional():
    assert "hydroxychloroquine" in Engine(with_tables(drug_groups=None)).drug_names()


@pytest.mark.parametrize(
    ("removed", "missing"),
    [
        (("qt_ms",), ("qt_ms",)),
        (("rr_ms",), ("rr_ms", "heart_rate_bpm")),
        (("qt_ms", "rr_ms"), ("qt_ms", "rr_ms", "heart_rate_bpm")),
    ],
)
def test_a_qtcf_without_its_inputs_names_each_one_missing(removed: tuple, missing: tuple):
    engine = Engine(PROTOCOL)
    answers, _ = engine.parse(baseline(**dict.fromkeys(removed)))
    result = next(r for r in engine.assess(answers, CTX).results if r.number == "E13.4a")
    assert (result.status, result.missing) == ("missing", missing)


def test_each_result_carries_its_criterions_type_and_text_and_the_age_is_computed():
    engine = Engine(PROTOCOL)
    answers, _ = engine.parse(BASELINE)
    assessment = engine.assess(answers, CTX)
    criteria = {c.number: c for c in PROTOCOL.criteria}
    for r in assessment.results:
        assert (r.type, r.text) == (criteria[r.number].type, criteria[r.number].text)
    assert assessment.computed["age"] == 55


def test_a_drug_off_the_dictionary_keeps_each_medication_criterion_missing_naming_it():
    engine = Engine(PROTOCOL)
    other = [*BASELINE["medications"], {"drug": "zz-unknown", "ongoing": True}]
    answers, _ = engine.parse(baseline(medications=other))
    results = [r for r in engine.assess(answers, CTX).results if r.number in ("E3.1", "E3.3a")]
    assert [(r.status, r.missing) for r in results] == [
        ("missing", ("drug_class:zz-unknown",)),
        ("missing", ("drug_class:zz-unknown",)),
    ]


def test_the_plausible_range_includes_both_bounds():
    engine = Engine(PROTOCOL)
    for value in ("1", "200"):
        answers, errors = engine.parse(baseline(fvc_pct=value))
        assert errors == [] and engine.validate(answers, CTX) == []
