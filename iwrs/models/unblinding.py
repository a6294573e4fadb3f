"""Emergency unblindings and the notification outbox."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from iwrs.db import Base, UTCDateTime, enum_column


class OutboxState(enum.StrEnum):
    """queued -> sending (claimed by one sender, with claimed_at) -> sent; a failed or abandoned
    claim goes back to queued (failed) or is taken over once its claim lease has passed."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"


class UnblindingCategory(enum.StrEnum):
    """Why a subject was unblinded: the request's category (its label is in the signature)."""

    SAE = "sae"
    OVERDOSE = "overdose"
    PREGNANCY = "pregnancy"
    OTHER = "other"

    @property
    def label(self) -> str:
        return "serious adverse event" if self is UnblindingCategory.SAE else self.value


class Channel(enum.StrEnum):
    """How a notification left: by SMTP, or written to the log when no server is configured."""

    SMTP = "smtp"
    LOG = "log"


class Unblinding(Base):
    """One emergency unblinding of one subject by one investigator: permanent, never hidden.
    The arm is not stored here; it stays sealed in the list and is unsealed on each view."""

    __tablename__ = "unblinding"

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    unblinded_by_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    unblinded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    category: Mapped[UnblindingCategory] = mapped_column(
        enum_column(UnblindingCategory, "category", length=24)
    )
    reason: Mapped[str] = mapped_column(Text)
    sae_led_to_unblinding: Mapped[bool] = mapped_column(Boolean)
    treatment_discontinued: Mapped[bool] = mapped_column(Boolean)
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))


class Notification(Base):
    """The outbox: sent by SMTP when configured, logged otherwise. Never contains an arm."""

    __tablename__ = "notification"

    id: Mapped[int] = mapped_column(primary_key=True)
    recipient: Mapped[str] = mapped_column(String(1000))  # addresses, comma-separated
    subject_line: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    channel: Mapped[Channel | None] = mapped_column(enum_column(Channel, "channel", length=16))
    state: Mapped[OutboxState] = mapped_column(
        enum_column(OutboxState, "outbox_state", length=8),
        default=OutboxState.QUEUED,
        server_default=OutboxState.QUEUED.value,
        index=True,
    )
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(120))  # the sender: host:pid
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(200))  # the SMTP error, never a body

    # A claim (queued <-> sending) is delivery bookkeeping, not a state of the trial: changing
    # only these columns needs no audit event (iwrs.audit). Delivery and failure are audited.
    bookkeeping_columns = frozenset({"state", "claimed_at", "claimed_by"})
    # ...and only between these states: reaching `sent` is the delivery, which is audited.
    bookkeeping_states = frozenset({OutboxState.QUEUED, OutboxState.SENDING})


class NotificationRead(Base):
    """One reader's read mark of an outbox message in their in-app inbox (issue 15): a message
    may name several recipients, each marks it read for themselves."""

    __tablename__ = "notification_read"

    notification_id: Mapped[int] = mapped_column(ForeignKey("notification.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), primary_key=True)
    read_at: Mapped[datetime] = mapped_column(UTCDateTime())
