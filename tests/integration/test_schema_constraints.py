"""Every state and kind the models hold is an enum whose values the database also enforces (a
CHECK constraint, the same on SQLite and PostgreSQL), dates are typed, and migration 0020 moves a
database written before it, with its data, both ways (issue 14)."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Enum, String, Text, inspect, text
from sqlalchemy.exc import IntegrityError

from iwrs.db import Base, make_engine, migrate, read_session
from iwrs.models import UnblindedAccessRequest
from iwrs.services import accountability, dispensing, sessions, unblinding
from tests.integration.randomization_worker import (
    PASSWORD,
    World,
    eligible_subject,
    make_world,
    randomize,
)

STATE_OR_KIND = re.compile(
    r"(^|_)(state|status|kind|category|decision|outcome|role|source|channel|sex)$|end_reason$"
)
DAY_OR_TIME = re.compile(r"(_on|_date|_at|^date|^day)$")
# Free strings by decision, each with its reason (the rest must be enums):
NOT_A_CLOSED_SET = {
    # the actor's role when the event was written: a user's role, "system", or "unknown" for a
    # sign-in attempt by no known user; the trail is append-only and hash-chained as written
    ("audit_event", "role"),
}


def enum_columns() -> list[tuple[str, str, type[enum.Enum], str]]:
    """(table, column, its enum, the name of its CHECK constraint) for every enum column."""
    found = []
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, Enum) and column.type.enum_class is not None:
                constraint = f"ck_{table.name}_{column.type.name}"
                found.append((table.name, column.name, column.type.enum_class, constraint))
    return found


def test_every_state_and_kind_column_is_an_enum_and_every_day_is_typed():
    """A column named like a state or kind holds an enum (so the database checks it); a column
    named like a day or a time is a Date or DateTime, never text."""
    free = []
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            textual = isinstance(column.type, String | Text) and not isinstance(column.type, Enum)
            if not textual or (table.name, column.name) in NOT_A_CLOSED_SET:
                continue
            if STATE_OR_KIND.search(column.name) or DAY_OR_TIME.search(column.name):
                free.append(f"{table.name}.{column.name}")
    assert free == []


def _stored_checks(url: str) -> dict[str, set[str]]:
    """Every CHECK constraint the migrations built: its name and the quoted values it names."""
    reading = make_engine(url)
    try:
        inspector = inspect(reading)
        return {
            c["name"]: set(re.findall(r"'([^']*)'", c["sqltext"]))
            for table in inspector.get_table_names()
            for c in inspector.get_check_constraints(table)
        }
    finally:
        reading.dispose()


def test_each_constraint_the_migrations_built_names_exactly_its_enums_values(database_url):
    """The one Python source (the model's enum) and the database's constraint agree: a value
    added to an enum without a migration fails here."""
    stored = _stored_checks(database_url)
    disagree = {
        f"{table}.{column}": (stored.get(name), {m.value for m in source})
        for table, column, source, name in enum_columns()
        if stored.get(name) != {m.value for m in source}
    }
    assert disagree == {}


# --- the database refuses what the code should never write ----------------------------------


@pytest.fixture
def world(tmp_path, database_url, clock) -> Iterator[World]:
    """CN01 and CN02 active, a list; one subject randomized with an idempotency key, given an
    extra kit and unblinded; a session; a pending unblinded-account request."""
    made = make_world(tmp_path, database_url, clock)
    with made.app.app_context():
        subject_id = eligible_subject(made, "CN01")
        day_one = randomize(made, subject_id, idempotency_key="edc-1")
        investigator = made.actor("inv-CN01")
        accountability.record_return(  # a kit_return row (issue 15)
            actor=made.actor("ph-CN01"), kit_number=day_one.kit_number, condition="unused"
        )
        dispensing.request_extra_kit(
            actor=investigator,
            subject_id=subject_id,
            visit_code=made.app.extensions["iwrs.protocol"].visits[0].code,
            kind="unscheduled",
            reason="vial dropped",
            signer_password=PASSWORD,
        )
        unblinding.unblind(
            actor=investigator,
            subject_id=subject_id,
            category="sae",
            reason="anaphylaxis",
            understood=True,
            signer_password=PASSWORD,
        )
        sessions.sign_in(username=investigator.username, password=PASSWORD)
        with made.app.extensions["iwrs.engine"].begin() as connection:
            connection.execute(
                UnblindedAccessRequest.__table__.insert().values(
                    username="stat.new",
                    full_name="New Statistician",
                    email="stat.new@example.org",
                    role="unblinded_statistician",
                    status="pending",
                    requested_by="admin",
                    requested_at=datetime(2026, 3, 2, tzinfo=UTC),
                )
            )
        yield made
    made.app.extensions["iwrs.engine"].dispose()


INSERT_ONLY = {"kit_event"}  # a trigger refuses any UPDATE: a bad row is inserted instead


def _refused(world: World, table: str, column: str, constraint: str) -> str | None:
    """Write an unknown value into `column` behind the models' back: None when the database
    refuses it by `constraint`, else what happened."""
    engine = world.app.extensions["iwrs.engine"]
    if table in INSERT_ONLY:
        others = [c["name"] for c in inspect(engine).get_columns(table) if c["name"] != "id"]
        values = ", ".join("'bogus'" if c == column else c for c in others)
        statement = (
            f"INSERT INTO {table} ({', '.join(others)}) "  # noqa: S608 (names from the models)
            f"SELECT {values} FROM {table} WHERE id = (SELECT min(id) FROM {table})"
        )
    else:
        statement = f"UPDATE {table} SET {column} = 'bogus'"  # noqa: S608
    try:
        with engine.connect() as connection, connection.begin():
            if not connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one():  # noqa: S608
                return "no row to change"
            connection.execute(text(statement))
            connection.rollback()
    except IntegrityError as error:
        named = getattr(getattr(error.orig, "diag", None), "constraint_name", None)
        return None if constraint in (named or str(error.orig)) else str(error.orig)
    return "accepted"


def test_the_database_refuses_an_unknown_state_or_kind_in_every_enum_column(world: World):
    """Table-driven over every enum column of the models, on both backends."""
    outcomes = {
        f"{table}.{column}": _refused(world, table, column, constraint)
        for table, column, _, constraint in enum_columns()
    }
    assert {k: v for k, v in outcomes.items() if v is not None} == {}


# --- migration 0020, with data, both ways ----------------------------------------------------

SNAPSHOT = {
    "randomization": "id, subject_id, slot_id, randomization_number, randomized_on",
    "randomization_slot": "id, list_id, stratum, sequence, sealed_arm, sealed_block",
    "kit_event": "id, action, from_state, to_state, to_place_kind",
    "kit_count": "place_kind, place_id, lot_id, state, n",
    "shipment": "id, kind, state",
    "supply_alert": "id, kind",
    "unblinding": "id, category",
    "notification": "id, channel, state",
    "user_session": "id, end_reason",
    "subject": "id, sex, status",
    "eligibility_assessment": "id, subject_id, stratum, decision",
    "dispensation": "id, kind",
    "kit_request": "id, kind",
    "randomization_list": "id, source",
}


def _snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    reading = make_engine(url)
    try:
        with reading.connect() as connection:
            return {
                table: sorted(
                    tuple(str(v) for v in row)
                    for row in connection.execute(text(f"SELECT {columns} FROM {table}"))  # noqa: S608
                )
                for table, columns in SNAPSHOT.items()
            }
    finally:
        reading.dispose()


def _migrate(url: str, revision: str, *, down: bool = False) -> None:
    migrating = make_engine(url)
    try:
        migrate(migrating, revision, down=down)
    finally:
        migrating.dispose()


def _execute(url: str, statement: str) -> Any:
    writing = make_engine(url)
    try:
        with writing.begin() as connection:
            found = connection.execute(text(statement))
            return found.all() if found.returns_rows else None
    finally:
        writing.dispose()


def test_migration_0020_keeps_every_value_down_and_up_and_refuses_what_it_cannot_hold(
    world: World, database_url: str
):
    """Down to 0019 (the day back to text, the idempotency column back, no checks), then up:
    every value as it was. A stored value the new schema cannot hold stops the upgrade, names
    the row, and leaves the database at 0019."""
    read_session().close()
    world.app.extensions["iwrs.engine"].dispose()
    before = _snapshot(database_url)
    assert before["randomization"] and before["unblinding"] and before["user_session"]

    _migrate(database_url, "0019", down=True)
    assert _execute(database_url, "SELECT version_num FROM alembic_version") == [("0019",)]
    day = _execute(database_url, "SELECT randomized_on, idempotency_key FROM randomization")
    assert day == [("2026-03-02", None)]
    # The copies 0020 drops are filled again from the one kept: the slot names its subject.
    copies = _execute(
        database_url,
        "SELECT s.subject_id = r.subject_id, s.used_at = r.randomized_at, s.stratum = r.stratum "
        "FROM randomization r JOIN randomization_slot s ON s.id = r.slot_id",
    )
    assert [tuple(bool(v) for v in row) for row in copies] == [(True, True, True)]
    assert _execute(
        database_url, "SELECT count(*) FROM randomization_slot WHERE subject_id IS NOT NULL"
    ) == [(1,)]
    # ...and the subject's stratum is its confirmed assessment's factors again.
    strata = _execute(
        database_url,
        "SELECT s.stratum, a.stratum FROM subject s JOIN eligibility_assessment a "
        "ON a.subject_id = s.id AND a.decision = 'eligible'",
    )
    assert len(strata) == 1 and strata[0][0] == strata[0][1] == '{"disease":"RA"}'
    assert not any(name.startswith("ck_kit_event") for name in _stored_checks(database_url))

    _execute(database_url, "UPDATE randomization SET randomized_on = '02/03/2026'")
    with pytest.raises(Exception, match=r"randomized_on .*randomization \d+: '02/03/2026'"):
        _migrate(database_url, "head")
    _execute(database_url, "UPDATE randomization SET randomized_on = '2026-03-02'")
    _execute(database_url, "UPDATE shipment SET kind = 'by_air' WHERE id = 1")
    with pytest.raises(Exception, match=r"shipment\.kind holds by_air"):
        _migrate(database_url, "head")
    assert _execute(database_url, "SELECT version_num FROM alembic_version") == [("0019",)]
    _execute(database_url, "UPDATE shipment SET kind = 'initial' WHERE id = 1")
    _execute(database_url, "UPDATE randomization SET stratum = 'disease=SSc'")
    with pytest.raises(Exception, match=r"link or the stratum disagrees in 1 row"):
        _migrate(database_url, "head")
    _execute(database_url, "UPDATE randomization SET stratum = 'disease=RA'")
    _execute(database_url, "UPDATE subject SET stratum = NULL")
    with pytest.raises(Exception, match=r"subject\.stratum disagrees .* in 1 row"):
        _migrate(database_url, "head")
    _execute(
        database_url,
        "UPDATE subject SET stratum = (SELECT a.stratum FROM eligibility_assessment a "
        "WHERE a.subject_id = subject.id AND a.decision = 'eligible')",
    )

    _migrate(database_url, "head")
    assert _snapshot(database_url) == before
    assert "idempotency_key" not in {
        c["name"] for c in inspect(world.app.extensions["iwrs.engine"]).get_columns("randomization")
    }
