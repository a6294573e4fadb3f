"""The append-only audit trail and the head of its hash chain."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from iwrs.db import Base, UTCDateTime


class AuditEvent(Base):
    """One event of the trail. `seq` numbers events 1, 2, 3… with no gaps; `hash` chains them."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_action_seq", "action", "seq"),
        Index("ix_audit_event_username_seq", "username", "seq"),
        Index("ix_audit_event_site_seq", "site_id", "seq"),
        Index("ix_audit_event_entity", "entity_type", "entity_id"),
        Index("ix_audit_event_occurred_at", "occurred_at"),
        Index("ix_audit_event_subject_seq", "subject_id", "seq"),
        Index("ix_audit_event_role_seq", "role", "seq"),
    )

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    user_id: Mapped[int | None] = mapped_column(Integer)
    username: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str | None] = mapped_column(String(64))
    site_id: Mapped[int | None] = mapped_column(Integer)
    subject_id: Mapped[int | None] = mapped_column(Integer)
    before: Mapped[str | None] = mapped_column(Text)
    after: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    # How the actor authenticated: session, token:<id>, cli, system, password (None: before 0007).
    auth: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256, verifiable offline
    mac: Mapped[str] = mapped_column(String(64))  # HMAC of the hash under the server's audit key


class AuditChainHead(Base):
    """The single row holding the last event's number and hash: the chain's point of contention."""

    __tablename__ = "audit_chain_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A verification of the chain up to an event: what the auditor's page shows as
    "verified up to event N at time T", and where the next verification continues."""

    __tablename__ = "audit_checkpoint"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    hash: Mapped[str] = mapped_column(String(64))
    ok: Mapped[bool] = mapped_column()
    problem: Mapped[str | None] = mapped_column(Text)
    verified_at: Mapped[datetime] = mapped_column(UTCDateTime())
    verified_by: Mapped[str] = mapped_column(String(64))
    # A walk from event 1 (the scheduled `audit verify --record`), not one resumed from here.
    full_walk: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Ed25519 over (seq, hash, ok, verified_at, full_walk): "Verify now" resumes only from a
    # checkpoint whose signature holds, so a forged row cannot make it report "intact".
    signature: Mapped[str | None] = mapped_column(String(128))


class AuditAnchor(Base):
    """A signed checkpoint of the chain head (seq, hash, time), also appended to the witness
    file outside the database: a trail shorter than or different from it is found."""

    __tablename__ = "audit_anchor"
    __table_args__ = (Index("ix_audit_anchor_seq", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    occasion: Mapped[str] = mapped_column(String(16))  # interval | export | notification | …
    key_id: Mapped[str] = mapped_column(String(16))
    signature: Mapped[str] = mapped_column(String(128))  # Ed25519, hex
