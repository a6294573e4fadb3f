"""A packaging vendor's own kit list (its column names, its codes for kit type and treatment, its
DD/MM/YYYY expiry) imports through a column mapping (blinding/kit_mapping.py) with the same
checks as the native layout; a wrong mapping or an unmapped value is refused naming the
vendor's column and the rule; the mapping is recorded in the import's audit event, without which
raw value is which treatment."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from blinding.kit_mapping import KitListMapping, remap_kit_list
from blinding.kits import kit_number
from iwrs.audit import Actor
from iwrs.db import read_session
from iwrs.errors import InvalidInput
from iwrs.models.audit import AuditEvent
from iwrs.models.supply import Kit
from iwrs.services import supply

SYSTEM = Actor.system("test")
MAPPING = KitListMapping(
    columns={
        "kit_number": "Kit No.",
        "kit_type": "Kit Description",
        "treatment": "Randomisation Code",
        "lot": "Packaging Lot",
        "expiry": "Expiry Date",
    },
    kit_types={"GenSci048 150mg/placebo PFS": "GSK-SC"},
    treatments={"TRT-1": "A", "TRT-2": "P"},
    expiry_format="DD/MM/YYYY",
)


def vendor_file(rows: int = 8, *, expiry: str = "31/12/2027") -> str:
    """The vendor's layout: its own headers and codes, a notes column, a blank row."""
    lines = ["Kit No.,Packaging Lot,Kit Description,Randomisation Code,Expiry Date,QA Notes"]
    for n in range(rows):
        code = "TRT-1" if n % 2 else "TRT-2"
        number = kit_number(410_000 + 37 * n)
        lines.append(f"{number},PL-0425,GenSci048 150mg/placebo PFS,{code},{expiry},released")
        if n == 3:
            lines.append("")
    return "\n".join(lines) + "\n"


def rules(errors: list) -> set[tuple[int, str, str]]:  # type: ignore[type-arg]
    return {(e.row, e.field, e.rule) for e in errors}


def test_the_pure_remap_names_the_vendors_column_and_value():
    native, errors = remap_kit_list(vendor_file(), MAPPING, kit_types=["GSK-SC"], treatments="AP")
    assert errors == [] and native.splitlines()[0] == "kit_number,kit_type,treatment,lot,expiry"
    assert native.splitlines()[1].endswith(",GSK-SC,P,PL-0425,2027-12-31")
    assert native.splitlines()[5] == ""  # the blank row kept: row numbers stay the vendor's

    wrong = KitListMapping(
        columns={**MAPPING.columns, "lot": "Lot", "expiry": "Kit No."},
        treatments={"TRT-1": "Genakumab"},
        expiry_format="D/M/Y",
    )
    _, errors = remap_kit_list(vendor_file(), wrong, kit_types=["GSK-SC"], treatments="AP")
    assert rules(errors) == {
        (0, "lot", "mapping_column_known"),
        (0, "expiry", "mapping_column_unique"),
        (0, "expiry_format", "one_of"),
        (0, "treatments", "unknown_treatment"),
    }
    text = vendor_file().replace("TRT-2,31/12/2027", "TRT-3,2027-12-31", 1)
    _, errors = remap_kit_list(text, MAPPING, kit_types=["GSK-SC"], treatments="AP")
    assert rules(errors) == {
        (1, "Randomisation Code", "value_mapped"),
        (1, "Expiry Date", "bad_date"),
    }
    assert KitListMapping.from_json(MAPPING.to_json()) == MAPPING


def test_a_vendor_list_imports_through_the_mapping_and_the_mapping_is_recorded(ctx):
    report = supply.import_kits(actor=SYSTEM, csv_text=vendor_file(), mapping=MAPPING)
    assert report.kits == 8 and report.lots == ("PL-0425",)
    session = read_session()
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Kit)) == 8
    (event,) = session.scalars(select(AuditEvent).where(AuditEvent.action == "kits.imported"))
    after = json.loads(event.after)
    assert after["mapping"]["columns"]["kit_number"] == "Kit No."
    assert after["mapping"]["expiry_format"] == "DD/MM/YYYY"
    assert after["mapping"]["treatments_mapped"] == 2
    assert "TRT-1" not in event.after  # which raw code is which treatment stays out


def test_a_vendor_list_with_an_unmapped_code_is_refused_whole(ctx):
    text = vendor_file().replace("TRT-1", "TRT-9", 1)
    with pytest.raises(InvalidInput) as refused:
        supply.import_kits(actor=SYSTEM, csv_text=text, mapping=MAPPING)
    problems = {(p["field"], p["rule"]) for p in refused.value.problems()}
    assert problems == {("Randomisation Code", "value_mapped")}
    session = read_session()
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Kit)) == 0


def test_the_cli_imports_a_vendor_list_with_a_mapping_file(app, tmp_path):
    (tmp_path / "kits.csv").write_text(vendor_file(), encoding="utf-8")
    (tmp_path / "mapping.json").write_text(MAPPING.to_json(), encoding="utf-8")
    runner = app.test_cli_runner()
    args = ["iwrs", "kits", "import", str(tmp_path / "kits.csv")]
    done = runner.invoke(args=[*args, "--mapping", str(tmp_path / "mapping.json")])
    assert done.exit_code == 0, done.output
    assert "imported 8 kits in lot(s) PL-0425" in done.output
    (tmp_path / "bad.json").write_text('{"columns": {}, "colour": "red"}', encoding="utf-8")
    refused = runner.invoke(args=[*args, "--mapping", str(tmp_path / "bad.json")])
    assert refused.exit_code != 0 and "--mapping" in refused.output
