"""Dispensing at a visit with an idempotency key: `dispense` run exactly once per key
(iwrs.services.idempotency), its answer stored as the client saw it and replayed to retries.

The key's request is the subject and every field that decides the dispensation (visit, kind,
reasons, stated visit date); the stored success is `result_document(result)`, field for field
the API's DispenseResultSchema. Without a key a repeated request is refused by the visit's own
rule (the visit is already dispensed); with one it gets the first answer back.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session

from iwrs import audit
from iwrs.audit import Actor
from iwrs.services import dispensing, idempotency

CREATED = 201


def result_document(result: dispensing.DispenseResult) -> str:
    """The result as stored and answered: canonical JSON, dates and times in ISO 8601."""

    def iso(value: Any) -> Any:
        return value.isoformat() if isinstance(value, date | datetime) else value

    body = audit.canonical_json({k: iso(v) for k, v in dataclasses.asdict(result).items()})
    assert body is not None
    return body


def dispense_answer(
    *,
    actor: Actor,
    subject_id: int,
    idempotency_key: str,
    visit_code: str,
    kind: str = "scheduled",
    reason: str = "",
    visit_date: object = None,
    backdate_reason: str | None = None,
) -> idempotency.Answer:
    """Dispense under `idempotency_key` (scoped to `actor`): the key's first outcome, 201 and
    the result document or the refusal, is stored and answered to every retry. Raises what
    `dispensing.dispense` raises, and as `keyed_randomization.randomize_answer` for keys."""
    fields = {
        "visit_code": visit_code,
        "kind": kind,
        "reason": reason,
        "visit_date": None if visit_date is None else str(visit_date),
        "backdate_reason": backdate_reason,
    }
    body: list[str] = []

    def settle_with(settle: Any) -> Any:
        def _settle(session: Session, result: dispensing.DispenseResult) -> None:
            body.append(result_document(result))
            settle(session, CREATED, body[-1])

        return _settle

    def perform(settle: Any) -> tuple[int, str]:
        dispensing.dispense(
            actor=actor,
            subject_id=subject_id,
            visit_code=visit_code,
            kind=kind,
            reason=reason,
            visit_date=visit_date,
            backdate_reason=backdate_reason,
            settle=settle_with(settle),
        )
        return CREATED, body[-1]

    return idempotency.run(
        actor=actor,
        key=idempotency_key,
        request=idempotency.request_of("dispense", subject_id, fields),
        verify=lambda _seen: None,  # no signature: the pharmacist's session or token
        perform=perform,
    )
