"""Key rotation: every sealed value re-sealed under a new blinding key, in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import current_app
from sqlalchemy import select

from blinding.sealing import Sealer, reseal
from iwrs import audit
from iwrs.audit import Actor
from iwrs.db import transaction
from iwrs.models.randomization import RandomizationList, RandomizationSlot
from iwrs.models.supply import Kit
from iwrs.services.randomization import SEED_CONTEXT, SLOT_CONTEXT
from iwrs.services.supply import KIT_CONTEXT, sealer

# Every sealed column, with the context its values are bound to. New sealed data joins here.
SEALED: list[tuple[Any, str, Callable[[Any], str]]] = [
    (Kit, "sealed_treatment", lambda kit: KIT_CONTEXT.format(number=kit.number)),
    (
        RandomizationSlot,
        "sealed_arm",
        lambda slot: SLOT_CONTEXT.format(
            list_id=slot.list_id, stratum=slot.stratum, sequence=slot.sequence
        ),
    ),
    (RandomizationList, "sealed_seed", lambda row: SEED_CONTEXT.format(list_id=row.id)),
]


def rotate_blinding_key(*, actor: Actor, new_key: bytes) -> int:
    """Re-seal everything under `new_key` (all or nothing); afterwards the old key opens nothing.
    The caller stores the new key (file or environment) once this returns."""
    old, new = sealer(), Sealer(new_key)
    if old.key_id == new.key_id:
        raise ValueError("the new blinding key is the current one")
    count = 0
    with transaction() as session:
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
