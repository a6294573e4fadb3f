"""Jobs outside requests (issue 13): `iwrs worker` processes, real SQLite and PostgreSQL.

Two workers started together run each tick of a job once; a worker killed mid-job leaves the
job re-runnable with nothing half-written; the outbox is mailed with no database transaction
open (the SMTP server, on receiving a message, takes the database's write lock itself); a
failing SMTP server leaves the message queued, nothing lost.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from iwrs.audit import Actor, verify_chain
from iwrs.db import read_session, transaction
from iwrs.models import AuditAnchor, AuditEvent, JobLease, Notification, OutboxState, User
from iwrs.services import passwords
from tests.conftest import PASSWORD
from tests.integration.smtp_catcher import catcher

ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "secret_key": "IWRS_SECRET_KEY",
    "audit_key": "IWRS_AUDIT_KEY",
    "blinding_key": "IWRS_BLINDING_KEY",
    "audit_signing_key": "IWRS_AUDIT_SIGNING_KEY",
}
WORKER_APP = "iwrs-worker-under-test"
pytestmark = pytest.mark.slow


def worker_env(app: Any, **extra: str) -> dict[str, str]:
    """The environment of a worker process on the test's database, keys and witness file."""
    settings = app.extensions["iwrs.settings"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IWRS_")}
    env |= {
        "PYTHONPATH": str(ROOT),
        "PGAPPNAME": WORKER_APP,  # libpq: names the worker's sessions in pg_stat_activity
        "IWRS_DATABASE_URL": settings.database_url,
        "IWRS_INSTANCE_PATH": str(settings.instance_path),
        "IWRS_AUDIT_WITNESS": str(settings.witness_file()),
        # Keep the scheduled jobs this test does not look at far away.
        "IWRS_NOTIFY_SECONDS": "86400",
        "IWRS_RESUPPLY_INTRADAY_MINUTES": "1440",
        "IWRS_CHECKPOINT_MINUTES": "1440",
    }
    env |= {var: getattr(settings, name).hex() for name, var in KEYS.items()}
    return env | extra


def worker(app: Any, *args: str, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "iwrs", "worker", *args],
        cwd=ROOT,
        env=worker_env(app, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def once(app: Any, job: str, **extra: str) -> str:
    """`iwrs worker --once JOB` to its end; its output line."""
    process = worker(app, "--once", job, **extra)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return out.strip()


def fresh() -> Any:
    read_session().rollback()
    return read_session()


def runs(job: str) -> list[dict[str, Any]]:
    """The `job.ran` events of `job`: their trigger (tick, worker) and what they did."""
    events = fresh().scalars(
        select(AuditEvent)
        .where(AuditEvent.action == "job.ran", AuditEvent.entity_id == job)
        .order_by(AuditEvent.seq)
    )
    return [json.loads(e.after) for e in events]


def actions(action: str) -> list[AuditEvent]:
    return list(fresh().scalars(select(AuditEvent).where(AuditEvent.action == action)))


@pytest.fixture
def mailbox_user(ctx, make_user):  # type: ignore[no-untyped-def]
    """An investigator with an address and a temporary password waiting in the outbox."""
    admin = make_user("admin")
    investigator = make_user("investigator", sites=["CN01"])
    with transaction() as session:
        session.get(User, investigator.id).email = "inv@example.org"
        from iwrs import audit

        audit.record(session, actor=Actor.system("test"), action="test.email", entity_type="user")
    passwords.reset_password(
        actor=Actor.of(admin), user_id=investigator.id, signer_password=PASSWORD
    )
    return investigator


def outbox() -> list[Notification]:
    return list(fresh().scalars(select(Notification).order_by(Notification.id)))


def write_lock_is_free(database_url: str) -> bool:
    """Whether another connection can take the database's write lock right now (SQLite:
    BEGIN IMMEDIATE within 2 s) or no session of the database sits idle in a transaction
    (PostgreSQL: the worker holding a transaction open across the SMTP conversation would)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        connection = sqlite3.connect(url.database, timeout=2, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            connection.close()
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            open_ = connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = :name AND state LIKE 'idle in transaction%'"
                ),
                {"name": WORKER_APP},
            )
        return open_ == 0
    finally:
        engine.dispose()


# --- the outbox: mailed after commit ------------------------------------------------------------


def test_mail_is_sent_with_no_transaction_open_and_the_password_leaves_the_outbox(
    app, database_url, mailbox_user
):
    seen: list[bool] = []

    def during_smtp(_message: str) -> None:
        seen.append(write_lock_is_free(database_url))

    (note,) = outbox()
    temporary = (
        passwords.with_credentials(note.body, note.recipient)
        .split(passwords.TEMPORARY_PASSWORD_LINE)[1]
        .split("\n")[0]
    )
    with catcher(during_smtp) as smtp:
        line = once(app, "notify", IWRS_SMTP_HOST="127.0.0.1", IWRS_SMTP_PORT=str(smtp.port))
    assert line == "notify ran: claimed 1, sent 1"
    assert seen == [True]
    (mail,) = smtp.received
    assert temporary in mail.replace("=\r\n", "")
    assert "Message-ID: <iwrs-notification-" in mail
    (note,) = outbox()
    assert (note.state, note.channel) == (OutboxState.SENT, "smtp")
    assert temporary not in note.body and "Signed audit checkpoint: " in note.body
    assert len(actions("notifications.sent")) == 1
    (ran,) = runs("notify")
    assert ran["did"] == {"claimed": 1}  # the delivery is its own event


def test_a_failing_smtp_server_leaves_the_message_queued_and_it_is_sent_later(
    app, database_url, mailbox_user
):
    (before,) = outbox()
    with catcher(lambda _message: "554 5.7.1 refused") as smtp:
        line = once(app, "notify", IWRS_SMTP_HOST="127.0.0.1", IWRS_SMTP_PORT=str(smtp.port))
    assert line == "notify ran: claimed 1, sent 0"
    (note,) = outbox()
    assert (note.state, note.sent_at, note.attempts) == (OutboxState.QUEUED, None, 1)
    assert note.body == before.body and note.last_error  # nothing of the message lost
    (failed,) = actions("notifications.failed")
    assert json.loads(failed.after) == {"failed": 1, "ids": [note.id]}
    with catcher() as smtp:
        once(app, "notify", IWRS_SMTP_HOST="127.0.0.1", IWRS_SMTP_PORT=str(smtp.port))
    assert len(smtp.received) == 1
    assert outbox()[0].state == OutboxState.SENT


def test_a_sender_killed_during_smtp_leaves_a_claim_retried_after_its_lease(
    app, database_url, mailbox_user
):
    arrived, release = threading.Event(), threading.Event()

    def hold(_message: str) -> str:
        arrived.set()
        release.wait(60)
        return "451 4.3.0 try later"  # the first sender is dead by then

    env = {"IWRS_SMTP_HOST": "127.0.0.1", "IWRS_NOTIFY_CLAIM_SECONDS": "1"}
    with catcher(hold) as smtp:
        process = worker(app, "--once", "notify", IWRS_SMTP_PORT=str(smtp.port), **env)
        try:
            assert arrived.wait(120), process.communicate(timeout=5)
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
        finally:
            release.set()
    (note,) = outbox()
    assert note.state == OutboxState.SENDING and note.claimed_at is not None
    assert note.sent_at is None and actions("notifications.sent") == []
    time.sleep(1.5)  # past the claim lease
    with catcher() as smtp:
        line = once(app, "notify", IWRS_SMTP_PORT=str(smtp.port), **env)
    assert line == "notify ran: claimed 1, sent 1"
    assert len(smtp.received) == 1
    assert outbox()[0].state == OutboxState.SENT
    assert verify_chain(fresh()).ok


# --- one runner per tick ------------------------------------------------------------------------


def test_two_workers_run_each_tick_of_a_job_once(app, ctx, database_url):
    ticks = 3.0  # seconds between checkpoint ticks
    env = {"IWRS_CHECKPOINT_MINUTES": str(ticks / 60)}
    workers = [worker(app, **env), worker(app, **env)]
    logs: list[list[str]] = [[], []]
    readers = [
        threading.Thread(target=lambda p=p, log=log: log.extend(p.stderr), daemon=True)
        for p, log in zip(workers, logs, strict=True)
    ]
    for reader in readers:
        reader.start()

    def both_up_for(n: int) -> bool:
        # n checkpoint ticks fired in each worker since both had started (the loser logs too)
        fired = [[line for line in log if "job checkpoint tick" in line] for log in logs]
        return all(len(lines) >= n for lines in fired)

    try:
        deadline = time.monotonic() + 180
        while not both_up_for(4):
            assert all(p.poll() is None for p in workers), logs
            assert time.monotonic() < deadline, logs
            time.sleep(0.2)
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for reader in readers:
            reader.join(timeout=10)
        for process in workers:
            process.stdout.close()  # type: ignore[union-attr]
            process.stderr.close()  # type: ignore[union-attr]
    done = runs("checkpoint")
    per_tick = Counter(r["trigger"]["tick"] for r in done)
    assert len(per_tick) >= 4, logs
    assert set(per_tick.values()) == {1}, per_tick
    # Both workers fired for the same ticks: for some, one found the tick done (or busy).
    lost = [
        line
        for log in logs
        for line in log
        if "job checkpoint tick" in line and (": done " in line or ": busy " in line)
    ]
    assert lost, logs
    anchors = fresh().scalars(select(AuditAnchor).where(AuditAnchor.occasion == "scheduled"))
    assert len(list(anchors)) == len(done)
    assert verify_chain(fresh()).ok


def test_a_worker_killed_inside_its_transaction_leaves_nothing_and_the_job_runs_again(
    app, ctx, database_url
):
    """PostgreSQL: an outside session holds the audit chain head, so the checkpoint run waits
    at its commit with its rows written but not committed; it is killed there."""
    if not database_url.startswith("postgresql"):
        pytest.skip("a transaction held open mid-job from outside: PostgreSQL row locks")
    witness = app.extensions["iwrs.settings"].witness_file()
    lines_before = witness.read_text().count("\n") if witness.exists() else 0
    anchors_before = len(fresh().scalars(select(AuditAnchor)).all())
    engine = create_engine(database_url)
    try:
        with engine.connect() as holder:
            holder.execute(text("SELECT seq FROM audit_chain_head WHERE id = 1 FOR UPDATE"))
            process = worker(app, "--once", "checkpoint")
            deadline = time.monotonic() + 120
            while not _waiting_for_a_lock(engine):
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the worker never reached its commit"
                time.sleep(0.1)
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
            holder.rollback()
        deadline = time.monotonic() + 30
        while _waiting_for_a_lock(engine) and time.monotonic() < deadline:
            time.sleep(0.1)  # the server notices the dead client
    finally:
        engine.dispose()
    assert len(fresh().scalars(select(AuditAnchor)).all()) == anchors_before
    assert runs("checkpoint") == []
    assert fresh().get(JobLease, "checkpoint").runs == 0
    assert (witness.read_text().count("\n") if witness.exists() else 0) == lines_before
    assert once(app, "checkpoint").startswith("checkpoint ran")
    assert len(runs("checkpoint")) == 1
    assert verify_chain(fresh()).ok


def _waiting_for_a_lock(engine: Any) -> bool:
    with engine.connect() as connection:
        return bool(
            connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            )
        )


def test_a_scheduled_tick_run_twice_at_once_by_hand_runs_once(app, ctx, database_url):
    tick = "2026-11-29T06:00:00+00:00"
    processes = [worker(app, "--once", "expiry", "--tick", tick) for _ in range(2)]
    lines = sorted(p.communicate(timeout=120)[0].strip() for p in processes)
    assert [p.returncode for p in processes] == [0, 0]
    assert lines[1].startswith("expiry ran") and lines[0] in (
        "expiry busy",
        "expiry done: last_tick 2026-11-29T06:00:00+00:00",
    )
    (ran,) = runs("expiry")
    assert ran["trigger"]["tick"] == tick and ran["trigger"]["forced"] is False


# --- schedules ----------------------------------------------------------------------------------


def test_every_worker_computes_the_same_tick_from_the_schedule_alone():
    from datetime import UTC, datetime, timedelta

    from iwrs.worker import Schedule

    every = Schedule(every=timedelta(minutes=15))
    assert every.tick(datetime(2026, 3, 2, 9, 14, 59, tzinfo=UTC)) == datetime(
        2026, 3, 2, 9, 0, tzinfo=UTC
    )
    assert every.tick(datetime(2026, 3, 2, 9, 15, 0, 1, tzinfo=UTC)) == datetime(
        2026, 3, 2, 9, 15, tzinfo=UTC
    )
    daily = Schedule(at="06:00")
    assert daily.tick(datetime(2026, 3, 2, 5, 59, tzinfo=UTC)) == datetime(
        2026, 3, 1, 6, 0, tzinfo=UTC
    )
    assert daily.tick(datetime(2026, 3, 2, 6, 0, tzinfo=UTC)) == datetime(
        2026, 3, 2, 6, 0, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IWRS_RESUPPLY_DAILY_AT", "6am"),
        ("IWRS_EXPIRY_AT", "24:00"),
        ("IWRS_CHECKPOINT_MINUTES", "0"),
        ("IWRS_RESUPPLY_INTRADAY_MINUTES", "often"),
        ("IWRS_NOTIFY_SECONDS", "-1"),
        ("IWRS_IDEMPOTENCY_PURGE_AT", "midnight"),
        ("IWRS_IDEMPOTENCY_RETENTION_DAYS", "0"),
    ],
)
def test_a_bad_schedule_setting_is_refused_naming_its_variable(monkeypatch, variable, value):
    from iwrs.config import ConfigError, Settings

    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as refused:
        Settings.from_env()
    assert variable in str(refused.value)
