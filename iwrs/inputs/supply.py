"""Inputs of supply: shipments (page and API), kit reports, returns, quarantine, lots and
destruction (pages only); one schema each."""

from __future__ import annotations

from iwrs.inputs import Choice, Flag, Input, IsoDate, Many, One, Text, WholeNumber
from iwrs.services.accountability import RETURN_CONDITIONS

CONDITIONS = ("good", "damaged", "missing")


class ManualShipmentInput(Input):
    """A manual shipment to a site (supply manager): filled whole or refused, never shrunk."""

    site_code = Text(kind="code", required=True, metadata={"example": "CN01"})
    quantity = WholeNumber(
        minimum=1,
        maximum=500,
        required=True,
        metadata={"description": "kits of each kit type, split by the allocation ratio"},
    )


class ShippingInput(Input):
    """Hand a requested shipment to the courier."""

    courier = Text(
        kind="reference", required=True, blank="a shipment cannot leave without a courier"
    )
    tracking_number = Text(
        kind="reference", required=True, blank="a shipment cannot leave without a tracking number"
    )


class ReceiptLineInput(Input):
    """One kit of a shipment as received."""

    kit_number = Text(kind="kit", required=True)
    condition = Choice(CONDITIONS, required=True)


class ReceiptInput(Input):
    """Every kit of a shipment as good, damaged or missing, and any temperature excursion."""

    lines = Many(
        One(ReceiptLineInput),
        required=True,
        metadata={"description": "every kit of the shipment exactly once"},
    )
    temperature_excursion = Flag(load_default=False)


# Page-only inputs (no API endpoint takes them).


class ShipmentCancellationInput(Input):
    """Cancel a requested shipment, with a reason."""

    reason = Text(kind="reason", required=True)


class KitReportInput(Input):
    """A kit at a site reported damaged or lost, with a reason (the page's `back`, where to go
    next, is navigation, not input)."""

    what = Choice(("damaged", "lost"), load_default="damaged")
    reason = Text(kind="reason", required=True)


class KitReturnInput(Input):
    """A dispensed kit returned by the subject, in a condition."""

    condition = Choice(RETURN_CONDITIONS, required=True)


class QuarantineDecisionInput(Input):
    """Release or reject quarantined kits, with a reason (never reject by default)."""

    decision = Choice(("release", "reject"), required=True)
    kit_numbers = Many(Text(kind="code", required=True), load_default=list)
    reason = Text(kind="reason", required=True)


class LotExpiryInput(Input):
    """A lot's new expiry date, with a reason."""

    expiry = IsoDate(required=True)
    reason = Text(kind="reason", required=True)


class DestructionInput(Input):
    """Kits destroyed under a certificate's reference (numbers separated by spaces or commas)."""

    kit_numbers = Text(kind="text", load_default="")
    reference = Text(kind="reference", required=True)
