"""Importing a list, then verifying it: the native layout round-trips, REDCap allocation tables
are read per stratum, every fault is reported once with its row, and junk never raises."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blinding import schedule_import, schedules
from blinding.schedules import (
    RowError,
    Slot,
    canonical_order,
    generate_schedule,
    import_schedule,
    parse_schedule_csv,
    serialize,
    strata,
    verify_schedule,
)

ARMS = [("A", 1), ("P", 1)]
CODES = {"A", "P"}
DISEASE = strata([("disease", ["RA", "SSc"])])
FACTORS = ["disease"]
SIZES = [4, 6]
PROPERTY = settings(deadline=None, max_examples=300, derandomize=True, database=None)


def parse(text: str, **overrides: Any) -> tuple[list[Slot], list[RowError]]:
    arguments = {"arms": CODES, "strata": DISEASE, "factor_names": FACTORS} | overrides
    return parse_schedule_csv(text, **arguments)


def imported(text: str, **overrides: Any) -> tuple[list[Slot], list[RowError]]:
    arguments = {
        "arms": ARMS,
        "strata": DISEASE,
        "factor_names": FACTORS,
        "block_sizes": SIZES,
    } | overrides
    return import_schedule(text, **arguments)


def faults(errors: list[RowError]) -> list[tuple[int, str, str]]:
    return [(error.row, error.field, error.rule) for error in errors]


def generated() -> list[Slot]:
    return generate_schedule(
        seed=hashlib.sha256(b"import").digest(),
        strata=DISEASE,
        arms=ARMS,
        block_sizes=SIZES,
        slots_per_stratum=30,
    )


def test_schedules_re_exports_reading_and_verifying():
    text = serialize(generated()).decode()
    assert schedules.parse_schedule_csv(
        text, arms=CODES, strata=DISEASE, factor_names=FACTORS
    ) == schedule_import.parse_schedule_csv(text, arms=CODES, strata=DISEASE, factor_names=FACTORS)
    broken = text.replace(",A\n", ",X\n", 1)
    assert imported(broken) == schedule_import.import_schedule(
        broken, arms=ARMS, strata=DISEASE, factor_names=FACTORS, block_sizes=SIZES
    )
    assert imported(broken)[1][0].rule == "arm_known"


# --- native layout ----------------------------------------------------------------------------


def test_a_native_file_round_trips():
    slots = generated()
    read, errors = parse(serialize(slots).decode())
    assert errors == []
    assert read == canonical_order(slots)
    assert serialize(read) == serialize(slots)
    assert [slot.source_row for slot in read] == list(range(2, len(read) + 2))
    assert verify_schedule(read, arms=ARMS, strata=DISEASE, block_sizes=SIZES) == []


def test_a_native_file_may_reorder_columns_omit_block_size_and_use_windows_line_ends():
    slots = canonical_order(generated())
    lines = ["\ufeffArm,Block,Sequence,Stratum"] + [
        f"{s.arm},{s.block},{s.sequence},{s.stratum}" for s in slots
    ]
    read, errors = imported("\r\n".join(lines) + "\r\n\r\n")
    assert errors == []
    assert read == slots  # block sizes derived from the rows of each block


def test_a_file_with_several_faults_reports_each_once_with_its_row():
    text = "\n".join(
        [
            "stratum,sequence,block,block_size,arm",  # row 1
            "disease=RA,1,1,4,A",
            "disease=RA,2,1,4,P",
            "disease=RA,3,1,4,X",  # row 4: unknown arm
            "disease=RA,4,1,4,P",
            "disease=RA,5,2,4,A",  # row 6: block 2 holds A A A P
            "disease=RA,6,2,4,A",
            "disease=RA,7,2,4,A",
            "disease=RA,8,2,4,P",
            "disease=SSc,1,1,4,A",
            "disease=SSc,2,1,4,P",
            "disease=SSc,2,1,4,P",  # row 12: sequence 2 again
            "disease=SSc,3,1,4,A",
            "disease=SSc,4,1,4,P",
            "disease=SSc,6,2,4,A",  # row 15: sequence 5 missing
            "disease=SSc,7,2,4,P",
            "disease=SSc,8,2,4,A",
            "disease=SSc,9,2,4,P",
            "disease=ILD,1,1,4,A",  # row 19: unknown stratum
        ]
    )
    expected = [
        (4, "arm", "arm_known"),
        (6, "block", "block_balance"),
        (12, "sequence", "sequence_unique"),
        (15, "sequence", "sequence_contiguous"),
        (19, "stratum", "stratum_known"),
    ]
    slots, errors = imported(text)
    assert faults(errors) == expected
    messages = [error.message for error in errors]
    assert messages[0] == "row 4, arm: 'X' is not an arm of this protocol"
    assert messages[1] == (
        "row 6, block: block 2 of stratum 'disease=RA' is not balanced to 1:1: "
        "A 3, P 1 (expected A 2, P 2)"
    )
    assert (
        messages[2]
        == "row 12, sequence: 2 appears again in stratum 'disease=SSc' (first at row 11)"
    )
    assert messages[3] == "row 15, sequence: 6 follows 4 in stratum 'disease=SSc'; 5 missing"
    assert messages[4] == "row 19, stratum: 'disease=ILD' is not a stratum of this protocol"
    # The two steps on their own: reading finds the row faults, verifying the list faults.
    read, read_errors = parse(text)
    assert read == slots and len(read) == 18
    assert faults(read_errors) == [expected[0], expected[4]]
    verified = verify_schedule(read, arms=ARMS, strata=DISEASE, block_sizes=SIZES)
    assert faults(verified) == expected


@pytest.mark.parametrize(
    ("row", "fault"),
    [
        ("disease=RA,1,1,4", (2, "row", "row_shape")),
        ("disease=RA,1,1,4,A,extra", (2, "row", "row_shape")),
        (",1,1,4,A", (2, "stratum", "required")),
        ("disease=RA,one,1,4,A", (2, "sequence", "integer")),
        ("disease=RA,1,-1,4,A", (2, "block", "integer")),
        ("disease=RA,1,1,0,A", (2, "block_size", "positive")),
        ("disease=RA,1,1,4,", (2, "arm", "required")),
        ("disease=RA,99999999999999999999,1,4,A", (2, "sequence", "integer")),
    ],
)
def test_a_malformed_row_is_reported_by_field_and_rule(row, fault):
    slots, errors = parse("stratum,sequence,block,block_size,arm\n" + row + "\n")
    assert slots == [] and faults(errors) == [fault]
    assert errors[0].message.startswith(f"row 2, {fault[1]}: ")


def test_trailing_empty_cells_and_blank_rows_are_harmless():
    text = "stratum,sequence,block,arm,,\n\ndisease=RA,1,1,A,,\n disease=RA , 2 ,1, P\n"
    slots, errors = parse(text)
    assert errors == []
    assert [(s.sequence, s.arm, s.block_size, s.source_row) for s in slots] == [
        (1, "A", 2, 3),
        (2, "P", 2, 4),
    ]


@pytest.mark.parametrize(
    ("header", "fault"),
    [
        ("stratum,sequence,block,block_size", (1, "arm", "column_required")),
        ("stratum,sequence,block,arm,colour", (1, "colour", "column_known")),
        ("stratum,sequence,block,arm,arm", (1, "arm", "column_unique")),
        ("stratum,,sequence,block,arm", (1, "column 2", "column_known")),
    ],
)
def test_a_bad_header_is_reported_and_nothing_is_read(header, fault):
    slots, errors = parse(header + "\ndisease=RA,1,1,A,x\n")
    assert slots == [] and fault in faults(errors)


def test_an_empty_file_is_reported():
    assert parse("") == (
        [],
        [RowError(1, "header", "header_required", "row 1, header: the file has no header")],
    )
    assert faults(parse("\n\n \n")[1]) == [(1, "header", "header_required")]


# --- REDCap allocation tables -----------------------------------------------------------------


def test_a_redcap_allocation_table_parses_into_slots_per_stratum():
    text = "disease,redcap_randomization_group\nRA,A\nSSc,P\nRA,P\nSSc,A\nRA,P\nRA,A\n"
    slots, errors = imported(text)
    assert errors == []
    assert slots == [
        Slot("disease=RA", 1, 0, 0, "A"),
        Slot("disease=SSc", 1, 0, 0, "P"),
        Slot("disease=RA", 2, 0, 0, "P"),
        Slot("disease=SSc", 2, 0, 0, "A"),
        Slot("disease=RA", 3, 0, 0, "P"),
        Slot("disease=RA", 4, 0, 0, "A"),
    ]
    # No block boundaries: block rules are skipped, the rest still applies.
    assert verify_schedule(slots, arms=ARMS, strata=DISEASE, block_sizes=SIZES) == []


def test_a_redcap_table_may_number_its_rows_map_raw_values_and_put_the_group_anywhere():
    text = (
        "redcap_randomization_number,redcap_randomization_group,disease\n"
        "1001,1,RA\n1002,2,RA\n1003,2,SSc\n1004,3,SSc\n"
    )
    slots, errors = imported(text, redcap_groups={"1": "A", "2": "P"})
    assert [(s.stratum, s.sequence, s.arm) for s in slots[:3]] == [
        ("disease=RA", 1, "A"),
        ("disease=RA", 2, "P"),
        ("disease=SSc", 1, "P"),
    ]
    assert [e.message for e in errors] == [
        "row 5, redcap_randomization_group: '3' is not a group mapped to an arm"
    ]


def test_a_redcap_table_reports_unknown_levels_arms_and_missing_values_by_column():
    text = "disease,redcap_randomization_group\nRA,A\nILD,P\nSSc,X\n,A\nRA,\n"
    slots, errors = imported(text)
    assert faults(errors) == [
        (3, "disease", "stratum_known"),
        (4, "redcap_randomization_group", "arm_known"),
        (5, "disease", "required"),
        (6, "redcap_randomization_group", "required"),
    ]
    assert errors[0].message == "row 3, disease: 'ILD' is not a level of disease"
    assert len(slots) == 3


def test_a_redcap_table_must_name_every_factor_and_no_other_column():
    _, errors = imported("redcap_randomization_group\nA\n")
    assert faults(errors) == [(1, "disease", "column_required")]
    _, errors = imported("disease,site,redcap_randomization_group\nRA,01,A\n")
    assert faults(errors) == [(1, "site", "column_known")]


def test_an_unstratified_redcap_table_is_one_stratum():
    slots, errors = imported("redcap_randomization_group\nA\nP\n", strata=["all"], factor_names=[])
    assert errors == [] and [(s.stratum, s.sequence) for s in slots] == [("all", 1), ("all", 2)]


# --- verification rules on their own ----------------------------------------------------------


def rules(slots: list[Slot], block_sizes: list[int] | None = SIZES) -> list[tuple[int, str]]:
    errors = verify_schedule(slots, arms=ARMS, strata=DISEASE, block_sizes=block_sizes)
    return [(error.row, error.rule) for error in errors]


def block(
    stratum: str, first_sequence: int, number: int, arms: str, size: int | None = None
) -> list[Slot]:
    return [
        Slot(stratum, first_sequence + i, number, size or len(arms), arm)
        for i, arm in enumerate(arms)
    ]


RA, SSC = DISEASE


def test_verify_numbers_rows_as_the_canonical_csv_does():
    slots = block(SSC, 1, 1, "AP") + block(RA, 1, 1, "APPA")
    # serialize() puts disease=RA first: rows 2-5, then disease=SSc rows 6-7.
    assert rules(slots) == [(6, "block_size_allowed")]


def test_verify_reports_a_block_size_not_allowed_and_skips_that_check_without_sizes():
    slots = block(RA, 1, 1, "APPA") + block(RA, 5, 2, "AP")
    assert rules(slots) == [(6, "block_size_allowed")]
    assert rules(slots, block_sizes=None) == []


def test_verify_reports_an_incomplete_last_block():
    slots = block(RA, 1, 1, "APPA") + block(RA, 5, 2, "APP", size=4)
    assert rules(slots) == [(6, "block_complete")]


def test_verify_reports_block_numbers_that_skip_or_go_back():
    slots = block(RA, 1, 1, "APPA") + block(RA, 5, 3, "AP", size=2)
    assert (6, "block_contiguous") in rules(slots, block_sizes=None)
    slots = block(RA, 1, 2, "APPA")
    assert rules(slots, block_sizes=None) == [(2, "block_contiguous")]
    slots = block(RA, 1, 1, "AP") + block(RA, 3, 2, "AP") + block(RA, 5, 1, "AP")
    assert (6, "block_contiguous") in rules(slots, block_sizes=None)


def test_verify_reports_a_block_whose_slots_disagree_on_its_size():
    slots = [*block(RA, 1, 1, "APP", size=4), Slot(RA, 4, 1, 6, "A")]
    assert rules(slots) == [(5, "block_size_consistent")]


def test_verify_reports_half_known_blocks_and_bad_sequences():
    assert rules([Slot(RA, 1, 1, 0, "A")]) == [(2, "block_known")]
    assert rules(block(RA, 3, 1, "AP", size=2), block_sizes=None) == [(2, "sequence_contiguous")]
    assert rules([Slot(RA, 0, 0, 0, "A"), Slot(RA, 1, 0, 0, "P")]) == [(2, "sequence_positive")]


def test_verify_refuses_an_unknown_block_after_known_ones():
    slots = [*block(RA, 1, 1, "AP", size=2), Slot(RA, 3, 0, 0, "A")]
    assert rules(slots, block_sizes=None) == [(4, "block_contiguous")]


def test_verify_reports_a_block_size_that_cannot_hold_the_ratio():
    assert rules(block(RA, 1, 1, "APA"), block_sizes=None) == [(2, "block_balance")]


# --- junk -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "\x00\x01\x02",
        '"unterminated\nstratum',
        "stratum,sequence,block,arm\n" + "x" * 200_000 + "\n",
        'stratum,sequence,block,arm\n"a"b,1,1,A\n',
        "🙂,🙂\n🙂",
        "disease,redcap_randomization_group\n" + "RA,A,\n" * 3 + "RA\n",
    ],
)
def test_junk_gives_row_errors_not_exceptions(text):
    slots, errors = imported(text)
    assert errors and all(isinstance(error, RowError) for error in errors)
    assert all(error.message.startswith(f"row {error.row}, ") for error in errors)
    assert all(len(error.message) < 300 for error in errors)


@PROPERTY
@given(st.text(max_size=300))
def test_any_text_is_read_without_raising(text):
    for candidate in (
        text,
        "stratum,sequence,block,arm\n" + text,
        "disease,redcap_randomization_group\n" + text,
    ):
        slots, errors = imported(candidate)
        assert isinstance(slots, list) and all(isinstance(e, RowError) for e in errors)
