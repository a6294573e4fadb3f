"""The trial, its sites and depots."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from iwrs.db import Base, UTCDateTime, enum_column


class SiteStatus(enum.StrEnum):
    INACTIVE = "inactive"
    ACTIVE = "active"
    CLOSED = "closed"


class Trial(Base):
    """The protocol loaded into this database: one row, its id and the file's digest."""

    __tablename__ = "trial"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(Text)
    protocol_version: Mapped[str] = mapped_column(String(32))
    protocol_sha256: Mapped[str] = mapped_column(String(64))
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Depot(Base):
    __tablename__ = "depot"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    country: Mapped[str] = mapped_column(String(64))


class Site(Base):
    __tablename__ = "site"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    city: Mapped[str] = mapped_column(String(100))
    country: Mapped[str] = mapped_column(String(64))
    status: Mapped[SiteStatus] = mapped_column(
        enum_column(SiteStatus, "site_status", length=16), default=SiteStatus.INACTIVE
    )
    depot_id: Mapped[int | None] = mapped_column(ForeignKey("depot.id"))
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Last screening sequence issued at this site: numbers only ever go up, never reused.
    screening_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # IANA zone (protocol file, then the admin): every clinical date here is the local date.
    time_zone: Mapped[str | None] = mapped_column(String(64))
