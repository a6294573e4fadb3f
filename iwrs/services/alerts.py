"""The supply manager's handling of supply alerts (issue 15): acknowledge one (seen, being
dealt with), then resolve it with a reason. Each step is audited with who and when; a resolved
alert leaves the open list, and the next event of its kind at its site raises a new one."""

from __future__ import annotations

from sqlalchemy.orm import Session

from iwrs import audit, clock, validation
from iwrs.audit import Actor
from iwrs.auth import Permission
from iwrs.db import transaction
from iwrs.errors import Conflict, NotFound
from iwrs.models.supply import SupplyAlert
from iwrs.services.supply import acting_user


def _open_alert(session: Session, alert_id: int) -> SupplyAlert:
    alert = session.get(SupplyAlert, alert_id, with_for_update=True)
    if alert is None:
        raise NotFound(f"alert {alert_id} does not exist", field="alert_id", rule="exists")
    if alert.resolved_at is not None:
        raise Conflict("this alert is already resolved", field="alert_id", rule="resolved")
    return alert


def acknowledge_alert(*, actor: Actor, alert_id: int) -> SupplyAlert:
    """The supply manager has seen an open alert and is dealing with it (once; audited)."""
    with transaction() as session:
        user = acting_user(session, actor, Permission.MANAGE_SUPPLY)
        alert = _open_alert(session, alert_id)
        if alert.acknowledged_at is not None:
            raise Conflict(
                "this alert is already acknowledged", field="alert_id", rule="acknowledged"
            )
        alert.acknowledged_at, alert.acknowledged_by_id = clock.now(), user.id
        audit.record(
            session,
            actor=actor,
            action="supply.alert_acknowledged",
            entity_type="supply_alert",
            entity_id=alert.id,
            site_id=alert.site_id,
            after={"kind": str(alert.kind)},
        )
        return alert


def resolve_alert(*, actor: Actor, alert_id: int, reason: str) -> SupplyAlert:
    """Close an open alert with the reason it needs no more action (acknowledged or not)."""
    why = validation.reason(reason)
    with transaction() as session:
        user = acting_user(session, actor, Permission.MANAGE_SUPPLY)
        alert = _open_alert(session, alert_id)
        now = clock.now()
        if alert.acknowledged_at is None:  # resolving it is seeing it
            alert.acknowledged_at, alert.acknowledged_by_id = now, user.id
        alert.resolved_at, alert.resolved_by_id, alert.resolution = now, user.id, why
        audit.record(
            session,
            actor=actor,
            action="supply.alert_resolved",
            entity_type="supply_alert",
            entity_id=alert.id,
            site_id=alert.site_id,
            reason=why,
            after={"kind": str(alert.kind)},
        )
        return alert
