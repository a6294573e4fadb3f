"""Online rotation of the blinding key (iwrs.keyring, iwrs.services.keys), on SQLite and
PostgreSQL: a server started before the rotation, randomizing from 16 threads, sees no failure
while another application instance rotates in batches, then seals under the new key; every slot
and kit still opens, and the old key is retired. A rotation killed (-9) between batches resumes
with `iwrs keys reseal` and completes."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from blinding.sealing import key_id_for, token_key_id
from iwrs import create_app
from iwrs.audit import Actor, verify_chain
from iwrs.clock import set_clock
from iwrs.config import BLINDING_KEYS_DIR, key_path, write_key_file
from iwrs.db import read_session
from iwrs.errors import IWRSError
from iwrs.models import AuditEvent, Dispensation, Kit, Randomization, RandomizationSlot
from iwrs.services import keys
from iwrs.services.randomization import slot_arm, slot_block
from iwrs.services.supply import sealer, treatment_of
from tests.integration.randomization_worker import (
    BIG_TRIAL,
    SHIPPED_PROTOCOL,
    SITES,
    World,
    eligible_subject,
    make_world,
    randomize,
)

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 16
SUBJECTS = 128
pytestmark = pytest.mark.slow


@pytest.fixture
def new_world(tmp_path, database_url, clock) -> Iterator[Any]:
    made: list[World] = []

    def _new(**options: Any) -> World:
        made.append(make_world(tmp_path, database_url, clock, **options))
        return made[-1]

    yield _new
    for world in made:
        world.app.extensions["iwrs.engine"].dispose()


def another_server(world: World, clock: Any, **changes: Any) -> Flask:
    """A second application instance on the same database and instance folder (its own ring)."""
    settings = dataclasses.replace(world.app.extensions["iwrs.settings"], **changes)
    app = create_app(settings)
    app.config["IWRS_PROPAGATE_UNEXPECTED"] = True
    set_clock(app, clock)
    return app


def opened(app: Flask) -> tuple[dict[str, str], dict[int, tuple[str, tuple[int, int]]]]:
    """Every kit's treatment and every slot's arm and block, opened by `app`'s ring."""
    with app.app_context():
        session = read_session()
        session.rollback()
        kits = {k.number: treatment_of(k) for k in session.scalars(select(Kit))}
        slots = {
            s.id: (slot_arm(s), slot_block(s)) for s in session.scalars(select(RandomizationSlot))
        }
    return kits, slots


def shelve_keys(world: World) -> tuple[str, bytes]:
    """The configured key and a new one in the shared instance folder, as `iwrs keys
    rotate-blinding` leaves them: (the old key id, the new key)."""
    settings = world.app.extensions["iwrs.settings"]
    folder = settings.instance_path / BLINDING_KEYS_DIR
    write_key_file(folder / f"{key_id_for(settings.blinding_key)}.key", settings.blinding_key)
    new_key = secrets.token_bytes(32)
    write_key_file(folder / f"{key_id_for(new_key)}.key", new_key)
    return key_id_for(settings.blinding_key), new_key


def rotate_while_randomizing(
    world: World, operator: Flask, new_key: bytes, subjects: list[int]
) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """CLIENTS threads randomize `subjects` on the world's app (the server started before the
    rotation) while `operator` rotates to `new_key` in batches of 25 from another thread. The
    rotation starts once CLIENTS randomizations are done; after its first committed batch it
    waits for CLIENTS more (values are then under both keys). Returns (each client call's
    outcome, the rotation's count or error, the columns of its batches)."""
    outcomes: list[dict[str, Any]] = []
    progress, queue, batches = threading.Condition(), list(subjects), []
    # Who randomizes whom, looked up now: a client then needs no read connection of its own
    # while it waits for a transaction's (16 clients, a pool of 15 on SQLite).
    by = {s: f"inv-{SITES[n % 4]}" for n, s in enumerate(subjects)}
    rotation: dict[str, Any] = {}

    def randomized() -> int:
        return sum(1 for o in outcomes if "result" in o)

    def client() -> None:
        with world.app.app_context():
            while True:
                with progress:
                    if not queue:
                        return
                    subject_id = queue.pop()
                try:
                    result = randomize(world, subject_id, by=by[subject_id])
                    outcome = {"result": result.randomization_number}
                except IWRSError as refusal:
                    outcome = {"refused": f"{type(refusal).__name__}: {refusal}"}
                except Exception as error:  # noqa: BLE001 - any other exception fails the test
                    outcome = {"error": f"{type(error).__name__}: {error!r}"}
                with progress:
                    outcomes.append(outcome)
                    progress.notify_all()

    def after_batch(column: str, _done: int) -> None:
        batches.append(column)
        if len(batches) == 1:
            with progress:
                target = randomized() + CLIENTS
                assert progress.wait_for(lambda: randomized() >= target or not queue, 120)

    def rotate() -> None:
        with operator.app_context():
            try:
                rotation["count"] = keys.rotate_blinding_key(
                    actor=Actor.system("test"), new_key=new_key, batch_size=25, progress=after_batch
                )
            except Exception as error:  # noqa: BLE001 - reported to the test
                rotation["error"] = repr(error)

    clients = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in clients:
        thread.start()
    with progress:
        assert progress.wait_for(lambda: randomized() >= CLIENTS, 120)
    rotator = threading.Thread(target=rotate)
    rotator.start()
    for thread in [rotator, *clients]:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in [rotator, *clients])
    return outcomes, rotation, batches


def test_rotation_while_sixteen_clients_randomize_fails_no_request(new_world, clock):
    world = new_world(
        replacements=BIG_TRIAL, sites=SITES, lots=(("L-BIG", 600, 730),), key_refresh_seconds=0
    )
    with world.app.app_context():
        subjects = [eligible_subject(world, SITES[n % 4]) for n in range(SUBJECTS)]
    server = world.app  # started before the rotation: its ring holds the old key only
    before = opened(server)
    old_id, new_key = shelve_keys(world)
    new_id = key_id_for(new_key)
    operator = another_server(world, clock)
    outcomes, rotation, batches = rotate_while_randomizing(world, operator, new_key, subjects)

    assert rotation.get("error") is None and rotation["count"] > 0
    assert outcomes == [o for o in outcomes if "result" in o] and len(outcomes) == SUBJECTS
    assert len(batches) > 1
    assert opened(server) == before  # every slot and kit opens on the old server, unchanged
    with server.app_context():
        assert sealer().key_id == new_id  # it seals under the new key now, without a restart
        assert token_key_id(sealer().seal("A", context="check")) == new_id
        session = read_session()
        session.rollback()
        assert session.query(Randomization).count() == SUBJECTS
        for given in session.scalars(select(Dispensation)):
            slot = session.scalars(
                select(RandomizationSlot)
                .join(Randomization, Randomization.slot_id == RandomizationSlot.id)
                .where(Randomization.subject_id == given.subject_id)
            ).one()
            assert treatment_of(session.get(Kit, given.kit_id)) == slot_arm(slot)
        assert verify_chain(session).ok
    with operator.app_context():
        left = keys.remaining(actor=Actor.system("test"))
        assert set(left.values) == {new_id} and set(left.lists) == {new_id}
        with pytest.raises(IWRSError) as refused:
            keys.retire_blinding_key(actor=Actor.system("test"), key_id=new_id)
        assert (refused.value.field, refused.value.rule) == ("key_id", "current")
        keys.retire_blinding_key(actor=Actor.system("test"), key_id=old_id)
    instance = world.app.extensions["iwrs.settings"].instance_path
    (instance / BLINDING_KEYS_DIR / f"{old_id}.key").unlink()  # as `iwrs keys retire` does
    # A server started now holds only the new key (configured), and opens everything.
    fresh = another_server(world, clock, blinding_key=new_key)
    assert opened(fresh) == before
    with fresh.app_context():
        assert old_id not in sealer().ring
    for app in (operator, fresh):
        app.extensions["iwrs.engine"].dispose()


def _flask(world: World, *args: str, **popen: Any) -> subprocess.Popen[str]:
    settings = world.app.extensions["iwrs.settings"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IWRS_")}
    env.update(
        IWRS_DATABASE_URL=settings.database_url,
        IWRS_INSTANCE_PATH=str(settings.instance_path),
        IWRS_PROTOCOL=str(settings.protocol_path or SHIPPED_PROTOCOL),
        IWRS_KEY_REFRESH_SECONDS="1",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "iwrs", "keys", *args],
        cwd=ROOT,
        env=env,
        text=True,
        **popen,
    )


def _run(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    process = _flask(world, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_a_rotation_killed_between_batches_resumes_and_completes(new_world, clock):
    world = new_world()
    settings = world.app.extensions["iwrs.settings"]
    for name in ("secret_key", "audit_key", "blinding_key", "audit_signing_key"):
        write_key_file(key_path(name, settings.instance_path), getattr(settings, name))
    before = opened(world.app)
    old_id = key_id_for(settings.blinding_key)
    # One progress line per value (batches of 1) into a pipe of one page that nobody reads:
    # the rotation blocks after its first few dozen batches, so it is caught mid-way for sure.
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    rotating = _flask(world, "rotate-blinding", "--batch-size", "1", stdout=write_end)
    os.close(write_end)
    try:
        deadline = time.monotonic() + 120
        with world.app.app_context():
            while True:
                read_session().rollback()
                left = keys.remaining(actor=Actor.system("test")).values
                if left.get(old_id, 0) < sum(left.values()) - 1:
                    break  # some values are under the new key: batches have committed
                assert time.monotonic() < deadline and rotating.poll() is None
                time.sleep(0.05)
        os.kill(rotating.pid, signal.SIGKILL)
        rotating.wait(timeout=60)
    finally:
        if rotating.poll() is None:
            rotating.kill()
        os.close(read_end)
    with world.app.app_context():
        left = keys.remaining(actor=Actor.system("test")).values
        assert left[old_id] > 0 and len(left) == 2, left  # caught between the two keys
    assert opened(world.app) == before  # everything opens meanwhile
    assert _run(world, "check").returncode == 1
    too_soon = _run(world, "retire", old_id)
    assert too_soon.returncode == 1 and "(in_use)" in too_soon.stderr, too_soon.stderr
    resumed = _run(world, "reseal", "--batch-size", "50")
    assert resumed.returncode == 0, resumed.stderr
    checked = _run(world, "check")
    assert checked.returncode == 0, checked.stdout
    retired = _run(world, "retire", old_id)
    assert retired.returncode == 0, retired.stderr
    assert not (settings.instance_path / BLINDING_KEYS_DIR / f"{old_id}.key").exists()
    new_key = bytes.fromhex(key_path("blinding_key", settings.instance_path).read_text().strip())
    fresh_app = another_server(world, clock, blinding_key=new_key)
    assert opened(fresh_app) == before
    with fresh_app.app_context():
        assert old_id not in sealer().ring
        session = read_session()
        assert verify_chain(session).ok
        batches = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "blinding_key.resealed")
        ).all()
        assert len(batches) > 1
    fresh_app.extensions["iwrs.engine"].dispose()
