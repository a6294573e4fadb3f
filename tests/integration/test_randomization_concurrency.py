"""Rules 4 and 5 under load: 200 subjects at 4 sites in 2 strata randomized by 16 threads (SQLite
and PostgreSQL), and 120 by 4 processes (PostgreSQL), every subject attempted twice by different
workers. Exactly one randomization per subject, each slot and each kit used once, no gap in any
stratum, every retry answered with the first result, one audit event each, chain and ledger intact.
And the smaller races: one idempotency key sent for two subjects at once, lists stored at once,
a list replaced while the first subject is being randomized.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text

from iwrs.audit import verify_chain
from iwrs.db import read_session
from iwrs.errors import IWRSError
from iwrs.models import AuditEvent, Subject
from iwrs.models.randomization import (
    Dispensation,
    Randomization,
    RandomizationList,
    RandomizationSlot,
    StratumPosition,
)
from iwrs.models.supply import Kit, KitEvent
from iwrs.services import randomization
from iwrs.services.randomization import slot_arm
from iwrs.services.supply import treatment_of
from supply.states import KitAction, KitState
from tests.integration.randomization_worker import (
    BIG_TRIAL,
    PASSWORD,
    SITES,
    World,
    eligible_subject,
    ledger_check,
    make_world,
    randomize,
    result_fields,
)

SUBJECTS = 200  # by threads
PROCESS_SUBJECTS = 120  # by processes (each starts its own interpreter and application)
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def new_world(tmp_path, database_url, clock) -> Iterator[Any]:
    """new_world(**options) -> a small World on this test's database (see make_world)."""
    made: list[World] = []

    def _new(**options: Any) -> World:
        made.append(make_world(tmp_path, database_url, clock, **options))
        return made[-1]

    yield _new
    for world in made:
        world.app.extensions["iwrs.engine"].dispose()


def big_world(new_world: Any, subjects: int) -> World:
    """The big trial: 4 active sites with 130 kits each, a generated list, and `subjects`
    subjects confirmed eligible. A retry with the key of a running attempt waits for its
    outcome (generously: the tests assert outcomes, never timing)."""
    world = new_world(
        replacements=BIG_TRIAL,
        sites=SITES,
        lots=(("L-BIG", 600, 730),),
        idempotency_wait=timedelta(seconds=120),
    )
    add_subjects(world, subjects)
    return world


def add_subjects(world: World, subjects: int) -> None:
    """Confirmed-eligible subjects, site by turn, two RA for each SSc."""
    with world.app.app_context():
        world.people["subjects"] = [
            eligible_subject(world, SITES[n % 4], "SSc" if n % 3 == 0 else "RA")
            for n in range(subjects)
        ]


def attempts(subject_ids: list[int]) -> list[tuple[int, str | None, str | None]]:
    """Each subject with the idempotency keys of its two attempts: a third repeat the first
    attempt's key, a third use none (a retry by subject), a third send a fresh key."""
    plans = []
    for n, subject_id in enumerate(subject_ids):
        first = second = f"same-{subject_id}" if n % 3 == 0 else None
        if n % 3 == 2:
            first, second = f"first-{subject_id}", f"retry-{subject_id}"
        plans.append((subject_id, first, second))
    return plans


def rounds(subject_ids: list[int], workers: int) -> list[list[list[tuple[int, str | None]]]]:
    """Rounds of one task per worker: both attempts of a subject fall in the same round on two
    different workers (which pair changes from round to round), so they race."""
    plans, pairs = attempts(subject_ids), workers // 2
    out = []
    for i, r in enumerate(range(0, len(plans), pairs)):
        tasks: list[list[tuple[int, str | None]]] = [[] for _ in range(workers)]
        for k, (subject_id, first, second) in enumerate(plans[r : r + pairs]):
            tasks[(2 * k + i) % workers].append((subject_id, first))
            tasks[(2 * k + 1 + 3 * i) % workers].append((subject_id, second))
        out.append(tasks)
    return out


def queues(subject_ids: list[int], workers: int) -> list[list[tuple[int, str | None]]]:
    """Each worker's queue (for workers that cannot meet at a barrier every round): first
    attempts of its share interleaved with retries of subjects another worker attempts at
    about the same moment."""
    firsts: list[list[tuple[int, str | None]]] = [[] for _ in range(workers)]
    retries: list[list[tuple[int, str | None]]] = [[] for _ in range(workers)]
    for n, (subject_id, first, second) in enumerate(attempts(subject_ids)):
        firsts[n % workers].append((subject_id, first))
        retries[(n + 1) % workers].append((subject_id, second))
    out = []
    for w in range(workers):
        pairs = zip(firsts[w], retries[w], strict=False)
        queue = [t for a, b in pairs for t in ((a, b) if w % 2 == 0 else (b, a))]
        out.append(queue + firsts[w][len(retries[w]) :] + retries[w][len(firsts[w]) :])
    assert sorted(t[0] for q in out for t in q) == sorted(subject_ids * 2)
    return out


def investigator_of(world: World) -> dict[int, str]:
    with world.app.app_context():
        code = {v: k for k, v in world.sites.items()}
        return {s.id: f"inv-{code[s.site_id]}" for s in read_session().scalars(select(Subject))}


def check_end_state(world: World, outcomes: list[dict[str, Any]]) -> None:
    """Everything rules 4, 5 and 8 promise after the run (see the module docstring)."""
    subject_ids = world.people["subjects"]
    n_subjects = len(subject_ids)
    assert [o for o in outcomes if "error" in o or "refused" in o] == []
    with world.app.app_context():
        session = read_session()
        session.rollback()
        rows = session.scalars(select(Randomization)).all()
        assert len(rows) == n_subjects
        assert sorted(r.subject_id for r in rows) == sorted(subject_ids)
        assert len({r.slot_id for r in rows}) == n_subjects
        assert sorted(r.randomization_number for r in rows) == [
            f"R{n:04d}" for n in range(1, n_subjects + 1)
        ]
        statuses = Counter(s.status for s in session.scalars(select(Subject)))
        assert statuses == {"randomized": n_subjects}

        # Slots: used once, by the subject the randomization names; strictly in sequence.
        used = session.scalars(
            select(RandomizationSlot).join(
                Randomization, Randomization.slot_id == RandomizationSlot.id
            )
        ).all()
        assert len(used) == n_subjects == len({r.slot_id for r in rows})
        by_id = {s.id: s for s in used}
        sequences: dict[str, list[int]] = defaultdict(list)
        for slot in used:
            sequences[slot.stratum].append(slot.sequence)
        assert set(sequences) == {"disease=RA", "disease=SSc"}
        for stratum, numbers in sequences.items():
            assert sorted(numbers) == list(range(1, len(numbers) + 1)), stratum
            position = session.scalars(
                select(StratumPosition).where(StratumPosition.stratum == stratum)
            ).one()
            assert position.next_sequence == len(numbers) + 1
        assert all(r.stratum == by_id[r.slot_id].stratum for r in rows)

        # Kits: one per subject, dispensed once, of the slot's arm.
        given = session.scalars(select(Dispensation)).all()
        assert len(given) == n_subjects
        assert len({d.kit_id for d in given}) == n_subjects
        assert {d.subject_id for d in given} == set(subject_ids)
        kits = {
            k.id: k for k in session.scalars(select(Kit).where(Kit.state == KitState.DISPENSED))
        }
        assert set(kits) == {d.kit_id for d in given}
        dispense_events = Counter(
            session.scalars(
                select(KitEvent.kit_id).where(KitEvent.action == str(KitAction.DISPENSE))
            )
        )
        assert set(dispense_events.values()) == {1} and set(dispense_events) == set(kits)
        slot_of = {r.subject_id: by_id[r.slot_id] for r in rows}
        for d in given:
            assert (
                kits[d.kit_id].place_kind == "subject" and kits[d.kit_id].place_id == d.subject_id
            )
            assert treatment_of(kits[d.kit_id]) == slot_arm(slot_of[d.subject_id])

        # Every call answered with the subject's one result.
        truth = {
            r.subject_id: (r.randomization_number, kits[k].number)
            for r in rows
            for k in [next(d.kit_id for d in given if d.subject_id == r.subject_id)]
        }
        answers: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for outcome in outcomes:
            answers[outcome["task"]["subject_id"]].append(outcome["result"])
        assert sorted(answers) == sorted(subject_ids)
        for subject_id, results in answers.items():
            assert len(results) == 2 and results[0] == results[1], results
            assert (results[0]["randomization_number"], results[0]["kit_number"]) == truth[
                subject_id
            ]

        # One audit event per randomization; the chain and the kit ledger are intact.
        events = Counter(
            session.scalars(
                select(AuditEvent.subject_id).where(AuditEvent.action == "subject.randomized")
            )
        )
        assert events == dict.fromkeys(subject_ids, 1)
        verification = verify_chain(session)
        assert verification.ok, str(verification)
        count, mismatches = ledger_check()
        assert count > 0 and mismatches == []
        assert session.scalar(select(func.count()).select_from(Randomization)) == n_subjects


def overlapping(outcomes: list[dict[str, Any]]) -> int:
    """How many subjects had their two attempts running at the same time."""
    spans: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for outcome in outcomes:
        task = outcome["task"]
        spans[task["subject_id"]].append((task["began"], task["ended"]))
    return sum(1 for (a, b), (c, d) in spans.values() if a < d and c < b)


def test_sixteen_threads_randomize_each_subject_once(new_world):
    world, workers = big_world(new_world, SUBJECTS), 16
    plan = rounds(world.people["subjects"], workers)
    by = investigator_of(world)
    outcomes: list[dict[str, Any]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(workers)

    def work(w: int) -> None:
        with world.app.app_context():
            for tasks in plan:
                barrier.wait()  # every round starts together: a subject's attempts race
                for subject_id, key in tasks[w]:
                    task = {"subject_id": subject_id, "key": key, "began": time.monotonic()}
                    try:
                        result = randomize(
                            world, subject_id, by=by[subject_id], idempotency_key=key
                        )
                        outcome = {"task": task, "result": result_fields(result)}
                    except IWRSError as refusal:
                        outcome = {"task": task, "refused": f"{type(refusal).__name__}: {refusal}"}
                    except Exception as error:  # noqa: BLE001 - any other exception fails the test
                        outcome = {"task": task, "error": f"{type(error).__name__}: {error!r}"}
                    task["ended"] = time.monotonic()
                    with lock:
                        outcomes.append(outcome)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert len(outcomes) == 2 * SUBJECTS
    check_end_state(world, outcomes)
    # The two attempts of (nearly) every subject were in flight at the same time.
    assert overlapping(outcomes) >= SUBJECTS * 9 // 10


def test_four_processes_randomize_each_subject_once(new_world, database_url, tmp_path, clock):
    if not database_url.startswith("postgresql"):
        pytest.skip("several processes against one database: PostgreSQL (production) only")
    world = new_world(replacements=BIG_TRIAL, sites=SITES, lots=(("L-BIG", 600, 730),))
    settings = world.app.extensions["iwrs.settings"]
    go = tmp_path / "go"
    workers = []
    try:
        # The workers start (interpreter, application) while the subjects are screened.
        for n in range(4):
            job = {
                "instance_path": str(tmp_path / f"instance-{n}"),
                "database_url": database_url,
                "protocol_path": str(settings.protocol_path),
                "keys": {
                    name: getattr(settings, name).hex()
                    for name in ("secret_key", "audit_key", "blinding_key")
                },
                "now": clock.current.isoformat(),
                "password": PASSWORD,
                "ready_path": str(tmp_path / f"ready-{n}"),
                "go_path": str(go),
                "tasks_path": str(tmp_path / f"tasks-{n}.json"),
            }
            job_path, result_path = tmp_path / f"job-{n}.json", tmp_path / f"result-{n}.json"
            job_path.write_text(json.dumps(job))
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.randomization_worker",
                    job_path,
                    result_path,
                ],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            workers.append((process, result_path, job))
        add_subjects(world, PROCESS_SUBJECTS)
        by, people = investigator_of(world), world.people
        for (_, _, job), queue in zip(workers, queues(people["subjects"], 4), strict=True):
            tasks = [
                {
                    "subject_id": subject_id,
                    "key": key,
                    "user_id": people[by[subject_id]].id,
                    "username": people[by[subject_id]].username,
                }
                for subject_id, key in queue
            ]
            Path(job["tasks_path"]).write_text(json.dumps(tasks))
        deadline = time.monotonic() + 60
        while not all(Path(job["ready_path"]).exists() for _, _, job in workers):
            exited = [p.communicate() for p, _, _ in workers if p.poll() is not None]
            assert not exited, exited
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.02)
        go.touch()
        outcomes = []
        for process, result_path, _ in workers:
            _, err = process.communicate(timeout=300)
            assert process.returncode == 0, err.decode()
            outcomes += json.loads(result_path.read_text())
    finally:
        for process, _, _ in workers:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert len(outcomes) == 2 * PROCESS_SUBJECTS
    check_end_state(world, outcomes)
    assert overlapping(outcomes) > 0  # some subjects' two attempts were in flight together


def test_one_idempotency_key_sent_for_two_subjects_at_once(new_world):
    """A key belongs to the first subject its user sent it for; the other subject sent with it
    by the same user at the same moment gets a clean refusal (never a database error, never
    in_progress: the binding is checked first) and stays unrandomized."""
    world = new_world(replacements={"quantity = 8": "quantity = 40"})
    workers, keys = 8, 12
    with world.app.app_context():
        pairs = [
            (eligible_subject(world, "CN01"), eligible_subject(world, "CN01")) for _ in range(keys)
        ]
    by = investigator_of(world)
    plan = [pairs[r : r + workers // 2] for r in range(0, keys, workers // 2)]
    outcomes: dict[int, list[tuple[int, str]]] = defaultdict(list)
    lock = threading.Lock()
    barrier = threading.Barrier(workers)

    def work(w: int) -> None:
        with world.app.app_context():
            for r, round_pairs in enumerate(plan):
                barrier.wait()
                if w // 2 >= len(round_pairs):
                    continue
                key = r * workers + w // 2
                subject_id = round_pairs[w // 2][w % 2]
                try:
                    randomize(world, subject_id, by=by[subject_id], idempotency_key=f"key-{key}")
                    outcome = "randomized"
                except IWRSError as refusal:
                    outcome = f"{type(refusal).__name__}/{refusal.field}/{refusal.rule}"
                except Exception as error:  # noqa: BLE001 - any other exception fails the test
                    outcome = f"error {type(error).__name__}: {error!r}"
                with lock:
                    outcomes[key].append((subject_id, outcome))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(outcomes) == keys
    losers = []
    for results in outcomes.values():
        assert sorted(o for _, o in results) == [
            "InvalidInput/idempotency_key/idempotency_key_reused",
            "randomized",
        ], results
        losers += [s for s, o in results if o != "randomized"]
    with world.app.app_context():
        read_session().rollback()
        assert read_session().scalar(select(func.count()).select_from(Randomization)) == keys
        for subject_id in losers:
            assert read_session().get(Subject, subject_id).status == "eligible"
        assert verify_chain(read_session()).ok


def _waiting_on_locks(engine: Any) -> int:
    with engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        ).scalar_one()


def test_lists_generated_at_once_leave_one_active_list(new_world):
    world = new_world(with_list=False)
    workers = 6
    barrier = threading.Barrier(workers)
    outcomes: list[str] = []

    def work(n: int) -> None:
        with world.app.app_context():
            barrier.wait()
            try:
                randomization.generate_list(actor=world.actor("stat"), name=f"v{n}")
                outcomes.append("generated")
            except Exception as error:  # noqa: BLE001 - reported below
                outcomes.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert outcomes == ["generated"] * workers
    with world.app.app_context():
        read_session().rollback()
        lists = read_session().scalars(select(RandomizationList)).all()
        assert len(lists) == workers
        assert sum(1 for row in lists if row.active) == 1


def test_a_list_replaced_during_the_first_randomization(new_world, database_url):
    """The statistician replaces the (still unlocked) list while the first subject is being
    randomized: the subject is randomized on the list that stays active, or refused cleanly;
    never on the replaced list. The interleaving is forced with a row lock held from outside."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite runs one write transaction at a time: no interleaving to force")
    world = new_world()
    with world.app.app_context():
        subject_id = eligible_subject(world, "CN01")
    outside = create_engine(database_url)
    outcomes: dict[str, str] = {}

    def run(name: str, call: Any) -> None:
        with world.app.app_context():
            try:
                call()
                outcomes[name] = "done"
            except IWRSError as refusal:
                outcomes[name] = f"{type(refusal).__name__}/{refusal.rule}"
            except Exception as error:  # noqa: BLE001 - reported below
                outcomes[name] = f"error {type(error).__name__}: {error}"

    holder = outside.connect()
    held = holder.begin()
    holder.execute(text("SELECT id FROM randomization_list WHERE active FOR UPDATE"))
    threads = [
        threading.Thread(
            target=run,
            args=(
                "generate",
                lambda: randomization.generate_list(actor=world.actor("stat"), name="v2"),
            ),
        ),
        threading.Thread(target=run, args=("randomize", lambda: randomize(world, subject_id))),
    ]
    try:
        for expected, thread in enumerate(threads, start=1):
            thread.start()
            deadline = time.monotonic() + 30
            while _waiting_on_locks(outside) < expected and thread.is_alive():
                assert time.monotonic() < deadline, "the call did not reach its lock"
                time.sleep(0.01)
    finally:
        held.rollback()
        holder.close()
    for thread in threads:
        thread.join(timeout=60)
    outside.dispose()
    assert outcomes["generate"] == "done"
    assert outcomes["randomize"] in ("done", "Conflict/list_loaded"), outcomes
    with world.app.app_context():
        read_session().rollback()
        (active,) = (
            read_session()
            .scalars(select(RandomizationList).where(RandomizationList.active.is_(True)))
            .all()
        )
        for row in read_session().scalars(select(Randomization)):
            slot = read_session().get(RandomizationSlot, row.slot_id)
            assert slot is not None and slot.list_id == active.id
        if outcomes["randomize"] != "done":
            assert randomize(world, subject_id).randomization_number == "R0001"
        read_session().rollback()
        assert read_session().get(RandomizationList, active.id).locked_at is not None
        assert (
            read_session().scalar(
                select(func.count())
                .select_from(RandomizationSlot)
                .join(Randomization, Randomization.slot_id == RandomizationSlot.id)
            )
            == 1
        )
