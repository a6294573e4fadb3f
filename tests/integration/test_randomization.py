"""Randomization through the real services, on SQLite and PostgreSQL: reproducible lists, every
refusal (clear, and nothing changed), a stock refusal that does not depend on which arm is short,
the kit of the slot's arm first-expiry-first-out, locked lists and their extension, dummy lists,
idempotent retries, and audit events that never name an arm."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import String, Text, func, select

from blinding import schedules
from iwrs.audit import Actor
from iwrs.db import read_session, transaction
from iwrs.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound
from iwrs.models import (
    AuditEvent,
    Dispensation,
    Kit,
    Randomization,
    RandomizationList,
    RandomizationSlot,
    Signature,
    SiteStatus,
    StratumPosition,
    Subject,
    SupplyAlert,
)
from iwrs.models.supply import Lot
from iwrs.services import accountability, randomization, randomization_views, sites, subjects
from iwrs.services.randomization import SEED_CONTEXT, slot_arm, stored_slot
from iwrs.services.supply import sealer, treatment_of
from iwrs.services.users import create_api_token
from tests.integration.randomization_worker import (
    PASSWORD,
    World,
    assess,
    eligible_subject,
    make_world,
    randomize,
    screen,
    usable_by_arm,
)

MORE_STOCK = {"quantity = 8": "quantity = 20"}  # 10 kits of each arm per site
DISTINCT_ARMS = {'code = "A"': 'code = "ACTIVEQX"', 'code = "P"': 'code = "PLACEBOZK"'}
SEED = bytes(range(32))


@pytest.fixture
def new_world(tmp_path, database_url, clock) -> Iterator[Any]:
    """new_world(**options) -> a World on this test's database (see make_world)."""
    made: list[World] = []

    def _new(**options: Any) -> World:
        options.setdefault("replacements", MORE_STOCK)
        made.append(make_world(tmp_path, database_url, clock, **options))
        return made[-1]

    yield _new
    for world in made:
        world.app.extensions["iwrs.engine"].dispose()


@pytest.fixture
def world(new_world) -> Iterator[World]:
    """CN01 and CN02 active with 10 kits of each arm, a generated list; an app context."""
    w = new_world()
    with w.app.app_context():
        yield w


def state() -> dict[str, Any]:
    """Everything a randomization changes (to show a refusal changed nothing)."""
    session = read_session()
    session.rollback()

    def rows(model: Any, *columns: str) -> list[tuple[Any, ...]]:
        return sorted(
            tuple(str(getattr(r, c)) for c in columns) for r in session.scalars(select(model))
        )

    return {
        "randomizations": rows(Randomization, "subject_id", "slot_id", "randomization_number"),
        "slots": rows(RandomizationSlot, "id", "sealed_arm"),
        "positions": rows(StratumPosition, "list_id", "stratum", "next_sequence", "last_sequence"),
        "lists": rows(RandomizationList, "id", "active", "locked_at", "fingerprint"),
        "dispensations": rows(Dispensation, "id", "kit_id", "subject_id"),
        "kits": rows(Kit, "number", "state", "place_kind", "place_id"),
        "subjects": rows(Subject, "id", "status", "stratum"),
        "signatures": session.scalar(select(func.count()).select_from(Signature)),
    }


def alerts(kind: str) -> list[SupplyAlert]:
    read_session().rollback()
    return list(
        read_session().scalars(
            select(SupplyAlert).where(SupplyAlert.kind == kind, SupplyAlert.resolved_at.is_(None))
        )
    )


def stored_slots(list_id: int) -> list[schedules.Slot]:
    """A stored list's slots with their arms unsealed."""
    return [
        stored_slot(s)
        for s in read_session().scalars(
            select(RandomizationSlot).where(RandomizationSlot.list_id == list_id)
        )
    ]


def ra_slots(list_id: int) -> list[schedules.Slot]:
    read_session().rollback()
    return sorted(
        (s for s in stored_slots(list_id) if s.stratum == "disease=RA"), key=lambda s: s.sequence
    )


def slot_of(subject_id: int) -> RandomizationSlot:
    read_session().rollback()
    row = (
        read_session()
        .scalars(select(Randomization).where(Randomization.subject_id == subject_id))
        .one()
    )
    return read_session().get(RandomizationSlot, row.slot_id)  # type: ignore[return-value]


def kit(number: str) -> Kit:
    read_session().rollback()
    return read_session().scalars(select(Kit).where(Kit.number == number)).one()


def site_kits_of_arm(world: World, code: str, arm: str) -> list[str]:
    read_session().rollback()
    return sorted(
        k.number
        for k in read_session().scalars(
            select(Kit).where(
                Kit.place_kind == "site",
                Kit.place_id == world.sites[code],
                Kit.state == "available",
            )
        )
        if treatment_of(k) == arm
    )


def refused(error: type[Exception], call: Any, *args: Any, **kwargs: Any) -> Any:
    """Call, expect the refusal, and that nothing a randomization changes has changed."""
    before = state()
    with pytest.raises(error) as refusal:
        call(*args, **kwargs)
    assert state() == before
    return refusal.value


# --- lists ---------------------------------------------------------------------------------


def test_same_seed_gives_the_same_list_byte_for_byte_and_another_seed_another(world):
    stat = world.actor("stat")
    first = randomization.generate_list(actor=stat, name="v1", seed=SEED)
    p = world.app.extensions["iwrs.protocol"]
    direct = schedules.generate_schedule(
        seed=SEED,
        strata=["disease=RA", "disease=SSc"],
        arms=[(a.code, a.ratio) for a in p.arms],
        block_sizes=p.block_sizes,
        slots_per_stratum=p.slots_per_stratum,
        algorithm=p.algorithm,
    )
    assert schedules.serialize(stored_slots(first.id)) == schedules.serialize(direct)
    key = sealer().derive_key(label=schedules.FINGERPRINT_LABEL)
    assert first.fingerprint == schedules.fingerprint(direct, key=key)
    assert first.fingerprint != hashlib.sha256(schedules.serialize(direct)).hexdigest()
    assert first.algorithm == schedules.ALGORITHM_VERSION
    # The documented seed is kept (sealed) with the list.
    unsealed = sealer().unseal(first.sealed_seed, context=SEED_CONTEXT.format(list_id=first.id))
    assert bytes.fromhex(unsealed) == SEED
    assert SEED.hex() not in first.sealed_seed

    again = randomization.generate_list(actor=stat, name="v2", seed=SEED)
    assert again.id != first.id and again.fingerprint == first.fingerprint
    assert schedules.serialize(stored_slots(again.id)) == schedules.serialize(direct)

    other = randomization.generate_list(actor=stat, name="v3", seed=bytes(31) + b"\x01")
    assert other.fingerprint != first.fingerprint
    assert schedules.serialize(stored_slots(other.id)) != schedules.serialize(direct)
    read_session().rollback()
    active = (
        read_session()
        .scalars(select(RandomizationList).where(RandomizationList.active.is_(True)))
        .all()
    )
    assert [r.id for r in active] == [other.id]  # an unlocked list is replaced, not added to


def test_only_the_statistician_manages_lists(world):
    refused(NotFound, randomization.generate_list, actor=world.actor("inv-CN01"), name="x")
    refused(NotFound, randomization.generate_list, actor=world.actor("admin"), name="x")


# --- refusals ------------------------------------------------------------------------------


def test_subjects_not_confirmed_eligible_are_refused(world):
    screening = screen(world, "CN01")
    assessed = screen(world, "CN01")
    assess(world, assessed)  # eligible on the answers, but nobody signed the decision
    failing = screen(world, "CN01")
    assess(world, failing, fvc_pct="35")
    failed = screen(world, "CN01")
    record = assess(world, failed, fvc_pct="35")
    subjects.decide_eligibility(
        actor=world.actor("inv-CN01"),
        subject_id=failed.id,
        assessment_id=record.row.id,
        decision="screen_failure",
        signer_password=PASSWORD,
        understood=True,
    )
    for subject, status in (
        (screening, "screening"),
        (assessed, "screening"),
        (failing, "screening"),
        (failed, "screen_failed"),
    ):
        error = refused(Conflict, randomize, world, subject.id)
        assert (error.field, error.rule) == ("subject_id", "confirmed_eligible")
        assert str(error) == (
            f"subject {subject.screening_number} is {status}; only subjects confirmed "
            "eligible are randomized"
        )


def test_a_closed_site_cannot_randomize(world):
    subject_id = eligible_subject(world, "CN01")
    sites.change_site_status(
        actor=world.actor("admin"),
        site_id=world.sites["CN01"],
        status=SiteStatus.CLOSED,
        signer_password=PASSWORD,
        understood=True,
    )
    error = refused(Conflict, randomize, world, subject_id)
    assert (error.field, error.rule) == ("site", "site_active")
    assert str(error) == "site CN01 is closed; randomization needs an active site"


def test_no_list_loaded_is_refused(new_world):
    world = new_world(with_list=False)
    with world.app.app_context():
        subject_id = eligible_subject(world, "CN01")
        error = refused(Conflict, randomize, world, subject_id)
        assert (error.field, error.rule) == ("list", "list_loaded")
        assert str(error) == "randomization refused: no randomization list is loaded"


def test_a_wrong_signature_password_randomizes_nothing(world):
    subject_id = eligible_subject(world, "CN01")
    error = refused(AuthenticationFailed, randomize, world, subject_id, signer_password="wrong")
    assert (error.field, error.rule) == ("password", "credentials")
    assert "nothing was signed" in str(error)
    refused(InvalidInput, randomize, world, subject_id, signer_password="")
    assert randomize(world, subject_id).randomization_number == "R0001"


def test_another_sites_investigator_gets_not_found(world):
    subject_id = eligible_subject(world, "CN01")
    refused(NotFound, randomize, world, subject_id, by="inv-CN02")
    refused(NotFound, randomize, world, subject_id, by="ph-CN01")
    refused(NotFound, randomize, world, 987654, by="inv-CN01")


def test_study_site_and_stratum_caps(new_world):
    caps = {
        **MORE_STOCK,
        "planned_enrolment = 30": "planned_enrolment = 4",
        "enrolment_cap = 36": "enrolment_cap = 4",
        "site_cap = 15 ": "site_cap = 2 ",
        "stratum_cap = 24 ": "stratum_cap = 2 ",
    }
    world = new_world(replacements=caps, sites=("CN01", "CN02", "CN03"))
    with world.app.app_context():
        plan = [
            ("CN01", "RA"),
            ("CN01", "SSc"),
            ("CN01", "RA"),
            ("CN02", "RA"),
            ("CN02", "RA"),
            ("CN02", "SSc"),
            ("CN03", "SSc"),
        ]
        ids = [eligible_subject(world, code, disease) for code, disease in plan]
        randomize(world, ids[0])
        randomize(world, ids[1])
        error = refused(Conflict, randomize, world, ids[2])
        assert str(error) == "randomization refused: site CN01 has reached its cap of 2"
        assert (error.field, error.rule) == ("subject_id", "cap")
        randomize(world, ids[3])
        error = refused(Conflict, randomize, world, ids[4])
        assert str(error) == "randomization refused: stratum disease=RA has reached its cap of 2"
        randomize(world, ids[5])
        error = refused(Conflict, randomize, world, ids[6])
        assert str(error) == "randomization refused: the study has reached its cap of 4"


def raised_by(alert) -> tuple[object, str, str, bool]:  # type: ignore[no-untyped-def]
    """Who the alert's audit event names: (user_id, role, auth, has a trigger). An alert is an
    automatic action: the system's, citing its triggering event (issue 10)."""
    read_session().rollback()
    (event,) = read_session().scalars(
        select(AuditEvent).where(
            AuditEvent.action == "supply.alert_raised", AuditEvent.entity_id == str(alert.id)
        )
    )
    return event.user_id, event.role, event.auth, "trigger" in json.loads(event.after)


def one_block_per_stratum() -> str:
    rows = ["stratum,sequence,block,block_size,arm"]
    for stratum in ("disease=RA", "disease=SSc"):
        rows += [f"{stratum},{n},1,4,{arm}" for n, arm in enumerate("APPA", start=1)]
    return "\n".join(rows) + "\n"


def test_an_exhausted_stratum_refuses_alerts_and_never_wraps_until_extended(world):
    stat = world.actor("stat")
    imported = randomization.import_list(actor=stat, name="short", csv_text=one_block_per_stratum())
    ids = [eligible_subject(world, "CN01" if n % 2 else "CN02") for n in range(5)]
    for subject_id in ids[:4]:
        randomize(world, subject_id)
    assert [slot_of(s).sequence for s in ids[:4]] == [1, 2, 3, 4]
    assert [slot_arm(slot_of(s)) for s in ids[:4]] == ["A", "P", "P", "A"]

    error = refused(Conflict, randomize, world, ids[4])
    assert (error.field, error.rule) == ("stratum", "stratum_exhausted")
    assert str(error) == (
        "randomization refused: stratum disease=RA has no slot left; "
        "the statistician has been alerted"
    )
    (alert,) = alerts("stratum_exhausted")  # committed although the randomization was refused
    assert "disease=RA" in alert.message and alert.site_id is None
    assert raised_by(alert) == (None, "system", "system", True)
    refused(Conflict, randomize, world, ids[4])
    assert len(alerts("stratum_exhausted")) == 1  # raised once while open

    # Whole blocks appended to one stratum, audited; the sequence goes on from 5.
    with pytest.raises(InvalidInput):
        randomization.extend_list(actor=stat, stratum="disease=RA", blocks=1, reason=" ")
    with pytest.raises(NotFound):
        randomization.extend_list(actor=stat, stratum="disease=XX", blocks=1, reason="more")
    added = randomization.extend_list(
        actor=stat, stratum="disease=RA", blocks=1, reason="stratum RA exhausted"
    )
    assert added in (4, 6)
    read_session().rollback()
    event = (
        read_session().scalars(select(AuditEvent).where(AuditEvent.action == "list.extended")).one()
    )
    assert event.reason == "stratum RA exhausted"
    # Not the slots added: their number is the appended block's (sealed) size.
    assert json.loads(event.after) == {"stratum": "disease=RA", "blocks": 1}
    randomize(world, ids[4])
    assert slot_of(ids[4]).sequence == 5
    assert slot_of(ids[4]).list_id == imported.id
    ssc = read_session().get(StratumPosition, (imported.id, "disease=SSc"))
    assert ssc is not None
    assert (ssc.next_sequence, ssc.last_sequence) == (1, 4)


def test_the_list_is_locked_after_the_first_randomization(world):
    stat = world.actor("stat")
    subject_ids = [eligible_subject(world, "CN01") for _ in range(2)]
    randomize(world, subject_ids[0])
    error = refused(Conflict, randomization.generate_list, actor=stat, name="v2")
    assert (error.field, error.rule) == ("list", "locked")
    assert "locked since the first randomization" in str(error)
    error = refused(
        Conflict,
        randomization.import_list,
        actor=stat,
        name="v2",
        csv_text=one_block_per_stratum(),
    )
    assert error.rule == "locked"
    read_session().rollback()
    before = (
        read_session()
        .scalars(select(StratumPosition).where(StratumPosition.stratum == "disease=RA"))
        .one()
    )
    last = before.last_sequence
    existing = ra_slots(before.list_id)
    added = randomization.extend_list(actor=stat, stratum="disease=RA", blocks=2, reason="more")
    assert 8 <= added <= 12
    read_session().rollback()
    position = (
        read_session()
        .scalars(select(StratumPosition).where(StratumPosition.stratum == "disease=RA"))
        .one()
    )
    assert position.last_sequence == last + added
    slots = ra_slots(position.list_id)
    assert slots[:last] == existing  # never edits a slot
    new = slots[last:]
    assert [s.sequence for s in new] == list(range(last + 1, last + added + 1))
    blocks = sorted({s.block for s in new})
    assert blocks == [existing[-1].block + 1, existing[-1].block + 2]
    for block in blocks:  # whole blocks of an allowed size, 1:1
        arms = [s.arm for s in new if s.block == block]
        assert {s.block_size for s in new if s.block == block} == {len(arms)}
        assert len(arms) in (4, 6) and arms.count("A") == arms.count("P")
    read_session().rollback()
    assert (
        read_session().scalars(select(AuditEvent).where(AuditEvent.action == "list.extended")).one()
    ).reason == "more"
    # The fingerprint now names the extended list.
    extended = read_session().get(RandomizationList, position.list_id)
    assert extended is not None
    assert extended.fingerprint == randomization.list_fingerprint(stored_slots(extended.id))
    randomize(world, subject_ids[1])
    assert slot_of(subject_ids[1]).sequence == 2


def test_a_dummy_list_is_refused_in_production(world):
    stat = world.actor("stat")
    error = refused(Conflict, randomization.generate_list, actor=stat, name="uat", dummy=True)
    assert (error.field, error.rule) == ("dummy", "no_dummy_in_production")
    error = refused(
        Conflict,
        randomization.import_list,
        actor=stat,
        name="uat",
        csv_text=one_block_per_stratum(),
        dummy=True,
    )
    assert error.rule == "no_dummy_in_production"


def test_a_dummy_list_is_used_in_uat(new_world):
    world = new_world(environment="uat", with_list=False)
    with world.app.app_context():
        row = randomization.generate_list(actor=world.actor("stat"), name="uat", dummy=True)
        assert row.dummy
        result = randomize(world, eligible_subject(world, "CN01"))
        assert result.randomization_number == "R0001"


# --- stock: the refusal does not depend on which arm is short ---------------------------------


def test_a_site_out_of_placebo_and_one_out_of_active_refuse_alike(new_world):
    world = new_world()
    lose = {"CN01": "P", "CN02": "A"}
    with world.app.app_context():
        for code, arm in lose.items():
            for number in site_kits_of_arm(world, code, arm):
                accountability.report_kit(
                    actor=world.actor(f"ph-{code}"), kit_number=number, lost=True, reason="lost"
                )
            assert site_kits_of_arm(world, code, arm) == []
            assert len(site_kits_of_arm(world, code, "AP".replace(arm, ""))) == 10
        subject_ids = {code: eligible_subject(world, code) for code in lose}
        errors = {code: refused(Conflict, randomize, world, s) for code, s in subject_ids.items()}
        masked = {code: str(e).replace(code, "<site>") for code, e in errors.items()}
        assert masked["CN01"] == masked["CN02"]
        assert masked["CN01"] == (
            "randomization refused: site <site> holds no dispensable kit for a new subject. "
            "Nothing was recorded; the supply manager has been alerted. Try again when the "
            "resupply is received."
        )
        assert {(e.field, e.rule) for e in errors.values()} == {("site", "site_stock")}
        assert {a.site_id for a in alerts("site_stock_randomization")} == {
            world.sites["CN01"],
            world.sites["CN02"],
        }
        tokens = {
            code: create_api_token(
                actor=world.actor(f"inv-{code}"),
                user_id=world.people[f"inv-{code}"].id,
                name="e",
                password=PASSWORD,
            )[0]
            for code in lose
        }
        before = state()

    # The same through the API (each request in its own context, as in production):
    # problem+json bodies equal once the site code and the instance path are masked.
    client = world.app.test_client()
    bodies = {}
    for code, subject_id in subject_ids.items():
        path = f"/api/v1/subjects/{subject_id}/randomization"
        response = client.post(
            path,
            json={
                "signature_password": PASSWORD,
                "understood": True,
                "idempotency_key": f"edc-{code}",
            },
            headers={"Authorization": f"Bearer {tokens[code]}"},
        )
        assert response.status_code == 409, response.get_data(as_text=True)
        assert response.content_type == "application/problem+json"
        assert response.get_json()["instance"] == path
        bodies[code] = response.get_data(as_text=True).replace(code, "<site>").replace(path, "<i>")
    assert bodies["CN01"] == bodies["CN02"]
    assert json.loads(bodies["CN01"])["errors"] == [
        {"field": "site", "rule": "site_stock", "message": masked["CN01"]}
    ]
    with world.app.app_context():
        assert state() == before


# --- the kit -------------------------------------------------------------------------------


def test_the_kit_is_of_the_slots_arm_and_first_expiry_first_out(new_world, clock):
    world = new_world(
        replacements={"quantity = 8": "quantity = 12"},
        sites=("CN01",),
        lots=(("L-LATE", 100, 700), ("L-EARLY", 4, 200)),
    )
    with world.app.app_context():
        site_id = world.sites["CN01"]
        today = clock.current.date()
        expiry = {lot.id: lot.expiry for lot in read_session().scalars(select(Lot))}
        for n in range(4):
            with transaction() as session:
                stock = usable_by_arm(session, site_id, today=today)
                candidates = {arm: {k.number: e for k, e in kits} for arm, kits in stock.items()}
            if n == 0:  # both lots, of both arms, are at the site
                assert all(len(set(c.values())) == 2 for c in candidates.values())
            result = randomize(world, eligible_subject(world, "CN01", "RA" if n % 2 else "SSc"))
            given = kit(result.kit_number)
            arm = slot_arm(slot_of(result.subject_id))
            assert treatment_of(given) == arm
            assert result.kit_number in candidates[arm]
            assert expiry[given.lot_id] == min(candidates[arm].values())
            assert given.state == "dispensed" and given.place_kind == "subject"
            assert given.place_id == result.subject_id


# --- idempotency ---------------------------------------------------------------------------


def test_a_retry_returns_the_first_result_and_a_key_serves_one_subject(world):
    first, second = eligible_subject(world, "CN01"), eligible_subject(world, "CN01")
    result = randomize(world, first, idempotency_key="edc-123")
    assert result.randomization_number == "R0001" and result.kit_number
    assert randomize(world, first, idempotency_key="edc-123") == result
    assert randomize(world, first) == result
    assert randomization_views.result_of(actor=Actor.system("test"), subject_id=first) == result
    error = refused(InvalidInput, randomize, world, second, idempotency_key="edc-123")
    assert (error.field, error.rule) == ("idempotency_key", "idempotency_key_reused")
    refused(InvalidInput, randomize, world, second, idempotency_key="x" * 101)
    # A retry is answered only to someone who may see the subject.
    refused(NotFound, randomize, world, first, by="inv-CN02", idempotency_key="edc-123")
    refused(NotFound, randomize, world, first, by="inv-CN02")
    assert randomize(world, second, idempotency_key="edc-124").randomization_number == "R0002"
    read_session().rollback()
    events = (
        read_session()
        .scalars(select(AuditEvent.subject_id).where(AuditEvent.action == "subject.randomized"))
        .all()
    )
    assert sorted(events) == sorted([first, second])


# --- blinding ------------------------------------------------------------------------------


def test_no_audit_event_and_no_stored_text_names_an_arm(new_world):
    world = new_world(replacements={**MORE_STOCK, **DISTINCT_ARMS})
    with world.app.app_context():
        stat = world.actor("stat")
        ids = [
            eligible_subject(world, code, disease)
            for code in ("CN01", "CN02")
            for disease in ("RA", "SSc", "RA")
        ]
        results = [randomize(world, s, idempotency_key=f"k{s}") for s in ids]
        randomization.extend_list(actor=stat, stratum="disease=SSc", blocks=1, reason="more")
        status = randomization_views.list_status(actor=stat)
        assert status is not None
        assert sum(status.overall_by_arm.values()) == len(ids)
        assert set(status.overall_by_arm) <= {"ACTIVEQX", "PLACEBOZK"}  # the statistician sees
        arms = {slot_arm(slot_of(s)) for s in ids}
        assert arms <= {"ACTIVEQX", "PLACEBOZK"}
        for result in results:
            assert "ACTIVEQX" not in repr(result) and "PLACEBOZK" not in repr(result)
        read_session().rollback()
        events = read_session().scalars(select(AuditEvent)).all()
        assert any(e.action == "subject.randomized" for e in events)
        for event in events:
            text = " ".join(str(v) for v in vars(event).values())
            assert "ACTIVEQX" not in text and "PLACEBOZK" not in text, event.action
        # A dump of every text column of every table holds no arm code either.
        from iwrs.db import Base

        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, String | Text)]
            if not columns:
                continue
            for row in read_session().execute(select(*columns)):
                text = " ".join(str(v) for v in row)
                assert "ACTIVEQX" not in text and "PLACEBOZK" not in text, table.name
