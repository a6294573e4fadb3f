"""Randomization lists (arms sealed), the per-stratum position rows that serialize slot use,
randomizations and dispensations."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from iwrs.db import Base, UTCDateTime


class RandomizationList(Base):
    """A list of slots per stratum: generated from a seed or imported; locked at first use."""

    __tablename__ = "randomization_list"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    dummy: Mapped[bool] = mapped_column(Boolean, default=False)  # UAT only, never production
    source: Mapped[str] = mapped_column(String(16))  # generated | imported
    algorithm: Mapped[str] = mapped_column(String(80))
    # The seed (hex), sealed like the arms: the statistician regenerates the list from it.
    sealed_seed: Mapped[str] = mapped_column(Text)
    # HMAC-SHA256 of the whole list under a key derived from the blinding key (never SHA-256 of
    # the arms, which a database reader could brute-force); recomputed on extension and rotation.
    fingerprint: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))


class RandomizationSlot(Base):
    """One slot of a list; its arm and its block (number and size) are stored only sealed."""

    __tablename__ = "randomization_slot"
    __table_args__ = (UniqueConstraint("list_id", "stratum", "sequence"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("randomization_list.id"))
    stratum: Mapped[str] = mapped_column(String(100))
    sequence: Mapped[int] = mapped_column(Integer)
    sealed_arm: Mapped[str] = mapped_column(Text)
    # "<block>/<block size>", sealed like the arm: in clear they would show where blocks end.
    sealed_block: Mapped[str] = mapped_column(Text)
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("subject.id"), unique=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class StratumPosition(Base):
    """The next unused sequence of a stratum: locked (FOR UPDATE) by every randomization in
    the stratum, so slots are taken strictly in order, once, under any concurrency."""

    __tablename__ = "stratum_position"

    list_id: Mapped[int] = mapped_column(ForeignKey("randomization_list.id"), primary_key=True)
    stratum: Mapped[str] = mapped_column(String(100), primary_key=True)
    next_sequence: Mapped[int] = mapped_column(Integer, default=1)
    last_sequence: Mapped[int] = mapped_column(Integer)


class Randomization(Base):
    __tablename__ = "randomization"
    # issue 13: predictive resupply reads a site's subjects still on their schedule
    __table_args__ = (Index("ix_randomization_site_day", "site_id", "randomized_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), unique=True)
    randomization_number: Mapped[str] = mapped_column(String(16), unique=True)
    slot_id: Mapped[int] = mapped_column(ForeignKey("randomization_slot.id"), unique=True)
    stratum: Mapped[str] = mapped_column(String(100))
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    randomized_at: Mapped[datetime] = mapped_column(UTCDateTime())
    randomized_on: Mapped[str] = mapped_column(String(10))  # day 1, the site's local ISO date
    randomized_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))


class Dispensation(Base):
    """A kit given to a subject at a visit; the pharmacist confirms the number they hold."""

    __tablename__ = "dispensation"
    __table_args__ = (Index("ix_dispensation_subject", "subject_id", "visit_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"))
    kit_id: Mapped[int] = mapped_column(ForeignKey("kit.id"), unique=True)
    visit_code: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))  # scheduled | unscheduled | replacement
    reason: Mapped[str | None] = mapped_column(Text)
    out_of_window: Mapped[bool] = mapped_column(Boolean, default=False)
    dispensed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The visit's date at the site (stated when entered later); dispensed_at is the entry.
    visit_date: Mapped[date | None] = mapped_column(Date)
    dispensed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class KitRequest(Base):
    """An investigator's signed request for an unscheduled or replacement kit at a visit; the
    pharmacist's dispensation fulfils it (once)."""

    __tablename__ = "kit_request"
    __table_args__ = (Index("ix_kit_request_subject", "subject_id", "visit_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"))
    visit_code: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))  # unscheduled | replacement
    reason: Mapped[str] = mapped_column(Text)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))
    dispensation_id: Mapped[int | None] = mapped_column(ForeignKey("dispensation.id"), unique=True)


class RandomizationCounter(Base):
    """A count of randomizations that enforces a cap and (for the study) numbers them: the
    study (`study`), a site (`site:<id>`) or a stratum (`stratum:<key>`). Raised only by a
    conditional increment taken last in the randomize transaction (iwrs.locking.take_counter),
    so it is held only through commit and never costs a count(*) over the randomizations.
    Rows are created on first use; migration 0015 backfilled them from the randomizations."""

    __tablename__ = "randomization_counter"

    name: Mapped[str] = mapped_column(String(120), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
