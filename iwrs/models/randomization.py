"""Randomization lists (arms sealed), the per-stratum position rows that serialize slot use,
randomizations and dispensations."""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import Mapped, column_property, mapped_column

from iwrs.db import Base, UTCDateTime, enum_column


class ListSource(enum.StrEnum):
    GENERATED = "generated"  # from a seed by the protocol's algorithm
    IMPORTED = "imported"  # a file the statistician uploaded


class DispensationKind(enum.StrEnum):
    """Why a kit was given: the visit's scheduled kit, or an extra one an investigator asked for."""

    SCHEDULED = "scheduled"
    UNSCHEDULED = "unscheduled"
    REPLACEMENT = "replacement"


class KitRequestKind(enum.StrEnum):
    """The kinds of extra kit an investigator may request (the unscheduled dispensation kinds)."""

    UNSCHEDULED = "unscheduled"
    REPLACEMENT = "replacement"


class RandomizationList(Base):
    """A list of slots per stratum: generated from a seed or imported; locked at first use."""

    __tablename__ = "randomization_list"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    dummy: Mapped[bool] = mapped_column(Boolean, default=False)  # UAT only, never production
    source: Mapped[ListSource] = mapped_column(enum_column(ListSource, "source", length=16))
    algorithm: Mapped[str] = mapped_column(String(80))
    # The seed (hex), sealed like the arms: the statistician regenerates the list from it.
    sealed_seed: Mapped[str] = mapped_column(Text)
    # HMAC-SHA256 of the whole list under a key derived from the blinding key (never SHA-256 of
    # the arms, which a database reader could brute-force); recomputed on extension and rotation.
    fingerprint: Mapped[str] = mapped_column(String(64))
    # The column mapping an imported file was read through (blinding.list_mapping JSON), sealed
    # like the seed: its raw value -> arm map is the file's key. None: generated or native.
    sealed_mapping: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))


class RandomizationSlot(Base):
    """One slot of a list; its arm and its block (number and size) are stored only sealed.

    Decision (issue 14): the slot does not name its subject. The one link is
    `Randomization.slot_id` (unique: a slot is used at most once), written once, in the
    randomizing transaction, by the row that records the randomization; a slot is used exactly
    when a randomization names it, and its use time is that randomization's `randomized_at`.
    So a slot row never changes after the list is stored (but for re-sealing at a key
    rotation), and nothing can say "used" on one side and "free" on the other. The slot's
    `stratum` is the one stored stratum of a randomized subject (`Randomization.stratum`)."""

    __tablename__ = "randomization_slot"
    __table_args__ = (UniqueConstraint("list_id", "stratum", "sequence"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("randomization_list.id"))
    stratum: Mapped[str] = mapped_column(String(100))
    sequence: Mapped[int] = mapped_column(Integer)
    sealed_arm: Mapped[str] = mapped_column(Text)
    # "<block>/<block size>", sealed like the arm: in clear they would show where blocks end.
    sealed_block: Mapped[str] = mapped_column(Text)


class StratumPosition(Base):
    """The next unused sequence of a stratum: locked (FOR UPDATE) by every randomization in
    the stratum, so slots are taken strictly in order, once, under any concurrency."""

    __tablename__ = "stratum_position"

    list_id: Mapped[int] = mapped_column(ForeignKey("randomization_list.id"), primary_key=True)
    stratum: Mapped[str] = mapped_column(String(100), primary_key=True)
    next_sequence: Mapped[int] = mapped_column(Integer, default=1)
    last_sequence: Mapped[int] = mapped_column(Integer)


class StratumTally(Base):
    """The used slots of a stratum by arm, kept sealed (issue 13: the statistician's status
    reads 1 row per stratum instead of unsealing every used slot). Written only under its
    stratum's position lock: counted by the statistician's view when `sealed_counts` is NULL
    (a list from before migration 0021), then advanced by each randomization in the stratum in
    its own transaction. Sealed like a slot's arm, to fixed-width text (the token's length never
    says which count grew). Its position row is its lock; both are read in one statement."""

    __tablename__ = "stratum_tally"
    __table_args__ = (UniqueConstraint("list_id", "stratum"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("randomization_list.id"))
    stratum: Mapped[str] = mapped_column(String(100))
    sealed_counts: Mapped[str | None] = mapped_column(Text, nullable=True)


class Randomization(Base):
    """A subject's randomization: the slot it took (the slot-subject link, held only here),
    its number, site and day 1. Its stratum is the slot's (`stratum`), never stored again."""

    __tablename__ = "randomization"
    # issue 13: predictive resupply reads a site's subjects still on their schedule
    __table_args__ = (Index("ix_randomization_site_day", "site_id", "randomized_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), unique=True)
    randomization_number: Mapped[str] = mapped_column(String(16), unique=True)
    slot_id: Mapped[int] = mapped_column(ForeignKey("randomization_slot.id"), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    randomized_at: Mapped[datetime] = mapped_column(UTCDateTime())
    randomized_on: Mapped[date] = mapped_column(Date)  # day 1, the site's local date
    randomized_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))

    # The stratum key of the slot taken (never an arm: the slot's sealed columns stay unread).
    stratum: Mapped[str] = column_property(
        select(RandomizationSlot.stratum)
        .where(RandomizationSlot.id == slot_id)
        .correlate_except(RandomizationSlot)
        .scalar_subquery()
    )


class Dispensation(Base):
    """A kit given to a subject at a visit; the pharmacist confirms the number they hold."""

    __tablename__ = "dispensation"
    __table_args__ = (Index("ix_dispensation_subject", "subject_id", "visit_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"))
    kit_id: Mapped[int] = mapped_column(ForeignKey("kit.id"), unique=True)
    visit_code: Mapped[str] = mapped_column(String(16))
    kind: Mapped[DispensationKind] = mapped_column(enum_column(DispensationKind, "kind", length=16))
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
    kind: Mapped[KitRequestKind] = mapped_column(enum_column(KitRequestKind, "kind", length=16))
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
