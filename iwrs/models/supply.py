"""Lots, kits (treatment sealed), the insert-only kit ledger, shipments and supply alerts."""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import Boolean, Date, Enum, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from iwrs.db import Base, UTCDateTime, enum_column
from supply.shipments import ShipmentState
from supply.states import KitAction, KitState, PlaceKind


class ShipmentKind(enum.StrEnum):
    INITIAL = "initial"  # the site's first stock, at activation
    RESUPPLY = "resupply"  # the resupply run's top-up
    MANUAL = "manual"  # asked for by the supply manager
    EMERGENCY = "emergency"  # the per-arm emergency resupply (README rule 2's one exception)


class AlertKind(enum.StrEnum):
    """What a supply alert is about (each worded for blinded readers)."""

    DEPOT_SHORTFALL = "depot_shortfall"
    EMERGENCY_RESUPPLY = "emergency_resupply"
    KIT_MISMATCH = "kit_mismatch"
    KIT_REQUESTED = "kit_requested"
    SITE_STOCK_DISPENSING = "site_stock_dispensing"
    SITE_STOCK_RANDOMIZATION = "site_stock_randomization"
    STRATUM_EXHAUSTED = "stratum_exhausted"


def place_kind_column() -> Enum:
    return enum_column(PlaceKind, "place_kind", length=16)


class Lot(Base):
    """A blinded packaging lot: it holds kits of every treatment, never a bulk drug lot."""

    __tablename__ = "lot"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    kit_type: Mapped[str] = mapped_column(String(32))
    expiry: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The kit-number scheme a generated lot's numbers were drawn by (blinding.kits.ALGORITHMS),
    # so the list re-derives from its seed; NULL: imported, or generated before migration 0021
    # (then kit-numbers-v1, the only scheme there was).
    kit_numbers: Mapped[str | None] = mapped_column(String(32), nullable=True)


class Kit(Base):
    """One kit: its number, blinded lot, state and place. The treatment is stored only sealed
    (AES-GCM bound to the kit number), so a dump shows neither arms nor which kits match."""

    __tablename__ = "kit"
    __table_args__ = (
        Index("ix_kit_place", "place_kind", "place_id", "state"),
        Index("ix_kit_shipment", "shipment_id"),
        # issue 13: the depot pick and the expiry sweep (state, type), the lot summary
        Index("ix_kit_state_type_number", "state", "kit_type", "number"),
        Index("ix_kit_lot_state", "lot_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(16), unique=True)
    kit_type: Mapped[str] = mapped_column(String(32))
    lot_id: Mapped[int] = mapped_column(ForeignKey("lot.id"))
    state: Mapped[KitState] = mapped_column(enum_column(KitState, "kit_state"))
    place_kind: Mapped[PlaceKind] = mapped_column(place_kind_column())
    place_id: Mapped[int] = mapped_column(Integer)
    shipment_id: Mapped[int | None] = mapped_column(ForeignKey("shipment.id"))
    sealed_treatment: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class KitEvent(Base):
    """The insert-only kit ledger: every transition of every kit, replayable."""

    __tablename__ = "kit_event"
    __table_args__ = (  # issue 13: a shipment's kits, the receipts of the reconciliation summary
        Index("ix_kit_event_shipment", "shipment_id", "id"),
        Index("ix_kit_event_action_kit", "action", "kit_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kit_id: Mapped[int] = mapped_column(ForeignKey("kit.id"), index=True)
    action: Mapped[KitAction] = mapped_column(enum_column(KitAction, "action"))
    from_state: Mapped[KitState | None] = mapped_column(enum_column(KitState, "from_state"))
    to_state: Mapped[KitState] = mapped_column(enum_column(KitState, "to_state"))
    to_place_kind: Mapped[PlaceKind] = mapped_column(
        enum_column(PlaceKind, "to_place_kind", length=16)
    )
    to_place_id: Mapped[int] = mapped_column(Integer)
    shipment_id: Mapped[int | None] = mapped_column(ForeignKey("shipment.id"))
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))


class Shipment(Base):
    __tablename__ = "shipment"
    __table_args__ = (Index("ix_shipment_site_state", "site_id", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(24), unique=True)
    kind: Mapped[ShipmentKind] = mapped_column(enum_column(ShipmentKind, "kind", length=16))
    depot_id: Mapped[int] = mapped_column(ForeignKey("depot.id"))
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))
    state: Mapped[ShipmentState] = mapped_column(enum_column(ShipmentState, "shipment_state"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    shipped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    courier: Mapped[str | None] = mapped_column(String(100))
    tracking_number: Mapped[str | None] = mapped_column(String(100))
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    received_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    received_on: Mapped[date | None] = mapped_column(Date)  # the site's local date of receipt
    temperature_excursion: Mapped[bool] = mapped_column(Boolean, default=False)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    note: Mapped[str | None] = mapped_column(Text)


class SupplyAlert(Base):
    """Something the supply manager must act on (depot shortfall, site out of a kit type).
    Written for blinded readers: it never says which treatment is short."""

    __tablename__ = "supply_alert"
    __table_args__ = (Index("ix_supply_alert_open", "kind", "site_id", "resolved_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[AlertKind] = mapped_column(enum_column(AlertKind, "kind", length=32))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The supply manager's handling (issue 15): seen (acknowledged), then resolved with a reason.
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    resolved_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    resolution: Mapped[str | None] = mapped_column(Text)


class Destruction(Base):
    """A destruction record: the reference of the certificate or the witnessed destruction."""

    __tablename__ = "destruction"

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(String(200))
    destroyed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    destroyed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))


class ReturnCondition(enum.StrEnum):
    """How a kit came back from the subject (issue 15); LOST: it did not come back."""

    UNUSED = "unused"
    PARTLY_USED = "partly_used"
    EMPTY = "empty"
    DAMAGED = "damaged"
    LOST = "lost"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


class KitReturn(Base):
    """A kit the subject brought back (or reported lost) at a visit, and its verification by a
    pharmacist: the second step before the kit is pending destruction (issue 15)."""

    __tablename__ = "kit_return"

    id: Mapped[int] = mapped_column(primary_key=True)
    kit_id: Mapped[int] = mapped_column(ForeignKey("kit.id"), unique=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    visit_code: Mapped[str] = mapped_column(String(32))
    condition: Mapped[ReturnCondition] = mapped_column(
        enum_column(ReturnCondition, "condition", length=16)
    )
    units_returned: Mapped[int | None] = mapped_column(Integer)  # as counted at the visit
    returned_on: Mapped[date] = mapped_column(Date)  # the site's local date of the visit
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    verified_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    units_verified: Mapped[int | None] = mapped_column(Integer)  # as counted at verification


class KitCount(Base):
    """The maintained summary of the kit table (issue 13): how many kits of a blinded lot are in
    a state at a place. Kept by `iwrs.services.kit_counts` in the same flush as the kit rows it
    counts; `supply check-ledger` compares it with a fresh COUNT(*) GROUP BY. Never per arm."""

    __tablename__ = "kit_count"

    place_kind: Mapped[PlaceKind] = mapped_column(place_kind_column(), primary_key=True)
    place_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lot.id"), primary_key=True)
    state: Mapped[KitState] = mapped_column(enum_column(KitState, "state"), primary_key=True)
    n: Mapped[int] = mapped_column(Integer)
