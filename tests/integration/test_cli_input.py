"""Every CLI error is one line, `error: <field>: <message> (<rule>)`, with a non-zero exit and no
traceback; imported files are decoded by the explicit ladder (iwrs/uploads.py)."""

from __future__ import annotations

import codecs

import pytest
from sqlalchemy import select

from blinding.kits import format_kit_list_csv
from iwrs.db import read_session
from iwrs.models.supply import Lot
from tests.integration.test_supply import kits_where, vendor_specs


def run(app, *args: str):  # type: ignore[no-untyped-def]
    return app.test_cli_runner().invoke(args=["iwrs", *args])


def one_line_error(result, rule: str) -> str:  # type: ignore[no-untyped-def]
    """The single error line of a refused command, checked for its rule and exit status."""
    assert result.exit_code in (1, 2), result.output
    assert isinstance(result.exception, SystemExit), "a clean exit, not an unhandled error"
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and lines[0].endswith(f"({rule})"), lines[0]
    return lines[0]


GENERATE = ["kits", "generate", "--kit-type", "GSK-SC", "--lot", "PL-9", "--count", "4"]


def test_kits_generate_with_a_bad_seed_or_date_is_one_line(app):
    line = one_line_error(run(app, *GENERATE, "--expiry", "2030-01-01", "--seed-hex", "zz"), "hex")
    assert line.startswith("error: --seed-hex: ")
    for written in ("19700101", "1970-W01-1"):
        line = one_line_error(
            run(app, *GENERATE, "--expiry", written, "--seed-hex", "0" * 64), "date"
        )
        assert line.startswith("error: --expiry: ")
    with app.app_context():
        assert kits_where() == []
    made = run(app, *GENERATE, "--expiry", "2030-01-01", "--seed-hex", "ab" * 32)
    assert made.exit_code == 0, made.output


def test_a_missing_option_or_file_is_one_line_too(app, tmp_path):
    one_line_error(run(app, "kits", "generate", "--kit-type", "GSK-SC"), "usage")
    one_line_error(run(app, "kits", "import", str(tmp_path / "absent.csv")), "usage")
    one_line_error(
        run(app, "user", "create", "--username", "x1", "--role", "boss", "--full-name", "X"),
        "usage",
    )


def _kit_list(app, lot: str) -> str:  # type: ignore[no-untyped-def]
    with app.app_context():
        return format_kit_list_csv(vendor_specs(lot=lot))


@pytest.mark.parametrize(
    ("encoding", "lot"),
    [("utf-16", "VL01"), ("utf-8-sig", "批01"), ("gbk", "批01"), ("gb18030", "VL01")],
)
def test_kits_import_decodes_utf16_bom_and_gbk_files(app, tmp_path, encoding, lot):
    path = tmp_path / "kits.csv"
    path.write_bytes(_kit_list(app, lot).encode(encoding))
    result = run(app, "kits", "import", str(path))
    assert result.exit_code == 0, result.output
    assert "imported 8 kits" in result.output
    with app.app_context():
        assert len(kits_where()) == 8
        assert read_session().scalars(select(Lot.code)).all() == [lot]


@pytest.mark.parametrize(
    "data",
    [
        b"kit_number,kit_type\n\x81\x20,\xff\n",  # not UTF-8 and not valid GBK
        "kit_number,kit_type,treatment,lot,expiry\n".encode("utf-16-le"),  # no BOM
        codecs.BOM_UTF16_LE + b"\x00\xd8",  # a BOM, then a lone surrogate
        "kit_number,lot\ncafé,Ünïcode\n".encode("latin-1"),
    ],
)
def test_kits_import_refuses_other_encodings_in_one_line(app, tmp_path, data):
    path = tmp_path / "kits.csv"
    path.write_bytes(data)
    line = one_line_error(run(app, "kits", "import", str(path)), "encoding")
    assert line.startswith("error: CSV_FILE: ")
    with app.app_context():
        assert kits_where() == []


def test_a_bidi_override_in_a_cli_name_is_one_line(app):
    result = run(
        app,
        "user",
        "create",
        "--username",
        "dr.rlo",
        "--full-name",
        "Dr \u202euW",
        "--role",
        "auditor",
        "--password",
        "correct horse battery staple 1",
    )
    assert one_line_error(result, "control_characters").startswith("error: full_name: ")


def test_an_unexpected_error_is_one_line_without_traceback(app):
    from iwrs.cli import iwrs_cli

    @iwrs_cli.command("test-unexpected")
    def unexpected() -> None:
        raise RuntimeError("first line\nsecond line")

    try:
        line = one_line_error(run(app, "test-unexpected"), "internal")
    finally:
        iwrs_cli.commands.pop("test-unexpected")
    assert line.startswith("error: unexpected RuntimeError: first line second line")


def test_a_deactivation_from_the_cli_needs_understood_like_the_page(app, make_user):
    from iwrs.models.users import User
    from tests.conftest import PASSWORD

    admin, target = make_user("admin"), make_user("auditor")
    args = ["user", "deactivate", target.username, "--reason", "left", "--as", admin.username]
    refused = app.test_cli_runner().invoke(args=["iwrs", *args], input=f"{PASSWORD}\n")
    # the password prompt is echoed before the error line: only the last line is the error
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert refused.output.strip().splitlines()[-1].startswith("error: understood: ")
    assert refused.output.strip().endswith("(required)")
    with app.app_context():
        assert read_session().get(User, target.id).active
    done = app.test_cli_runner().invoke(args=["iwrs", *args, "--understood"], input=f"{PASSWORD}\n")
    assert done.exit_code == 0, done.output
    with app.app_context():
        read_session().expire_all()
        assert not read_session().get(User, target.id).active
