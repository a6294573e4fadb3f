"""The scale generator (bench/scale.py) builds a world every invariant holds in, on both backends:
the chain verifies (with its checkpoint), the kit ledger replays and every site reconciles, the
trail explains every row, each used slot has one randomization, kits match their slot's arm,
the eligibility gate passes, the manifest's users sign in and its awaiting subjects are
randomized and dispensed through the real services, and no arm is stored in plaintext."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from iwrs.audit import Actor, verify_chain
from iwrs.db import read_session
from iwrs.locking import STUDY, counter_name
from iwrs.models.randomization import (
    Dispensation,
    Randomization,
    RandomizationCounter,
    RandomizationSlot,
    StratumPosition,
    StratumTally,
)
from iwrs.models.sites import Site
from iwrs.models.subjects import Subject, SubjectStatus
from iwrs.models.supply import Kit, Lot
from iwrs.models.users import User
from iwrs.services import (
    accountability,
    audit_views,
    dispensing,
    randomization,
    reconcile,
    stratum_tallies,
)
from iwrs.services.subjects import require_confirmed_eligible
from iwrs.services.supply import treatment_of
from tests.conftest import PG_URL, WORKER, sign_in
from tests.integration.test_blinding_at_rest import ARM_CODES, raw_dump

ROOT = Path(__file__).resolve().parents[2]


def _load_scale() -> Any:
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "bench" / "scale.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_scale"] = module
    spec.loader.exec_module(module)
    return module


scale = _load_scale()
TINY = {"sites": 3, "strata": 4, "kits": 400, "events": 2_000, "pool": 6}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny world (3 sites, 4 strata, 40 subjects, 400 kits, 2,000 events) with arm codes
    that cannot occur in a dump by chance, and the application serving it; built once per
    backend (the generator creates and migrates the database itself)."""
    folder = tmp_path_factory.mktemp(f"scale-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'world.sqlite'}"
    elif not PG_URL:
        pytest.skip("IWRS_TEST_DATABASE_URL is not set")
    else:
        name = f"iwrs_scale_{WORKER}_{os.getpid()}"
        url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    plan = scale.Plan.proportional(40, arm_codes=ARM_CODES, seed=7, **TINY)
    instance = folder / "instance"
    manifest = scale.build(url, plan, instance, fresh=True, testing=True)
    json.dumps(manifest)  # the manifest is plain JSON
    app = scale.open_app(url, instance, Path(manifest["protocol_file"]), testing=True)
    app.config["IWRS_PROPAGATE_UNEXPECTED"] = True
    yield app, manifest, plan
    app.extensions["iwrs.engine"].dispose()
    if request.param == "postgresql":
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")  # type: ignore[arg-type]
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_the_world_has_the_planned_size_and_shape(world):
    app, manifest, plan = world
    with app.app_context():
        session = read_session()
        assert session.scalar(select(func.count()).select_from(Site)) == plan.sites
        assert session.scalar(select(func.count()).select_from(Subject)) == 40 + plan.pool
        assert session.scalar(select(func.count()).select_from(Kit)) == plan.kits
        strata = session.scalars(select(StratumPosition.stratum)).all()
        assert len(strata) == plan.strata
        assert manifest["built"]["audit_events"] == plan.events
        assert verify_chain(session).count == plan.events
    assert sum(len(v) for v in manifest["awaiting_randomization"].values()) == plan.pool


def test_the_chain_verifies_with_its_checkpoints(world):
    app, _, _ = world
    with app.app_context():
        result, problems = audit_views.walk(app.extensions["iwrs.sessionmaker"](), full=True)
        assert result.ok and problems == []
        assert verify_chain(read_session()).ok


def test_the_ledger_reconciles_and_the_trail_explains_every_row(world):
    app, _, _ = world
    with app.app_context():
        events, problems = accountability.ledger_problems(actor=Actor.system("test"))
        assert events > 0 and problems == []
        assert accountability.reconciliation(actor=Actor.system("test")).balanced
        assert reconcile.reconcile(actor=Actor.system("test")) == []


def test_every_used_slot_has_one_randomization_and_kits_match_its_arm(world):
    app, _, _ = world
    with app.app_context():
        session = read_session()
        rows = session.scalars(select(Randomization)).all()
        slots = {s.id: s for s in session.scalars(select(RandomizationSlot))}
        used = [slots[r.slot_id] for r in rows]
        assert all(slots[r.slot_id].stratum == r.stratum for r in rows)
        assert Counter(r.slot_id for r in rows).most_common(1)[0][1] == 1
        by_stratum: dict[str, list[int]] = {}
        for slot in used:
            by_stratum.setdefault(slot.stratum, []).append(slot.sequence)
        for position in session.scalars(select(StratumPosition)):
            taken = sorted(by_stratum.get(position.stratum, []))
            assert taken == list(range(1, len(taken) + 1))
            assert position.next_sequence == len(taken) + 1
        slot_of = {r.subject_id: slots[r.slot_id] for r in rows}
        for dispensed in session.scalars(select(Dispensation)):
            kit = session.get(Kit, dispensed.kit_id)
            assert kit is not None and kit.state == "dispensed"
            assert kit.place_id == dispensed.subject_id
            assert treatment_of(kit) == randomization.slot_arm(slot_of[dispensed.subject_id])
        for slot in session.scalars(select(RandomizationSlot)):
            assert randomization.slot_arm(slot) in ARM_CODES  # sealed under its own context
            assert randomization.slot_block(slot)[1] in (4, 6)
        # each stratum's sealed tally (the statistician's status) is the count of its used slots
        tallies = {
            t.stratum: stratum_tallies.counts_of(t) for t in session.scalars(select(StratumTally))
        }
        assert tallies == {
            stratum: Counter(randomization.slot_arm(s) for s in used if s.stratum == stratum)
            for stratum in tallies
        }
        assert {lot.kit_numbers for lot in session.scalars(select(Lot))} == {"kit-numbers-v1"}


def test_the_counters_hold_the_randomizations_made(world):
    """Migration 0015's counters: study, per site and per stratum, equal to the rows."""
    app, _, _ = world
    with app.app_context():
        session = read_session()
        rows = session.execute(select(Randomization.site_id, Randomization.stratum)).all()
        expected = Counter({counter_name(STUDY): len(rows)})
        expected.update(counter_name("site", site) for site, _ in rows)
        expected.update(counter_name("stratum", stratum) for _, stratum in rows)
        counters = session.execute(select(RandomizationCounter.name, RandomizationCounter.value))
        assert len(rows) > 0 and dict(counters.all()) == dict(expected)


def test_every_eligible_or_randomized_subject_passes_the_gate(world):
    app, _, _ = world
    with app.app_context():
        session = read_session()
        subjects = session.scalars(
            select(Subject).where(Subject.status.in_(["eligible", "randomized"]))
        ).all()
        assert subjects
        for subject in subjects:
            if subject.status == SubjectStatus.RANDOMIZED:
                subject.status = SubjectStatus.ELIGIBLE  # the gate as it was passed
            require_confirmed_eligible(session, subject)
        session.rollback()


def test_the_manifest_users_sign_in_and_their_tokens_work(world):
    app, manifest, _ = world
    users = manifest["users"]
    people = [*users["investigators"], *users["pharmacists"]]
    people += [users["supply_manager"], users["auditor"]]
    for person in people:
        client = app.test_client()
        assert sign_in(client, person["username"], person["password"]).status_code == 302
        answer = app.test_client().get(
            "/api/v1/me", headers={"Authorization": f"Bearer {person['token']}"}
        )
        assert answer.status_code == 200
        assert answer.get_json()["username"] == person["username"]


def test_no_arm_is_stored_in_plaintext(world):
    app, _, _ = world
    dump = raw_dump(app)
    with app.app_context():
        some_kit = read_session().scalars(select(Kit.number)).first()
    assert some_kit is not None and some_kit.encode() in dump
    for code in ARM_CODES:
        for spelling in (code, code.lower()):
            assert spelling.encode("utf-8") not in dump, f"{spelling} found in the dump"
            assert spelling.encode("utf-16-le") not in dump


def test_sizes_are_proportional_to_subjects():
    small, full = scale.Plan.proportional(100), scale.Plan.proportional(100_000)
    assert (full.sites, full.strata, full.kits, full.events) == (1_500, 200, 2_000_000, 10_000_000)
    assert (small.sites, small.kits, small.events) == (2, 2_000, 10_000)
    assert small.strata % 2 == 0 and full.pool == small.pool


def test_the_full_size_kits_fit_by_kit_numbers_v2_and_a_small_world_keeps_v1():
    full = scale.Plan.proportional(100_000).kits
    assert full <= scale.KITS_MAX and scale.kit_scheme(full) == "kit-numbers-v2"
    assert scale.kit_scheme(scale.KITS_V1_MAX) == "kit-numbers-v1"
    assert scale.kit_scheme(scale.KITS_V1_MAX + 1) == "kit-numbers-v2"
    assert scale.kit_scheme(scale.Plan.proportional(100).kits) == "kit-numbers-v1"


def test_awaiting_subjects_are_randomized_and_dispensed_through_the_services(world):
    app, manifest, _ = world
    by_site = {p["site_id"]: p for p in manifest["users"]["investigators"]}
    pharmacist_of = {p["site_id"]: p for p in manifest["users"]["pharmacists"]}
    with app.app_context():
        session = read_session()

        def actor(username: str) -> Actor:
            user = session.scalars(select(User).where(User.username == username)).one()
            return Actor.of(user)

        made = session.scalar(select(func.count()).select_from(Randomization))
        numbers = []
        for site_id, waiting in manifest["awaiting_randomization"].items():
            investigator = by_site[int(site_id)]
            result = randomization.randomize(
                actor=actor(investigator["username"]),
                subject_id=waiting[0],
                signer_password=investigator["password"],
                understood=True,
            )
            assert result.kit_number
            numbers.append(result.randomization_number)
        # The study counter continues from the world's randomizations: R(n+1), R(n+2), ...
        assert numbers == [f"R{made + i:04d}" for i in range(1, len(numbers) + 1)]
        assert manifest["awaiting_visit"]
        for subject_id, visit_code in manifest["awaiting_visit"][:3]:
            site_id = session.get(Subject, subject_id).site_id  # type: ignore[union-attr]
            done = dispensing.dispense(
                actor=actor(pharmacist_of[site_id]["username"]),
                subject_id=subject_id,
                visit_code=visit_code,
            )
            assert done.kit_number and not done.out_of_window
        session.rollback()
        assert verify_chain(read_session()).ok
        assert accountability.ledger_problems(actor=Actor.system("test"))[1] == []
        assert reconcile.reconcile(actor=Actor.system("test")) == []
