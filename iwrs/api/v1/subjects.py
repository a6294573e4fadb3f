"""/api/v1/subjects: screening, eligibility assessments and decisions (investigators)."""

from __future__ import annotations

import json

from flask.views import MethodView
from flask_login import current_user
from marshmallow import Schema, fields

from iwrs.api import CODED_REASON_RULES, STATED_DATE_RULES, Blueprint, beyond_schema
from iwrs.api.v1.schemas import ProblemSchema
from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.inputs.subjects import (
    AnswersInput,
    DecisionInput,
    DrugClassificationInput,
    RescreenInput,
    ScreenInput,
    WithdrawalInput,
)
from iwrs.services import drug_classes, queries, subjects

blp = Blueprint(
    "Subjects", __name__, url_prefix="/subjects", description="Screening and eligibility"
)
PROBLEM = {"schema": ProblemSchema, "content_type": "application/problem+json"}


class SubjectSchema(Schema):
    id = fields.Integer()
    screening_number = fields.String()
    site_code = fields.String(attribute="site.code")
    status = fields.String()
    sex = fields.String()
    date_of_birth = fields.Date()
    screening_date = fields.Date(metadata={"description": "the site's local date"})
    site_time_zone = fields.String(attribute="site.time_zone")
    stratum = fields.Method("_stratum", allow_none=True)
    rescreen_of_id = fields.Integer(allow_none=True)

    def _stratum(self, subject):  # type: ignore[no-untyped-def]
        return json.loads(subject.stratum) if subject.stratum else None


class CriterionResultSchema(Schema):
    number = fields.String()
    type = fields.String()
    text = fields.String()
    status = fields.String()
    detail = fields.String()
    missing = fields.List(fields.String())


class AssessmentSchema(Schema):
    id = fields.Integer()
    outcome = fields.String()
    criteria_version = fields.String()
    assessed_at = fields.DateTime(metadata={"description": "moment of entry, UTC"})
    assessment_date = fields.Date(metadata={"description": "the site's local date"})
    failing = fields.List(fields.String())
    missing = fields.List(fields.String())
    computed = fields.Dict()
    decision = fields.String(allow_none=True)
    results = fields.List(fields.Nested(CriterionResultSchema))


class FieldSpecSchema(Schema):
    name = fields.String()
    label = fields.String()
    section = fields.String()
    kind = fields.String()
    unit = fields.String()
    minimum = fields.Float(allow_none=True)
    maximum = fields.Float(allow_none=True)
    choices = fields.List(fields.String())
    not_done_allowed = fields.Boolean()
    help = fields.String()
    drugs = fields.Method(
        "_drugs",
        metadata={
            "description": "medications only: every accepted drug name (canonical, "
            "synonym or misspelling) with its drug, class and ATC code"
        },
    )
    drug_classes = fields.Method(
        "_classes",
        metadata={
            "description": "medications only: the classes a drug off the dictionary "
            "may be classified into (POST .../drug-classifications)"
        },
    )

    def _drugs(self, spec):  # type: ignore[no-untyped-def]
        dictionary = subjects.engine().dictionary
        return dictionary.listing() if spec.kind == "medications" and dictionary else []

    def _classes(self, spec):  # type: ignore[no-untyped-def]
        dictionary = subjects.engine().dictionary
        if spec.kind != "medications" or dictionary is None:
            return []
        return [{"code": c.code, "label": c.label} for c in dictionary.classifiable()]


def _assessment_view(row, result=None):  # type: ignore[no-untyped-def]
    return {
        "id": row.id,
        "outcome": str(row.outcome),
        "criteria_version": row.criteria_version,
        "assessed_at": row.assessed_at,
        "assessment_date": row.assessment_date,
        "failing": json.loads(row.failing),
        "missing": json.loads(row.missing),
        "computed": json.loads(row.computed),
        "decision": str(row.decision) if row.decision else None,
        "results": list(result.results) if result is not None else [],
    }


@blp.route("")
class Subjects(MethodView):
    @requires(Permission.SCREEN_SUBJECTS)
    @blp.response(200, SubjectSchema(many=True))
    def get(self):  # type: ignore[no-untyped-def]
        """Subjects at the caller's sites."""
        return queries.visible_subjects(actor=Actor.of(current_user))

    @requires(Permission.SCREEN_SUBJECTS)
    @beyond_schema(
        **STATED_DATE_RULES,
        **{
            "date_of_birth:past": "the date of birth is before the screening date",
            "date_of_birth:plausible": "at most 120 years before the screening date",
        },
    )
    @blp.arguments(ScreenInput)
    @blp.response(201, SubjectSchema)
    @blp.alt_response(404, **PROBLEM)
    @blp.alt_response(422, **PROBLEM)
    @blp.alt_response(409, **PROBLEM)
    def post(self, body):  # type: ignore[no-untyped-def]
        """Register a subject for screening at one of the caller's active sites."""
        site = queries.visible_site_by_code(actor=Actor.of(current_user), code=body["site_code"])
        subject = subjects.screen_subject(
            actor=Actor.of(current_user),
            site_id=site.id,
            date_of_birth=body["date_of_birth"],
            sex=body["sex"],
            screening_date=body["screening_date"],
            backdate_reason=body["backdate_reason"],
            initials=body["initials"],
            different_person_password=body["different_person_signature_password"],
        )
        return queries.visible_subject(actor=Actor.of(current_user), subject_id=subject.id)


@blp.route("/fields")
class Fields(MethodView):
    @requires(Permission.SCREEN_SUBJECTS)
    @blp.response(200, FieldSpecSchema(many=True))
    def get(self):  # type: ignore[no-untyped-def]
        """Every answer the eligibility criteria need: name, kind, unit, plausible range."""
        return list(subjects.engine().fields())


@blp.route("/<int:subject_id>")
class SubjectById(MethodView):
    @requires(Permission.SCREEN_SUBJECTS)
    @blp.response(200, SubjectSchema)
    @blp.alt_response(404, **PROBLEM)
    def get(self, subject_id: int):  # type: ignore[no-untyped-def]
        """One subject at the caller's sites."""
        return queries.visible_subject(actor=Actor.of(current_user), subject_id=subject_id)


@blp.route("/<int:subject_id>/assessments")
class Assessments(MethodView):
    @requires(Permission.SCREEN_SUBJECTS)
    @blp.response(200, AssessmentSchema(many=True))
    @blp.alt_response(404, **PROBLEM)
    def get(self, subject_id: int):  # type: ignore[no-untyped-def]
        """The subject's assessments, newest first."""
        return [
            _assessment_view(row)
            for row in queries.assessments_of(actor=Actor.of(current_user), subject_id=subject_id)
        ]

    @requires(Permission.SCREEN_SUBJECTS)
    @beyond_schema(**STATED_DATE_RULES)
    @blp.arguments(AnswersInput)
    @blp.response(201, AssessmentSchema)
    @blp.alt_response(422, **PROBLEM)
    @blp.alt_response(409, **PROBLEM)
    def post(self, body, subject_id: int):  # type: ignore[no-untyped-def]
        """Evaluate every criterion on the answers; the result lists every failing criterion
        and every missing answer."""
        record = subjects.record_assessment(
            actor=Actor.of(current_user),
            subject_id=subject_id,
            answers=body["answers"],
            assessment_date=body["assessment_date"],
            backdate_reason=body["backdate_reason"],
        )
        return _assessment_view(record.row, record.result)


@blp.route("/<int:subject_id>/drug-classifications")
class DrugClassifications(MethodView):
    @requires(Permission.SCREEN_SUBJECTS)
    @blp.arguments(DrugClassificationInput)
    @blp.response(201, DrugClassificationInput)
    @blp.alt_response(401, **PROBLEM)
    @blp.alt_response(409, **PROBLEM)
    @blp.alt_response(422, **PROBLEM)
    def post(self, body, subject_id: int):  # type: ignore[no-untyped-def]
        """Classify a drug off the dictionary into a protocol class (e-signature); the next
        assessment judges it by that class."""
        row = drug_classes.classify_drug(
            actor=Actor.of(current_user),
            subject_id=subject_id,
            drug=body["drug"],
            drug_class=body["drug_class"],
            signer_password=body["signature_password"],
        )
        return {"drug": row.drug, "drug_class": row.drug_class}


@blp.route("/<int:subject_id>/eligibility-decision")
class EligibilityDecision(MethodView):
    @requires(Permission.SCREEN_SUBJECTS)
    @blp.arguments(DecisionInput)
    @blp.response(200, SubjectSchema)
    @blp.alt_response(401, **PROBLEM)
    @blp.alt_response(409, **PROBLEM)
    @blp.alt_response(422, **PROBLEM)
    def post(self, body, subject_id: int):  # type: ignore[no-untyped-def]
        """Confirm the latest assessment as eligible or as a screen failure (e-signature)."""
        subjects.decide_eligibility(
            actor=Actor.of(current_user),
            subject_id=subject_id,
            assessment_id=body["assessment_id"],
            decision=body["decision"],
            signer_password=body["signature_password"],
            understood=body["understood"],
        )
        return queries.visible_subject(actor=Actor.of(current_user), subject_id=subject_id)


@blp.route("/<int:subject_id>/withdrawal")
class Withdrawal(MethodView):
    @requires(Permission.SCREEN_SUBJECTS)
    @beyond_schema(**CODED_REASON_RULES)
    @blp.arguments(WithdrawalInput)
    @blp.response(200, SubjectSchema)
    @blp.alt_response(409, **PROBLEM)
    @blp.alt_response(422, **PROBLEM)
    def post(self, body, subject_id: int):  # type: ignore[no-untyped-def]
        """Withdraw the subject (with a reason)."""
        subjects.withdraw_subject(
            actor=Actor.of(current_user), subject_id=subject_id, reason=body["reason"]
        )
        return queries.visible_subject(actor=Actor.of(current_user), subject_id=subject_id)


@blp.route("/<int:subject_id>/rescreen")
class Rescreen(MethodView):
    @requires(Permission.SCREEN_SUBJECTS)
    @blp.arguments(RescreenInput)
    @blp.response(201, SubjectSchema)
    @blp.alt_response(409, **PROBLEM)
    @blp.alt_response(422, **PROBLEM)
    def post(self, body, subject_id: int):  # type: ignore[no-untyped-def]
        """Re-screen a screen failure under a new screening number (as often as allowed), with
        the reason."""
        subject = subjects.rescreen_subject(
            actor=Actor.of(current_user), subject_id=subject_id, reason=body["reason"]
        )
        return queries.visible_subject(actor=Actor.of(current_user), subject_id=subject.id)
