"""A kit picked from the shelf is judged again once it is locked (README rule 7: expired,
quarantined or do-not-dispense kits are never dispensed). The shelf is read without kit locks;
the expiry sweep and a lot's expiry change touch kits without their site's lock, so a kit can
become unusable between the pick and its lock. Randomization and dispensing then pass it over
and take another usable kit, or refuse with site_stock when none is left
(services.supply.lock_dispensable).

The race is made real on PostgreSQL: at the failpoint between the pick and the lock
(`randomize.after_pick`, `dispense.after_pick`), the supply manager's lot expiry change runs and
commits in its own transaction. SQLite holds its single write lock from BEGIN, so no kit can
change there meanwhile: these tests are PostgreSQL's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from iwrs import locking
from iwrs.db import engine, read_session
from iwrs.errors import Conflict
from iwrs.models.supply import Kit, Lot
from iwrs.services import dispensing, supply
from tests.integration import test_randomization as base
from tests.integration.randomization_worker import World, eligible_subject, randomize
from tests.integration.test_randomization import state

new_world = base.new_world  # the fixture: new_world(**options) -> World

EARLY, LATE = "L-0001", "L-0002"
# Days from today to the early lot's new expiry: today (its kits are quarantined at once), or
# inside the do-not-dispense buffer (its kits stay available but may not be dispensed).
CHANGES = {"quarantined": 0, "inside_do_not_dispense": 2}


def _postgresql_only() -> None:
    if read_session().get_bind().dialect.name != "postgresql":
        pytest.skip("SQLite holds its write lock from BEGIN: no kit changes meanwhile")


def _world(new_world: Any, *, two_lots: bool) -> World:
    """CN01 active with 20 kits: 10 of the early lot and 10 of the late one (two_lots), or all
    of the early lot."""
    lots = ((EARLY, 10, 100), (LATE, 200, 730)) if two_lots else ((EARLY, 200, 100),)
    return new_world(sites=("CN01",), lots=lots)


def _shorten_early_lot_at(world: World, monkeypatch: Any, point: str, days: int) -> list[int]:
    """At the first stop at `point`, the supply manager shortens the early lot's expiry to
    today + `days` in a transaction of its own, committed before the picked kit is locked.
    Returns the list the hook appends to each time it runs the change."""
    real, ran = locking.failpoint, []

    def hook(name: str) -> None:
        real(name)
        if name != point or ran:
            return
        today = supply.depot_today()
        supply.change_lot_expiry(
            actor=world.actor("manager"),
            lot_code=EARLY,
            new_expiry=today + timedelta(days=days),
            reason="stability data",
        )
        ran.append(1)

    monkeypatch.setattr(locking, "failpoint", hook)
    return ran


def _lot_of(number: str) -> str:
    read_session().rollback()
    return read_session().scalar(
        select(Lot.code).join(Kit, Kit.lot_id == Lot.id).where(Kit.number == number)
    )


def _early_kit_states() -> set[str]:
    read_session().rollback()
    return set(
        read_session().scalars(
            select(Kit.state)
            .join(Lot, Kit.lot_id == Lot.id)
            .where(Lot.code == EARLY, Kit.place_kind == "site")
        )
    )


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_randomization_passes_over_a_kit_made_unusable_between_pick_and_lock(
    new_world, monkeypatch, change
):
    world = _world(new_world, two_lots=True)
    with world.app.app_context():
        _postgresql_only()
        subject_id = eligible_subject(world, "CN01")
        ran = _shorten_early_lot_at(world, monkeypatch, "randomize.after_pick", CHANGES[change])
        result = randomize(world, subject_id)
        assert ran == [1]
        assert _lot_of(result.kit_number) == LATE
        expected = {"quarantined"} if change == "quarantined" else {"available"}
        assert _early_kit_states() == expected


def test_randomization_refuses_for_stock_when_the_last_usable_kits_changed_under_it(
    new_world, monkeypatch
):
    world = _world(new_world, two_lots=False)
    with world.app.app_context():
        _postgresql_only()
        subject_id = eligible_subject(world, "CN01")
        before = state()
        _shorten_early_lot_at(world, monkeypatch, "randomize.after_pick", 2)
        with pytest.raises(Conflict) as refusal:
            randomize(world, subject_id)
        assert (refusal.value.field, refusal.value.rule) == ("site", "site_stock")
        after = state()
        assert (after["randomizations"], after["kits"]) == (
            before["randomizations"],
            before["kits"],
        )


def _randomized_then_v2(world: World, clock: Any) -> int:
    subject_id = eligible_subject(world, "CN01")
    randomize(world, subject_id)
    clock.advance(days=28)
    return subject_id


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_dispensing_passes_over_a_kit_made_unusable_between_pick_and_lock(
    new_world, monkeypatch, clock, change
):
    world = _world(new_world, two_lots=True)
    with world.app.app_context():
        _postgresql_only()
        subject_id = _randomized_then_v2(world, clock)
        ran = _shorten_early_lot_at(world, monkeypatch, "dispense.after_pick", CHANGES[change])
        result = dispensing.dispense(
            actor=world.actor("ph-CN01"), subject_id=subject_id, visit_code="V2"
        )
        assert ran == [1]
        assert _lot_of(result.kit_number) == LATE
        expected = {"quarantined"} if change == "quarantined" else {"available"}
        assert _early_kit_states() == expected


def test_dispensing_refuses_for_stock_when_the_last_usable_kits_changed_under_it(
    new_world, monkeypatch, clock
):
    world = _world(new_world, two_lots=False)
    with world.app.app_context():
        _postgresql_only()
        subject_id = _randomized_then_v2(world, clock)
        before = state()
        _shorten_early_lot_at(world, monkeypatch, "dispense.after_pick", 0)
        with pytest.raises(Conflict) as refusal:
            dispensing.dispense(
                actor=world.actor("ph-CN01"), subject_id=subject_id, visit_code="V2"
            )
        assert (refusal.value.field, refusal.value.rule) == ("site", "site_stock")
        assert state()["dispensations"] == before["dispensations"]
        assert _early_kit_states() == {"quarantined"}


def _quarantine_every_kit_of_at(world: World, monkeypatch: Any, treatment: str) -> list[int]:
    """At the first stop at randomize.after_pick, every available kit of `treatment` at CN01
    is quarantined by a transaction of its own (committed before any picked kit is locked)."""
    real, ran = locking.failpoint, []

    def hook(name: str) -> None:
        real(name)
        if name != "randomize.after_pick" or ran:
            return
        read_session().rollback()
        kits = read_session().scalars(select(Kit).where(Kit.place_kind == "site")).all()
        ids = [kit.id for kit in kits if supply.treatment_of(kit) == treatment]
        with engine().begin() as connection:
            connection.execute(
                update(Kit.__table__).where(Kit.id.in_(ids)).values(state="quarantined")
            )
        ran.append(1)

    monkeypatch.setattr(locking, "failpoint", hook)
    return ran


@pytest.mark.parametrize("arm_index", [0, 1])
def test_a_treatment_emptied_between_pick_and_lock_refuses_whichever_arm_the_slot_holds(
    new_world, monkeypatch, arm_index
):
    """README rule 2: the slot's arm must not decide the outcome. Were only the slot's kit
    locked and judged, emptying the OTHER treatment's shelf under the request would let it
    randomize, while emptying the slot's own would refuse it: one of these two cases would
    then randomize. Every arm's pick is judged, so both refuse, site_stock."""
    world = _world(new_world, two_lots=True)
    with world.app.app_context():
        _postgresql_only()
        subject_id = eligible_subject(world, "CN01")
        before = state()
        treatment = [arm.code for arm in supply.protocol().arms][arm_index]
        ran = _quarantine_every_kit_of_at(world, monkeypatch, treatment)
        with pytest.raises(Conflict) as refusal:
            randomize(world, subject_id)
        assert ran == [1]
        assert (refusal.value.field, refusal.value.rule) == ("site", "site_stock")
        assert state()["randomizations"] == before["randomizations"]
