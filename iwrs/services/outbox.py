"""Delivering the notification outbox after commit (issue 13): claim, send, mark.

A message is written to the outbox in the transaction of the use case it reports (an
unblinding, a temporary password), so it exists only if that use case committed. Delivery then
runs in three steps, and the SMTP conversation happens with NO database transaction open:

1. **claim** (one short transaction): queued messages, and messages whose claim is older than
   the claim lease (`IWRS_NOTIFY_CLAIM_SECONDS`, a sender that died), become `sending` with
   `claimed_at` and `claimed_by`. On PostgreSQL the rows are taken `FOR UPDATE SKIP LOCKED`, so
   two senders never claim the same message; on SQLite the write lock serializes the claims.
2. **send**: a freshly signed checkpoint of the audit chain (taken after the claim committed, so
   it covers the events the message reports) is appended to each message; each is mailed by
   SMTP when `IWRS_SMTP_HOST` is set, or written to the log otherwise.
3. **mark** (one short transaction): the delivered messages become `sent` (body with its
   temporary password removed when it went by SMTP, audited `notifications.sent`); those whose
   SMTP conversation failed go back to `queued` with the error (audited `notifications.failed`):
   nothing is lost, the next run tries again.

Decision: delivery is at-least-once. A sender killed after the SMTP server accepted a message
but before step 3 committed leaves the claim, and the message is sent again once the claim
lease has passed. Each message carries a stable `Message-ID` (`<iwrs-notification-ID.CREATED@
iwrs>`), the same on every attempt, so a mail client or server that deduplicates by Message-ID
shows it once; others may show a duplicate. A duplicate is preferred to a lost notification of
an unblinding. The claim itself is bookkeeping (Notification.bookkeeping_columns) and needs no
audit event; delivery and failure are audited.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from iwrs import audit, audit_anchor, clock, config
from iwrs.audit import Actor
from iwrs.db import transaction
from iwrs.models.unblinding import Notification, OutboxState
from iwrs.services.passwords import with_credentials, without_credentials

log = logging.getLogger("iwrs.notifications")
BATCH = 100  # messages claimed per run; the rest wait for the next run


def sender_name() -> str:
    """This process as a claimer: `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"[:120]


def claim_lease() -> timedelta:
    """How long a claim stands before another sender may take it over (a dead sender)."""
    return config.notify_claim_lease()


def claim(session: Session, *, sender: str) -> list[int]:
    """Step 1, in the caller's transaction: mark up to BATCH deliverable messages `sending`
    for `sender`; returns their ids (oldest first)."""
    now = clock.now()
    stale = now - claim_lease()
    query = (
        select(Notification)
        .where(
            or_(
                Notification.state == OutboxState.QUEUED,
                (Notification.state == OutboxState.SENDING) & (Notification.claimed_at < stale),
            )
        )
        .order_by(Notification.id)
        .limit(BATCH)
        .with_for_update(skip_locked=True)  # PostgreSQL: never two senders on one message
    )
    notes = list(session.scalars(query))
    for note in notes:
        note.state, note.claimed_at, note.claimed_by = OutboxState.SENDING, now, sender
    session.flush()
    return [note.id for note in notes]


@dataclass
class Delivery:
    """What step 2 did: ids delivered (with their channel and final body) and ids failed."""

    delivered: dict[int, tuple[str, str]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)


def message_id(note: Notification) -> str:
    """The same Message-ID on every attempt of one message (receivers may deduplicate)."""
    return f"<iwrs-notification-{note.id}.{int(note.created_at.timestamp())}@iwrs>"


def send(notes: list[Notification], anchor: str) -> Delivery:
    """Step 2, with no transaction open: mail (or log) each claimed message with the signed
    checkpoint `anchor` (JSON) appended. Never raises for one message's SMTP failure."""
    delivery = config.smtp()
    result = Delivery()
    for note in notes:
        body = f"{note.body}\n\n-- \nSigned audit checkpoint: {anchor}\n"
        if not delivery.host:
            log.warning("notification to %s: %s", note.recipient, note.subject_line)
            result.delivered[note.id] = ("log", body)
            continue
        message = EmailMessage()
        message["To"], message["Subject"] = note.recipient, note.subject_line
        message["From"] = delivery.sender
        message["Message-ID"] = message_id(note)
        message.set_content(with_credentials(body, note.recipient))
        try:
            with smtplib.SMTP(delivery.host, delivery.port, timeout=60) as smtp:
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as error:
            log.warning("notification %s not delivered: %s", note.id, type(error).__name__)
            result.failed[note.id] = f"{type(error).__name__}: {error}"[:200]
            continue
        result.delivered[note.id] = ("smtp", without_credentials(body))
    return result


def mark(delivery: Delivery, *, actor: Actor, sender: str) -> int:
    """Step 3, one short transaction: delivered messages `sent`, failed ones `queued` again.
    A message whose claim another sender took over meanwhile is left to that sender."""
    if not delivery.delivered and not delivery.failed:
        return 0
    now = clock.now()
    with transaction() as session:
        ids = [*delivery.delivered, *delivery.failed]
        notes = session.scalars(
            select(Notification)
            .where(
                Notification.id.in_(ids),
                Notification.state == OutboxState.SENDING,
                Notification.claimed_by == sender,
            )
            .order_by(Notification.id)
            .with_for_update()
        ).all()
        sent = failed = 0
        for note in notes:
            if note.id in delivery.delivered:
                note.channel, note.body = delivery.delivered[note.id]
                note.state, note.sent_at = OutboxState.SENT, now
                sent += 1
            else:
                note.state, note.claimed_at, note.claimed_by = OutboxState.QUEUED, None, None
                note.attempts += 1
                note.last_error = delivery.failed[note.id]
                failed += 1
        if sent:
            audit.record(
                session,
                actor=actor,
                action="notifications.sent",
                entity_type="notification",
                after={"sent": sent},
            )
        if failed:
            audit.record(
                session,
                actor=actor,
                action="notifications.failed",
                entity_type="notification",
                after={"failed": failed, "ids": [n.id for n in notes if n.id in delivery.failed]},
            )
    return sent


def deliver(ids: list[int], *, actor: Actor, sender: str) -> int:
    """Steps 2 and 3 for messages `sender` has claimed (committed): returns how many were
    delivered. The checkpoint is signed after the claim, so it covers what the messages report."""
    if not ids:
        return 0
    signed = audit_anchor.take_checkpoint(occasion="notification")
    anchor = json.dumps(audit_anchor.checkpoint_record(signed), sort_keys=True)
    reader = _reader()
    try:
        notes = list(
            reader.scalars(
                select(Notification).where(Notification.id.in_(ids)).order_by(Notification.id)
            )
        )
    finally:
        reader.close()  # closed before any SMTP conversation: no transaction stays open
    return mark(send(notes, anchor), actor=actor, sender=sender)


def _reader() -> Session:
    from flask import current_app

    session: Session = current_app.extensions["iwrs.sessionmaker"]()
    return session


def send_outbox(*, actor: Actor) -> int:
    """Claim, send, mark (the `send-notifications` command and the services' own callers):
    returns the number of messages delivered."""
    sender = sender_name()
    with transaction() as session:
        ids = claim(session, sender=sender)
    return deliver(ids, actor=actor, sender=sender)
