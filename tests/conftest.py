"""Fixtures: an app on a fresh, migrated database (real SQLite and real PostgreSQL), users, clock.

Every test that takes `app` runs once per backend. PostgreSQL comes from IWRS_TEST_DATABASE_URL
(a database the tests may create other databases from); without it PostgreSQL tests are skipped,
except under CI=true, where an unreachable PostgreSQL fails the run.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from iwrs import create_app
from iwrs.audit import Actor
from iwrs.clock import set_clock
from iwrs.config import Settings
from iwrs.db import make_engine, upgrade_schema

PG_URL = os.environ.get("IWRS_TEST_DATABASE_URL")
IN_CI = os.environ.get("CI") == "true"
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
PASSWORD = "correct horse battery staple"
_counter = itertools.count()

# `make mutation`: a mutant slows the code through mutmut's trampolines, so a deadline would kill
# it for the wrong reason; derandomized so that two runs agree on which mutants survive; and each
# property test is capped at MUTATION_EXAMPLES examples (tests/MUTATION.md), or the run takes hours;
# a profile of tests/mutation_profile.py may set another cap (IWRS_MUTATION_EXAMPLES).
hypothesis_settings.register_profile("mutation", deadline=None, derandomize=True, database=None)
MUTATION_EXAMPLES = int(os.environ.get("IWRS_MUTATION_EXAMPLES", "25"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("hypothesis_profile", None) != "mutation":
        return
    for item in items:
        test = getattr(getattr(item, "obj", None), "__func__", getattr(item, "obj", None))
        held = getattr(test, "_hypothesis_internal_use_settings", None)
        if held is not None and held.max_examples > MUTATION_EXAMPLES:
            capped = hypothesis_settings(held, max_examples=MUTATION_EXAMPLES)
            test._hypothesis_internal_use_settings = capped  # type: ignore[union-attr]
        machine = getattr(item, "cls", None)
        held = getattr(machine, "settings", None)
        if isinstance(held, hypothesis_settings) and held.max_examples > MUTATION_EXAMPLES:
            machine.settings = hypothesis_settings(held, max_examples=MUTATION_EXAMPLES)  # type: ignore[union-attr]


def _pg_admin_engine():  # type: ignore[no-untyped-def]
    return create_engine(PG_URL, isolation_level="AUTOCOMMIT")  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The database profiles of tests/mutation_profile.py start a pytest session per mutant: they
    # name one template file (IWRS_TEST_SQLITE_TEMPLATE) that the first session migrates and every
    # later one copies, instead of migrating again (no migration runs mutated code).
    shared = os.environ.get("IWRS_TEST_SQLITE_TEMPLATE")
    if shared and Path(shared).exists():
        return Path(shared)
    path = tmp_path_factory.mktemp("template") / "template.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    upgrade_schema(engine)
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    if shared:
        shutil.copy(path, f"{shared}.{os.getpid()}")
        os.replace(f"{shared}.{os.getpid()}", shared)
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    if not PG_URL:
        if IN_CI:
            pytest.fail("CI=true but IWRS_TEST_DATABASE_URL is not set")
        pytest.skip("PostgreSQL tests need IWRS_TEST_DATABASE_URL")
    name = f"iwrs_tmpl_{WORKER}_{os.getpid()}"
    try:
        admin = _pg_admin_engine()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as error:  # an unreachable server
        if IN_CI:
            pytest.fail(f"PostgreSQL at {PG_URL} is unreachable under CI: {error}")
        pytest.skip(f"PostgreSQL unreachable: {error}")
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    upgrade_schema(engine)
    engine.dispose()
    yield name
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    if request.param == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "iwrs.sqlite"
        shutil.copy(template, path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("pg_template")
    name = f"iwrs_t_{WORKER}_{os.getpid()}_{next(_counter)}"
    admin = _pg_admin_engine()
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@dataclass
class ManualClock:
    """A clock the test moves by hand."""

    current: datetime

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    settings = Settings(
        instance_path=tmp_path / "instance",
        database_url=database_url,
        secret_key=secrets.token_bytes(32),
        audit_key=secrets.token_bytes(32),
        blinding_key=secrets.token_bytes(32),
        audit_signing_key=secrets.token_bytes(32),
        testing=True,
    )
    for name, value in overrides.items():
        setattr(settings, name, value)
    return settings


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))


@pytest.fixture
def app(tmp_path: Path, database_url: str, clock: ManualClock) -> Iterator[Flask]:
    """The application on a fresh database with the shipped protocol loaded."""
    from iwrs.services import trial

    application = create_app(make_settings(tmp_path, database_url))
    application.config["IWRS_PROPAGATE_UNEXPECTED"] = True
    set_clock(application, clock)
    with application.app_context():
        trial.load_protocol(
            actor=Actor.system("test"), protocol=application.extensions["iwrs.protocol"]
        )
    yield application
    application.extensions["iwrs.engine"].dispose()


@pytest.fixture
def ctx(app: Flask) -> Iterator[Flask]:
    """An application context for calling services directly."""
    with app.app_context():
        yield app


@pytest.fixture
def make_user(app: Flask):  # type: ignore[no-untyped-def]
    """Create a user: make_user("investigator", sites=["CN01"]) -> the User."""
    from iwrs.services import users

    def _make(
        role: str,
        *,
        sites: list[str] | None = None,
        username: str | None = None,
        password: str = PASSWORD,
    ):  # type: ignore[no-untyped-def]
        with app.app_context():
            return users.create_user(
                actor=Actor.system("test"),
                username=username or f"{role[:5]}{next(_counter)}",
                full_name=f"Test {role}",
                role=role,
                password=password,
                site_codes=sites or [],
            )

    return _make


def sign_in(client: FlaskClient, username: str, password: str = PASSWORD) -> Any:
    """Sign in through the real form, CSRF token included."""
    page = client.get("/sign-in")
    token = csrf_from(page.get_data(as_text=True))
    return client.post(
        "/sign-in", data={"username": username, "password": password, "csrf_token": token}
    )


def csrf_from(html: str) -> str:
    import re

    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html
    )
    assert match, "no CSRF token on the page"
    return match.group(1)


@pytest.fixture
def login_as(app: Flask, make_user):  # type: ignore[no-untyped-def]
    """A test client signed in with a new user of the role: login_as("pharmacist", ["CN01"])."""

    def _login(role: str, sites: list[str] | None = None) -> tuple[FlaskClient, Any]:
        user = make_user(role, sites=sites)
        client = app.test_client()
        response = sign_in(client, user.username)
        assert response.status_code == 302, response.get_data(as_text=True)
        return client, user

    return _login


_INITIALS = itertools.count()


def initials_for(n: int) -> str:
    """Distinct initials for the n-th test person ("AA", "AB", ...): a screened person is
    matched on date of birth, sex and initials, so test persons sharing a birth date differ."""
    return "".join(chr(65 + d) for d in (n // 676 % 26, n // 26 % 26, n % 26))


def next_initials() -> str:
    """Initials never used before in this test process."""
    return initials_for(next(_INITIALS))
