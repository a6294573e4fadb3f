"""/api/v1: randomize a subject, dispense at visits, confirm kits, list status (statistician)."""

from __future__ import annotations

from typing import Any

from flask import current_app, request
from flask.views import MethodView
from flask_login import current_user
from marshmallow import Schema, fields

from iwrs import padding
from iwrs.api import CODED_REASON_RULES, STATED_DATE_RULES, Blueprint, beyond_schema
from iwrs.api.v1.schemas import ProblemSchema
from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.errors import InvalidInput, NotFound
from iwrs.inputs.randomization import (
    IDEMPOTENCY,
    ConfirmInput,
    DispenseInput,
    KitRequestInput,
    RandomizeInput,
)
from iwrs.services import (
    dispensing,
    idempotency,
    keyed_dispensing,
    keyed_randomization,
    randomization,
    randomization_views,
)

blp = Blueprint(
    "Randomization",
    __name__,
    url_prefix="",
    description="Randomization, dispensing and list status",
)
PROBLEM = {"schema": ProblemSchema, "content_type": "application/problem+json"}


class VisitSchema(Schema):
    code = fields.String()
    name = fields.String()
    target = fields.Date()
    earliest = fields.Date()
    latest = fields.Date()
    kits = fields.Integer()


class RandomizationSchema(Schema):
    subject_id = fields.Integer()
    screening_number = fields.String()
    randomization_number = fields.String()
    kit_number = fields.String(metadata={"description": "the day-1 kit; never the arm"})
    stratum = fields.Dict(keys=fields.String(), values=fields.String())
    randomized_on = fields.Date(metadata={"description": "day 1, the site's local date"})
    visits = fields.List(fields.Nested(VisitSchema))


KEY_HEADER = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 100},
}
# Rules of the idempotency key that depend on stored requests or on two places at once.
KEY_RULES = {
    "idempotency_key_reused": "a key already bound to another subject or operation",
    "idempotency_key:one_key": "the Idempotency-Key header and the idempotency_key field differ",
}
REPLAYED = {
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer to an earlier request with the "
        "same idempotency key",
        "schema": {"type": "string"},
    }
}


class DispenseResultSchema(Schema):
    dispensation_id = fields.Integer()
    subject = fields.String()
    visit_code = fields.String()
    kit_number = fields.String()
    out_of_window = fields.Boolean()
    visit_date = fields.Date(metadata={"description": "the site's local date"})
    dispensed_at = fields.DateTime(metadata={"description": "moment of entry, UTC"})


class KitRequestResultSchema(Schema):
    id = fields.Integer()
    subject_id = fields.Integer()
    visit_code = fields.String()
    kind = fields.String()
    reason = fields.String()
    requested_at = fields.DateTime()


class StratumStatusSchema(Schema):
    stratum = fields.String()
    used = fields.Integer()
    remaining = fields.Integer()
    by_arm = fields.Dict(keys=fields.String(), values=fields.Integer())


class ListStatusSchema(Schema):
    name = fields.String()
    dummy = fields.Boolean()
    source = fields.String()
    fingerprint = fields.String()
    locked = fields.Boolean()
    strata = fields.List(fields.Nested(StratumStatusSchema))
    overall_by_arm = fields.Dict(keys=fields.String(), values=fields.Integer())


@blp.route("/subjects/<int:subject_id>/randomization")
class SubjectRandomization(MethodView):
    @requires(Permission.SCREEN_SUBJECTS)
    @blp.response(200, RandomizationSchema)
    @blp.alt_response(404, **PROBLEM)
    def get(self, subject_id: int):  # type: ignore[no-untyped-def]
        """The subject's randomization number, day-1 kit and visit schedule (no arm)."""
        result = randomization_views.result_of(actor=Actor.of(current_user), subject_id=subject_id)
        if result is None:
            raise NotFound("the subject is not randomized", field="subject_id", rule="randomized")
        return result

    @requires(Permission.RANDOMIZE)
    @beyond_schema(**KEY_RULES)
    @blp.arguments(RandomizeInput)
    @blp.response(201, RandomizationSchema, headers=REPLAYED)
    @blp.alt_response(409, **PROBLEM)
    @blp.alt_response(422, **PROBLEM)
    @blp.alt_response(401, **PROBLEM)
    @blp.alt_response(503, **PROBLEM)
    @blp.doc(
        description=IDEMPOTENCY
        + " Without a key, a retry for the same subject returns its randomization. 503 with rule"
        " `busy` and a Retry-After header: a record it needs was held by another request for"
        " longer than the lock timeout; nothing was saved, send the same request again after"
        " Retry-After seconds.",
        parameters=[KEY_HEADER],
    )
    def post(self, body, subject_id: int):  # type: ignore[no-untyped-def]
        """Randomize (e-signature); a retry with the same key gets the first answer again."""
        key = _idempotency_key(body["idempotency_key"])
        if key is None:
            return randomization.randomize(
                actor=Actor.of(current_user),
                subject_id=subject_id,
                signer_password=body["signature_password"],
                understood=body["understood"],
            )
        answer = keyed_randomization.randomize_answer(
            actor=Actor.of(current_user),
            subject_id=subject_id,
            signer_password=body["signature_password"],
            understood=body["understood"],
            idempotency_key=key,
        )
        return _answered(answer)


def _answered(answer: idempotency.Answer) -> Any:
    """The stored document itself, the first time and on every replay: the same bytes."""
    response = current_app.response_class(
        answer.body, status=answer.status, mimetype="application/json"
    )
    if answer.replayed:
        response.headers[idempotency.REPLAYED_HEADER] = "true"
    return response


def _idempotency_key(in_body: str | None) -> str | None:
    """The key from the Idempotency-Key header or the body field (the same if both)."""
    in_header = request.headers.get("Idempotency-Key")
    if in_header is not None and in_body is not None and in_header != in_body:
        raise InvalidInput(
            "idempotency_key: the Idempotency-Key header and the field differ",
            field="idempotency_key",
            rule="one_key",
        )
    key = in_body if in_body is not None else in_header
    return idempotency.check_key(key) if key is not None else None


@blp.route("/subjects/<int:subject_id>/dispensations")
class Dispensations(MethodView):
    @requires(Permission.DISPENSE)
    @beyond_schema(**KEY_RULES, **STATED_DATE_RULES, **CODED_REASON_RULES)
    @blp.arguments(DispenseInput)
    @blp.response(201, DispenseResultSchema, headers=REPLAYED)
    @blp.alt_response(409, **PROBLEM)
    @blp.alt_response(422, **PROBLEM)
    @blp.doc(
        description=IDEMPOTENCY + " Without a key, a repeat for the same visit is refused "
        "(`once_per_visit`).",
        parameters=[KEY_HEADER],
    )
    def post(self, body, subject_id: int):  # type: ignore[no-untyped-def]
        """Dispense a kit of the subject's (blinded) treatment at a visit (pharmacist)."""
        fields = {
            "visit_code": body["visit_code"],
            "kind": body["kind"],
            "reason": body["reason"],
            "visit_date": body["visit_date"],
            "backdate_reason": body["backdate_reason"],
        }
        key, actor = _idempotency_key(body["idempotency_key"]), Actor.of(current_user)
        if key is None:
            return dispensing.dispense(actor=actor, subject_id=subject_id, **fields)
        return _answered(
            keyed_dispensing.dispense_answer(
                actor=actor, subject_id=subject_id, idempotency_key=key, **fields
            )
        )


@blp.route("/subjects/<int:subject_id>/kit-requests")
class KitRequests(MethodView):
    @requires(Permission.RANDOMIZE)
    @beyond_schema(**CODED_REASON_RULES)
    @blp.arguments(KitRequestInput)
    @blp.response(201, KitRequestResultSchema)
    @blp.alt_response(409, **PROBLEM)
    @blp.alt_response(422, **PROBLEM)
    @blp.alt_response(401, **PROBLEM)
    def post(self, body, subject_id: int):  # type: ignore[no-untyped-def]
        """The investigator's signed request for an unscheduled or replacement kit at a visit
        (at most the protocol's number per visit); the pharmacist then dispenses it."""
        return dispensing.request_extra_kit(
            actor=Actor.of(current_user),
            subject_id=subject_id,
            visit_code=body["visit_code"],
            kind=body["kind"],
            reason=body["reason"],
            signer_password=body["signature_password"],
        )


@blp.route("/dispensations/<int:dispensation_id>/confirmation")
class Confirmation(MethodView):
    @requires(Permission.DISPENSE)
    @beyond_schema(check_digit="the kit number's last digit is its Damm check digit")
    @blp.arguments(ConfirmInput)
    @blp.response(204)
    @blp.alt_response(409, **PROBLEM)
    @blp.alt_response(422, **PROBLEM)
    def post(self, body, dispensation_id: int):  # type: ignore[no-untyped-def]
        """Confirm the number of the kit in hand (check digit, then match)."""
        dispensing.confirm_kit(
            actor=Actor.of(current_user),
            dispensation_id=dispensation_id,
            kit_number=body["kit_number"],
        )


@blp.route("/lists/status")
class ListStatus(MethodView):
    @requires(Permission.SEE_ARM)
    @blp.response(200, ListStatusSchema)
    @blp.alt_response(404, **PROBLEM)
    def get(self):  # type: ignore[no-untyped-def]
        """Unblinded: slots used and remaining and allocation by arm (every arm), per stratum
        (audited). Whitespace after the document makes its length independent of the counts
        by arm."""
        status = randomization_views.list_status(actor=Actor.of(current_user), limit=None)
        if status is None:
            raise NotFound("no randomization list is loaded", rule="list_loaded")
        total = sum(s.used for s in status.strata)
        counts = [(n, s.used) for s in status.strata for n in s.by_arm.values()]
        counts += [(n, total) for n in status.overall_by_arm.values()]
        return padding.padded_json(
            ListStatusSchema().dump(status), pad=padding.json_padding(counts=counts)
        )
