"""The protocol chooses the resupply policy per site: CN04 (predictive) tops up when its total
usable stock falls to what its subjects' visits (all arms together) need within the shipping lead
time, plus expected randomizations (once per treatment), safety stock per treatment and the guard.
The decision reads no arm: it runs at the scheduled run, as the system."""

from __future__ import annotations

import json
import math

from sqlalchemy import select

from iwrs.db import read_session
from iwrs.models import AuditEvent, Kit, Shipment, Site
from iwrs.services import resupply as resupply_service
from iwrs.services.resupply import run_resupply
from iwrs.services.supply import protocol
from tests.integration.randomization_worker import usable_by_arm


def test_predictive_site_tops_up_for_visits_due_within_the_lead_time(app, clock):
    assert app.test_cli_runner().invoke(args=["iwrs", "demo"]).exit_code == 0
    with app.app_context():
        session = read_session()
        cn04 = session.scalars(select(Site).where(Site.code == "CN04")).one()
        assert not any(
            resupply_service._visits_due_total(session, cn04.id, clock.current.date()).values()
        )
        clock.advance(days=25)  # V2 (day 29, window ±3) is now within the 5-day lead time
        due = resupply_service._visits_due_total(session, cn04.id, clock.current.date())
        assert due == {"GSK-SC": 1}
        p = protocol()
        expected = math.ceil(p.predictive_randomizations_per_week * p.shipping_lead_days / 7)
        need = 1 + 2 * expected + 2 * p.predictive_safety_stock + p.resupply[0].guard
        total = sum(
            len(kits)
            for kits in usable_by_arm(session, cn04.id, today=clock.current.date()).values()
        )
        assert total <= need, "the demo leaves CN04 at or below its predictive need"
        made = run_resupply()
        assert any(m.endswith("to CN04") for m in made)
        read_session().rollback()
        (top_up,) = (
            read_session()
            .scalars(
                select(Shipment).where(Shipment.site_id == cn04.id, Shipment.kind == "resupply")
            )
            .all()
        )
        kits = read_session().scalars(select(Kit).where(Kit.shipment_id == top_up.id)).all()
        maximum = max(p.resupply[0].maximum, math.ceil(need / 2) + 1)
        assert len(kits) == 2 * maximum - total  # a function of the total and the need only
        event = (
            read_session()
            .scalars(
                select(AuditEvent).where(
                    AuditEvent.action == "shipment.requested",
                    AuditEvent.entity_id == str(top_up.id),
                )
            )
            .one()
        )
        assert (event.username, event.role) == ("resupply", "system")
        trigger = json.loads(event.after)["trigger"]
        assert trigger["policy"] == "predictive"
        assert trigger["levels"][0]["total_trigger"] == need
