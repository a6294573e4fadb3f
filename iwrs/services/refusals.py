"""Refused attempts at unblinding and at arm access, recorded in the trail without any arm.

A refusal changes nothing, so it would leave no trace; an inspector wants to see who tried to
break the blind or open an unblinded view and why they were turned away. One event per refused
request, in its own short transaction (the refused use case's own transaction, if any, rolled
back): `unblinding.refused` or `arm_access.refused`, with the actor, how they authenticated
(`auth`, as on every event), the rule and what was asked (the path; the subject id asked for,
which may not exist, so it is not a reference). Never the arm, the list or a subject's data.
Decision: refusals of *who* (401, 403, 404: role, site, signature, not yours) are recorded;
input errors (422) and `already_unblinded` (409, which by its rule records nothing) are not;
anonymous callers, who never reach an arm, are not (that would let anyone flood the trail).
"""

from __future__ import annotations

import logging

from flask import has_request_context, request

from iwrs import audit
from iwrs.audit import Actor
from iwrs.db import transaction
from iwrs.errors import IWRSError

log = logging.getLogger("iwrs.refusals")

UNBLINDING_REFUSED = "unblinding.refused"
ARM_ACCESS_REFUSED = "arm_access.refused"
RECORDED_STATUSES = frozenset({401, 403, 404})


def record(*, actor: Actor, action: str, refusal: IWRSError, subject_id: int | None = None) -> None:
    """Record one refused attempt (at most once per refusal object); never raises."""
    if getattr(refusal, "refusal_recorded", False) or refusal.status not in RECORDED_STATUSES:
        return
    refusal.refusal_recorded = True  # type: ignore[attr-defined]
    after = {
        "rule": refusal.rule or "refused",
        "field": refusal.field,
        "status": refusal.status,
        "path": request.path if has_request_context() else None,
        "method": request.method if has_request_context() else None,
        "requested_subject_id": subject_id,
    }
    try:
        with transaction() as session:
            audit.record(
                session,
                actor=actor,
                action=action,
                entity_type="subject" if subject_id is not None else "request",
                entity_id=subject_id,
                after=after,
            )
    except Exception:  # the refusal itself must still reach the user
        log.exception("could not record %s for %s", action, actor.username)
