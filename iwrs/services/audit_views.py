"""The auditor's read-only workspace: filter and page the trail, show an event, verify the
chain incrementally, export the filtered trail as CSV or JSON Lines (offline-verifiable)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import Select, select

from iwrs import audit, clock
from iwrs.audit import EXPORT_FORMAT, EXPORT_PROCEDURE, Actor, event_fields, verify_events
from iwrs.db import read_session, transaction
from iwrs.errors import InvalidInput, NotFound
from iwrs.models.audit import AuditChainHead, AuditCheckpoint, AuditEvent
from iwrs.models.sites import Site
from iwrs.models.subjects import Subject

PAGE = 50


@dataclass(frozen=True)
class Filters:
    username: str = ""
    role: str = ""
    action: str = ""
    subject: str = ""  # screening number
    site: str = ""  # site code
    date_from: date | None = None
    date_to: date | None = None

    @classmethod
    def parse(cls, args: dict[str, str]) -> Filters:
        def day(name: str) -> date | None:
            value = (args.get(name) or "").strip()
            if not value:
                return None
            try:
                return date.fromisoformat(value)
            except ValueError:
                raise InvalidInput(
                    f"{name}: {value!r} is not a date (YYYY-MM-DD)", field=name, rule="date"
                ) from None

        return cls(
            **{
                k: (args.get(k) or "").strip()[:100]
                for k in ("username", "role", "action", "subject", "site")
            },
            date_from=day("date_from"),
            date_to=day("date_to"),
        )

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.__dict__.items() if v}


def _query(filters: Filters) -> Select[tuple[AuditEvent]]:
    session = read_session()
    query = select(AuditEvent)
    if filters.username:
        query = query.where(AuditEvent.username == filters.username.lower())
    if filters.role:
        query = query.where(AuditEvent.role == filters.role)
    if filters.action:
        query = query.where(AuditEvent.action.startswith(filters.action, autoescape=True))
    if filters.site:
        site_id = session.scalar(select(Site.id).where(Site.code == filters.site))
        query = query.where(AuditEvent.site_id == (site_id or -1))
    if filters.subject:
        subject_id = session.scalar(
            select(Subject.id).where(Subject.screening_number == filters.subject)
        )
        query = query.where(AuditEvent.subject_id == (subject_id or -1))
    if filters.date_from:
        query = query.where(
            AuditEvent.occurred_at
            >= datetime.combine(filters.date_from, time.min, tzinfo=clock.now().tzinfo)
        )
    if filters.date_to:
        query = query.where(
            AuditEvent.occurred_at
            < datetime.combine(
                filters.date_to + timedelta(days=1), time.min, tzinfo=clock.now().tzinfo
            )
        )
    return query


def page(filters: Filters, *, before: int | None = None) -> tuple[list[AuditEvent], int | None]:
    """One page, newest first, by keyset on seq (fast at any depth of a large trail)."""
    query = _query(filters)
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    rows = list(read_session().scalars(query.order_by(AuditEvent.seq.desc()).limit(PAGE + 1)))
    return rows[:PAGE], (rows[PAGE - 1].seq if len(rows) > PAGE else None)


def event(seq: int) -> AuditEvent:
    row = read_session().get(AuditEvent, seq)
    if row is None:
        raise NotFound(f"audit event {seq} does not exist", field="seq", rule="exists")
    return row


def integrity() -> tuple[AuditCheckpoint | None, int]:
    """The latest verification and the number of events in the chain now."""
    checkpoint = (
        read_session()
        .scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(1))
        .first()
    )
    head = read_session().get(AuditChainHead, 1)
    return checkpoint, head.seq if head else 0


def verify_now(*, actor: Actor) -> AuditCheckpoint:
    """Verify from the last good checkpoint to the head (MACs included) and record it.

    The walk reads in its own read-only session, outside the write transaction: on SQLite a
    write transaction holds the database's write lock from BEGIN, and a first verification of a
    large trail takes long enough to make every other use case wait and fail. Only recording
    the checkpoint and its event is a (short) write transaction."""
    from flask import current_app

    key = current_app.extensions["iwrs.settings"].audit_key
    reader = current_app.extensions["iwrs.sessionmaker"]()
    try:
        last = reader.scalars(
            select(AuditCheckpoint)
            .where(AuditCheckpoint.ok.is_(True))
            .order_by(AuditCheckpoint.id.desc())
            .limit(1)
        ).first()
        start = (last.seq, last.hash) if last else (0, audit.GENESIS)
        head = reader.execute(
            select(AuditChainHead.seq, AuditChainHead.hash).where(AuditChainHead.id == 1)
        ).first()
        # Up to the head as read: on PostgreSQL other use cases keep appending meanwhile (each
        # statement sees what is committed when it starts), and an event committed after the
        # head was read is not an event "after the head". Plain rows in batches: flat memory.
        columns = [getattr(AuditEvent, name) for name in audit._EVENT_FIELDS]
        rows = reader.execute(
            select(*columns)
            .where(AuditEvent.seq > start[0], AuditEvent.seq <= (head.seq if head else 0))
            .order_by(AuditEvent.seq)
            .execution_options(yield_per=5000)
        )
        try:
            result = verify_events(
                key,
                (row._asdict() for row in rows),
                head=(head.seq, head.hash) if head else None,
                start=start,
            )
        finally:
            rows.close()
    finally:
        reader.close()
    problem = result.problem
    if result.first_bad_seq is not None:
        problem = f"event {result.first_bad_seq}: {problem}"  # name the event
    with transaction() as session:
        checkpoint = AuditCheckpoint(
            seq=result.count,
            hash=result.last_hash,
            ok=result.ok,
            problem=problem,
            verified_at=clock.now(),
            verified_by=actor.username,
        )
        session.add(checkpoint)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="audit.verified",
            entity_type="audit_chain",
            entity_id=checkpoint.id,
            after={"ok": result.ok, "up_to": result.count, "problem": problem},
        )
    return checkpoint


CSV_COLUMNS = (
    "seq",
    "occurred_at",
    "username",
    "role",
    "auth",
    "action",
    "entity_type",
    "entity_id",
    "site_id",
    "subject_id",
    "before",
    "after",
    "reason",
    "user_id",
    "prev_hash",
    "hash",
)


def export(filters: Filters, *, kind: str, actor: Actor) -> tuple[str, str]:
    """The filtered trail, oldest first, as (content, media type); the export is audited."""
    rows = [
        event_fields(r) for r in read_session().scalars(_query(filters).order_by(AuditEvent.seq))
    ]
    lines = [audit.export_line(r) for r in rows]
    head = read_session().get(AuditChainHead, 1)
    header = {
        "format": EXPORT_FORMAT,
        "exported_at": clock.now().isoformat(),
        "exported_by": actor.username,
        "filters": filters.as_dict(),
        "count": len(lines),
        "events_sha256": hashlib.sha256("".join(f"{x}\n" for x in lines).encode()).hexdigest(),
        "chain_head": {"seq": head.seq if head else 0, "hash": head.hash if head else ""},
        "procedure": EXPORT_PROCEDURE,
    }
    with transaction() as session:
        audit.record(
            session,
            actor=actor,
            action="audit.exported",
            entity_type="audit_chain",
            after={
                "kind": kind,
                "filters": filters.as_dict(),
                "count": len(lines),
                "events_sha256": header["events_sha256"],
            },
        )
    if kind == "jsonl":
        return json.dumps(header, sort_keys=True) + "\n" + "".join(
            f"{x}\n" for x in lines
        ), "application/x-ndjson"
    buffer = io.StringIO()
    buffer.write("# " + json.dumps(header, sort_keys=True) + "\n")
    writer = csv.DictWriter(
        buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for line in lines:
        writer.writerow(json.loads(line))
    return buffer.getvalue(), "text/csv"
