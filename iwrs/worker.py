"""`flask --app wsgi iwrs worker`: the process that runs the jobs of iwrs/jobs.py on their
schedules (APScheduler 3's BlockingScheduler), or one job once (`--once JOB`, for cron).

Schedules come from the settings (README, Configuration), all in UTC:
IWRS_NOTIFY_SECONDS (notify), IWRS_RESUPPLY_DAILY_AT (resupply_daily), IWRS_RESUPPLY_INTRADAY_
MINUTES (resupply_intraday), IWRS_EXPIRY_AT (expiry), IWRS_IDEMPOTENCY_PURGE_AT
(idempotency_purge), IWRS_CHECKPOINT_MINUTES (checkpoint).
Interval schedules are aligned to a fixed origin (2000-01-01T00:00Z), not to the worker's start,
so every worker computes the same ticks and the lease (iwrs/jobs.py) lets each tick run once
however many workers run. A run that finds its job busy in another process looks again after
RETRY_SECONDS (a killed holder frees the job; a finished one has marked the tick done). At
start, a worker runs each job's current tick unless it is done: a daily run missed while no
worker was up runs once when one starts.
Any number of workers may run, beside any number of web servers: none of them needs to be the
"only" one.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from flask import Flask, current_app

from iwrs import clock, jobs

log = logging.getLogger("iwrs.jobs")
ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
RETRY_SECONDS = 15
RETRIES = 8


@dataclass(frozen=True)
class Schedule:
    """Every `every` from ORIGIN, or daily at `at` (HH:MM UTC)."""

    every: timedelta | None = None
    at: str | None = None

    def trigger(self) -> Any:
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        if self.every is not None:
            return IntervalTrigger(
                seconds=self.every.total_seconds(), start_date=ORIGIN, timezone=UTC
            )
        assert self.at is not None
        hour, minute = self.at.split(":")
        return CronTrigger(hour=int(hour), minute=int(minute), timezone=UTC)

    def tick(self, now: datetime) -> datetime:
        """The newest scheduled instant at or before `now`: the tick a run at `now` is for."""
        if self.every is not None:
            periods = (now - ORIGIN) // self.every
            return ORIGIN + periods * self.every
        assert self.at is not None
        hour, minute = (int(part) for part in self.at.split(":"))
        today = now.astimezone(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
        return today if today <= now else today - timedelta(days=1)


def schedules(settings: Any) -> dict[str, Schedule]:
    """Each job's schedule from the settings."""
    return {
        "notify": Schedule(every=timedelta(seconds=settings.notify_seconds)),
        "resupply_daily": Schedule(at=settings.resupply_daily_at),
        "resupply_intraday": Schedule(every=timedelta(minutes=settings.resupply_intraday_minutes)),
        "expiry": Schedule(at=settings.expiry_at),
        "idempotency_purge": Schedule(at=settings.idempotency_purge_at),
        "checkpoint": Schedule(every=timedelta(minutes=settings.checkpoint_minutes)),
    }


def worker_name() -> str:
    return f"worker:{socket.gethostname()}:{os.getpid()}"[:120]


def fire(app: Flask, scheduler: Any, name: str, tick: datetime | None, attempt: int = 0) -> None:
    """One scheduled run of job `name` (APScheduler calls it in its thread pool)."""
    with app.app_context():
        when = tick or schedules(app.extensions["iwrs.settings"])[name].tick(clock.now())
        try:
            outcome = jobs.run_job(name, tick=when, worker=worker_name(), actor=jobs.ACTORS[name])
        except Exception:
            log.exception(
                "job %s tick %s failed; rolled back, the next tick runs it again", name, when
            )
            return
    if outcome.state == "busy" and attempt < RETRIES:
        scheduler.add_job(
            fire,
            "date",
            run_date=datetime.now(UTC) + timedelta(seconds=RETRY_SECONDS),
            args=[app, scheduler, name, when, attempt + 1],
        )


def run_worker(app: Flask) -> None:
    """Schedule every job and block until SIGTERM or SIGINT."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.blocking import BlockingScheduler

    scheduler = BlockingScheduler(
        executors={"default": ThreadPoolExecutor(4)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
        timezone=UTC,
    )
    for name, schedule in schedules(app.extensions["iwrs.settings"]).items():
        scheduler.add_job(fire, schedule.trigger(), args=[app, scheduler, name, None], id=name)
        # Catch-up: the current tick of each job, run at start unless someone has run it (a
        # daily run missed while no worker was up is run now, once).
        scheduler.add_job(
            fire, "date", run_date=datetime.now(UTC), args=[app, scheduler, name, None]
        )

    def stop(_signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    log.info("worker %s started: %s", worker_name(), ", ".join(sorted(jobs.JOBS)))
    scheduler.start()


def run_once(name: str, tick: datetime | None, actor: Any) -> jobs.Outcome:
    """One run of `name` now (forced), or for the scheduled `tick` (exactly once per tick)."""
    if tick is None:
        return jobs.run_job(name, tick=clock.now(), worker=worker_name(), actor=actor, force=True)
    return jobs.run_job(name, tick=tick, worker=worker_name(), actor=actor)


def describe(outcome: jobs.Outcome) -> str:
    """One line for the command's output, e.g. "expiry ran: expired 2"."""
    parts = [
        f"{k} {len(v) if isinstance(v, list) else v}"
        for k, v in outcome.summary.items()
        if k != "checkpoint"
    ]
    if "checkpoint" in outcome.summary:
        parts.append(f"signed at event {outcome.summary['checkpoint']['seq']}")
    return f"{outcome.job} {outcome.state}" + (f": {', '.join(parts)}" if parts else "")


def register(group: click.Group) -> None:
    """Add `worker` to the `iwrs` command group."""

    @group.command("worker")
    @click.option(
        "--once", "once", type=click.Choice(sorted(jobs.JOBS)), help="run this job once and exit"
    )
    @click.option(
        "--tick", help="with --once: the scheduled instant (ISO 8601, UTC) to run once only"
    )
    def worker_command(once: str | None, tick: str | None) -> None:
        """Run the scheduled jobs (notifications, resupply, expiry, checkpoints) until stopped,
        or one job once with --once. Any number of workers may run: each tick runs once."""
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        if once is None:
            if tick is not None:
                raise click.UsageError("--tick needs --once")
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
            run_worker(app)
            return
        when = None
        if tick is not None:
            try:
                when = datetime.fromisoformat(tick)
            except ValueError:
                raise click.BadParameter("an ISO 8601 instant", param_hint="--tick") from None
            if when.tzinfo is None:
                raise click.BadParameter(
                    "give the offset, e.g. 2026-01-01T06:00+00:00", param_hint="--tick"
                )
        outcome = run_once(once, when, jobs.ACTORS[once])
        click.echo(describe(outcome))
