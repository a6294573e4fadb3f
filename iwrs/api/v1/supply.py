"""/api/v1/inventory and /api/v1/shipments: stock and shipments by kit number (never a
treatment), receipt kit by kit, shipping."""

from __future__ import annotations

from flask.views import MethodView
from flask_login import current_user
from marshmallow import Schema, fields, validate

from iwrs.api import Blueprint
from iwrs.api.v1.schemas import ProblemSchema
from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.inputs.subjects import ID_MAX
from iwrs.inputs.supply import ManualShipmentInput, ReceiptInput, ShippingInput
from iwrs.services import queries, shipments, supply_views

blp = Blueprint("Supply", __name__, url_prefix="", description="Inventory and shipments")
PROBLEM = {"schema": ProblemSchema, "content_type": "application/problem+json"}


class KitSchema(Schema):
    number = fields.String()
    kit_type = fields.String()
    lot = fields.String(metadata={"description": "blinded packaging lot"})
    expiry = fields.Date()
    state = fields.String()


class InventoryQuery(Schema):
    site_code = fields.String(required=True, metadata={"example": "CN01"})


SHIPMENTS_PAGE = 100  # shipments an answer holds at most, unless `limit` says fewer or more


class ShipmentsQuery(Schema):
    """Keyset paging (issue 13: the list grew with the trial, 1,500 shipments at the scale
    world): newest first; `before` = the last id of the previous page."""

    # A row id: PostgreSQL refuses a larger number against an INTEGER column (found by
    # tests/web/test_api_fuzz.py: a 500).
    before = fields.Integer(validate=validate.Range(min=1, max=ID_MAX))
    limit = fields.Integer(load_default=SHIPMENTS_PAGE, validate=validate.Range(min=1, max=500))


class ShipmentSchema(Schema):
    id = fields.Integer()
    number = fields.String()
    kind = fields.String()
    site_id = fields.Integer()
    state = fields.String()
    requested_at = fields.DateTime()
    shipped_at = fields.DateTime(allow_none=True)
    courier = fields.String(allow_none=True)
    tracking_number = fields.String(allow_none=True)
    received_at = fields.DateTime(allow_none=True)
    temperature_excursion = fields.Boolean()


class ShipmentDetailSchema(ShipmentSchema):
    kits = fields.List(fields.Nested(KitSchema))


def _detail(row):  # type: ignore[no-untyped-def]
    # Raw values: the response schema serializes them (dumping twice broke the dates).
    fields = {name: getattr(row, name) for name in ShipmentSchema().fields}
    return {
        **fields,
        "kits": supply_views.shipment_kits(actor=Actor.of(current_user), shipment_id=row.id),
    }


@blp.route("/inventory")
class Inventory(MethodView):
    @requires(Permission.VIEW_SUPPLY)
    @blp.arguments(InventoryQuery, location="query")
    @blp.response(200, KitSchema(many=True))
    @blp.alt_response(404, **PROBLEM)
    def get(self, query):  # type: ignore[no-untyped-def]
        """Every kit at one of the caller's sites: number, type, blinded lot, expiry, state."""
        site = queries.visible_site_by_code(actor=Actor.of(current_user), code=query["site_code"])
        return supply_views.site_inventory(actor=Actor.of(current_user), site_id=site.id)


@blp.route("/shipments")
class Shipments(MethodView):
    @requires(Permission.VIEW_SUPPLY)
    @blp.arguments(ShipmentsQuery, location="query")
    @blp.response(200, ShipmentSchema(many=True))
    def get(self, query):  # type: ignore[no-untyped-def]
        """Shipments to the caller's sites (all sites, for the supply manager), newest first,
        `limit` of them (default 100, at most 500); for older ones pass the last id as
        `before`. A shorter answer than `limit` is the last page."""
        return supply_views.visible_shipments(
            actor=Actor.of(current_user), before=query.get("before"), limit=query["limit"]
        )

    @requires(Permission.MANAGE_SUPPLY)
    @blp.arguments(ManualShipmentInput)
    @blp.response(201, ShipmentDetailSchema)
    @blp.alt_response(404, **PROBLEM)
    @blp.alt_response(409, **PROBLEM)
    @blp.alt_response(422, **PROBLEM)
    def post(self, body):  # type: ignore[no-untyped-def]
        """Request a manual shipment (supply manager): filled whole, or refused 409 with rule
        depot_stock and the kits requested and available; never shrunk."""
        site = queries.visible_site_by_code(actor=Actor.of(current_user), code=body["site_code"])
        row = shipments.request_manual_shipment(
            actor=Actor.of(current_user), site_id=site.id, quantity=body["quantity"]
        )
        return _detail(row)


@blp.route("/shipments/<int:shipment_id>")
class ShipmentById(MethodView):
    @requires(Permission.VIEW_SUPPLY)
    @blp.response(200, ShipmentDetailSchema)
    @blp.alt_response(404, **PROBLEM)
    def get(self, shipment_id: int):  # type: ignore[no-untyped-def]
        """One shipment with its manifest (kit numbers only)."""
        return _detail(
            supply_views.visible_shipment(actor=Actor.of(current_user), shipment_id=shipment_id)
        )


@blp.route("/shipments/<int:shipment_id>/receipt")
class Receipt(MethodView):
    @requires(Permission.RECEIVE_SHIPMENTS)
    @blp.arguments(ReceiptInput)
    @blp.response(200, ShipmentDetailSchema)
    @blp.alt_response(409, **PROBLEM)
    def post(self, body, shipment_id: int):  # type: ignore[no-untyped-def]
        """Confirm every kit as good, damaged or missing (and any temperature excursion)."""
        row = shipments.receive_shipment(
            actor=Actor.of(current_user),
            shipment_id=shipment_id,
            lines=[(line["kit_number"], line["condition"]) for line in body["lines"]],
            excursion=body["temperature_excursion"],
            received_on=body["received_on"],
        )
        return _detail(row)


@blp.route("/shipments/<int:shipment_id>/shipping")
class Shipping(MethodView):
    @requires(Permission.MANAGE_SUPPLY)
    @blp.arguments(ShippingInput)
    @blp.response(200, ShipmentDetailSchema)
    @blp.alt_response(409, **PROBLEM)
    def post(self, body, shipment_id: int):  # type: ignore[no-untyped-def]
        """Hand a requested shipment to the courier (supply manager)."""
        row = shipments.ship_shipment(
            actor=Actor.of(current_user),
            shipment_id=shipment_id,
            courier=body["courier"],
            tracking_number=body["tracking_number"],
        )
        return _detail(row)
