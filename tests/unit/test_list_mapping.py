"""The files statisticians already have (tests/fixtures/lists/) import through a column mapping
and verify with the same checks as the native layout; a wrong mapping is refused by rule,
naming the mapping field or the column and the value."""

from __future__ import annotations

from pathlib import Path

from blinding.list_mapping import (
    FactorSource,
    ListMapping,
    header_and_values,
    import_mapped,
    parse_value_map,
    suggested_fields,
)
from blinding.schedules import Slot

FIXTURES = Path(__file__).parents[1] / "fixtures" / "lists"
ARMS = [("A", 1), ("P", 1)]
DISEASE = {"disease": ["RA", "SSc"]}
DISEASE_STRATA = ["disease=RA", "disease=SSc"]

REDCAP = ListMapping(
    arm_column="redcap_randomization_group",
    arm_values={"1": "A", "2": "P"},
    factors={"disease": FactorSource("disease", {"1": "RA", "2": "SSc"})},
)
BLOCKRAND = ListMapping(
    arm_column="treatment",
    arm_values={"A": "A", "B": "P"},
    factors={"disease": FactorSource("stratum")},
    sequence_column="id",
    block_column="block.id",
    block_size_column="block.size",
)
CLINICEDC = ListMapping(
    arm_column="assignment",
    arm_values={"active": "A", "placebo": "P"},
    factors={"site": FactorSource("site_name", {"peking_third": "CN01", "tongji_union": "CN02"})},
    sequence_column="sid",
    sequence_scope="list",
)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def disease_import(text: str, mapping: ListMapping) -> tuple[list[Slot], list]:  # type: ignore[type-arg]
    return import_mapped(
        text,
        mapping,
        arms=ARMS,
        strata=DISEASE_STRATA,
        factor_names=["disease"],
        factor_levels=DISEASE,
        block_sizes=[4, 6],
    )


def rules(errors: list) -> list[tuple[int, str, str]]:  # type: ignore[type-arg]
    return [(e.row, e.field, e.rule) for e in errors]


def test_a_raw_coded_redcap_table_with_notes_imports_through_the_mapping():
    slots, errors = disease_import(fixture("redcap_allocation_raw.csv"), REDCAP)
    assert errors == []
    ra = [(s.sequence, s.arm, s.block) for s in slots if s.stratum == "disease=RA"]
    assert ra == [(1, "A", 0), (2, "P", 0), (3, "P", 0), (4, "A", 0), (5, "A", 0), (6, "P", 0)]
    assert sum(s.stratum == "disease=SSc" for s in slots) == 6
    assert slots[0].source_row == 2  # rows numbered as the spreadsheet numbers them


def test_a_blockrand_file_with_its_stratum_column_imports_and_keeps_its_blocks():
    slots, errors = disease_import(fixture("blockrand_by_stratum.csv"), BLOCKRAND)
    assert errors == []
    assert [(s.sequence, s.block, s.block_size, s.arm) for s in slots[:5]] == [
        (1, 1, 4, "P"),
        (2, 1, 4, "A"),
        (3, 1, 4, "A"),
        (4, 1, 4, "P"),
        (5, 2, 6, "A"),
    ]
    assert {s.stratum for s in slots} == set(DISEASE_STRATA)


def test_a_clinicedc_list_numbered_across_sites_imports_by_rank_within_each_site():
    slots, errors = import_mapped(
        fixture("clinicedc_list.csv"),
        CLINICEDC,
        arms=ARMS,
        strata=["site=CN01", "site=CN02"],
        factor_names=["site"],
        factor_levels={"site": ["CN01", "CN02"]},
        block_sizes=None,
    )
    assert errors == []
    cn02 = [(s.sequence, s.arm, s.source_row) for s in slots if s.stratum == "site=CN02"]
    assert cn02 == [(1, "P", 3), (2, "A", 5), (3, "P", 7), (4, "A", 9)]


def test_the_verification_after_mapping_is_the_native_one():
    text = fixture("blockrand_by_stratum.csv").replace('"3",3,"RA",1,4,"A"', '"3",3,"RA",1,4,"B"')
    _, errors = disease_import(text, BLOCKRAND)
    assert ("block_balance" in {e.rule for e in errors}) and errors[0].row == 2
    gap = fixture("blockrand_by_stratum.csv").replace('"12",2,"SSc"', '"12",7,"SSc"')
    _, errors = disease_import(gap, BLOCKRAND)
    assert ("sequence", "sequence_contiguous") in {(e.field, e.rule) for e in errors}


def test_a_wrong_mapping_is_refused_naming_the_field_the_column_and_the_rule():
    text = fixture("redcap_allocation_raw.csv")
    wrong_column = ListMapping(
        arm_column="group",
        arm_values={"1": "A", "2": "P"},
        factors={"disease": FactorSource("notes", {"1": "RA"})},
        block_size_column="disease",
    )
    slots, errors = disease_import(text, wrong_column)
    assert slots == []
    assert set(rules(errors)) == {
        (1, "arm_column", "mapping_column_known"),
        (1, "block_size_column", "block_column_required"),
    }
    assert any("'group'" in e.message for e in errors)

    twice = ListMapping(
        arm_column="disease", factors={"disease": FactorSource("disease", {"1": "RA"})}
    )
    _, errors = disease_import(text, twice)
    assert rules(errors) == [(1, "factor_disease_column", "mapping_column_unique")]

    bad_target = ListMapping(
        arm_column="redcap_randomization_group",
        arm_values={"1": "A", "2": "Genakumab"},
        factors={"disease": FactorSource("disease", {"1": "RA", "2": "ILD"})},
    )
    _, errors = disease_import(text, bad_target)
    assert set(rules(errors)) == {
        (1, "arm_values", "arm_known"),
        (1, "factor_disease_values", "level_known"),
    }

    unmapped_value = ListMapping(
        arm_column="redcap_randomization_group",
        arm_values={"1": "A"},
        factors={"disease": FactorSource("disease", {"1": "RA", "2": "SSc"})},
    )
    _, errors = disease_import(text, unmapped_value)
    unmapped = {(e.field, e.rule) for e in errors if "'2'" in e.message}
    assert unmapped == {("redcap_randomization_group", "value_mapped")}

    missing_factor = ListMapping(arm_column="redcap_randomization_group")
    _, errors = disease_import(text, missing_factor)
    assert ("factor_disease_column", "required") in {(e.field, e.rule) for e in errors}


def test_the_mapping_round_trips_and_value_maps_are_typed_raw_equals_code():
    assert ListMapping.from_json(BLOCKRAND.to_json()) == BLOCKRAND
    assert ListMapping.from_json(REDCAP.to_json()) == REDCAP
    assert parse_value_map("1=A; 2 = P\n", field_name="arm_values") == ({"1": "A", "2": "P"}, [])
    _, errors = parse_value_map("1=A; 1=P; junk", field_name="arm_values")
    assert {(e.field, e.rule) for e in errors} == {
        ("arm_values", "value_map_unique"),
        ("arm_values", "value_map_syntax"),
    }


def test_the_mapping_step_sees_the_columns_and_their_values():
    columns, values = header_and_values(fixture("clinicedc_list.csv"))
    assert columns == ["sid", "assignment", "site_name"]
    assert values["assignment"] == ["active", "placebo"]


def test_the_mapping_step_starts_from_the_known_layout_of_the_columns():
    expected = {
        "redcap_allocation_raw.csv": (
            "REDCap allocation table",
            {"arm_column": "redcap_randomization_group", "factor_disease_column": "disease"},
        ),
        "clinicedc_list.csv": (
            "clinicedc list",
            {"arm_column": "assignment", "sequence_column": "sid", "sequence_scope": "list"},
        ),
        "blockrand_by_stratum.csv": (
            "R blockrand output",
            {
                "arm_column": "treatment",
                "sequence_column": "id",
                "block_column": "block.id",
                "block_size_column": "block.size",
                "factor_disease_column": "stratum",
            },
        ),
    }
    for name, suggestion in expected.items():
        columns, _ = header_and_values(fixture(name))
        assert suggested_fields(columns, ["disease"]) == suggestion, name
    assert suggested_fields(["a", "b"], ["disease"]) == ("", {})
