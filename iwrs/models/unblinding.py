"""Emergency unblindings and the notification outbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from iwrs.db import Base, UTCDateTime


class Unblinding(Base):
    """One emergency unblinding of one subject by one investigator: permanent, never hidden.
    The arm is not stored here; it stays sealed in the list and is unsealed on each view."""

    __tablename__ = "unblinding"

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    unblinded_by_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    unblinded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    category: Mapped[str] = mapped_column(String(24))
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
    channel: Mapped[str | None] = mapped_column(String(16))  # smtp | log
