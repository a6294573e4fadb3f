"""The auditor's read-only workspace: filter and page the trail, show an event, verify the
chain incrementally, export the filtered trail as CSV or JSON Lines (offline-verifiable)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from flask import current_app
from sqlalchemy import ColumnElement, Select, and_, func, not_, or_, select
from sqlalchemy.orm import Session

from iwrs import audit, audit_anchor, audit_export, clock, validation
from iwrs.audit import Actor, Verification, event_fields, verify_events
from iwrs.audit_anchor import Problem
from iwrs.db import read_session, transaction
from iwrs.errors import Forbidden, InvalidInput, NotFound
from iwrs.models.audit import AuditAnchor, AuditChainHead, AuditCheckpoint, AuditEvent
from iwrs.models.sites import Site
from iwrs.models.subjects import Subject

PAGE = 50

# The action filter in words: each category the action prefixes it matches (the page offers
# these, never a code prefix; the API still takes a code prefix such as "subject.").
# Actions no category names (new ones included) fall under OTHER_ACTIONS.
ACTION_CATEGORIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "subjects": ("Subjects: screening, eligibility, randomization", ("subject.", "eligibility.")),
    "kits": ("Kits: dispensing, returns, expiry, destruction", ("kit.", "kits.", "lot.")),
    "shipments": ("Shipments, depots and supply alerts", ("shipment.", "depot.", "supply.")),
    "lists": (
        "Randomization lists and unblinded reports",
        ("list.", "list_status.", "allocations.", "arm_access."),
    ),
    "unblinding": ("Emergency unblinding report and refusals", ("unblinding.",)),
    "sign_in": ("Sign-in, sign-out and e-signatures", ("auth.", "esign.")),
    "users": (
        "Users, passwords, API tokens and access requests",
        ("user.", "api_token.", "unblinded_access.", "notice."),
    ),
    "sites": ("Sites and the protocol", ("site.", "protocol.")),
    "audit": ("Audit trail: exports and verifications", ("audit.",)),
    "system": (
        "Keys, scheduled jobs and notifications",
        ("blinding_key.", "job.", "notifications."),
    ),
}
OTHER_ACTIONS = "other"


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
            return validation.day_date(value, field=name) if value else None

        return cls(
            **{
                k: (args.get(k) or "").strip()[:100]
                for k in ("username", "role", "action", "subject", "site")
            },
            date_from=day("date_from"),
            date_to=day("date_to"),
        )._in_order()

    def _in_order(self) -> Filters:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise InvalidInput(
                f"date_to: {self.date_to.isoformat()} is before date_from "
                f"{self.date_from.isoformat()}; the range is reversed",
                field="date_to",
                rule="date_range_order",
            )
        return self

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
        query = query.where(_action_matches(filters.action))
    if filters.site:
        site_id = session.scalar(
            select(Site.id).where(func.upper(Site.code) == filters.site.upper())
        )
        query = query.where(AuditEvent.site_id == (site_id or -1))
    if filters.subject:
        subject_id = session.scalar(
            select(Subject.id).where(
                func.upper(Subject.screening_number) == filters.subject.upper()
            )
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


def _action_matches(action: str) -> ColumnElement[bool]:
    """A category's prefixes, every action outside them for OTHER_ACTIONS, else a code prefix."""
    if action == OTHER_ACTIONS:
        prefixes = [p for _, group in ACTION_CATEGORIES.values() for p in group]
        return and_(*[not_(AuditEvent.action.startswith(p, autoescape=True)) for p in prefixes])
    if action in ACTION_CATEGORIES:
        _, group = ACTION_CATEGORIES[action]
        return or_(*[AuditEvent.action.startswith(p, autoescape=True) for p in group])
    return AuditEvent.action.startswith(action, autoescape=True)


def _auditor(actor: Actor) -> None:
    """The audit trail is read by auditors (and the operator): Forbidden `permission`."""
    from iwrs.auth import Permission
    from iwrs.services.users import require

    require(actor, Permission.VIEW_AUDIT)


def page(
    filters: Filters, *, actor: Actor, before: int | None = None, after: int | None = None
) -> tuple[list[AuditEvent], int | None, int | None]:
    """One page, newest first, by keyset on seq both ways (fast at any depth of a large
    trail): the events older than `before`, or the page just newer than `after`, or the
    newest; with the `before` key of the older page and the `after` key of the newer page
    (None: there is none)."""
    _auditor(actor)
    query = _query(filters)
    if after is not None and before is None:
        rows = list(
            read_session().scalars(
                query.where(AuditEvent.seq > after).order_by(AuditEvent.seq).limit(PAGE + 1)
            )
        )
        newer = rows[PAGE - 1].seq if len(rows) > PAGE else None
        rows = rows[:PAGE][::-1]
        return rows, (rows[-1].seq if rows else after + 1), newer
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    rows = list(read_session().scalars(query.order_by(AuditEvent.seq.desc()).limit(PAGE + 1)))
    older = rows[PAGE - 1].seq if len(rows) > PAGE else None
    newer = (rows[0].seq if rows else before - 1) if before is not None else None
    return rows[:PAGE], older, newer


def event(seq: int, *, actor: Actor) -> AuditEvent:
    _auditor(actor)
    row = read_session().get(AuditEvent, seq)
    if row is None:
        raise NotFound(f"audit event {seq} does not exist", field="seq", rule="exists")
    return row


def integrity(*, actor: Actor) -> tuple[AuditCheckpoint | None, int, AuditCheckpoint | None]:
    """The latest verification, the number of events in the chain now, and the latest full
    walk (the scheduled `iwrs audit verify --record`), for auditors and the operator."""
    _auditor(actor)
    session = read_session()
    latest = select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(1)
    checkpoint = session.scalars(latest).first()
    full = session.scalars(latest.where(AuditCheckpoint.full_walk.is_(True))).first()
    head = session.get(AuditChainHead, 1)
    return checkpoint, head.seq if head else 0, full


def _resume_point(reader: Session) -> tuple[tuple[int, str], list[Problem]]:
    """Where "Verify now" may continue from: the last OK verification, only if its signature
    holds and its event still has the verified hash; otherwise from event 1 (a full walk)."""
    last = reader.scalars(
        select(AuditCheckpoint)
        .where(AuditCheckpoint.ok.is_(True))
        .order_by(AuditCheckpoint.id.desc())
        .limit(1)
    ).first()
    if last is None or last.seq == 0:
        return (0, audit.GENESIS), []
    if not audit_anchor.verification_holds(last):
        return (0, audit.GENESIS), audit_anchor.check_verifications([last])
    if reader.scalar(select(AuditEvent.hash).where(AuditEvent.seq == last.seq)) != last.hash:
        return (0, audit.GENESIS), []  # the walk from event 1 names what changed
    return (last.seq, last.hash), []


def walk(reader: Session, *, full: bool) -> tuple[Verification, list[Problem]]:
    """Walk the chain (from event 1, or from the signed resume point) to the head, MACs
    included, then check every signed checkpoint; plain rows in batches: flat memory."""
    key = current_app.extensions["iwrs.settings"].audit_key
    witness = audit_anchor.read_witness_now()  # before the snapshot: see read_witness_now
    if reader.get_bind().dialect.name == "postgresql":
        # One snapshot for the head and the events: other use cases keep appending meanwhile.
        # (SQLite: a read transaction is a snapshot already.)
        reader.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    start, problems = ((0, audit.GENESIS), []) if full else _resume_point(reader)
    head = reader.execute(
        select(AuditChainHead.seq, AuditChainHead.hash).where(AuditChainHead.id == 1)
    ).first()
    rows = reader.execute(
        select(*[getattr(AuditEvent, name) for name in audit.EVENT_FIELDS])
        .where(AuditEvent.seq > start[0])
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
    if not result.ok:
        problems.append(Problem("chain", result.first_bad_seq, str(result)))
    problems += audit_anchor.check_anchors(reader, witness)
    if full:
        problems += audit_anchor.check_verifications(reader.scalars(select(AuditCheckpoint)))
    return result, problems


def verify_now(*, actor: Actor, full: bool = False) -> AuditCheckpoint:
    """Verify the chain (resuming from the last signed verification unless `full`), check the
    signed checkpoints, and record the signed result.

    The walk reads in its own read-only session, outside the write transaction: on SQLite a
    write transaction holds the database's write lock from BEGIN. Only recording the result and
    its event is a (short) write transaction."""
    if actor.role not in ("auditor", "system"):
        raise Forbidden("only an auditor verifies the trail", field="role", rule="permission")
    reader = current_app.extensions["iwrs.sessionmaker"]()
    try:
        result, problems = walk(reader, full=full)
    finally:
        reader.close()
    return record_verification(actor=actor, result=result, problems=problems, full=full)


def record_verification(
    *, actor: Actor, result: Verification, problems: list[Problem], full: bool
) -> AuditCheckpoint:
    """Store a walk's outcome as a signed verification record, with its audit event."""
    if actor.role not in ("auditor", "system"):
        raise Forbidden("only an auditor verifies the trail", field="role", rule="permission")
    ok = not problems
    with transaction() as session:
        checkpoint = AuditCheckpoint(
            seq=result.count,
            hash=result.last_hash,
            ok=ok,
            problem="; ".join(str(p) for p in problems[:5]) or None,
            verified_at=clock.now(),
            verified_by=actor.username,
            full_walk=full,
        )
        checkpoint.signature = audit_anchor.sign(audit_anchor.verification_message(checkpoint))
        session.add(checkpoint)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="audit.verified",
            entity_type="audit_chain",
            entity_id=checkpoint.id,
            after={
                "ok": ok,
                "up_to": result.count,
                "full_walk": full,
                "problems": sorted({p.code for p in problems}),
            },
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


def export(filters: Filters, *, kind: str, actor: Actor) -> tuple[str | bytes, str]:
    """The filtered trail, oldest first, signed (see iwrs.audit_export), as (content, media
    type): JSON Lines text, or for CSV a ZIP of the plain CSV and its signed manifest; a
    checkpoint is signed at the export and the export is audited. Auditors only
    (Forbidden `permission`: the route's decorator is the second wall, not the only one)."""
    from iwrs.auth import Permission
    from iwrs.services.users import require

    require(actor, Permission.VIEW_AUDIT)
    anchor = audit_anchor.take_checkpoint(occasion="export")
    session = read_session()
    query = _query(filters).where(AuditEvent.seq <= anchor.seq).order_by(AuditEvent.seq)
    lines = [audit.export_line(event_fields(r)) for r in session.scalars(query)]
    first, last = (json.loads(lines[0])["seq"], json.loads(lines[-1])["seq"]) if lines else (0, 0)
    # The signed checkpoints the export spans: a verifier checks each exported event at one.
    spanned = session.scalars(
        select(AuditAnchor)
        .where(AuditAnchor.seq >= first, AuditAnchor.seq <= last, AuditAnchor.seq > 0)
        .order_by(AuditAnchor.id)
    )
    header = {
        "kind": kind,
        "study_id": current_app.extensions["iwrs.protocol"].study_id,
        "exported_at": clock.now().isoformat(),
        "exported_by": actor.username,
        "filtered": bool(filters.as_dict()),
        "filters": filters.as_dict(),
        "first_seq": first or None,
        "last_seq": last or None,
        "count": len(lines),
        "chain_head": {"seq": anchor.seq, "hash": anchor.hash},
        "checkpoint": audit_anchor.checkpoint_record(anchor),
        "checkpoints": [audit_anchor.checkpoint_record(a) for a in spanned],
        "key_id": anchor.key_id,
    }
    content = audit_export.render(header, lines, kind, CSV_COLUMNS)
    with transaction() as write:
        audit.record(
            write,
            actor=actor,
            action="audit.exported",
            entity_type="audit_chain",
            after={
                "kind": kind,
                "filters": filters.as_dict(),
                "count": len(lines),
                "up_to": anchor.seq,
            },
        )
    media = "application/x-ndjson" if kind == "jsonl" else "application/zip"
    return content, media


def names_of(events: list[AuditEvent], *, actor: Actor) -> dict[int, str]:
    """Each event's record by its business name, as a person looks for it: "subject
    CN01-0003", "shipment SH-000005", "dispensation to CN01-0003", "site CN01", "user dr.li"
    (issue 15: "subject 10" named a database id), with its site and subject; by event seq.
    A few statements per page whatever its length (one per kind of record named)."""
    _auditor(actor)
    from iwrs.models.randomization import Dispensation
    from iwrs.models.sites import Site
    from iwrs.models.subjects import Subject
    from iwrs.models.supply import Shipment
    from iwrs.models.users import User

    session = read_session()

    def ids(kind: str) -> set[int]:
        return {int(e.entity_id) for e in events if e.entity_type == kind and _is_id(e.entity_id)}

    dispensations = {
        d.id: d.subject_id
        for d in session.scalars(
            select(Dispensation).where(Dispensation.id.in_(ids("dispensation")))
        )
    }
    subject_ids = (
        ids("subject")
        | set(dispensations.values())
        | {e.subject_id for e in events if e.subject_id}
    )
    subjects = dict(
        session.execute(
            select(Subject.id, Subject.screening_number).where(Subject.id.in_(subject_ids))
        ).all()
    )
    site_ids = ids("site") | {e.site_id for e in events if e.site_id}
    sites = dict(session.execute(select(Site.id, Site.code).where(Site.id.in_(site_ids))).all())
    shipments = dict(
        session.execute(
            select(Shipment.id, Shipment.number).where(Shipment.id.in_(ids("shipment")))
        ).all()
    )
    users = dict(
        session.execute(select(User.id, User.username).where(User.id.in_(ids("user")))).all()
    )
    named = {
        "subject": lambda i: f"subject {subjects.get(i, '?')}",
        "shipment": lambda i: f"shipment {shipments.get(i, '?')}",
        "site": lambda i: f"site {sites.get(i, '?')}",
        "user": lambda i: f"user {users.get(i, '?')}",
        "dispensation": lambda i: f"dispensation to {subjects.get(dispensations.get(i, 0), '?')}",
    }
    found = {}
    for e in events:
        kind = e.entity_type.replace("_", " ")
        if e.entity_type in named and _is_id(e.entity_id):
            name = named[e.entity_type](int(str(e.entity_id)))
        else:
            name = f"{kind} {e.entity_id}" if e.entity_id else kind
        if e.subject_id and e.entity_type != "subject":
            name += f" · subject {subjects.get(e.subject_id, '?')}"
        if e.site_id and e.entity_type != "site":
            name += f" · site {sites.get(e.site_id, '?')}"
        found[e.seq] = name
    return found


def _is_id(value: str | None) -> bool:
    return bool(value) and str(value).isdigit()
