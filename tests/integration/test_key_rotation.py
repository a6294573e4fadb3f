"""Key rotation re-seals every sealed value (kits, list slots' arms and blocks, list seeds) and
recomputes each list's keyed fingerprint; a list that no longer matches its fingerprint stops
the rotation, changing nothing."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import select

from blinding.sealing import Sealer, SealError
from iwrs.audit import Actor
from iwrs.db import read_session
from iwrs.models import Kit, RandomizationList, RandomizationSlot, StratumTally
from iwrs.services import keys, randomization, stratum_tallies
from iwrs.services.supply import KIT_CONTEXT


def test_rotation_reseals_kits_slots_and_seeds_and_randomization_goes_on(app):
    assert app.test_cli_runner().invoke(args=["iwrs", "demo"]).exit_code == 0
    with app.app_context():
        old = Sealer(app.extensions["iwrs.settings"].blinding_key)
        slots = read_session().scalars(select(RandomizationSlot)).all()
        arms_before = {s.id: randomization.slot_arm(s) for s in slots}
        blocks_before = {s.id: randomization.slot_block(s) for s in slots}
        fingerprint_before = read_session().scalars(select(RandomizationList)).one().fingerprint
        tallies_before = {
            t.id: stratum_tallies.counts_of(t)
            for t in read_session().scalars(select(StratumTally)).all()
        }
        count = keys.rotate_blinding_key(
            actor=Actor.system("test"), new_key=secrets.token_bytes(32)
        )
        read_session().rollback()
        kits = read_session().scalars(select(Kit)).all()
        slots = read_session().scalars(select(RandomizationSlot)).all()
        lists = read_session().scalars(select(RandomizationList)).all()
        tallies = read_session().scalars(select(StratumTally)).all()
        assert count == len(kits) + 2 * len(slots) + len(lists) + len(tallies)
        assert {t.id: stratum_tallies.counts_of(t) for t in tallies} == tallies_before
        with pytest.raises(SealError):  # the statistician's tallies too (issue 13)
            old.unseal(
                tallies[0].sealed_counts or "",
                context=stratum_tallies.TALLY_CONTEXT.format(
                    list_id=tallies[0].list_id, stratum=tallies[0].stratum
                ),
            )
        assert {s.id: randomization.slot_arm(s) for s in slots} == arms_before
        assert {s.id: randomization.slot_block(s) for s in slots} == blocks_before
        # The fingerprint is recomputed under the new key's derived key, and still names the list.
        (row,) = lists
        assert row.fingerprint != fingerprint_before
        every = [randomization.stored_slot(s) for s in slots]
        assert row.fingerprint == randomization.list_fingerprint(every)
        for column, template in (
            ("sealed_arm", randomization.SLOT_CONTEXT),
            ("sealed_block", randomization.BLOCK_CONTEXT),
        ):
            with pytest.raises(SealError):
                old.unseal(
                    getattr(slots[0], column),
                    context=template.format(
                        list_id=slots[0].list_id,
                        stratum=slots[0].stratum,
                        sequence=slots[0].sequence,
                    ),
                )
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


def test_rotation_refuses_a_list_that_no_longer_matches_its_fingerprint(app):
    from sqlalchemy import update

    from iwrs.db import engine
    from iwrs.errors import Conflict
    from iwrs.services.supply import sealer

    assert app.test_cli_runner().invoke(args=["iwrs", "demo"]).exit_code == 0
    with app.app_context():
        # A slot's arm rewritten behind the application's back (a raw connection, no audit).
        slot = (
            read_session().scalars(select(RandomizationSlot).order_by(RandomizationSlot.id)).first()
        )
        context = randomization.SLOT_CONTEXT.format(
            list_id=slot.list_id, stratum=slot.stratum, sequence=slot.sequence
        )
        other = "P" if randomization.slot_arm(slot) == "A" else "A"
        with engine().begin() as connection:
            connection.execute(
                update(RandomizationSlot.__table__)
                .where(RandomizationSlot.__table__.c.id == slot.id)
                .values(sealed_arm=sealer().seal(other, context=context))
            )
        key_id = sealer().key_id
        read_session().rollback()
        sealed = sorted(read_session().scalars(select(Kit.sealed_treatment)))
        with pytest.raises(Conflict) as refused:
            keys.rotate_blinding_key(actor=Actor.system("test"), new_key=secrets.token_bytes(32))
        assert (refused.value.field, refused.value.rule) == ("list", "fingerprint")
        read_session().rollback()
        assert sealer().key_id == key_id
        assert sorted(read_session().scalars(select(Kit.sealed_treatment))) == sealed


def test_rotation_reseals_an_imported_lists_column_mapping(app, make_user):
    from pathlib import Path

    from blinding.list_mapping import FactorSource, ListMapping

    mapping = ListMapping(
        arm_column="redcap_randomization_group",
        arm_values={"1": "A", "2": "P"},
        factors={"disease": FactorSource("disease", {"1": "RA", "2": "SSc"})},
    )
    redcap = Path(__file__).parents[1] / "fixtures" / "lists" / "redcap_allocation_raw.csv"
    stat = make_user("unblinded_statistician")
    with app.app_context():
        row = randomization.import_list(
            actor=Actor.of(stat), name="redcap", csv_text=redcap.read_text(), mapping=mapping
        )
        sealed_before = row.sealed_mapping
        keys.rotate_blinding_key(actor=Actor.system("test"), new_key=secrets.token_bytes(32))
        read_session().rollback()
        stored = read_session().get(RandomizationList, row.id)
        assert stored is not None and stored.sealed_mapping != sealed_before
        assert randomization.list_mapping_of(stored) == mapping
