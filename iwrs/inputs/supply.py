"""Inputs of shipments: request, shipping, receipt; one schema each, for the page and the API."""

from __future__ import annotations

from iwrs.inputs import Choice, Flag, Input, Many, One, Text, WholeNumber

CONDITIONS = ("good", "damaged", "missing")


class ManualShipmentInput(Input):
    """A manual shipment to a site (supply manager): filled whole or refused, never shrunk."""

    site_code = Text(kind="code", required=True)
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

    kit_number = Text(kind="code", required=True)
    condition = Choice(CONDITIONS, required=True)


class ReceiptInput(Input):
    """Every kit of a shipment as good, damaged or missing, and any temperature excursion."""

    lines = Many(
        One(ReceiptLineInput),
        required=True,
        metadata={"description": "every kit of the shipment exactly once"},
    )
    temperature_excursion = Flag(load_default=False)
