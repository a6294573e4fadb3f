"""Randomization with an idempotency key: `randomize` run exactly once per key
(iwrs.services.idempotency), its answer stored as the client saw it and replayed to retries.

The stored success is `result_document(result)`: the canonical JSON of the RandomizationResult,
field for field the API's RandomizationSchema (never the arm). The API answers it as is, the
first time and on every replay, so both are the same bytes. The key's request is the subject
alone (a randomization has no other meaningful field: the password is never part of it).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import date

from sqlalchemy.orm import Session

from iwrs import audit, validation
from iwrs.audit import Actor
from iwrs.db import transaction
from iwrs.errors import Conflict
from iwrs.services import idempotency
from iwrs.services.randomization import (
    RandomizationResult,
    VisitPlan,
    _randomize,
    _Refusal,
)
from iwrs.services.sessions import read_signer
from iwrs.services.users import confirm_signature

CREATED = 201


def result_document(result: RandomizationResult) -> str:
    """The result as stored and answered: canonical JSON, dates as YYYY-MM-DD."""
    body = audit.canonical_json(dataclasses.asdict(result))
    assert body is not None
    return body


def result_from_document(body: str) -> RandomizationResult:
    """The RandomizationResult a stored document describes (for callers of the service)."""
    doc = json.loads(body)
    return RandomizationResult(
        subject_id=doc["subject_id"],
        screening_number=doc["screening_number"],
        randomization_number=doc["randomization_number"],
        kit_number=doc["kit_number"],
        stratum=dict(doc["stratum"]),
        randomized_on=date.fromisoformat(doc["randomized_on"]),
        visits=tuple(
            VisitPlan(
                code=v["code"],
                name=v["name"],
                target=date.fromisoformat(v["target"]),
                earliest=date.fromisoformat(v["earliest"]),
                latest=date.fromisoformat(v["latest"]),
                kits=v["kits"],
            )
            for v in doc["visits"]
        ),
    )


def randomize_answer(
    *, actor: Actor, subject_id: int, signer_password: str, understood: bool, idempotency_key: str
) -> idempotency.Answer:
    """Randomize under `idempotency_key` (scoped to `actor`): the first outcome of the key,
    201 and the result document or the refusal, is stored and answered to every retry.

    Raises what `randomize` raises (stored when it is an outcome: iwrs.services.idempotency),
    InvalidInput `idempotency_key_reused` (the key was used for another subject or operation),
    Conflict `in_progress` (the first request with the key is still running), or StoredRefusal
    (a replay of the key's refusal: same status, title, message and problems). Without
    `understood` (randomization cannot be undone) it is refused before the key is claimed."""
    validation.require_understood(understood, step="randomization")

    def perform(settle: Callable[[Session, int, str], None]) -> tuple[int, str]:
        refusal: Conflict | None = None
        with transaction() as session:
            try:
                # The legacy global key column is not written: keys are per user now.
                result = _randomize(session, actor, subject_id)
            except _Refusal as stop:
                refusal = stop.error  # its alert commits with this transaction
            else:
                body = result_document(result)
                settle(session, CREATED, body)
        if refusal is not None:
            raise refusal
        return CREATED, body

    return idempotency.run(
        actor=actor,
        key=idempotency_key,
        request=idempotency.request_of("randomize", subject_id, {}),
        # The signer is read in the claim's transaction (no transaction of its own), the
        # password checked after it committed, before the randomization's transaction.
        read=lambda session: (
            read_signer(session, user_id=actor.user_id) if actor.user_id is not None else None
        ),
        verify=lambda seen: confirm_signature(
            signer_id=actor.user_id, password=signer_password, seen=seen
        ),
        perform=perform,
    )
