"""/api/v1/subjects/{id}/unblinding, /api/v1/unblindings and /api/v1/audit: emergency
unblinding (to the investigator who asks, audited), the unblinding report, the audit trail."""

from __future__ import annotations

from flask import Response
from flask.views import MethodView
from flask_login import current_user
from marshmallow import Schema, fields, validate

from iwrs import padding
from iwrs.api import Blueprint
from iwrs.api.v1.schemas import ProblemSchema
from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.inputs import Choice, DayDate
from iwrs.inputs.randomization import UnblindInput
from iwrs.services import audit_views, unblinding

blp = Blueprint(
    "Unblinding and audit",
    __name__,
    url_prefix="",
    description="Emergency unblinding and the audit trail",
)
PROBLEM = {"schema": ProblemSchema, "content_type": "application/problem+json"}
TEXT = {"type": "string"}


class UnblindedSchema(Schema):
    screening_number = fields.String()
    randomization_number = fields.String()
    arm_code = fields.String()
    arm_name = fields.String()
    unblinded_at = fields.DateTime()
    first_view = fields.Boolean()


class ReportLineSchema(Schema):
    subject = fields.String()
    site = fields.String()
    by = fields.String()
    at = fields.DateTime()
    category = fields.String()
    reason = fields.String()
    sae = fields.Boolean()
    discontinued = fields.Boolean()


class AuditQuery(Schema):
    username = fields.String()
    role = fields.String()
    action = fields.String()
    subject = fields.String()
    site = fields.String()
    # Dates are checked by the service too (iwrs/validation.py: YYYY-MM-DD only, rule date).
    date_from = DayDate(load_default="")
    date_to = DayDate(load_default="")
    before = fields.Integer(validate=validate.Range(min=1, max=2**62))


class AuditExportQuery(AuditQuery):
    format = Choice(("jsonl", "csv"), load_default="jsonl")


class AuditEventSchema(Schema):
    seq = fields.Integer()
    occurred_at = fields.DateTime()
    username = fields.String()
    role = fields.String()
    action = fields.String()
    entity_type = fields.String()
    entity_id = fields.String(allow_none=True)
    site_id = fields.Integer(allow_none=True)
    subject_id = fields.Integer(allow_none=True)
    before = fields.String(allow_none=True)
    after = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    prev_hash = fields.String()
    hash = fields.String()


class AuditPageSchema(Schema):
    events = fields.List(fields.Nested(AuditEventSchema))
    next_before = fields.Integer(allow_none=True)


@blp.route("/subjects/<int:subject_id>/unblinding")
class SubjectUnblinding(MethodView):
    @requires(Permission.EMERGENCY_UNBLIND)
    @blp.arguments(UnblindInput)
    @blp.response(200, UnblindedSchema)
    @blp.alt_response(401, **PROBLEM)
    @blp.alt_response(409, **PROBLEM)
    def post(self, body, subject_id: int):  # type: ignore[no-untyped-def]
        """Emergency unblinding of one subject (investigator of its site, e-signature), once:
        a subject already unblinded is refused (409, rule already_unblinded). The arm is
        returned to the caller only, followed by whitespace that makes the answer's length
        independent of the arm; the event is audited and notified without it."""
        arm = unblinding.unblind(
            actor=Actor.of(current_user),
            subject_id=subject_id,
            category=body["category"],
            reason=body["reason"],
            understood=body["understood"],
            signer_password=body["signature_password"],
            sae_led_to_unblinding=body["sae_led_to_unblinding"],
        )
        labels = [(arm.arm_code, padding.CODE), (arm.arm_name, padding.NAME)]
        return padding.padded_json(
            UnblindedSchema().dump(arm), pad=padding.json_padding(labels=labels)
        )


@blp.route("/unblindings")
class Unblindings(MethodView):
    @requires(Permission.VIEW_UNBLINDING_REPORT)
    @blp.response(200, ReportLineSchema(many=True))
    def get(self):  # type: ignore[no-untyped-def]
        """Every emergency unblinding (never the arm), scoped to the caller's sites."""
        return unblinding.report(actor=Actor.of(current_user))


@blp.route("/audit/events")
class AuditEvents(MethodView):
    @requires(Permission.VIEW_AUDIT)
    @blp.arguments(AuditQuery, location="query")
    @blp.response(200, AuditPageSchema)
    def get(self, query):  # type: ignore[no-untyped-def]
        """The trail, newest first, 50 a page; pass next_before as `before` for the next.
        A date_to before date_from is refused (422, field date_to, rule date_range_order)."""
        filters = audit_views.Filters.parse({k: str(v) for k, v in query.items() if k != "before"})
        events, next_before, _ = audit_views.page(
            filters, actor=Actor.of(current_user), before=query.get("before")
        )
        return {"events": events, "next_before": next_before}


@blp.route("/audit/export")
class AuditExport(MethodView):
    @requires(Permission.VIEW_AUDIT)
    @blp.arguments(AuditExportQuery, location="query")
    @blp.response(200, content_type="application/x-ndjson")
    @blp.doc(
        responses={
            "200": {
                "description": "OK",
                "content": {
                    "application/x-ndjson": {"schema": TEXT},
                    "application/zip": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        }
    )
    def get(self, query):  # type: ignore[no-untyped-def]
        """The filtered trail as JSON Lines with a header that lets anyone verify it offline
        (`iwrs audit verify-export`); with ?format=csv a ZIP of the plain CSV and that header as
        its own signed manifest file."""
        kind = query.pop("format")
        filters = audit_views.Filters.parse({k: str(v) for k, v in query.items() if k != "before"})
        content, media = audit_views.export(filters, kind=kind, actor=Actor.of(current_user))
        return Response(content, mimetype=media)


@blp.route("/audit/public-key")
class AuditPublicKey(MethodView):
    @blp.response(200, content_type="application/x-pem-file")
    @blp.doc(
        responses={
            "200": {"description": "OK", "content": {"application/x-pem-file": {"schema": TEXT}}}
        }
    )
    def get(self):  # type: ignore[no-untyped-def]
        """The Ed25519 public key (PEM) that verifies signed exports and checkpoints; public."""
        from iwrs import audit_anchor

        return Response(audit_anchor.public_key_pem(), mimetype="application/x-pem-file")
