"""A drug off the protocol's drug dictionary, classified by the investigator with a signature.

Decision: a classification belongs to one subject (the sponsor extends the dictionary for
everyone); it is made while the subject is in screening, into a class the dictionary marks
classifiable, and may be corrected the same way (a new signature, audited with before/after).
It changes no stored assessment: the next assessment uses it.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import select
from sqlalchemy.orm import Session

from iwrs import audit, clock, signatures
from iwrs.audit import Actor
from iwrs.db import transaction
from iwrs.drugs import OTHER, normalize
from iwrs.eligibility import Context
from iwrs.errors import Conflict, InvalidInput
from iwrs.models.subjects import DrugClassification, Subject, SubjectStatus
from iwrs.services.users import confirm_signature, sign


def drug_classes_for(session: Session, subject_id: int) -> dict[str, str]:
    """The subject's signed classifications: drug name (normalized) -> class code."""
    rows = session.scalars(
        select(DrugClassification).where(DrugClassification.subject_id == subject_id)
    ).all()
    return {row.drug: row.drug_class for row in rows}


def with_drug_classes(session: Session, subject_id: int, ctx: Context) -> Context:
    """The engine's context with the subject's signed classifications."""
    return dataclasses.replace(ctx, drug_classes=drug_classes_for(session, subject_id))


def classify_drug(
    *, actor: Actor, subject_id: int, drug: str, drug_class: str, signer_password: str
) -> DrugClassification:
    """Classify a drug off the dictionary into a protocol class, signed; returns the row.

    Errors: drug known to the dictionary (409 in_dictionary), class not classifiable (422
    choice), subject not in screening (409 status), wrong password (401)."""
    from iwrs.services.subjects import _subject_for_update, engine, protocol

    eng = engine()
    name = normalize(drug or "")
    if not name or len(name) > 120:
        raise InvalidInput("drug: a drug name is required", field="drug", rule="required")
    if not eng.resolve_drug(name).startswith(OTHER):
        raise Conflict(
            f"drug: {name!r} is in the drug dictionary as {eng.resolve_drug(name)}; its class "
            "is the dictionary's",
            field="drug",
            rule="in_dictionary",
        )
    offered = {c.code for c in eng.dictionary.classifiable()} if eng.dictionary else set()
    if drug_class not in offered:
        raise InvalidInput(
            f"drug_class: must be one of {', '.join(sorted(offered))}",
            field="drug_class",
            rule="choice",
        )
    confirm_signature(signer_id=actor.user_id, password=signer_password)
    with transaction() as session:
        subject: Subject = _subject_for_update(session, actor, subject_id)
        if subject.status != SubjectStatus.SCREENING:
            raise Conflict(
                f"subject {subject.screening_number} is {subject.status}; drugs are classified "
                "during screening",
                field="subject_id",
                rule="status",
            )
        row = session.scalars(
            select(DrugClassification).where(
                DrugClassification.subject_id == subject.id, DrugClassification.drug == name
            )
        ).first()
        before = {"drug": name, "drug_class": row.drug_class} if row else None
        label = eng.dictionary.classes[drug_class].label if eng.dictionary else drug_class
        signature = sign(
            session,
            actor=actor,
            meaning=signatures.classify_drug(
                drug=name,
                screening_number=subject.screening_number,
                class_label=label,
                study_id=protocol().study_id,
            ),
            entity_type="subject",
            entity_id=subject.id,
        )
        if row is None:
            row = DrugClassification(subject_id=subject.id, drug=name)
            session.add(row)
        row.drug_class, row.classified_at = drug_class, clock.now()
        row.classified_by_id, row.signature_id = actor.user_id or 0, signature.id
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="eligibility.drug_classified",
            entity_type="drug_classification",
            entity_id=row.id,
            site_id=subject.site_id,
            subject_id=subject.id,
            before=before,
            after={"drug": name, "drug_class": drug_class, "signature_id": signature.id},
        )
    return row
