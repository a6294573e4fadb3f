"""Key rotation: every sealed value re-sealed, and every value keyed by a key derived from the
blinding key (list fingerprints) recomputed, under a new blinding key, in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import current_app
from sqlalchemy import select

from blinding import schedules
from blinding.sealing import Sealer, reseal
from iwrs import audit
from iwrs.audit import Actor
from iwrs.db import transaction
from iwrs.errors import Conflict
from iwrs.models.randomization import RandomizationList, RandomizationSlot
from iwrs.models.supply import Kit
from iwrs.services.randomization import (
    BLOCK_CONTEXT,
    SEED_CONTEXT,
    SLOT_CONTEXT,
    stored_slot,
)
from iwrs.services.supply import KIT_CONTEXT, sealer


def _slot_context(template: str) -> Callable[[Any], str]:
    return lambda slot: template.format(
        list_id=slot.list_id, stratum=slot.stratum, sequence=slot.sequence
    )


# Every sealed column, with the context its values are bound to. New sealed data joins here.
SEALED: list[tuple[Any, str, Callable[[Any], str]]] = [
    (Kit, "sealed_treatment", lambda kit: KIT_CONTEXT.format(number=kit.number)),
    (RandomizationSlot, "sealed_arm", _slot_context(SLOT_CONTEXT)),
    (RandomizationSlot, "sealed_block", _slot_context(BLOCK_CONTEXT)),
    (RandomizationList, "sealed_seed", lambda row: SEED_CONTEXT.format(list_id=row.id)),
]


def rotate_blinding_key(*, actor: Actor, new_key: bytes) -> int:
    """Re-seal everything under `new_key` and recompute each list's fingerprint (all or
    nothing); afterwards the old key opens nothing. Each fingerprint is checked under the old
    key first: a list whose slots no longer match it is refused (rule `fingerprint`), changing
    nothing. Returns the number of values re-sealed. The caller stores the new key (file or
    environment) once this returns."""
    old, new = sealer(), Sealer(new_key)
    if old.key_id == new.key_id:
        raise ValueError("the new blinding key is the current one")
    old_key = old.derive_key(label=schedules.FINGERPRINT_LABEL)
    new_key_for_lists = new.derive_key(label=schedules.FINGERPRINT_LABEL)
    count = 0
    with transaction() as session:
        for row in session.scalars(select(RandomizationList).with_for_update()):
            slots = [
                stored_slot(s)
                for s in session.scalars(
                    select(RandomizationSlot).where(RandomizationSlot.list_id == row.id)
                )
            ]
            if schedules.fingerprint(slots, key=old_key) != row.fingerprint:
                raise Conflict(
                    f"list {row.name}: its slots do not match its fingerprint; nothing was "
                    "re-sealed (call the unblinded statistician)",
                    field="list",
                    rule="fingerprint",
                )
            row.fingerprint = schedules.fingerprint(slots, key=new_key_for_lists)
        for model, column, context in SEALED:
            for row in session.scalars(select(model).with_for_update()):
                setattr(
                    row,
                    column,
                    reseal(getattr(row, column), context=context(row), old=old, new=new),
                )
                count += 1
        audit.record(
            session,
            actor=actor,
            action="blinding_key.rotated",
            entity_type="key",
            entity_id="blinding_key",
            before={"key_id": old.key_id},
            after={"key_id": new.key_id, "values_resealed": count},
        )
    current_app.extensions["iwrs.settings"].blinding_key = new_key
    current_app.extensions["iwrs.sealer"] = new
    return count
