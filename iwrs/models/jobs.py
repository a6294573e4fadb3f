"""The lease row of each scheduled job (iwrs/jobs.py): who ran which tick last."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from iwrs.db import Base, UTCDateTime


class JobLease(Base):
    """One row per job name. A run locks it inside its own transaction (PostgreSQL
    `FOR UPDATE SKIP LOCKED`, SQLite's write lock), so one process at a time runs the job; the
    last tick done is written in that same transaction, so a tick is done once or not at all."""

    __tablename__ = "job_lease"

    job: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_tick: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_worker: Mapped[str | None] = mapped_column(String(120))
    runs: Mapped[int] = mapped_column(Integer, default=0)
