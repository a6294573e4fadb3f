"""No lock taken twice and no write lock taken to read (iwrs/locking.py):
- the resupply run locks each active site once, in that site's own transaction (PostgreSQL,
  where FOR UPDATE is sent; SQLite's single write lock has no row locks to count);
- a keyless retry of a randomization is answered from a read, without a write transaction (on
  SQLite, without waiting for the database's write lock)."""

from __future__ import annotations

from typing import Any

import pytest

from iwrs.db import read_session
from iwrs.services.resupply import run_resupply
from tests.integration import test_randomization as base
from tests.integration.randomization_worker import eligible_subject, randomize
from tests.statements import counted

new_world = base.new_world  # the fixture: new_world(**options) -> World


def _site_locks(statements: list[str]) -> int:
    return sum(
        1 for s in statements if "FOR UPDATE" in s and " FROM site " in " ".join(s.split()) + " "
    )


def test_the_resupply_run_locks_each_active_site_once(new_world: Any) -> None:
    world = new_world()  # CN01 and CN02 active
    with world.app.app_context():
        if read_session().get_bind().dialect.name != "postgresql":
            pytest.skip("SQLite sends no FOR UPDATE: its write lock is the database's")
        with counted(world.app) as tally:
            run_resupply(slot="daily")
        assert _site_locks(tally.statements) == 2, tally.shapes()


def test_a_keyless_retry_is_answered_without_a_write_transaction(new_world: Any) -> None:
    world = new_world(sites=("CN01",))
    with world.app.app_context():
        if read_session().get_bind().dialect.name != "sqlite":
            pytest.skip("PostgreSQL sends no statement that marks a write transaction")
        subject_id = eligible_subject(world, "CN01")
        first = randomize(world, subject_id)
        with counted(world.app) as tally:
            again = randomize(world, subject_id)
        assert again == first
        assert not [s for s in tally.statements if s.startswith("BEGIN IMMEDIATE")]
