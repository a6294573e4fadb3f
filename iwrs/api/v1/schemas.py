"""Marshmallow schemas shared by the v1 resources (they also generate the OpenAPI document)."""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields


class ProblemItemSchema(Schema):
    """One refused value: the field at fault, the rule it broke, a message in words; a rule may
    add its figures (a short stock: `requested`, `available`)."""

    class Meta:
        unknown = INCLUDE  # documented as additionalProperties: the figures of a rule

    field = fields.String(required=True)
    rule = fields.String(required=True)
    message = fields.String(required=True)
    requested = fields.String(metadata={"description": "depot_stock: kits requested"})
    available = fields.String(metadata={"description": "depot_stock: kits available"})


class ProblemSchema(Schema):
    """RFC 9457 problem details (application/problem+json): `type` ends with the rule broken,
    `errors` lists every refused field with its rule."""

    type = fields.String(required=True)
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    instance = fields.String(required=True)
    errors = fields.List(fields.Nested(ProblemItemSchema))


class SiteSchema(Schema):
    id = fields.Integer(dump_only=True)
    code = fields.String()
    name = fields.String()
    city = fields.String()
    country = fields.String()
    status = fields.String()
    activated_at = fields.DateTime(allow_none=True)


class UserSchema(Schema):
    id = fields.Integer(dump_only=True)
    username = fields.String()
    full_name = fields.String()
    email = fields.String(allow_none=True)
    role = fields.String()
    active = fields.Boolean()
    site_codes = fields.List(fields.String())


class AccessRequestSchema(Schema):
    id = fields.Integer()
    username = fields.String()
    full_name = fields.String()
    email = fields.String()
    role = fields.String()
    status = fields.String()
    requested_by = fields.String()
    requested_at = fields.DateTime()
    decided_at = fields.DateTime(allow_none=True)
    decision_reason = fields.String(allow_none=True)


class TokenSchema(Schema):
    id = fields.Integer(dump_only=True)
    name = fields.String()
    prefix = fields.String()
    created_at = fields.DateTime()
    revoked_at = fields.DateTime(allow_none=True)
    expires_at = fields.DateTime(allow_none=True)


class NewTokenSchema(TokenSchema):
    token = fields.String(metadata={"description": "the token itself; shown only once"})
