"""A list at rest (README rule 1): block numbers and sizes are stored only sealed with the slot,
and the fingerprint is an HMAC a database reader cannot recompute; migration 0010 converts a
database written before it, with the blinding key, and refuses without it."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from blinding import schedules
from blinding.sealing import derive_key
from iwrs.audit import Actor
from iwrs.db import engine, make_engine, migrate, migrations_config, read_session
from iwrs.models.randomization import RandomizationList, RandomizationSlot
from iwrs.services import randomization, users
from tests.conftest import PASSWORD

SEED = bytes(range(40, 72))
SLOT_COLUMNS = {
    "id",
    "list_id",
    "stratum",
    "sequence",
    "sealed_arm",
    "sealed_block",
}


def _generate(app) -> tuple[RandomizationList, list[schedules.Slot]]:  # type: ignore[no-untyped-def]
    statistician = users.create_user(
        actor=Actor.system("test"),
        username="stat.x",
        full_name="Test statistician",
        role="unblinded_statistician",
        password=PASSWORD,
        site_codes=[],
    )
    row = randomization.generate_list(actor=Actor.of(statistician), name="v1", seed=SEED)
    p = app.extensions["iwrs.protocol"]
    slots = schedules.generate_schedule(
        seed=SEED,
        strata=randomization._strata(),
        arms=[(a.code, a.ratio) for a in p.arms],
        block_sizes=p.block_sizes,
        slots_per_stratum=p.slots_per_stratum,
    )
    return row, slots


def _raw_rows() -> list[dict]:
    with engine().connect() as connection:
        return [
            dict(r) for r in connection.execute(text("SELECT * FROM randomization_slot")).mappings()
        ]


def test_a_dump_of_the_slots_shows_no_block_and_the_fingerprint_needs_the_key(app):
    with app.app_context():
        row, slots = _generate(app)
        stored = sorted(
            (
                randomization.stored_slot(s)
                for s in read_session().scalars(select(RandomizationSlot))
            ),
            key=lambda s: (s.stratum, s.sequence),
        )
        assert stored == schedules.canonical_order(slots)  # blocks and arms unseal intact
        assert {s.block_size for s in stored} == {4, 6}
        rows = _raw_rows()
        # The slot rows hold nothing in clear but ids, the stratum, the sequence and use.
        assert set(rows[0]) == SLOT_COLUMNS
        tokens = [r["sealed_block"] for r in rows]
        assert len(set(tokens)) == len(rows) and len({len(t) for t in tokens}) == 1
        # A reader who guesses the whole list still cannot check the guess.
        canonical = schedules.serialize(slots)
        assert row.fingerprint != hashlib.sha256(canonical).hexdigest()
        key = derive_key(
            app.extensions["iwrs.settings"].blinding_key, label="iwrs/list-fingerprint/v1"
        )
        assert row.fingerprint == hmac.new(key, canonical, hashlib.sha256).hexdigest()
        assert row.fingerprint == randomization.list_fingerprint(stored)


def _before_0010(url: str) -> str:
    script = ScriptDirectory.from_config(migrations_config(url))
    down = script.get_revision("0009").down_revision
    assert isinstance(down, str)
    return down


def _migrate(url: str, target: str, *, key: bytes | None, down: bool = False) -> None:
    migrating = make_engine(url)
    try:
        migrate(migrating, target, down=down, blinding_key=key)
    finally:
        migrating.dispose()


def _revision(url: str) -> str | None:
    reading = make_engine(url)
    try:
        with reading.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        reading.dispose()


def _columns(url: str) -> set[str]:
    reading = make_engine(url)
    try:
        return {c["name"] for c in inspect(reading).get_columns("randomization_slot")}
    finally:
        reading.dispose()


def test_migration_0009_seals_existing_blocks_with_the_key_and_refuses_without_it(
    app, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Down to the revision before 0010 (blocks in clear, SHA-256 fingerprint), then up again:
    without the key the upgrade stops and changes nothing; with it every block is sealed and
    the fingerprint becomes the HMAC."""
    key = app.extensions["iwrs.settings"].blinding_key
    with app.app_context():
        row, slots = _generate(app)
        expected = {
            (s.stratum, s.sequence): randomization.stored_slot(s)
            for s in read_session().scalars(select(RandomizationSlot))
        }
        fingerprint = row.fingerprint
        read_session().close()
    app.extensions["iwrs.engine"].dispose()
    canonical = schedules.serialize(slots)

    before = _before_0010(database_url)
    _migrate(database_url, before, key=key, down=True)
    assert {"block", "block_size"} <= _columns(database_url)
    assert "sealed_block" not in _columns(database_url)
    with app.app_context():
        clear = {(r["stratum"], r["sequence"]): (r["block"], r["block_size"]) for r in _raw_rows()}
        assert clear == {k: (s.block, s.block_size) for k, s in expected.items()}
        # The column alone: the model maps columns later migrations add (sealed_mapping).
        old = read_session().scalar(
            select(RandomizationList.fingerprint).where(RandomizationList.id == row.id)
        )
        assert old == hashlib.sha256(canonical).hexdigest()
        read_session().close()
    app.extensions["iwrs.engine"].dispose()

    monkeypatch.delenv("IWRS_BLINDING_KEY", raising=False)
    monkeypatch.setenv("IWRS_INSTANCE_PATH", str(tmp_path / "no-keys-here"))
    with pytest.raises(Exception, match="needs the blinding key"):
        _migrate(database_url, "head", key=None)
    assert _revision(database_url) == before
    assert {"block", "block_size"} <= _columns(database_url)
    assert "sealed_block" not in _columns(database_url)

    # `alembic upgrade` outside the application: the key from the environment.
    monkeypatch.setenv("IWRS_BLINDING_KEY", key.hex())
    _migrate(database_url, "head", key=None)
    assert _columns(database_url) == SLOT_COLUMNS
    with app.app_context():
        read_session().rollback()
        after = {
            (s.stratum, s.sequence): randomization.stored_slot(s)
            for s in read_session().scalars(select(RandomizationSlot))
        }
        assert after == expected
        assert read_session().get(RandomizationList, row.id).fingerprint == fingerprint
