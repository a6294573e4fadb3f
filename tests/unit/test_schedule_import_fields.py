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
