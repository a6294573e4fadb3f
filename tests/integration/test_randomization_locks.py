"""Locks no wider than their rules (issue 13; the lock order: iwrs/locking.py), with real
processes frozen at known points (IWRS_FAILPOINT: the process stops itself with SIGSTOP inside
the randomize transaction, holding what it has locked so far):

- a randomization frozen at one site, holding that site's lock, delays no other site
  (PostgreSQL); on SQLite, whose single write lock makes that impossible, the others get a
  503 `busy` with Retry-After within the busy timeout instead of hanging;
- a frozen holder of the last locks (the counters) makes the others 503 `busy` within the lock
  timeout, and the study flows again once PostgreSQL ends the idle transaction;
- an outside session holding a site row: that site 503 `busy`, the others unaffected;
- the caps hold at their boundary under concurrency, numbers without gap or duplicate;
- kill -9 mid-randomization leaves all or nothing;
- two randomizations in one stratum take consecutive slots (the per-stratum lock).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import OperationalError

from iwrs.audit import verify_chain
from iwrs.db import read_session
from iwrs.errors import IWRSError
from iwrs.models import Subject
from iwrs.models.randomization import (
    Dispensation,
    Randomization,
    RandomizationCounter,
    RandomizationSlot,
    StratumPosition,
)
from iwrs.services import users
from tests.conftest import PASSWORD, csrf_from, sign_in
from tests.integration.randomization_worker import (
    SHIPPED_PROTOCOL,
    SITES,
    World,
    eligible_subject,
    ledger_check,
    make_world,
    randomize,
)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def new_world(tmp_path, database_url, clock) -> Iterator[Any]:
    """new_world(**options) -> a World on this test's database (make_world's options)."""
    made: list[World] = []

    def _new(**options: Any) -> World:
        made.append(make_world(tmp_path, database_url, clock, **options))
        return made[-1]

    yield _new
    for world in made:
        world.app.extensions["iwrs.engine"].dispose()


@pytest.fixture
def frozen(tmp_path, database_url, clock) -> Iterator[Any]:
    """frozen(world, subject_id, failpoint, **settings) -> a worker process randomizing the
    subject that stopped itself (SIGSTOP) at the failpoint, inside its transaction. Killed at
    teardown if still there."""
    processes: list[subprocess.Popen[bytes]] = []

    def _start(world: World, subject_id: int, failpoint: str, **settings: Any) -> Any:
        n = len(processes)
        app_settings = world.app.extensions["iwrs.settings"]
        code = next(c for c, i in world.sites.items() if i == _site_of(world, subject_id))
        investigator = world.people[f"inv-{code}"]
        go = tmp_path / "go"
        go.touch()
        job = {
            "instance_path": str(tmp_path / f"frozen-{n}"),
            "database_url": database_url,
            "protocol_path": str(app_settings.protocol_path or SHIPPED_PROTOCOL),
            "keys": {
                name: getattr(app_settings, name).hex()
                for name in ("secret_key", "audit_key", "blinding_key")
            },
            "now": clock.current.isoformat(),
            "password": PASSWORD,
            "ready_path": str(tmp_path / f"frozen-ready-{n}"),
            "go_path": str(go),
            "tasks_path": str(tmp_path / f"frozen-tasks-{n}.json"),
            "settings": settings,
        }
        Path(job["tasks_path"]).write_text(
            json.dumps(
                [
                    {
                        "subject_id": subject_id,
                        "key": None,
                        "user_id": investigator.id,
                        "username": investigator.username,
                    }
                ]
            )
        )
        job_path, marker = tmp_path / f"frozen-job-{n}.json", tmp_path / f"frozen-at-{n}"
        job_path.write_text(json.dumps(job))
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.randomization_worker",
                str(job_path),
                str(tmp_path / f"frozen-result-{n}.json"),
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "IWRS_FAILPOINT": failpoint,
                "IWRS_FAILPOINT_MARKER": str(marker),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        processes.append(process)
        deadline = time.monotonic() + 120
        while not (marker.exists() and _stopped(process.pid)):
            if process.poll() is not None:
                pytest.fail(f"the worker ended before its failpoint: {process.communicate()}")
            assert time.monotonic() < deadline, "the worker did not reach its failpoint"
            time.sleep(0.02)
        process.result_path = tmp_path / f"frozen-result-{n}.json"  # type: ignore[attr-defined]
        return process

    yield _start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _stopped(pid: int) -> bool:
    """Whether the process is stopped (state T in /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def resume(process: Any) -> list[dict[str, Any]]:
    """SIGCONT the frozen worker; its outcomes once it has finished."""
    os.kill(process.pid, signal.SIGCONT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    return json.loads(process.result_path.read_text())


def _site_of(world: World, subject_id: int) -> int:
    with world.app.app_context():
        subject = read_session().get(Subject, subject_id)
        assert subject is not None
        return subject.site_id


def api_client(world: World, code: str) -> Any:
    """A test client with a bearer token of the site's investigator."""
    user = world.people[f"inv-{code}"]
    with world.app.app_context():
        token, _ = users.create_api_token(
            actor=world.actor(f"inv-{code}"), user_id=user.id, name="locks", password=PASSWORD
        )
    client = world.app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def api_randomize(client: Any, subject_id: int) -> Any:
    return client.post(
        f"/api/v1/subjects/{subject_id}/randomization",
        json={"signature_password": PASSWORD, "understood": True},
    )


def assert_busy(response: Any) -> None:
    """503, problem+json with rule busy, and a Retry-After in whole seconds."""
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    body = response.get_json()
    assert body["type"].endswith("/busy")
    assert [e["rule"] for e in body["errors"]] == ["busy"]
    assert int(response.headers["Retry-After"]) >= 1


def numbers(world: World) -> dict[int, str]:
    """Randomization number by subject, as committed."""
    with world.app.app_context():
        read_session().rollback()
        return {
            r.subject_id: r.randomization_number
            for r in read_session().scalars(select(Randomization))
        }


def assert_numbered_without_gap(world: World, count: int) -> None:
    assert sorted(numbers(world).values()) == [f"R{n:04d}" for n in range(1, count + 1)]
    with world.app.app_context():
        assert verify_chain(read_session()).ok
        study = read_session().get(RandomizationCounter, "study")
        assert study is not None and study.value == count


def waiting_on_locks(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            ).scalar_one()
    finally:
        engine.dispose()


def wait_until(condition: Any, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_every_connection_carries_the_timeouts_of_the_settings(tmp_path, database_url, clock):
    """The bounded waits are set on every pooled connection: lock_timeout and
    idle_in_transaction_session_timeout on PostgreSQL, the busy timeout on SQLite."""
    from iwrs import create_app
    from tests.conftest import make_settings

    app = create_app(
        make_settings(
            tmp_path,
            database_url,
            db_lock_timeout_ms=1234,
            db_idle_in_transaction_timeout_ms=5678,
            sqlite_busy_timeout_ms=910,
        )
    )
    engine = app.extensions["iwrs.engine"]
    with engine.connect() as connection:
        if database_url.startswith("postgresql"):
            shown = [
                connection.execute(text(f"SHOW {name}")).scalar_one()
                for name in ("lock_timeout", "idle_in_transaction_session_timeout")
            ]
            assert shown == ["1234ms", "5678ms"]
        else:
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 910
    engine.dispose()


# --- a stuck randomization at one site ---------------------------------------------------------


def test_a_randomization_frozen_at_one_site_leaves_other_sites_unaffected(
    new_world, frozen, database_url
):
    """The frozen process holds CN01's subject and site locks (checked: NOWAIT is refused);
    CN02 and CN03 randomize meanwhile, in the same stratum, with a short lock timeout, so any
    wait on a lock the frozen one holds (the trial row, the stratum, a counter) would fail them
    with 503. Resumed, the frozen one completes: numbers without gap."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite: one write at a time (see the SQLite test below)")
    world = new_world(sites=SITES[:3], db_lock_timeout_ms=2000)
    with world.app.app_context():
        stuck = eligible_subject(world, "CN01")
        others = [eligible_subject(world, code) for code in ("CN02", "CN03", "CN02", "CN03")]
    clients = {code: api_client(world, code) for code in ("CN02", "CN03")}
    process = frozen(world, stuck, "randomize.after_site_lock")

    outside = create_engine(database_url)
    with outside.connect() as connection, pytest.raises(OperationalError) as held:
        connection.execute(text("SELECT id FROM site WHERE code = 'CN01' FOR UPDATE NOWAIT"))
    assert getattr(held.value.orig, "sqlstate", None) == "55P03"
    outside.dispose()

    for n, subject_id in enumerate(others):
        response = api_randomize(clients[("CN02", "CN03")[n % 2]], subject_id)
        assert response.status_code == 201, response.get_data(as_text=True)
    (outcome,) = resume(process)
    assert outcome["result"]["randomization_number"] == "R0005", outcome
    assert_numbered_without_gap(world, 5)


def test_on_sqlite_a_frozen_writer_gives_busy_with_retry_after_not_a_hang(
    new_world, frozen, database_url
):
    """SQLite has one write lock for the whole database: a frozen randomization holds every
    site back. Each waiting request ends within the busy timeout with 503 `busy` and
    Retry-After (API and page), nothing saved; resumed, the study flows again."""
    if not database_url.startswith("sqlite"):
        pytest.skip("the PostgreSQL behaviour is tested above")
    world = new_world(sqlite_busy_timeout_ms=500)
    with world.app.app_context():
        stuck = eligible_subject(world, "CN01")
        waiting = eligible_subject(world, "CN02")
    client = api_client(world, "CN02")
    page = world.app.test_client()
    assert sign_in(page, world.people["inv-CN02"].username).status_code == 302
    token = csrf_from(page.get(f"/subjects/{waiting}").get_data(as_text=True))
    process = frozen(world, stuck, "randomize.after_site_lock")

    began = time.monotonic()
    assert_busy(api_randomize(client, waiting))
    answer = page.post(
        f"/subjects/{waiting}/randomize",
        data={"csrf_token": token, "understood": "y", "signature_password": PASSWORD},
    )
    assert answer.status_code == 503
    assert int(answer.headers["Retry-After"]) >= 1
    assert time.monotonic() - began < 30  # two waits of 0.5 s, never a hang
    assert numbers(world) == {}

    (outcome,) = resume(process)
    assert outcome["result"]["randomization_number"] == "R0001"
    assert api_randomize(client, waiting).status_code == 201
    assert_numbered_without_gap(world, 2)


def test_a_frozen_holder_of_the_counters_gives_busy_until_postgresql_ends_it(
    new_world, frozen, database_url
):
    """Frozen after taking the counters (the last locks), the process holds the study back:
    another site's randomization gets 503 `busy` within the lock timeout. PostgreSQL ends the
    idle transaction (idle_in_transaction_session_timeout) and rolls it back; the study flows
    again, and the frozen one's subject is left as it was (all or nothing)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL timeouts (SQLite: the test above)")
    world = new_world(db_lock_timeout_ms=1000)
    with world.app.app_context():
        stuck = eligible_subject(world, "CN01")
        other = eligible_subject(world, "CN02")
    client = api_client(world, "CN02")
    process = frozen(
        world, stuck, "randomize.after_counters", db_idle_in_transaction_timeout_ms=3000
    )

    assert_busy(api_randomize(client, other))
    answers: list[int] = []

    def flows() -> bool:
        answers.append(api_randomize(client, other).status_code)
        return answers[-1] == 201

    wait_until(flows, "the study did not flow again after the idle-in-transaction timeout")
    assert set(answers[:-1]) <= {503}
    assert numbers(world) == {other: "R0001"}
    os.kill(process.pid, signal.SIGCONT)
    process.communicate(timeout=120)  # its connection was ended: its commit cannot happen
    with world.app.app_context():
        assert randomize(world, stuck).randomization_number == "R0002"
    assert_numbered_without_gap(world, 2)


def test_an_outside_session_holding_a_site_row_delays_only_that_site(new_world, database_url):
    """A psql-like session locks CN01's row and keeps it: CN01's randomization gets 503 `busy`
    with Retry-After within the lock timeout; CN02 randomizes meanwhile; released, CN01 too."""
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks: PostgreSQL (SQLite: one write lock, tested above)")
    world = new_world(db_lock_timeout_ms=1000)
    with world.app.app_context():
        at_cn01 = eligible_subject(world, "CN01")
        at_cn02 = eligible_subject(world, "CN02")
    cn01, cn02 = api_client(world, "CN01"), api_client(world, "CN02")
    outside = create_engine(database_url)
    holder = outside.connect()
    held = holder.begin()
    holder.execute(text("SELECT id FROM site WHERE code = 'CN01' FOR UPDATE"))
    try:
        assert_busy(api_randomize(cn01, at_cn01))
        assert api_randomize(cn02, at_cn02).status_code == 201
    finally:
        held.rollback()
        holder.close()
        outside.dispose()
    assert api_randomize(cn01, at_cn01).status_code == 201
    assert numbers(world) == {at_cn02: "R0001", at_cn01: "R0002"}


# --- the counters ------------------------------------------------------------------------------

CAPS = {
    "study": (
        {
            "planned_enrolment = 30": "planned_enrolment = 3",
            "enrolment_cap = 36": "enrolment_cap = 3",
        },
        [(code, "RA") for code in SITES] * 2,
    ),
    "site": ({"site_cap = 15 ": "site_cap = 3 "}, [("CN01", "RA")] * 8),
    "stratum": (
        {"stratum_cap = 24 ": "stratum_cap = 3 "},
        [(code, "RA") for code in SITES] * 2,
    ),
}


@pytest.mark.parametrize("cap", sorted(CAPS))
def test_a_cap_holds_at_its_boundary_under_concurrency(new_world, database_url, cap):
    """Cap 3, 8 attempts at once: exactly 3 randomized, R0001..R0003, the others refused with
    rule `cap`. On PostgreSQL an outside session holds the study counter until all 8 wait, so
    several pass the early (unlocked) check and the conditional increment decides."""
    replacements, plan = CAPS[cap]
    world = new_world(
        replacements=replacements,
        sites=SITES,
        db_lock_timeout_ms=60000,
        sqlite_busy_timeout_ms=60000,
    )
    with world.app.app_context():
        subject_ids = [eligible_subject(world, code, disease) for code, disease in plan]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(subject_ids))

    def work(subject_id: int) -> None:
        with world.app.app_context():
            barrier.wait()
            try:
                randomize(world, subject_id)
                outcomes.append("randomized")
            except IWRSError as refusal:
                outcomes.append(f"{type(refusal).__name__}/{refusal.rule}")
            except Exception as error:  # noqa: BLE001 - any other exception fails the test
                outcomes.append(f"error {type(error).__name__}: {error!r}")

    postgresql = database_url.startswith("postgresql")
    outside = create_engine(database_url)
    holder = outside.connect()
    held = holder.begin()
    if postgresql:
        holder.execute(text("SELECT * FROM randomization_counter WHERE name = 'study' FOR UPDATE"))
    threads = [threading.Thread(target=work, args=(s,)) for s in subject_ids]
    try:
        for thread in threads:
            thread.start()
        if postgresql:
            wait_until(
                lambda: waiting_on_locks(database_url) >= len(subject_ids),
                "the attempts did not all reach a lock",
                120,
            )
    finally:
        held.rollback()
        holder.close()
        outside.dispose()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(outcomes) == ["Conflict/cap"] * 5 + ["randomized"] * 3, outcomes
    assert_numbered_without_gap(world, 3)


# --- all or nothing, and the per-stratum lock --------------------------------------------------


def test_kill_9_mid_randomization_leaves_nothing_behind(new_world, frozen, database_url):
    """A worker killed (SIGKILL) after every write of its randomization, counters taken,
    before commit: nothing of it remains (slot, position, kit, counters, subject, trail), and
    the next randomizations are numbered from R0001."""
    if not database_url.startswith("postgresql"):
        pytest.skip("a killed process mid-transaction: PostgreSQL (production) only")
    world = new_world()
    with world.app.app_context():
        killed = eligible_subject(world, "CN01")
        other = eligible_subject(world, "CN02")
    process = frozen(world, killed, "randomize.after_counters")
    process.kill()
    process.communicate(timeout=60)
    with world.app.app_context():
        assert randomize(world, other).randomization_number == "R0001"
        session = read_session()
        session.rollback()
        assert session.get(Subject, killed).status == "eligible"
        assert (
            session.scalars(select(Dispensation).where(Dispensation.subject_id == killed)).all()
            == []
        )
        assert (
            session.scalars(
                select(Randomization.slot_id).where(Randomization.subject_id == killed)
            ).all()
            == []
        )
        assert randomize(world, killed).randomization_number == "R0002"
        count, mismatches = ledger_check()
        assert count > 0 and mismatches == []
    assert_numbered_without_gap(world, 2)


def test_two_randomizations_in_one_stratum_take_consecutive_slots(new_world, frozen, database_url):
    """One randomization frozen holding its stratum's position (and slot 1); another, at
    another site in the same stratum, waits for it and then takes slot 2 (without the position
    lock it would wait on slot 1 and find it used)."""
    world = new_world(db_lock_timeout_ms=60000, sqlite_busy_timeout_ms=60000)
    with world.app.app_context():
        first = eligible_subject(world, "CN01")
        second = eligible_subject(world, "CN02")
    process = frozen(world, first, "randomize.after_stratum_lock")
    outcome: list[Any] = []

    def work() -> None:
        with world.app.app_context():
            try:
                outcome.append(randomize(world, second).randomization_number)
            except Exception as error:  # noqa: BLE001 - reported below
                outcome.append(f"{type(error).__name__}: {error}")

    thread = threading.Thread(target=work)
    thread.start()
    if database_url.startswith("postgresql"):
        wait_until(lambda: waiting_on_locks(database_url) >= 1, "the second did not wait")
    (result,) = resume(process)
    thread.join(timeout=120)
    assert result["result"]["randomization_number"] == "R0001"
    assert outcome == ["R0002"]
    with world.app.app_context():
        read_session().rollback()
        slot_of = dict(
            read_session()
            .execute(
                select(Randomization.subject_id, RandomizationSlot.sequence).join(
                    RandomizationSlot, Randomization.slot_id == RandomizationSlot.id
                )
            )
            .all()
        )
        assert slot_of == {first: 1, second: 2}
        (position,) = read_session().scalars(
            select(StratumPosition).where(StratumPosition.stratum == "disease=RA")
        )
        assert position.next_sequence == 3
