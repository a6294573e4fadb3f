"""The kit cross-check at randomization is a real defence in depth (issue 14): the chosen kit's
sealed treatment is read again from its row and opened with the key, not through the process's
unseal cache the choice used (services.randomization._sealed_treatment_now). A kit whose sealed
treatment disagrees with what the choice believed is refused with rule kit_check, the
kit_mismatch alert is raised, and nothing is dispensed or randomized. Dispensing at a visit
checks its kit the same way (services.dispensing.dispense)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import current_app
from sqlalchemy import select, update

from iwrs import locking
from iwrs.db import read_session
from iwrs.errors import Conflict
from iwrs.models.supply import Kit
from iwrs.services.supply import KIT_CONTEXT, _unsealed_kits, sealer, treatment_of
from tests.integration import test_randomization as base
from tests.integration.randomization_worker import World, eligible_subject, randomize
from tests.integration.test_randomization import alerts, slot_of, state

new_world = base.new_world  # the fixture: new_world(**options) -> World

OTHER = {"A": "P", "P": "A"}


def site_kits(world: World, code: str = "CN01") -> list[Kit]:
    read_session().rollback()
    return list(
        read_session().scalars(
            select(Kit).where(
                Kit.place_kind == "site",
                Kit.place_id == world.sites[code],
                Kit.state == "available",
            )
        )
    )


def refused_with_the_alert(world: World, subject_id: int) -> None:
    """The randomization is refused with kit_check, changes nothing, and alerts once."""
    before = state()
    with pytest.raises(Conflict) as refusal:
        randomize(world, subject_id)
    assert (refusal.value.field, refusal.value.rule) == ("kit", "kit_check")
    assert state() == before, "nothing was dispensed or randomized"
    assert [a.site_id for a in alerts("kit_mismatch")] == [world.sites["CN01"]]


def test_a_cached_treatment_that_disagrees_with_the_sealed_kit_is_refused(new_world):
    world = new_world(sites=("CN01",))
    with world.app.app_context():
        subject_id = eligible_subject(world, "CN01")
        kits = site_kits(world)
        truth = {k.number: treatment_of(k) for k in kits}
        assert set(truth.values()) == {"A", "P"}
        cache = _unsealed_kits()
        for kit in kits:  # the cache the choice reads now holds the other arm for every kit
            cache.put(("kit", kit.id, kit.sealed_treatment), OTHER[truth[kit.number]])
        refused_with_the_alert(world, subject_id)
        current_app.extensions.pop("iwrs.unsealed_kits")  # a sound cache: the same request works
        result = randomize(world, subject_id)
        assert truth[result.kit_number] == _slot_arm(result.subject_id)


def _slot_arm(subject_id: int) -> str:
    from iwrs.services.randomization import slot_arm

    return slot_arm(slot_of(subject_id))


def _tamper(world: World, how: str) -> Any:
    """A failpoint hook that changes every CN01 kit's sealed treatment from another connection
    after the shelf was read: `reseal` gives each the other arm (a valid token of its row),
    `swap` gives each the token of another kit (it opens nowhere else)."""
    real = locking.failpoint
    kits = [(k.id, k.number, k.sealed_treatment, treatment_of(k)) for k in site_kits(world)]

    def hook(name: str) -> None:
        real(name)
        if name != "randomize.after_stratum_lock":
            return
        ring = sealer()
        with world.app.extensions["iwrs.engine"].begin() as connection:
            for index, (kit_id, number, _token, arm) in enumerate(kits):
                if how == "reseal":
                    value = ring.seal(OTHER[arm], context=KIT_CONTEXT.format(number=number))
                else:
                    value = kits[index - 1][2]
                connection.execute(
                    update(Kit).where(Kit.id == kit_id).values(sealed_treatment=value)
                )

    return hook


@pytest.mark.parametrize("how", ["reseal", "swap"])
def test_a_kit_tampered_after_the_shelf_was_read_is_refused(new_world, monkeypatch, how):
    world = new_world(sites=("CN01",))
    with world.app.app_context():
        if read_session().get_bind().dialect.name != "postgresql":
            pytest.skip("SQLite holds its write lock from BEGIN: no row changes meanwhile")
        subject_id = eligible_subject(world, "CN01")
        monkeypatch.setattr(locking, "failpoint", _tamper(world, how))
        refused_with_the_alert(world, subject_id)


# --- the same check at dispensing ----------------------------------------------------------------


def test_dispensing_refuses_a_kit_whose_sealed_treatment_disagrees_with_the_slot(new_world, clock):
    """The pick believes a kit is of the subject's arm (a cache that disagrees with the sealed
    kits); the kit's own sealed value says otherwise: refused with kit_check, the field and rule
    of every arm, nothing dispensed, the kit_mismatch alert raised."""
    from iwrs.services import dispensing

    world = new_world(sites=("CN01",))
    with world.app.app_context():
        subject_id = eligible_subject(world, "CN01")
        randomize(world, subject_id)
        clock.advance(days=28)
        kits = site_kits(world)
        truth = {k.number: treatment_of(k) for k in kits}
        cache = _unsealed_kits()
        for kit in kits:
            cache.put(("kit", kit.id, kit.sealed_treatment), OTHER[truth[kit.number]])
        before = state()
        with pytest.raises(Conflict) as refusal:
            dispensing.dispense(
                actor=world.actor("ph-CN01"), subject_id=subject_id, visit_code="V2"
            )
        assert (refusal.value.field, refusal.value.rule) == ("kit", "kit_check")
        assert state() == before, "nothing was dispensed"
        assert [a.site_id for a in alerts("kit_mismatch")] == [world.sites["CN01"]]
        current_app.extensions.pop("iwrs.unsealed_kits")  # a sound cache: the same visit works
        result = dispensing.dispense(
            actor=world.actor("ph-CN01"), subject_id=subject_id, visit_code="V2"
        )
        assert truth[result.kit_number] == _slot_arm(subject_id)
