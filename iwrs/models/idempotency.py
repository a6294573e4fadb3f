"""Idempotency keys: one row per (user, key), the claim of a signed POST and, once settled, the
outcome the client was given (replayed byte-for-byte to every retry; iwrs.services.idempotency)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from iwrs.db import Base, UTCDateTime, enum_column


class KeyState(enum.StrEnum):
    IN_PROGRESS = "in_progress"  # claimed; the request is running (or crashed: see the lease)
    SUCCEEDED = "succeeded"  # settled in the same transaction as the change it made
    REFUSED = "refused"  # settled right after the refused transaction rolled back
    # Given back by a request that decided nothing (a wrong signature, a transient refusal,
    # an error): the next request with the key claims it at once; the binding stays.
    RELEASED = "released"


class IdempotencyKey(Base):
    """A client's idempotency key, scoped to the user who sent it and bound to the operation,
    its subject and a SHA-256 digest of the request's meaningful fields (never a password)."""

    __tablename__ = "idempotency_key"
    __table_args__ = (UniqueConstraint("user_id", "key", name="uq_idempotency_key_user_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    key: Mapped[str] = mapped_column(String(100))
    operation: Mapped[str] = mapped_column(String(40))
    # Not a foreign key: the subject asked for may not exist (a stored 404 is replayed too).
    subject_id: Mapped[int | None] = mapped_column(Integer)
    request_digest: Mapped[str] = mapped_column(String(64))
    state: Mapped[KeyState] = mapped_column(
        enum_column(KeyState, "idempotency_key_state"), default=KeyState.IN_PROGRESS
    )
    # The claim's number, 1 at first use and one more at each re-claim: only the request
    # holding the current number may settle the key. (A counter, not a random token: nothing
    # random in a row, so two runs of the same requests store the same rows.)
    claim: Mapped[int] = mapped_column(Integer)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status_code: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[str | None] = mapped_column(Text)
