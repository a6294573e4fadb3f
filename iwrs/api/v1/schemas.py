"""Marshmallow schemas shared by the v1 resources (they also generate the OpenAPI document)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from iwrs.models.users import Role


class ProblemSchema(Schema):
    """RFC 9457 problem details."""

    type = fields.String()
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    instance = fields.String()
    errors = fields.List(fields.Dict(keys=fields.String(), values=fields.String()))


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


class UserCreateSchema(Schema):
    username = fields.String(required=True, validate=validate.Length(min=3, max=64))
    full_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    email = fields.String(load_default=None, validate=validate.Length(max=200))
    role = fields.String(required=True, validate=validate.OneOf([r.value for r in Role]))
    site_codes = fields.List(fields.String(), load_default=list)


class AccessRequestCreateSchema(Schema):
    username = fields.String(required=True, validate=validate.Length(min=3, max=64))
    full_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    email = fields.String(required=True, validate=validate.Length(min=3, max=200))


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


class AccessDecisionSchema(Schema):
    decision = fields.String(required=True, validate=validate.OneOf(["approve", "reject"]))
    reason = fields.String(load_default="", validate=validate.Length(max=500))
    signature_password = fields.String(
        required=True,
        load_only=True,
        metadata={"description": "electronic signature: the caller's password"},
    )


class TokenSchema(Schema):
    id = fields.Integer(dump_only=True)
    name = fields.String()
    prefix = fields.String()
    created_at = fields.DateTime()
    revoked_at = fields.DateTime(allow_none=True)
    expires_at = fields.DateTime(allow_none=True)


class TokenCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    password = fields.String(
        required=True,
        load_only=True,
        validate=validate.Length(min=1, max=256),
        metadata={"description": "the caller's password, re-entered"},
    )


class NewTokenSchema(TokenSchema):
    token = fields.String(metadata={"description": "the token itself; shown only once"})
