"""The `iwrs` command group: init from nothing, demo, check, users, and clear refusals."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from iwrs import create_app
from iwrs.db import read_session
from iwrs.models import AuditEvent, Site, User
from tests.conftest import PG_URL, make_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request, tmp_path):
    """A database with no schema at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite'}"
        return
    request.getfixturevalue("pg_template")  # skips or fails like every PostgreSQL test
    name = f"iwrs_empty_{os.getpid()}_{tmp_path.name[-20:]}".lower().replace("-", "_")
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_init_builds_an_empty_database_and_is_idempotent(tmp_path, empty_database_url):
    app = create_app(make_settings(tmp_path, empty_database_url))
    runner = app.test_cli_runner()
    first = runner.invoke(args=["iwrs", "init"])
    assert first.exit_code == 0, first.output
    assert "loaded site CN04 West China Hospital of Sichuan University" in first.output
    second = runner.invoke(args=["iwrs", "init"])
    assert second.exit_code == 0 and "loaded" not in second.output
    with app.app_context():
        assert read_session().scalar(select(func.count()).select_from(Site)) == 4
    check = runner.invoke(args=["iwrs", "check"])
    assert check.exit_code == 0 and check.output.strip().endswith("OK")
    app.extensions["iwrs.engine"].dispose()


def test_init_creates_missing_keys_and_demo_prints_sign_ins(tmp_path, empty_database_url):
    settings = make_settings(
        tmp_path, empty_database_url, secret_key=None, audit_key=None, blinding_key=None
    )
    app = create_app(settings)
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["iwrs", "demo"])
    assert refused.exit_code == 1 and "missing key(s)" in refused.output
    result = runner.invoke(args=["iwrs", "init"])
    assert result.exit_code == 0, result.output
    for name in ("secret_key", "audit_key", "blinding_key"):
        path = settings.instance_path / f"{name}.key"
        assert f"created key file {path}" in result.output
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    demo = runner.invoke(args=["iwrs", "demo"])
    assert demo.exit_code == 0, demo.output
    credentials = settings.instance_path / "demo-sign-ins.txt"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    for role in (
        "investigator",
        "pharmacist",
        "supply_manager",
        "unblinded_statistician",
        "auditor",
        "admin",
    ):
        assert role in demo.output
    _demo_has_visits_due_today_and_this_week(app)
    again = runner.invoke(args=["iwrs", "demo"])
    assert again.exit_code == 0 and again.output.count("dr.li") == 1
    verify = runner.invoke(args=["iwrs", "audit", "verify"])
    assert verify.exit_code == 0 and "chain intact" in verify.output
    app.extensions["iwrs.engine"].dispose()


def _demo_has_visits_due_today_and_this_week(app) -> None:
    """Issue 15: the demo's clock spread its subjects over past weeks, so its pharmacists have
    visits due today and this week, and a resupply shipment to receive."""
    from iwrs.audit import Actor
    from iwrs.db import read_session
    from iwrs.models.users import User
    from iwrs.services import homes

    with app.app_context():
        people = {u.username: u for u in read_session().scalars(select(User))}
        cn01 = homes.pharmacist_home(actor=Actor.of(people["ph.wang"]))
        cn02 = homes.pharmacist_home(actor=Actor.of(people["ph.zhou"]))
        assert {d.visit.code for d in cn01.due_today} == {"V2", "V3"}
        assert [d.visit.code for d in cn02.due_this_week] == ["V2"] and cn02.due_today
        assert cn01.to_receive and all(c.days is not None for c in cn01.covers)


def test_user_commands_create_list_and_refuse_clearly(app):
    runner = app.test_cli_runner()
    created = runner.invoke(
        args=[
            "iwrs",
            "user",
            "create",
            "--username",
            "ph.new",
            "--full-name",
            "P N",
            "--role",
            "pharmacist",
            "--site",
            "CN02",
            "--password",
            "a long enough password",
        ]
    )
    assert created.exit_code == 0, created.output
    listed = runner.invoke(args=["iwrs", "user", "list"])
    assert "ph.new" in listed.output and "CN02" in listed.output
    weak = runner.invoke(
        args=[
            "iwrs",
            "user",
            "create",
            "--username",
            "x.y",
            "--full-name",
            "X",
            "--role",
            "auditor",
            "--password",
            "short",
        ]
    )
    assert weak.exit_code == 1
    assert "password: must be at least 12 characters" in weak.output
    assert "Traceback" not in weak.output
    bad_role = runner.invoke(
        args=[
            "iwrs",
            "user",
            "create",
            "--username",
            "x.y",
            "--full-name",
            "X",
            "--role",
            "boss",
            "--password",
            "a long enough pw",
        ]
    )
    assert bad_role.exit_code == 2 and "'boss' is not one of" in bad_role.output
    with app.app_context():
        assert read_session().scalars(select(User).where(User.username == "x.y")).first() is None
        assert (
            read_session()
            .scalars(select(AuditEvent).where(AuditEvent.action == "user.created"))
            .one()
        )


def _flask(args, **env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("IWRS_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_malformed_protocol_file_gets_one_clear_message(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[study]\nid = "X"\n')
    result = _flask(["iwrs", "check"], IWRS_PROTOCOL=str(bad), IWRS_INSTANCE_PATH=str(tmp_path))
    assert result.returncode != 0
    assert (
        "protocol file" in result.stderr and "arms: at least one entry is required" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_unreachable_database_gets_one_clear_message(tmp_path):
    result = _flask(
        ["iwrs", "init"],
        IWRS_INSTANCE_PATH=str(tmp_path),
        IWRS_DATABASE_URL="postgresql://iwrs:secret@127.0.0.1:1/iwrs",
    )
    assert result.returncode == 1
    assert (
        "cannot use the database at postgresql+psycopg://iwrs:***@127.0.0.1:1/iwrs" in result.stderr
    )
    assert "secret" not in result.stderr and "Traceback" not in result.stderr


def test_models_and_migrations_agree(app):
    """The schema the migrations build is exactly the one the models describe."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from iwrs.db import Base, engine

    with app.app_context(), engine().connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
