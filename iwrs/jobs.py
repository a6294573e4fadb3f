"""The jobs that run outside requests (issue 13) and the lease that lets exactly one process
run each: notification delivery, the daily and intra-day resupply runs, the expiry run, the purge
of old idempotency keys and the audit checkpoint. `iwrs worker` schedules them (iwrs/worker.py);
the old commands (`send-notifications`, `supply resupply`, `supply expire`, `audit checkpoint`)
and `purge-idempotency-keys` run them once.

Decision (single runner): a **lease row per job** (`job_lease`), locked inside the job's own
transaction, rather than a PostgreSQL advisory lock: the same code holds on SQLite, and the row
also carries the last tick done.
- PostgreSQL: `SELECT … FOR UPDATE SKIP LOCKED` on the job's row; a second process finds it
  locked and skips at once ("busy"); the lock dies with the transaction, so a killed worker
  (its connection closed) frees the job at once, with everything it wrote rolled back.
- SQLite: every write transaction begins with BEGIN IMMEDIATE (iwrs/db.py), so the job runs
  under the database's write lock; a second process waits for it (busy timeout) and then finds
  the tick done. A killed process's transaction is rolled back by SQLite's journal.
Exactly once per tick: the job's work, its `job.ran` audit event and the lease's `last_tick`
commit together; a run whose tick is not after `last_tick` does nothing ("done"). A scheduled
tick is the schedule's own instant (every worker computes the same one), so two workers firing
together run it once. A forced run (`--once`, the old commands) ignores the done check and
counts as the run of any tick up to its time.

Work after commit: notification delivery sends with no transaction open (services/outbox.py:
the job's transaction is the claim), and the checkpoint's witness line is appended after its
row committed. Each run is logged (logger `iwrs.jobs`) and audited `job.ran` (entity `job`,
id = job name) by the system actor with its trigger: the tick, the worker and what it did.
A notification run that finds nothing to send, or a purge that finds no key old enough, writes
nothing (no event every minute).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from iwrs import audit, audit_anchor, clock
from iwrs.audit import Actor
from iwrs.db import transaction
from iwrs.errors import Busy
from iwrs.models.jobs import JobLease

log = logging.getLogger("iwrs.jobs")


@dataclass(frozen=True)
class Run:
    """One run of one job: its name, the tick it runs for, the process, the actor."""

    job: str
    tick: datetime
    worker: str
    actor: Actor


@dataclass(frozen=True)
class Outcome:
    """`state`: ran (committed), done (the tick was already run), busy (another process holds
    the job), idle (nothing to do; nothing written). `summary` is what the run did."""

    job: str
    tick: datetime
    state: str
    summary: dict[str, Any]


# body(session, run) -> summary, or None when there is nothing to do; after(summary, run) runs
# once the body's transaction has committed (work that must happen with no transaction open).
Body = Callable[[Session, Run], dict[str, Any] | None]
After = Callable[[dict[str, Any], Run], dict[str, Any]]


@dataclass(frozen=True)
class Job:
    name: str
    body: Body
    after: After | None = None


def _notify_body(session: Session, run: Run) -> dict[str, Any] | None:
    from iwrs.services import outbox

    ids = outbox.claim(session, sender=run.worker)
    return {"claimed": ids} if ids else None


def _notify_after(summary: dict[str, Any], run: Run) -> dict[str, Any]:
    from iwrs.services import outbox

    sent = outbox.deliver(summary["claimed"], actor=run.actor, sender=run.worker)
    return {**summary, "sent": sent}


def _resupply_claim(slot: str) -> Body:
    # The resupply run decides site by site, each in its own short transaction
    # (services/resupply.py run_resupply), so it runs after the tick's claim has committed.
    def body(session: Session, run: Run) -> dict[str, Any]:
        return {"slot": slot}

    return body


def _resupply_after(summary: dict[str, Any], run: Run) -> dict[str, Any]:
    from iwrs.services import resupply

    return {**summary, "requested": resupply.run_resupply(slot=summary["slot"], at=run.tick)}


def _expiry_body(session: Session, run: Run) -> dict[str, Any]:
    from iwrs.services import supply

    return {"expired": supply.apply_expiry(session, actor=run.actor)}


def _idempotency_purge_body(session: Session, run: Run) -> dict[str, Any] | None:
    from flask import current_app

    from iwrs.services import idempotency

    before = run.tick - current_app.extensions["iwrs.settings"].idempotency_retention
    purged = idempotency.purge(session, before=before)
    return {"purged": purged, "before": before.isoformat()} if purged else None


def _checkpoint_body(session: Session, run: Run) -> dict[str, Any]:
    row = audit_anchor.store_checkpoint(session, occasion="scheduled")
    return {"checkpoint": audit_anchor.checkpoint_record(row)}


def _checkpoint_after(summary: dict[str, Any], run: Run) -> dict[str, Any]:
    audit_anchor.append_to_witness(summary["checkpoint"])
    return summary


JOBS: dict[str, Job] = {
    job.name: job
    for job in (
        Job("notify", _notify_body, _notify_after),
        Job("resupply_daily", _resupply_claim("daily"), _resupply_after),
        Job("resupply_intraday", _resupply_claim("intraday"), _resupply_after),
        Job("expiry", _expiry_body),
        Job("idempotency_purge", _idempotency_purge_body),
        Job("checkpoint", _checkpoint_body, _checkpoint_after),
    )
}

# The system actors the jobs record as (the resupply run's own requests keep "resupply").
ACTORS = {
    "notify": Actor.system("notifications"),
    "resupply_daily": Actor.system("resupply"),
    "resupply_intraday": Actor.system("resupply"),
    "expiry": Actor.system("expiry"),
    "idempotency_purge": Actor.system("idempotency"),
    "checkpoint": Actor.system("checkpoint"),
}


def _lock_lease(session: Session, name: str) -> JobLease | None:
    """The job's lease row, locked for this transaction; None when another process holds it.
    Migration 0018 creates the rows; a job added later gets its row in its first run."""
    lease = session.scalars(
        select(JobLease).where(JobLease.job == name).with_for_update(skip_locked=True)
    ).first()
    if lease is None:
        if session.scalar(select(func.count()).select_from(JobLease).where(JobLease.job == name)):
            return None  # the row exists and is locked: another process runs the job
        lease = JobLease(job=name, runs=0)
        session.add(lease)
        session.flush()
    return lease


def run_job(
    name: str, *, tick: datetime, worker: str, actor: Actor, force: bool = False
) -> Outcome:
    """Run job `name` for `tick` unless another process holds it or (unless `force`) the tick
    is done. Raises KeyError for an unknown job; a job's own error propagates (rolled back)."""
    job = JOBS[name]
    run = Run(name, tick, worker, actor)
    try:
        with transaction() as session:
            lease = _lock_lease(session, name)
            if lease is None:
                return _outcome(run, "busy", {})
            if not force and lease.last_tick is not None and lease.last_tick >= tick:
                return _outcome(run, "done", {"last_tick": lease.last_tick.isoformat()})
            summary = job.body(session, run)
            if summary is None:
                return _outcome(run, "idle", {})
            if lease.last_tick is None or lease.last_tick < tick:
                lease.last_tick = tick
            lease.last_run_at, lease.last_worker = clock.now(), worker
            lease.runs += 1
            audit.record(
                session,
                actor=actor,
                action="job.ran",
                entity_type="job",
                entity_id=name,
                after={
                    "trigger": {"tick": tick.isoformat(), "worker": worker, "forced": force},
                    "did": _brief(summary),
                },
            )
    except (OperationalError, Busy) as error:  # the write lock was not free within the timeout
        log.warning("job %s tick %s: database busy (%s)", name, tick, type(error).__name__)
        return _outcome(run, "busy", {})
    if job.after is not None:
        summary = job.after(summary, run)
    return _outcome(run, "ran", summary)


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    """What the audit event keeps of a summary: lists as counts (ids stay in their own events)."""
    brief = {k: len(v) if isinstance(v, list) else v for k, v in summary.items()}
    if "checkpoint" in summary:
        brief["checkpoint"] = summary["checkpoint"]["seq"]
    return brief


def _outcome(run: Run, state: str, summary: dict[str, Any]) -> Outcome:
    level = logging.DEBUG if state == "idle" else logging.INFO  # idle: every minute, nothing done
    log.log(
        level,
        "job %s tick %s by %s: %s %s",
        run.job,
        run.tick.isoformat(),
        run.worker,
        state,
        _brief(summary),
    )
    return Outcome(run.job, run.tick, state, summary)
