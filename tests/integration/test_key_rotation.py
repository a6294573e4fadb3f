"""Key rotation re-seals every sealed value: kits, list slots and list seeds."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import select

from blinding.sealing import Sealer, SealError
from iwrs.audit import Actor
from iwrs.db import read_session
from iwrs.models import Kit, RandomizationList, RandomizationSlot
from iwrs.services import keys, randomization
from iwrs.services.supply import KIT_CONTEXT


def test_rotation_reseals_kits_slots_and_seeds_and_randomization_goes_on(app):
    assert app.test_cli_runner().invoke(args=["iwrs", "demo"]).exit_code == 0
    with app.app_context():
        old = Sealer(app.extensions["iwrs.settings"].blinding_key)
        slots = read_session().scalars(select(RandomizationSlot)).all()
        arms_before = {s.id: randomization.slot_arm(s) for s in slots}
        count = keys.rotate_blinding_key(
            actor=Actor.system("test"), new_key=secrets.token_bytes(32)
        )
        read_session().rollback()
        kits = read_session().scalars(select(Kit)).all()
        slots = read_session().scalars(select(RandomizationSlot)).all()
        lists = read_session().scalars(select(RandomizationList)).all()
        assert count == len(kits) + len(slots) + len(lists)
        assert {s.id: randomization.slot_arm(s) for s in slots} == arms_before
        with pytest.raises(SealError):
            old.unseal(kits[0].sealed_treatment, context=KIT_CONTEXT.format(number=kits[0].number))
        with pytest.raises(SealError):
            old.unseal(
                slots[0].sealed_arm,
                context=randomization.SLOT_CONTEXT.format(
                    list_id=slots[0].list_id, stratum=slots[0].stratum, sequence=slots[0].sequence
                ),
            )
        # the list can still be extended (its seed opens under the new key)
        assert (
            randomization.extend_list(
                actor=Actor.of(_statistician()),
                stratum=slots[0].stratum,
                blocks=1,
                reason="after rotation",
            )
            > 0
        )


def _statistician():  # type: ignore[no-untyped-def]
    from iwrs.models import User

    return read_session().scalars(select(User).where(User.username == "stat.liu")).one()
