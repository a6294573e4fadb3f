"""A list file's empty number cell is reported at its row and field, and the re-exported reader
passes a REDCap file's factor names and group map on (found by `make mutation`)."""

from __future__ import annotations

import pytest

from blinding import schedule_import, schedules
from blinding.schedules import strata

CODES = {"A", "P"}
DISEASE = strata([("disease", ["RA", "SSc"])])
HEADER = "stratum,sequence,block,block_size,arm\n"


@pytest.mark.parametrize(
    ("row", "field"),
    [("disease=RA,,1,4,A", "sequence"), ("disease=RA,1,,4,A", "block")],
)
def test_an_empty_number_cell_is_required_at_its_row_and_field(row, field):
    slots, errors = schedule_import.parse_schedule_csv(
        HEADER + row + "\n", arms=CODES, strata=DISEASE, factor_names=["disease"]
    )
    assert slots == []
    assert [(e.row, e.field, e.rule) for e in errors] == [(2, field, "required")]


def test_the_re_exported_reader_reads_a_redcap_table_with_its_factors_and_group_map():
    text = "redcap_randomization_group,disease\n1,RA\n2,SSc\n"
    slots, errors = schedules.parse_schedule_csv(
        text,
        arms=CODES,
        strata=DISEASE,
        factor_names=["disease"],
        redcap_groups={"1": "A", "2": "P"},
    )
    assert errors == []
    assert [(s.stratum, s.sequence, s.arm) for s in slots] == [
        ("disease=RA", 1, "A"),
        ("disease=SSc", 1, "P"),
    ]


def test_a_schedule_refusal_reads_as_its_message():
    with pytest.raises(schedules.ScheduleError) as refused:
        schedules.stratum_key({"disease": "RA"}, ["disease", "region"])
    assert str(refused.value) == refused.value.message != ""


def faults(errors: list[schedules.RowError]) -> list[tuple[int, str, str]]:
    return [(e.row, e.field, e.rule) for e in errors]


@pytest.mark.parametrize(("prefix", "row"), [("", 1), (HEADER, 2)])
def test_a_record_csv_cannot_read_is_reported_at_its_row(prefix, row):
    too_long = "x" * 200_000 + "\n"
    slots, errors = schedule_import.parse_schedule_csv(
        prefix + too_long, arms=CODES, strata=DISEASE, factor_names=["disease"]
    )
    assert slots == [] and faults(errors) == [(row, "file", "csv_syntax")]


TWO_FACTORS = strata([("disease", ["RA", "SSc"]), ("region", ["EU", "AS"])])


def test_a_redcap_row_names_only_its_unknown_level():
    text = "disease,region,redcap_randomization_group\nRA,XX,A\n"
    _, errors = schedule_import.parse_schedule_csv(
        text, arms=CODES, strata=TWO_FACTORS, factor_names=["disease", "region"]
    )
    assert faults(errors) == [(2, "region", "stratum_known")]


def test_a_redcap_row_of_known_levels_in_no_stratum_is_refused_by_stratum():
    some = [key for key in TWO_FACTORS if key != "disease=RA|region=AS"]
    text = "disease,region,redcap_randomization_group\nRA,AS,A\nRA,EU,P\n"
    _, errors = schedule_import.parse_schedule_csv(
        text, arms=CODES, strata=some, factor_names=["disease", "region"]
    )
    assert faults(errors) == [(2, "stratum", "stratum_known")]


@pytest.mark.parametrize("module", [schedules, schedule_import])
def test_import_checks_the_block_sizes_it_is_given(module):
    text = HEADER + "disease=RA,1,1,4,A\ndisease=RA,2,1,4,P\ndisease=RA,3,1,4,P\n"
    text += "disease=RA,4,1,4,A\n"
    arms = [("A", 1), ("P", 1)]
    options = {"arms": arms, "strata": DISEASE, "factor_names": ["disease"]}
    assert module.import_schedule(text, block_sizes=[4], **options)[1] == []
    _, errors = module.import_schedule(text, block_sizes=[2, 6], **options)
    assert ("block_size", "block_size_allowed") in {(e.field, e.rule) for e in errors}


def test_one_trailing_empty_header_cell_is_dropped_alone():
    text = "stratum,sequence,block,arm,\ndisease=RA,1,1,A,\n"
    slots, errors = schedule_import.parse_schedule_csv(
        text, arms=CODES, strata=DISEASE, factor_names=["disease"]
    )
    assert errors == [] and [(s.sequence, s.arm) for s in slots] == [(1, "A")]


def test_a_redcap_factor_column_keeps_its_case():
    region = strata([("Region", ["EU"])])
    text = "Region,REDCAP_RANDOMIZATION_GROUP\nEU,A\n"
    slots, errors = schedule_import.parse_schedule_csv(
        text, arms=CODES, strata=region, factor_names=["Region"]
    )
    assert errors == [] and [(s.stratum, s.arm) for s in slots] == [("Region=EU", "A")]


def test_rows_after_a_misshapen_row_are_still_read():
    text = HEADER + "disease=RA,1,1\ndisease=RA,1,1,4,A\n"
    slots, errors = schedule_import.parse_schedule_csv(
        text, arms=CODES, strata=DISEASE, factor_names=["disease"]
    )
    assert faults(errors) == [(2, "row", "row_shape")]
    assert [(s.source_row, s.arm) for s in slots] == [(3, "A")]


@pytest.mark.parametrize(
    ("factors", "field", "rule"),
    [
        ([("disease", ["RA"]), ("disease", ["SSc"])], "factors", "factor_unique"),
        ([("disease", ["R|A"])], "disease", "key_syntax"),
        ([("disease", ["RA", "RA"])], "disease", "levels_unique"),
    ],
)
def test_a_bad_factor_is_refused_by_its_name_and_rule(factors, field, rule):
    with pytest.raises(schedules.ScheduleError) as refused:
        strata(factors)
    assert (refused.value.field, refused.value.rule) == (field, rule)
