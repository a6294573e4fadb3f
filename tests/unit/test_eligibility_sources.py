"""Issue 12 (findings 2-4): every source fact both ways, the drug dictionary, missing medication
details, pregnancy, physical plausibility. Rule codes and values, never wording."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iwrs.drugs import DrugDictionary, normalize
from iwrs.eligibility import Engine
from tests.unit.test_eligibility import CTX, DAY1, ENGINE, PROTOCOL, assess, baseline, refusals
from tests.unit.test_eligibility_properties import answer_sets, judge

DICTIONARY = DrugDictionary.from_table(PROTOCOL.eligibility_tables["drug_dictionary"])


def statuses(ctx=CTX, **changes):
    return {r.number: r.status for r in assess(baseline(**changes), ctx).results}


# ---------------------------------------------------------------- every source fact both ways


@pytest.mark.parametrize(
    ("changes", "number", "expected"),
    [
        ({"hrct_ild_confirmed": "no", "hrct_date": None}, "I4", "fail"),
        ({"hrct_ild_confirmed": "no"}, "I4", "fail"),  # "no" decides, whatever the date
        ({"hrct_ild_confirmed": "yes", "hrct_date": None}, "I4", "missing"),
        ({"hrct_ild_confirmed": "yes"}, "I4", "pass"),
        ({"hrct_date": None}, "I4", "missing"),
        ({"diagnosis_ra": "no", "diagnosis_ssc": "no"}, "I3", "fail"),
        ({"rhc_done": "no", "cardiac_index": None}, "E5.2", "not_applicable"),
        ({"rhc_done": "yes", "cardiac_index": None}, "E5.2", "missing"),
        ({"rhc_done": "yes", "cardiac_index": "1.9"}, "E5.2", "fail"),
        ({"rhc_done": "yes", "cardiac_index": "2.5"}, "E5.2", "pass"),
        ({"malignancy_history": "no", "malignancy_date": None}, "E11", "pass"),
        ({"malignancy_history": "yes", "malignancy_date": None}, "E11", "missing"),
        ({"malignancy_history": "yes", "malignancy_date": "never"}, "E11", "missing"),
        ({"malignancy_history": "yes", "malignancy_date": "2022-01-01"}, "E11", "fail"),
        ({"malignancy_history": "yes", "malignancy_date": "2020-01-01"}, "E11", "pass"),
    ],
)
def test_each_criterion_is_decided_by_the_sites_answers_both_ways(changes, number, expected):
    assert statuses(**changes)[number] == expected


def test_a_negative_hrct_makes_the_subject_not_eligible_not_incomplete():
    assessment = assess(baseline(hrct_ild_confirmed="no", hrct_date=None))
    assert assessment.outcome == "not_eligible"
    assert [r.number for r in assessment.failing] == ["I4"]


def test_the_new_yes_no_fields_are_asked():
    names = [spec.name for spec in ENGINE.fields()]
    for name in ("hrct_ild_confirmed", "rhc_done", "malignancy_history"):
        assert name in names
    assert set(ENGINE.fields_for("I4")) == {"hrct_ild_confirmed", "hrct_date"}
    assert set(ENGINE.fields_for("E5.2")) == {"rhc_done", "cardiac_index"}


# ---------------------------------------------------------------- the drug dictionary

LISTING_SPELLINGS = [
    ("tolizumab", "tocilizumab", "washout_6_months", "L04AC07"),
    ("nidanib", "nintedanib", "washout_6_months", "L01EX09"),
    ("Abacil", "abatacept", "biologic_3_months", "L04AA24"),
    ("tofaciib", "tofacitinib", "washout_30_days", "L04AF01"),
    ("cyclosporin A", "ciclosporin", "washout_30_days", "L04AD01"),
    ("cyclosporine", "ciclosporin", "washout_30_days", "L04AD01"),
    ("eprostol", "epoprostenol", "parenteral_prostacyclin", "B01AC09"),
    ("traprostacycline", "treprostinil", "parenteral_prostacyclin", "B01AC21"),
    ("mycophenolate  mofetil", "mycophenolate", "immunosuppressant", "L04AA06"),
    ("D-Penicillamine", "d-penicillamine", "washout_8_weeks", "M01CC01"),
    ("other:tolizumab", "tocilizumab", "washout_6_months", "L04AC07"),
    ("other: Cyclophosphamide", "cyclophosphamide", "immunosuppressant", "L01AA01"),
]


@pytest.mark.parametrize(("written", "drug", "drug_class", "atc"), LISTING_SPELLINGS)
def test_the_listings_spellings_and_common_names_resolve(written, drug, drug_class, atc):
    found = DICTIONARY.lookup(written)
    assert found is not None
    assert (found.name, found.drug_class, found.atc) == (drug, drug_class, atc)
    assert ENGINE.resolve_drug(written) == drug


def test_an_unknown_drug_is_kept_as_other_and_never_refused():
    assert DICTIONARY.lookup("iguratimod") is None
    assert ENGINE.resolve_drug("Iguratimod") == "other:iguratimod"
    assert refusals(baseline(medications=[{"drug": "iguratimod", "ongoing": True}])) == []


@pytest.mark.parametrize("written", ["tolizumab", "other:tolizumab", "Tocilizumab"])
def test_tocilizumab_in_the_6_month_washout_is_not_eligible_however_written(written):
    dose = DAY1 - timedelta(days=60)
    assessment = assess(baseline(medications=[{"drug": written, "last_dose": dose.isoformat()}]))
    assert assessment.outcome == "not_eligible"
    assert [r.number for r in assessment.failing] == ["E3.3a"]


def test_methotrexate_plus_other_cyclophosphamide_is_two_immunosuppressants():
    meds = [
        {"drug": "methotrexate", "ongoing": True, "dose_stable_since": "2025-06-01"},
        {"drug": "other:cyclophosphamide", "ongoing": True, "dose_stable_since": "2025-06-01"},
    ]
    assessment = assess(baseline(medications=meds))
    assert [r.number for r in assessment.failing] == ["I7a"]


def test_an_unknown_drug_stays_incomplete_until_classified_then_its_class_decides():
    meds = [
        {"drug": "methotrexate", "ongoing": True, "dose_stable_since": "2025-06-01"},
        {"drug": "iguratimod", "ongoing": True, "dose_stable_since": "2025-06-01"},
    ]
    first = assess(baseline(medications=meds))
    assert first.outcome == "incomplete"
    assert first.missing_fields == ("drug_class:iguratimod",)
    # classified as a counted immunosuppressant: with methotrexate that is two -> I7a fails
    counted = dataclasses.replace(CTX, drug_classes={"iguratimod": "immunosuppressant"})
    assert [r.number for r in assess(baseline(medications=meds), counted).failing] == ["I7a"]
    harmless = dataclasses.replace(CTX, drug_classes={"iguratimod": "not_restricted"})
    assert assess(baseline(medications=meds), harmless).outcome == "eligible"


def test_a_known_failure_is_not_hidden_by_an_unknown_drug():
    meds = [{"drug": "rituximab", "ongoing": True}, {"drug": "other:xyz", "ongoing": True}]
    assert assess(baseline(medications=meds)).outcome == "not_eligible"


def test_the_dictionary_refuses_a_name_given_to_two_drugs_and_a_bad_atc_code():
    table = {"classes": {"a": {"label": "A"}}, "drug": [{"name": "x", "class": "a", "atc": "L4"}]}
    with pytest.raises(ValueError, match="atc"):
        DrugDictionary.from_table(table)
    table["drug"] = [
        {"name": "x", "class": "a", "synonyms": ["y"]},
        {"name": "y", "class": "a"},
    ]
    with pytest.raises(ValueError, match="names both"):
        DrugDictionary.from_table(table)


def test_glucocorticoids_are_not_offered_for_classification():
    codes = {c.code for c in DICTIONARY.classifiable()}
    assert "glucocorticoid" not in codes and "washout_6_months" in codes


NAMES = sorted({row["name"] for row in DICTIONARY.listing()})


@settings(deadline=None, max_examples=200)
@given(
    st.sampled_from(NAMES),
    st.lists(st.booleans(), min_size=60, max_size=60),
    st.sampled_from(["", " ", "  "]),
    st.booleans(),
)
def test_any_case_spacing_or_other_prefix_of_a_listed_name_resolves_to_its_drug(
    name, upper, pad, prefix
):
    written = "".join(c.upper() if u else c for c, u in zip(name, upper, strict=False))
    written = name if len(written) != len(name) else written
    written = ("other:" if prefix else "") + pad + written.replace(" ", " " + pad) + pad
    assert DICTIONARY.lookup(written) == DICTIONARY.lookup(name)
    assert normalize(written) == name


# -------------------------------------------------------- missing details, pregnancy, ranges


@pytest.mark.parametrize(
    ("entry", "missing"),
    [
        ({"drug": "azathioprine"}, "azathioprine.last_dose"),
        ({"drug": "tolizumab"}, "tocilizumab.last_dose"),
        ({"drug": "prednisone", "ongoing": True}, "prednisone.max_daily_dose_mg"),
        ({"drug": "leflunomide", "ongoing": True}, "leflunomide.dose_stable_since"),
    ],
)
def test_a_medication_missing_a_detail_makes_the_assessment_incomplete(entry, missing):
    meds = [entry]
    assert refusals(baseline(medications=meds)) == []
    assessment = assess(baseline(medications=meds))
    assert assessment.outcome == "incomplete"
    assert missing in assessment.missing_fields


def test_a_permitted_drug_needs_no_date():
    meds = [{"drug": "hydroxychloroquine"}]
    assert assess(baseline(medications=meds)).outcome == "eligible"


@pytest.mark.parametrize(("cbp", "expected"), [("yes", "fail"), ("no", "fail"), (None, "fail")])
def test_a_positive_pregnancy_test_excludes_whatever_the_childbearing_answer(cbp, expected):
    found = statuses(childbearing_potential=cbp, pregnancy_test="positive")
    assert found["E17a"] == expected


def test_a_negative_test_of_a_woman_without_childbearing_potential_is_not_applicable():
    assert statuses(childbearing_potential="no", pregnancy_test=None)["E17a"] == "not_applicable"


@pytest.mark.parametrize(
    ("field", "value", "number"),
    [("fvc_pct", "8", "I5"), ("platelets", "5", "E14.2"), ("dlco_pct", "5", "I6")],
)
def test_real_extreme_values_are_accepted_and_fail_their_criterion(field, value, number):
    assert refusals(baseline(**{field: value})) == []
    assert statuses(**{field: value})[number] == "fail"


@pytest.mark.parametrize(
    ("field", "value"), [("fvc_pct", "0"), ("platelets", "-1"), ("fvc_pct", "250")]
)
def test_physically_impossible_values_are_refused(field, value):
    assert [(e.field, e.rule) for e in refusals(baseline(**{field: value}))] == [(field, "range")]


def test_dates_are_still_checked_for_the_new_yes_no_companions():
    errors = refusals(baseline(malignancy_history="yes", malignancy_date="2026-03-11"))
    assert [(e.field, e.rule) for e in errors] == [("malignancy_date", "future")]
    assert date(2026, 3, 11) > CTX.today


# ---------------------------------------------------------------- properties and protocol checks


@settings(deadline=None, max_examples=150)
@given(
    answer_sets,
    st.sampled_from(["iguratimod", "other:baricitinib", "Other: Unknownumab"]),
    st.booleans(),
)
def test_a_drug_off_the_dictionary_never_yields_eligible_unless_classified(raw, drug, ongoing):
    entry = {"drug": drug, "ongoing": True} if ongoing else {"drug": drug}
    meds = raw.get("medications") if isinstance(raw.get("medications"), list) else []
    assessment = judge({**raw, "medications": [*meds, entry]})
    assert assessment.outcome != "eligible"


def test_a_criterion_naming_an_unknown_class_is_refused_when_the_protocol_loads():
    criteria = tuple(
        dataclasses.replace(c, params={**c.params, "classes": ["no_such_class"]})
        if c.number == "E3.2"
        else c
        for c in PROTOCOL.criteria
    )
    with pytest.raises(ValueError, match="E3.2.*no_such_class"):
        Engine(dataclasses.replace(PROTOCOL, criteria=criteria))
