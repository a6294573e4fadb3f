"""Blinding at rest (design rule 1): the treatment of a kit is stored only sealed, so a raw dump
of the database names no arm; a key rotation leaves the old key opening nothing; a sealed value
is bound to its row. The protocol here has distinctive arm codes, so a search for them in raw
bytes means something (the shipped codes "A" and "P" would match any text)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

import iwrs
from blinding.sealing import Sealer, SealError
from iwrs import create_app
from iwrs.audit import Actor
from iwrs.clock import set_clock
from iwrs.db import engine, read_session
from iwrs.models.audit import AuditEvent
from iwrs.models.randomization import RandomizationSlot
from iwrs.models.sites import Site, SiteStatus
from iwrs.models.supply import Kit, Shipment
from iwrs.services import keys, randomization, shipments, sites, supply, trial, users
from tests.conftest import PASSWORD, ManualClock, make_settings
from tests.unit.test_sealing_nonces import assert_fresh_nonces

ARM_CODES = ("ACTIVEQX", "PLACEBOZK")
PG_DUMP = "/usr/bin/pg_dump"


def distinctive_protocol(tmp_path: Path) -> Path:
    """The shipped protocol with arm codes that cannot occur in a dump by chance."""
    source = Path(iwrs.__file__).parent / "protocols" / "gensci048-204.toml"
    body = source.read_text(encoding="utf-8")
    assert body.count('code = "A"\n') == 1 and body.count('code = "P"\n') == 1
    body = body.replace('code = "A"\n', 'code = "ACTIVEQX"\n').replace(
        'code = "P"\n', 'code = "PLACEBOZK"\n'
    )
    path = tmp_path / "distinctive.toml"
    path.write_text(body, encoding="utf-8")
    return path


def make_blind_app(tmp_path: Path, database_url: str, clock: ManualClock) -> Flask:
    """An app on the test database with the distinctive protocol loaded."""
    application = create_app(
        make_settings(tmp_path, database_url, protocol_path=distinctive_protocol(tmp_path))
    )
    application.config["IWRS_PROPAGATE_UNEXPECTED"] = True
    set_clock(application, clock)
    with application.app_context():
        protocol = application.extensions["iwrs.protocol"]
        assert {a.code for a in protocol.arms} == set(ARM_CODES)
        assert {a.name for a in protocol.arms} == {"Genakumab", "Placebo"}
        trial.load_protocol(actor=Actor.system("test"), protocol=protocol)
    return application


def stock_a_site(app: Flask) -> dict[str, int]:
    """Kits generated, CN01 activated, its initial shipment shipped and received."""
    with app.app_context():
        make = {
            role: users.create_user(
                actor=Actor.system("test"),
                username=f"{role[:6]}x",
                full_name=f"Test {role}",
                role=role,
                password=PASSWORD,
                site_codes=["CN01"] if role == "pharmacist" else [],
            )
            for role in ("admin", "supply_manager", "pharmacist")
        }
        supply.generate_kits(
            actor=Actor.system("test"),
            kit_type="GSK-SC",
            lot="BL01",
            expiry_date=supply.depot_today() + timedelta(days=365),
            count=40,
            seed=b"b" * 32,
        )
        site = read_session().scalars(select(Site).where(Site.code == "CN01")).one()
        sites.change_site_status(
            actor=Actor.of(make["admin"]),
            site_id=site.id,
            status=SiteStatus.ACTIVE,
            signer_password=PASSWORD,
            understood=True,
        )
        read_session().rollback()
        shipment = read_session().scalars(select(Shipment)).one()
        shipments.ship_shipment(
            actor=Actor.of(make["supply_manager"]),
            shipment_id=shipment.id,
            courier="Cold Chain",
            tracking_number="CC9",
        )
        numbers = read_session().scalars(select(Kit.number).where(Kit.shipment_id == shipment.id))
        shipments.receive_shipment(
            actor=Actor.of(make["pharmacist"]),
            shipment_id=shipment.id,
            lines={n: "good" for n in numbers},
            excursion=False,
        )
        return {"site_id": site.id, "shipment_id": shipment.id}


@pytest.fixture
def blind_app(tmp_path: Path, database_url: str, clock: ManualClock) -> Iterator[Flask]:
    application = make_blind_app(tmp_path, database_url, clock)
    yield application
    application.extensions["iwrs.engine"].dispose()


def raw_dump(app: Flask) -> bytes:
    """Every byte the database holds, as an attacker with a copy of it would read them."""
    url = make_url(app.extensions["iwrs.settings"].database_url)
    if url.get_backend_name() == "sqlite":
        with app.app_context(), engine().connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(FULL)")
        path = Path(url.database)  # type: ignore[arg-type]
        wal = path.with_name(path.name + "-wal")
        return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    dumped = subprocess.run([PG_DUMP, "--no-owner", libpq], capture_output=True, check=True)
    return dumped.stdout


def sealed_by_number(app: Flask) -> dict[str, str]:
    with app.app_context():
        read_session().rollback()
        return {k.number: k.sealed_treatment for k in read_session().scalars(select(Kit))}


def treatments(app: Flask) -> dict[str, str]:
    with app.app_context():
        read_session().rollback()
        return {k.number: supply.treatment_of(k) for k in read_session().scalars(select(Kit))}


def test_a_raw_dump_names_no_arm(blind_app):
    stock_a_site(blind_app)
    assert set(treatments(blind_app).values()) == set(ARM_CODES)
    dump = raw_dump(blind_app)
    some_kit = next(iter(sealed_by_number(blind_app)))
    assert some_kit.encode() in dump, "the dump holds the kits (the search below means something)"
    for code in ARM_CODES:
        for spelling in (code, code.lower()):
            assert spelling.encode("utf-8") not in dump, f"{spelling} found in the dump"
            assert spelling.encode("utf-16-le") not in dump


def test_sealed_values_show_neither_arm_nor_which_kits_share_one(blind_app):
    stock_a_site(blind_app)
    sealed = sealed_by_number(blind_app)
    assert len(sealed) == 40
    assert len(set(sealed.values())) == 40
    assert len({len(v) for v in sealed.values()}) == 1
    assert not any(code in value for value in sealed.values() for code in ARM_CODES)


def test_stored_kits_and_slots_share_no_nonce_and_no_ciphertext_body(blind_app):
    """Whole tokens differ by their row-bound tag even with one nonce for every seal; the
    nonces and ciphertext bodies must differ too (tests/unit/test_sealing_nonces.py)."""
    stock_a_site(blind_app)
    with blind_app.app_context():
        stat = users.create_user(
            actor=Actor.system("test"),
            username="statx",
            full_name="Test statistician",
            role="unblinded_statistician",
            password=PASSWORD,
            site_codes=[],
        )
        randomization.generate_list(actor=Actor.of(stat), name="at rest", seed=b"s" * 32)
        session = read_session()
        session.rollback()
        kits = list(session.scalars(select(Kit)))
        slots = list(session.scalars(select(RandomizationSlot)))
        by_arm: dict[str, list[str]] = {}
        for kit in kits:
            by_arm.setdefault(supply.treatment_of(kit), []).append(kit.sealed_treatment)
    assert set(by_arm) == set(ARM_CODES) and all(len(v) > 1 for v in by_arm.values())
    for same_treatment in by_arm.values():  # the pairs a reused nonce would give away
        assert_fresh_nonces(same_treatment)
    assert len(slots) > 1
    assert_fresh_nonces(
        [k.sealed_treatment for k in kits]
        + [s.sealed_arm for s in slots]
        + [s.sealed_block for s in slots]
    )


def test_after_rotation_the_old_key_opens_no_kit_and_the_new_key_opens_every_kit(blind_app):
    stock_a_site(blind_app)
    before = treatments(blind_app)
    old_key = blind_app.extensions["iwrs.settings"].blinding_key
    new_key = bytes(range(32))
    with blind_app.app_context():
        count = keys.rotate_blinding_key(actor=Actor.system("test"), new_key=new_key)
    assert count == 40
    sealed = sealed_by_number(blind_app)
    old, new = Sealer(old_key), Sealer(new_key)
    for number, value in sealed.items():
        with pytest.raises(SealError):
            old.unseal(value, context=f"kit:{number}")
        assert new.unseal(value, context=f"kit:{number}") == before[number]
    assert treatments(blind_app) == before, "the running app now uses the new key"
    with blind_app.app_context():
        event = (
            read_session()
            .scalars(select(AuditEvent).where(AuditEvent.action == "blinding_key.rotated"))
            .one()
        )
        assert old.key_id in event.before and new.key_id in event.after
        assert old_key.hex() not in (event.before + event.after)
        assert new_key.hex() not in (event.before + event.after)
        with pytest.raises(ValueError, match="current one"):
            keys.rotate_blinding_key(actor=Actor.system("test"), new_key=new_key)
    for code in ARM_CODES:
        assert code.encode() not in raw_dump(blind_app)


def test_cli_rotation_writes_the_new_key_file_and_reseals_everything(blind_app, monkeypatch):
    monkeypatch.delenv("IWRS_BLINDING_KEY", raising=False)
    stock_a_site(blind_app)
    before = treatments(blind_app)
    settings = blind_app.extensions["iwrs.settings"]
    settings.instance_path.mkdir(parents=True, exist_ok=True)  # where `iwrs init` puts keys
    old_key = settings.blinding_key
    result = blind_app.test_cli_runner().invoke(args=["iwrs", "keys", "rotate-blinding"])
    assert result.exit_code == 0, result.output
    assert "re-sealed 40 value(s)" in result.output
    key_file = settings.instance_path / "blinding_key.key"
    new_key = bytes.fromhex(key_file.read_text().strip())
    assert new_key != old_key
    assert not key_file.with_suffix(".key.new").exists()
    new = Sealer(new_key)
    for number, value in sealed_by_number(blind_app).items():
        assert new.unseal(value, context=f"kit:{number}") == before[number]
        with pytest.raises(SealError):
            Sealer(old_key).unseal(value, context=f"kit:{number}")


def test_a_sealed_value_copied_onto_another_kit_does_not_open(blind_app):
    stock_a_site(blind_app)
    before = treatments(blind_app)
    first, second = sorted(before)[:2]
    sealed = sealed_by_number(blind_app)
    with blind_app.app_context():
        with engine().begin() as connection:
            connection.execute(
                text("UPDATE kit SET sealed_treatment = :v WHERE number = :n"),
                {"v": sealed[first], "n": second},
            )
        read_session().rollback()
        copied = read_session().scalars(select(Kit).where(Kit.number == second)).one()
        with pytest.raises(SealError) as refused:
            supply.treatment_of(copied)
        message = str(refused.value)
        assert not any(code in message for code in ARM_CODES)
        original = read_session().scalars(select(Kit).where(Kit.number == first)).one()
        assert supply.treatment_of(original) == before[first]
