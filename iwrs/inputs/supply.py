"""Inputs of supply: shipments (page and API), kit reports, returns, quarantine, lots and
destruction (pages only); one schema each."""

from __future__ import annotations

from iwrs.inputs import (
    Choice,
    Confirmation,
    DayDate,
    Flag,
    Input,
    Many,
    One,
    Secret,
    Text,
    WholeNumber,
)
from iwrs.services.accountability import RETURN_CONDITIONS, UNITS_MAX

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
    """Every kit of a shipment as good, damaged or missing, whether the temperature logger shows
    an excursion (an answer is required: never assumed), and the date of receipt."""

    lines = Many(
        One(ReceiptLineInput),
        required=True,
        metadata={"description": "every kit of the shipment exactly once"},
    )
    temperature_excursion = Flag(
        required=True, metadata={"description": "what the temperature logger shows; required"}
    )
    received_on = DayDate(
        load_default=None,
        metadata={
            "description": "the site's local date of receipt (today there if omitted); not in "
            "the future, not before the shipment left"
        },
    )


class ReceiptPageInput(ReceiptInput):
    """The receipt page: the date of receipt is stated (the page offers the site's today)."""

    received_on = DayDate(required=True)


# Page-only inputs (no API endpoint takes them).


class ShipmentCancellationInput(Input):
    """Cancel a requested shipment, with a reason."""

    reason = Text(kind="reason", required=True)


class KitReportInput(Input):
    """A kit at a site reported damaged or lost: the choice (never a default), a reason and the
    confirmation that the person read what will happen."""

    what = Choice(("damaged", "lost"), required=True)
    reason = Text(kind="reason", required=True)
    confirmed = Confirmation(message="tick the box to confirm what will happen to the kit")


class KitReturnInput(Input):
    """A dispensed kit brought back by the subject at a visit: its condition, the units left
    (if counted) and the visit's date at the site (today if blank)."""

    kit_number = Text(kind="code", required=True)
    visit_code = Text(kind="code", required=True)
    condition = Choice(RETURN_CONDITIONS, required=True)
    units_returned = WholeNumber(minimum=0, maximum=UNITS_MAX, load_default=None)
    returned_on = DayDate(load_default=None)


class ReturnVerificationInput(Input):
    """A pharmacist's check of a returned kit in hand: the units counted (if any)."""

    units_verified = WholeNumber(minimum=0, maximum=UNITS_MAX, load_default=None)


class QuarantineDecisionInput(Input):
    """Release or reject quarantined kits, with a reason (never reject by default)."""

    decision = Choice(("release", "reject"), required=True)
    kit_numbers = Many(Text(kind="code", required=True), load_default=list)
    reason = Text(kind="reason", required=True)


class LotExpiryInput(Input):
    """A lot's new expiry date, with a reason."""

    expiry = DayDate(required=True)
    reason = Text(kind="reason", required=True)


class DestructionInput(Input):
    """Kits destroyed under a certificate's reference, signed (the page lists the kits ticked
    and the meaning of the signature first)."""

    kit_numbers = Many(Text(kind="code", required=True), load_default=list)
    reference = Text(kind="reference", required=True)
    signature_password = Secret(required=True, blank="sign with your password")


class AlertResolutionInput(Input):
    """Resolve a supply alert, with the reason it needs no more action (issue 15)."""

    reason = Text(kind="reason", required=True)
