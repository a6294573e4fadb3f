"""Exact idempotency of randomization (issue 13), on SQLite and PostgreSQL, through the API and
the services: a key's first outcome, success or refusal, is stored and every retry with the key
gets it back byte for byte; a key serves one subject; a duplicate running at the same time
waits or is answered in_progress; a crashed request's claim is re-claimed after its lease and
the subject is still randomized once; keys belong to their user."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text

from iwrs.db import read_session
from iwrs.errors import IWRSError
from iwrs.models import AuditEvent, IdempotencyKey, KeyState, Randomization, Subject
from iwrs.services import accountability, idempotency, randomization, shipments
from iwrs.services.keyed_randomization import result_document
from iwrs.services.supply import treatment_of
from iwrs.services.users import create_api_token
from tests.conftest import sign_in
from tests.integration.randomization_worker import (
    PASSWORD,
    World,
    eligible_subject,
    make_world,
    randomize,
    receive_requested,
)

MORE_STOCK = {"quantity = 8": "quantity = 20"}


@pytest.fixture
def new_world(tmp_path, database_url, clock) -> Iterator[Any]:
    made: list[World] = []

    def _new(**options: Any) -> World:
        options.setdefault("replacements", MORE_STOCK)
        made.append(make_world(tmp_path, database_url, clock, **options))
        return made[-1]

    yield _new
    for world in made:
        world.app.extensions["iwrs.engine"].dispose()


def token_of(world: World, name: str) -> str:
    with world.app.app_context():
        return create_api_token(
            actor=world.actor(name), user_id=world.people[name].id, name="edc", password=PASSWORD
        )[0]


def post(world: World, token: str, subject_id: int, key: str | None, **extra: Any) -> Any:
    body: dict[str, Any] = {"signature_password": PASSWORD, "understood": True}
    if key is not None:
        body["idempotency_key"] = key
    return world.app.test_client().post(
        f"/api/v1/subjects/{subject_id}/randomization",
        json=body,
        headers={"Authorization": f"Bearer {token}", **extra},
    )


def randomizations() -> int:
    read_session().rollback()
    return read_session().scalar(select(func.count()).select_from(Randomization)) or 0


def empty_site_of_placebo(world: World, code: str) -> None:
    """Every placebo kit at the site reported lost: the site cannot randomize (rule 5)."""
    read_session().rollback()
    from iwrs.models import Kit

    kits = read_session().scalars(
        select(Kit).where(
            Kit.place_kind == "site", Kit.place_id == world.sites[code], Kit.state == "available"
        )
    )
    for number in [k.number for k in kits if treatment_of(k) == "P"]:
        accountability.report_kit(
            actor=world.actor(f"ph-{code}"), kit_number=number, lost=True, reason="lost"
        )


def test_a_stale_retry_gets_the_stored_refusal_never_a_randomization(new_world):
    """The issue's reproduction: refused for stock under key K; stock arrives; K again is
    answered the stored refusal (same status, same bytes) and randomizes nothing; a new key
    randomizes."""
    world = new_world()
    token = token_of(world, "inv-CN01")
    with world.app.app_context():
        empty_site_of_placebo(world, "CN01")
        subject_id = eligible_subject(world, "CN01")
    first = post(world, token, subject_id, "K")
    assert first.status_code == 409
    assert first.content_type == "application/problem+json"
    assert [(e["field"], e["rule"]) for e in first.get_json()["errors"]] == [("site", "site_stock")]
    assert "Idempotent-Replayed" not in first.headers
    with world.app.app_context():
        shipments.request_manual_shipment(
            actor=world.actor("manager"), site_id=world.sites["CN01"], quantity=10
        )
        receive_requested(world)
        assert randomizations() == 0
    again = post(world, token, subject_id, "K")
    assert again.status_code == 409
    assert again.content_type == "application/problem+json"
    assert again.get_data() == first.get_data()
    assert again.headers["Idempotent-Replayed"] == "true"
    with world.app.app_context():
        assert randomizations() == 0
        assert read_session().get(Subject, subject_id).status == "eligible"
        events = read_session().scalars(
            select(AuditEvent).where(AuditEvent.action == "subject.randomization_refused")
        )
        assert [(e.subject_id, json.loads(e.after)["rule"]) for e in events] == [
            (subject_id, "site_stock")
        ]
    fresh = post(world, token, subject_id, "K2")
    assert fresh.status_code == 201, fresh.get_data(as_text=True)
    assert fresh.get_json()["randomization_number"] == "R0001"
    with world.app.app_context():
        assert randomizations() == 1


def test_a_success_is_replayed_byte_for_byte_and_a_key_serves_one_subject(new_world):
    world = new_world()
    token = token_of(world, "inv-CN01")
    with world.app.app_context():
        first_id, second_id = eligible_subject(world, "CN01"), eligible_subject(world, "CN01")
    first = post(world, token, first_id, "edc-1")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    replay = post(world, token, first_id, None, **{"Idempotency-Key": "edc-1"})
    assert replay.status_code == 201
    assert replay.get_data() == first.get_data()
    assert replay.headers["Idempotent-Replayed"] == "true"
    # The stored document is the API's schema, field for field.
    keyless = world.app.test_client().get(
        f"/api/v1/subjects/{first_id}/randomization", headers={"Authorization": f"Bearer {token}"}
    )
    assert keyless.get_json() == first.get_json()
    reused = post(world, token, second_id, "edc-1")
    assert reused.status_code == 422
    assert [(e["field"], e["rule"]) for e in reused.get_json()["errors"]] == [
        ("idempotency_key", "idempotency_key_reused")
    ]
    differ = post(world, token, second_id, "edc-2", **{"Idempotency-Key": "edc-3"})
    assert [e["rule"] for e in differ.get_json()["errors"]] == ["one_key"]
    with world.app.app_context():
        assert randomizations() == 1
        assert read_session().get(Subject, second_id).status == "eligible"


def test_a_wrong_signature_is_not_stored_and_keys_belong_to_their_user(new_world):
    world = new_world()
    token, other = token_of(world, "inv-CN01"), token_of(world, "inv-CN02")
    with world.app.app_context():
        subject_id, theirs = eligible_subject(world, "CN01"), eligible_subject(world, "CN02")
    wrong = world.app.test_client().post(
        f"/api/v1/subjects/{subject_id}/randomization",
        json={"signature_password": "not the password", "understood": True, "idempotency_key": "k"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert wrong.status_code == 401
    mine = post(world, token, subject_id, "k")  # the same key, now with the signature
    assert mine.status_code == 201 and "Idempotent-Replayed" not in mine.headers
    # Another user's "k" is another key: never a replay of mine, never refused as reused.
    foreign = post(world, other, subject_id, "k")
    assert foreign.status_code == 404 and "Idempotent-Replayed" not in foreign.headers
    assert post(world, other, theirs, "k2").status_code == 201
    with world.app.app_context():
        assert randomizations() == 2


def test_the_page_form_sends_a_fresh_key_after_a_refusal(new_world):
    import re

    world = new_world()
    with world.app.app_context():
        empty_site_of_placebo(world, "CN01")
        subject_id = eligible_subject(world, "CN01")
    client = world.app.test_client()
    assert sign_in(client, world.people["inv-CN01"].username).status_code == 302
    page = client.get(f"/subjects/{subject_id}").get_data(as_text=True)
    keys = re.findall(r'name="idempotency_key" value="([^"]+)"', page)
    csrf = re.findall(r'name="csrf_token" value="([^"]+)"', page)[0]
    form = {
        "csrf_token": csrf,
        "understood": "y",
        "signature_password": PASSWORD,
        "idempotency_key": keys[0],
    }
    refused = client.post(f"/subjects/{subject_id}/randomize", data=form)
    assert refused.status_code == 409
    after = re.findall(r'name="idempotency_key" value="([^"]+)"', refused.get_data(as_text=True))
    assert len(keys) == len(after) == 1 and after != keys
    with world.app.app_context():
        shipments.request_manual_shipment(
            actor=world.actor("manager"), site_id=world.sites["CN01"], quantity=10
        )
        receive_requested(world)
    # The old form resubmitted: the stored refusal. The re-rendered form: a randomization.
    assert client.post(f"/subjects/{subject_id}/randomize", data=form).status_code == 409
    done = client.post(
        f"/subjects/{subject_id}/randomize", data={**form, "idempotency_key": after[0]}
    )
    assert done.status_code == 302
    with world.app.app_context():
        assert randomizations() == 1


def test_a_crashed_claim_blocks_until_its_lease_and_is_then_reclaimed_once(new_world, clock):
    world = new_world(idempotency_wait=timedelta(0), idempotency_lease=timedelta(seconds=120))
    token = token_of(world, "inv-CN01")
    with world.app.app_context():
        subject_id = eligible_subject(world, "CN01")
        actor = world.actor("inv-CN01")
        request = idempotency.request_of("randomize", subject_id, {})
        # A request that claimed the key and then died (its process killed mid-request).
        crashed = idempotency._begin(actor, "K", request)
        assert isinstance(crashed, idempotency._Claim)
        with pytest.raises(idempotency.InProgress) as busy:
            randomize(world, subject_id, idempotency_key="K")
        assert (busy.value.status, busy.value.rule) == (409, "in_progress")
        assert busy.value.headers["Retry-After"] == "1"
        answered = post(world, token, subject_id, "K")
        assert answered.status_code == 409 and answered.headers["Retry-After"] == "1"
        assert [(e["field"], e["rule"]) for e in answered.get_json()["errors"]] == [
            ("idempotency_key", "in_progress")
        ]
        clock.advance(seconds=121)
        result = randomize(world, subject_id, idempotency_key="K")
        # The dead request, were it to come back, can no longer settle the key.
        from iwrs.db import transaction

        with pytest.raises(idempotency.ClaimLost), transaction() as session:
            idempotency._settle(session, crashed, 201, "{}")
        assert randomize(world, subject_id, idempotency_key="K") == result
        assert randomizations() == 1
        row = read_session().scalars(select(IdempotencyKey)).one()
        assert (row.state, row.status_code) == (KeyState.SUCCEEDED, 201)
        assert row.body == result_document(result)


def test_concurrent_duplicates_randomize_once(new_world, database_url):
    """Two threads send the same key at once: one randomization; the other is answered the
    replay or in_progress (it may not wait here), never a second randomization."""
    world = new_world(idempotency_wait=timedelta(0))
    with world.app.app_context():
        subject_ids = [eligible_subject(world, "CN01") for _ in range(6)]
    answers: dict[int, list[str]] = {s: [] for s in subject_ids}
    lock, barrier = threading.Lock(), threading.Barrier(2)

    def work() -> None:
        with world.app.app_context():
            for subject_id in subject_ids:
                barrier.wait()
                try:
                    result = randomize(world, subject_id, idempotency_key=f"k{subject_id}")
                    answer = result_document(result)
                except IWRSError as refusal:
                    answer = f"{refusal.status}/{refusal.rule}"
                with lock:
                    answers[subject_id].append(answer)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    with world.app.app_context():
        assert randomizations() == len(subject_ids)
        for pair in answers.values():
            results = [a for a in pair if a.startswith("{")]
            assert len(pair) == 2 and results, pair
            assert set(results) == {results[0]}
            assert set(pair) - set(results) <= {"409/in_progress"}


def _outside_lock(database_url: str, subject_id: int) -> Any:
    """An outside session holding the subject's row lock (PostgreSQL)."""
    engine = create_engine(database_url)
    connection = engine.connect()
    connection.execute(text("SELECT id FROM subject WHERE id = :id FOR UPDATE"), {"id": subject_id})
    return engine, connection


def _wait_until(condition: Any, what: str) -> None:
    import time

    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _waiting_on_locks(engine: Any) -> int:
    with engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        ).scalar_one()


def _in_thread(world: World, subject_id: int, key: str, out: list[str]) -> threading.Thread:
    def work() -> None:
        with world.app.app_context():
            try:
                out.append(result_document(randomize(world, subject_id, idempotency_key=key)))
            except IWRSError as refusal:
                out.append(f"{refusal.status}/{refusal.rule}")

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_a_duplicate_of_a_held_request_waits_or_is_told_in_progress(new_world, database_url):
    """The first request held inside its transaction (an outside session holds the subject's
    row): a duplicate that may not wait gets 409 in_progress; one that may wait gets the
    first's answer once it commits. One randomization."""
    if not database_url.startswith("postgresql"):
        pytest.skip("an outside session holding one row lock: PostgreSQL")
    world = new_world(idempotency_wait=timedelta(seconds=120))
    with world.app.app_context():
        subject_id = eligible_subject(world, "CN01")
    engine, connection = _outside_lock(database_url, subject_id)
    try:
        first: list[str] = []
        held = _in_thread(world, subject_id, "K", first)
        _wait_until(lambda: _waiting_on_locks(engine) == 1, "the first request never waited")
        settings = world.app.extensions["iwrs.settings"]
        settings.idempotency_wait = timedelta(0)
        with world.app.app_context(), pytest.raises(idempotency.InProgress):
            randomize(world, subject_id, idempotency_key="K")
        settings.idempotency_wait = timedelta(seconds=120)
        second: list[str] = []
        waiter = _in_thread(world, subject_id, "K", second)
    finally:
        connection.rollback()
        connection.close()
    held.join(timeout=120)
    waiter.join(timeout=120)
    engine.dispose()
    assert first and first == second and first[0].startswith("{")
    with world.app.app_context():
        assert randomizations() == 1


def test_a_reclaim_while_the_first_is_held_never_randomizes_twice(new_world, database_url, clock):
    """The first request held inside its transaction past its lease; a retry re-claims the key
    and waits on the same row. Released, exactly one randomizes and both answer its result."""
    if not database_url.startswith("postgresql"):
        pytest.skip("an outside session holding one row lock: PostgreSQL")
    world = new_world(idempotency_wait=timedelta(seconds=120))
    with world.app.app_context():
        subject_id = eligible_subject(world, "CN01")
    engine, connection = _outside_lock(database_url, subject_id)
    try:
        first: list[str] = []
        held = _in_thread(world, subject_id, "K", first)
        _wait_until(lambda: _waiting_on_locks(engine) == 1, "the first request never waited")
        clock.advance(seconds=121)
        second: list[str] = []
        reclaimer = _in_thread(world, subject_id, "K", second)
        _wait_until(lambda: _waiting_on_locks(engine) == 2, "the re-claim never waited")
    finally:
        connection.rollback()
        connection.close()
    held.join(timeout=120)
    reclaimer.join(timeout=120)
    engine.dispose()
    assert first and first == second and first[0].startswith("{"), (first, second)
    with world.app.app_context():
        assert randomizations() == 1
        events = read_session().scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "subject.randomized")
        )
        assert events == 1
        assert randomization.randomize(
            actor=world.actor("inv-CN01"),
            subject_id=subject_id,
            signer_password=PASSWORD,
            understood=True,
            idempotency_key="K",
        ) == randomization.randomize(
            actor=world.actor("inv-CN01"),
            subject_id=subject_id,
            signer_password=PASSWORD,
            understood=True,
        )


# --- property: any sequence of (key, subject) answers as the model says -------------------------

_EXAMPLES = 12


@pytest.fixture
def property_world(new_world) -> Iterator[World]:
    """Four subjects who can be randomized and two who cannot (screened, never assessed: every
    attempt is refused), at CN01; an app context."""
    from tests.integration.randomization_worker import screen

    world = new_world(idempotency_wait=timedelta(0))
    with world.app.app_context():
        world.people["can"] = [eligible_subject(world, "CN01") for _ in range(4)]
        world.people["cannot"] = [screen(world, "CN01").id for _ in range(2)]
        yield world


def test_any_sequence_of_keys_and_subjects_answers_as_the_model_says(property_world):
    """Model: a key's first use binds it to its subject and stores the answer (the subject's
    one randomization, or the refusal); the same key and subject replay that answer byte for
    byte; the key with another subject is refused idempotency_key_reused. Each subject is
    randomized at most once, whatever the keys."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from iwrs.services import keyed_randomization

    world = property_world
    subjects = world.people["can"] + world.people["cannot"]
    first_result: dict[int, str] = {}  # across examples: a subject stays randomized
    examples = iter(range(10_000))

    def answer(subject_id: int, key: str) -> tuple[int, str, bool]:
        try:
            got = keyed_randomization.randomize_answer(
                actor=world.actor("inv-CN01"),
                subject_id=subject_id,
                signer_password=PASSWORD,
                understood=True,
                idempotency_key=key,
            )
        except IWRSError as refusal:
            replayed = isinstance(refusal, idempotency.StoredRefusal)
            return refusal.status, f"{refusal.rule}|{refusal.message}", replayed
        return got.status, got.body, got.replayed

    @settings(
        max_examples=_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        st.lists(
            st.tuples(st.integers(0, 2), st.integers(0, len(subjects) - 1)),
            min_size=1,
            max_size=6,
        )
    )
    def run(steps: list[tuple[int, int]]) -> None:
        example = next(examples)
        bound: dict[str, tuple[int, tuple[int, str]]] = {}
        for key_index, subject_index in steps:
            key, subject_id = f"e{example}-k{key_index}", subjects[subject_index]
            status, body, replayed = answer(subject_id, key)
            if key in bound and bound[key][0] != subject_id:
                assert (status, body.split("|")[0]) == (422, "idempotency_key_reused")
                continue
            if key in bound:
                assert (status, body) == bound[key][1] and replayed
                continue
            assert not replayed
            bound[key] = (subject_id, (status, body))
            if subject_id in world.people["cannot"]:
                assert status == 409
            else:
                assert status == 201
                assert first_result.setdefault(subject_id, body) == body
        with world.app.app_context():
            assert randomizations() == len(first_result)

    run()


# --- visit dispensing takes a key too -------------------------------------------------------------


def test_a_keyed_dispensation_is_replayed_and_never_dispensed_twice(new_world, clock):
    world = new_world()
    token = token_of(world, "ph-CN01")
    with world.app.app_context():
        subject_id = eligible_subject(world, "CN01")
        randomize(world, subject_id)
    clock.advance(days=28)

    def dispense(key: str, visit: str = "V2") -> Any:
        return world.app.test_client().post(
            f"/api/v1/subjects/{subject_id}/dispensations",
            json={"visit_code": visit, "idempotency_key": key},
            headers={"Authorization": f"Bearer {token}"},
        )

    first = dispense("d-1")
    assert first.status_code == 201, first.get_data(as_text=True)
    assert "Idempotent-Replayed" not in first.headers
    again = dispense("d-1")
    assert (again.status_code, again.get_data()) == (201, first.get_data())
    assert again.headers["Idempotent-Replayed"] == "true"
    # Without the key the repeat is the visit's own refusal; with the key for another visit,
    # the key's binding refuses it.
    assert [e["rule"] for e in dispense("d-2").get_json()["errors"]] == ["once_per_visit"]
    assert [e["rule"] for e in dispense("d-1", "V3").get_json()["errors"]] == [
        "idempotency_key_reused"
    ]
    # The stored refusal is replayed too, and recorded once in the trail.
    replayed = dispense("d-2")
    assert replayed.headers["Idempotent-Replayed"] == "true"
    with world.app.app_context():
        from iwrs.models import Dispensation

        read_session().rollback()
        given = read_session().scalars(
            select(Dispensation.visit_code).where(Dispensation.subject_id == subject_id)
        )
        assert sorted(given) == ["V1", "V2"]
        refusals = read_session().scalars(
            select(AuditEvent.after).where(AuditEvent.action == "subject.dispensing_refused")
        )
        assert [json.loads(a)["rule"] for a in refusals] == ["once_per_visit"]


def test_an_arm_dependent_refusal_is_audited_without_its_subject(new_world, clock):
    # A dispensing refused for stock depends on the subject's arm: its trail event names the
    # site only, so blinded readers of the trail cannot group the subjects refused together.
    world = new_world()
    token = token_of(world, "ph-CN01")
    with world.app.app_context():
        subject_id = eligible_subject(world, "CN01")
        randomize(world, subject_id)
        session = read_session()
        session.execute(
            text(
                "UPDATE kit SET state = 'quarantined'"
                " WHERE place_kind = 'site' AND state = 'available'"
            )
        )
        session.commit()
    clock.advance(days=28)
    refused = world.app.test_client().post(
        f"/api/v1/subjects/{subject_id}/dispensations",
        json={"visit_code": "V2", "idempotency_key": "stock-1"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert [e["rule"] for e in refused.get_json()["errors"]] == ["site_stock"]
    with world.app.app_context():
        read_session().rollback()
        events = (
            read_session()
            .scalars(select(AuditEvent).where(AuditEvent.action == "subject.dispensing_refused"))
            .all()
        )
        assert [(e.entity_type, e.subject_id, json.loads(e.after)["rule"]) for e in events] == [
            ("site", None, "site_stock")
        ]


# --- retention: keys older than IWRS_IDEMPOTENCY_RETENTION_DAYS are purged by a job -------------


def key_names() -> list[str]:
    read_session().rollback()
    return sorted(read_session().scalars(select(IdempotencyKey.key)))


def job_events() -> list[tuple[str | None, str | None]]:
    read_session().rollback()
    return list(
        read_session().execute(
            select(AuditEvent.entity_id, AuditEvent.after).where(AuditEvent.action == "job.ran")
        )
    )


def test_keys_older_than_the_retention_are_purged_by_the_job_and_the_cli(new_world, clock):
    from iwrs.audit import Actor
    from iwrs.worker import run_once

    world = new_world(sites=("CN01",))
    with world.app.app_context():
        retention = world.app.extensions["iwrs.settings"].idempotency_retention
        assert retention == timedelta(days=30)
        old, recent = (eligible_subject(world, "CN01") for _ in range(2))
        randomize(world, old, idempotency_key="edc-old")
        clock.advance(days=20)
        randomize(world, recent, idempotency_key="edc-recent")
        clock.advance(days=10, minutes=1)  # "edc-old" is 30 days and a minute old
        assert key_names() == ["edc-old", "edc-recent"]
        before = len(job_events())
        outcome = run_once("idempotency_purge", None, Actor.system("test"))
        assert (outcome.state, outcome.summary["purged"]) == ("ran", 1)
        assert key_names() == ["edc-recent"]
        (event,) = job_events()[before:]
        assert event[0] == "idempotency_purge" and '"purged":1' in (event[1] or "")
        # Nothing old enough: nothing deleted, nothing recorded.
        assert run_once("idempotency_purge", None, Actor.system("test")).state == "idle"
        assert len(job_events()) == before + 1
        clock.advance(days=20)
        output = world.app.test_cli_runner().invoke(args=["iwrs", "purge-idempotency-keys"])
        assert output.exit_code == 0, output.output
        assert key_names() == []
        # A purged key is a new key: it may now serve another subject.
        other = eligible_subject(world, "CN01")
        assert randomize(world, other, idempotency_key="edc-old").subject_id == other
