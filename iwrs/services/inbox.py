"""The in-app inbox (issue 15): every notification a person is sent, in the application too.

A person's inbox holds their in-app notices (`user_notice`, e.g. "your password was reset")
and every outbox message (`notification`) addressed to their e-mail address (an emergency
unblinding to the sponsor's contacts, a temporary password). Each reader marks a message read
for themselves (`notification_read`), audited. Nothing here can reveal the blind: the outbox
never holds an arm (iwrs.models.unblinding.Notification), and a temporary password is shown
only as removed (`passwords.without_credentials`), never opened.

Decision (reviewer's finding on issue 15): an outbox message is the user's when it is addressed
to their e-mail address AND was created at or after their account was (`app_user.created_at`).
An address can pass from a former user to a new one, and the new person must not read what was
sent to the one before. The time an address was set is not recorded apart from the account
(no service changes an address after creation), so the account's creation stands for it; a
message sent to the address before the account existed (e.g. about an access request) is not
in that account's inbox. The same rule decides which message a reader may mark read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from iwrs import audit, clock
from iwrs.audit import Actor
from iwrs.db import read_session, transaction
from iwrs.errors import NotFound
from iwrs.models.unblinding import Notification, NotificationRead
from iwrs.models.users import User, UserNotice
from iwrs.services.passwords import without_credentials

NOTICE, MESSAGE = "notice", "message"


@dataclass(frozen=True)
class InboxItem:
    kind: str  # notice (in-app) or message (the e-mail's copy)
    id: int
    at: datetime
    title: str
    text: str
    read: bool


def _person(actor: Actor) -> User:
    from iwrs.services.users import require_person

    user = read_session().get(User, require_person(actor))
    if user is None:
        raise NotFound("no such user", field="user_id", rule="exists")
    return user


def _yours(note: Notification, user: User) -> bool:
    """Whether the message is the user's: to their address, since their account exists."""
    since = clock.as_utc(note.created_at) >= clock.as_utc(user.created_at)
    return since and _addressed_to(note.recipient, user.email)


def _addressed_to(recipients: str, email: str | None) -> bool:
    """Whether `email` is one of the comma-separated `recipients` (case-insensitive)."""
    if not email:
        return False
    wanted = email.strip().lower()
    return any(part.strip().lower() == wanted for part in recipients.split(","))


def _messages(user: User) -> list[tuple[Notification, bool]]:
    """Outbox messages to the user's address since their account was created, newest first,
    with whether they read each: one statement (a LIKE narrows, the exact address list
    decides)."""
    if not user.email:
        return []
    pattern = "%" + user.email.strip().lower().replace("%", "").replace("_", "\\_") + "%"
    rows = (
        read_session()
        .execute(
            select(Notification, NotificationRead.read_at)
            .outerjoin(
                NotificationRead,
                (NotificationRead.notification_id == Notification.id)
                & (NotificationRead.user_id == user.id),
            )
            .where(
                func.lower(Notification.recipient).like(pattern, escape="\\"),
                Notification.created_at >= user.created_at,
            )
            .order_by(Notification.id.desc())
        )
        .all()
    )
    return [(n, read is not None) for n, read in rows if _yours(n, user)]


def inbox_of(*, actor: Actor) -> list[InboxItem]:
    """The actor's own notices and messages, newest first (a person's; the operator has none)."""
    user = _person(actor)
    items = [
        InboxItem(NOTICE, n.id, n.created_at, "Notice", n.text, n.read_at is not None)
        for n in read_session().scalars(
            select(UserNotice).where(UserNotice.user_id == user.id).order_by(UserNotice.id.desc())
        )
    ]
    items += [
        InboxItem(MESSAGE, n.id, n.created_at, n.subject_line, without_credentials(n.body), read)
        for n, read in _messages(user)
    ]
    return sorted(items, key=lambda i: clock.as_utc(i.at), reverse=True)


def unread_count(*, actor: Actor) -> int:
    """How many of the actor's notices and messages are unread (the header's count)."""
    return sum(1 for item in inbox_of(actor=actor) if not item.read)


def mark_message_read(*, actor: Actor, notification_id: int) -> None:
    """The reader marks one message addressed to them read (audited once); another person's
    message answers as one that does not exist."""
    user = _person(actor)
    missing = NotFound(
        f"message {notification_id} does not exist", field="notification_id", rule="exists"
    )
    with transaction() as session:
        note = session.get(Notification, notification_id)
        if note is None or not _yours(note, user):
            raise missing
        if session.get(NotificationRead, (notification_id, user.id)) is None:
            session.add(
                NotificationRead(notification_id=note.id, user_id=user.id, read_at=clock.now())
            )
            audit.record(
                session,
                actor=actor,
                action="notification.read",
                entity_type="notification",
                entity_id=note.id,
            )
