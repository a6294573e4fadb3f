"""The protocol chooses the resupply policy per site: CN04 (predictive) ships what its subjects'
visits need within the shipping lead time plus expected randomizations plus safety stock."""

from __future__ import annotations

from sqlalchemy import select

from iwrs.audit import Actor
from iwrs.db import read_session
from iwrs.models import Kit, Shipment, Site, User
from iwrs.services import accountability, shipments
from iwrs.services.supply import dispensable_by_arm, treatment_of


def test_predictive_site_ships_for_visits_due_within_the_lead_time(app, clock):
    assert app.test_cli_runner().invoke(args=["iwrs", "demo"]).exit_code == 0
    with app.app_context():
        session = read_session()
        cn04 = session.scalars(select(Site).where(Site.code == "CN04")).one()
        pharmacist = session.scalars(select(User).where(User.username == "ph.ma")).one()
        assert not any(shipments._visit_demand(session, cn04.id, clock.current.date()).values())
        clock.advance(days=25)  # V2 (day 29, window ±3) is now within the 5-day lead time
        demand = shipments._visit_demand(session, cn04.id, clock.current.date())
        assert sum(demand.values()) == 1
        arm = next(a for (a, _), n in demand.items() if n == 1)
        open_before = session.scalars(
            select(Shipment).where(Shipment.site_id == cn04.id, Shipment.state == "requested")
        ).all()
        assert open_before == []
        # need for that arm = 1 (visit) + 1 (expected randomizations) + 1 (safety) = 3:
        # lose kits of that arm until only 2 are left, and the policy must fire.
        stock = dispensable_by_arm(session, cn04.id, today=clock.current.date())
        for kit, _ in stock[arm][: len(stock[arm]) - 2]:
            accountability.report_kit(
                actor=Actor.of(pharmacist), kit_number=kit.number, lost=True, reason="test"
            )
        read_session().expire_all()
        requested = (
            read_session()
            .scalars(
                select(Shipment).where(Shipment.site_id == cn04.id, Shipment.state == "requested")
            )
            .all()
        )
        assert len(requested) == 1
        kits = read_session().scalars(select(Kit).where(Kit.shipment_id == requested[0].id)).all()
        arms = sorted(treatment_of(k) for k in kits)
        assert set(arms) == {"A", "P"}  # never one treatment only
        assert arms.count(arm) == 1  # 3 needed, 2 on hand
