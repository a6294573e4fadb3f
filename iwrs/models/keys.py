"""The one row that says which blinding key is current (its public key id, never the key)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from iwrs.db import Base, UTCDateTime


class BlindingKeyState(Base):
    """Which key seals new values, for every server (iwrs.keyring). At most one row (id 1); no
    row means the configured key (IWRS_BLINDING_KEY or instance/blinding_key.key) is current.
    The key itself stays outside the database: the id is HMAC(key, "iwrs-key-id")[:8]."""

    __tablename__ = "blinding_key_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    current_key_id: Mapped[str] = mapped_column(String(8))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())
