"""Online rotation of the blinding key, in three steps, while every server keeps serving.

1. Activate (`activate_blinding_key`): the new key is already in every server's ring (key file
   in the shared instance folder, or IWRS_BLINDING_KEYS_OTHER after a rolling restart); one row
   (`blinding_key_state`) names it current, in one short transaction, audited as
   "blinding_key.rotated". Servers seal under it within `key_refresh_seconds` (iwrs.keyring)
   and open both old and new tokens throughout. Before anything changes, every list's keyed
   fingerprint must verify under one key of the ring (else Conflict, rule `fingerprint`).
2. Re-seal (`reseal_all`): every sealed column (SEALED), in batches of `batch_size` rows, each
   batch its own short transaction with one audit event ("blinding_key.resealed": column,
   count, last row id, key id; never a value). Then each list whose fingerprint was made under
   another key is recomputed under the current one (one transaction per list). Resumable: a
   crash loses at most the batch in flight (rolled back); running it again skips every value
   already under the current key.
3. Retire (`retire_blinding_key`): only when `remaining` finds nothing sealed, and no list
   fingerprinted, under the old key; the caller then deletes its key file.

Locks (decision): a batch locks rows of one table only, in id order, with SKIP LOCKED. It never
waits for a row a request holds (a row busy now is taken by a later pass: the final sweep repeats
until nothing under another key is left), so it cannot join a deadlock cycle nor delay a
randomization beyond one batch's few milliseconds; the audit chain head is taken at commit,
last, as by every write. On SQLite each batch is one short BEGIN IMMEDIATE.

Keyed digests: the list fingerprint (HMAC under derive_key(FINGERPRINT_LABEL)) is checked under
every key of the ring and recomputed here; outbox temporary passwords (iwrs.services.passwords)
are sealed under a derived ring and open while their key is in the ring (not re-sealed: they
live until the next send; one queued under a retired key is delivered without its password).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy import func, not_, select

from blinding import schedules
from iwrs import audit, clock
from iwrs.audit import Actor
from iwrs.db import read_session, transaction
from iwrs.errors import Conflict, InvalidInput
from iwrs.models.keys import BlindingKeyState
from iwrs.models.randomization import RandomizationList, RandomizationSlot, StratumTally
from iwrs.models.supply import Kit
from iwrs.services.randomization import (
    BLOCK_CONTEXT,
    MAPPING_CONTEXT,
    SEED_CONTEXT,
    SLOT_CONTEXT,
    stored_slot,
)
from iwrs.services.stratum_tallies import TALLY_CONTEXT
from iwrs.services.supply import KIT_CONTEXT, sealer
from iwrs.services.users import require_system

BATCH_SIZE = 200
SWEEP_GIVE_UP_AFTER = 120.0  # seconds of rows staying locked before the sweep reports them left
Progress = Callable[[str, int], None]  # (column, values re-sealed so far in it)


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
    # Nullable (only a mapped import has one): the passes below skip NULL.
    (RandomizationList, "sealed_mapping", lambda row: MAPPING_CONTEXT.format(list_id=row.id)),
    # NULL until counted (a list from before migration 0021): nothing sealed to re-seal.
    (
        StratumTally,
        "sealed_counts",
        lambda row: TALLY_CONTEXT.format(list_id=row.list_id, stratum=row.stratum),
    ),
]


@dataclass
class Remaining:
    """What is sealed under each key: values by key id, list fingerprints by key id (None: a
    fingerprint no key of the ring reproduces)."""

    values: dict[str, int] = field(default_factory=dict)
    lists: dict[str | None, int] = field(default_factory=dict)

    def under(self, key_id: str) -> int:
        return self.values.get(key_id, 0) + self.lists.get(key_id, 0)


def remaining(*, actor: Actor) -> Remaining:
    """Count sealed values and list fingerprints by the key that made them (`iwrs keys check`;
    the operator's: Forbidden `system_only` for a person)."""
    require_system(actor)
    session = read_session()
    session.rollback()
    values: Counter[str] = Counter()
    for model, column, _ in SEALED:
        key_id = func.substr(getattr(model, column), 4, 8)  # "v1.<key id>.<body>"
        present = getattr(model, column).is_not(None)
        query = select(key_id, func.count()).where(present).group_by(key_id)
        for found, count in session.execute(query):
            values[found] += count
    lists: Counter[str | None] = Counter()
    for row in session.scalars(select(RandomizationList)):
        lists[fingerprint_key(session, row)] += 1
    return Remaining(dict(values), dict(lists))


def fingerprint_key(session: Any, row: RandomizationList) -> str | None:
    """The id of the ring key whose derived key reproduces the list's fingerprint (None if no
    key does: the slots were changed behind the application's back). Current key first."""
    query = select(RandomizationSlot).where(RandomizationSlot.list_id == row.id)
    slots = [stored_slot(s) for s in session.scalars(query)]
    ring = sealer().ring
    for key_id in [ring.key_id, *sorted(ring.key_ids - {ring.key_id})]:
        key = ring.sealer_for(key_id).derive_key(label=schedules.FINGERPRINT_LABEL)
        if schedules.fingerprint(slots, key=key) == row.fingerprint:
            return key_id
    return None


def activate_blinding_key(*, actor: Actor, key_id: str) -> str:
    """Step 1: make `key_id` (a key this server holds) current for every server; returns the
    previous current id. InvalidInput (field key_id, rule `known`) if this server does not hold
    it; ValueError if it is current already; Conflict (list, `fingerprint`) if a list no longer
    matches its fingerprint under any key (nothing changes then). The operator's use case
    (Forbidden `system_only` for a person), as are re-sealing and retiring."""
    require_system(actor)
    ring = sealer()
    if key_id not in ring.ring and not (ring.reload() and key_id in ring.ring):
        raise InvalidInput(
            f"key_id: {key_id} is not in this server's key ring (add its key file or "
            "IWRS_BLINDING_KEYS_OTHER first)",
            field="key_id",
            rule="known",
        )
    ring.refresh(force=True)
    if ring.ring.key_id == key_id:
        raise ValueError("the new blinding key is the current one")
    session = read_session()
    session.rollback()
    for row in session.scalars(select(RandomizationList)):
        if fingerprint_key(session, row) is None:
            raise Conflict(
                f"list {row.name}: its slots do not match its fingerprint; no key was changed "
                "(call the unblinded statistician)",
                field="list",
                rule="fingerprint",
            )
    with transaction() as session:
        state = session.get(BlindingKeyState, 1, with_for_update=True)
        previous = state.current_key_id if state else ring.ring.key_id
        if state is None:
            session.add(BlindingKeyState(id=1, current_key_id=key_id, changed_at=clock.now()))
        else:
            state.current_key_id, state.changed_at = key_id, clock.now()
        audit.record(
            session,
            actor=actor,
            action="blinding_key.rotated",
            entity_type="key",
            entity_id="blinding_key",
            before={"key_id": previous},
            after={"key_id": key_id},
        )
    ring.use(key_id)
    return previous


def reseal_all(
    *,
    actor: Actor,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
    sweep_after: float = 0.0,
) -> int:
    """Step 2: re-seal every value not under the current key, batch by batch, then recompute
    the fingerprint of every list made under another key. `sweep_after` (time.monotonic) holds
    the final sweep back until every server has had time to see the new current key. Returns
    the number of values re-sealed; Conflict (list, `fingerprint`) for a list that matches no
    key (the values re-sealed so far stay re-sealed)."""
    require_system(actor)
    if batch_size < 1:
        raise InvalidInput("batch_size: must be at least 1", field="batch_size", rule="minimum")
    total = 0
    for model, column, context in SEALED:
        total += _reseal_column(model, column, context, actor, batch_size, progress, False)
    time.sleep(max(0.0, sweep_after - time.monotonic()))
    for model, column, context in SEALED:
        total += _reseal_column(model, column, context, actor, batch_size, progress, True)
    for list_id in read_session().scalars(select(RandomizationList.id).order_by("id")).all():
        _refingerprint(actor, list_id)
    return total


def _reseal_column(
    model: Any,
    column: str,
    context: Callable[[Any], str],
    actor: Actor,
    batch_size: int,
    progress: Progress | None,
    sweep: bool,
) -> int:
    """One pass over a column in id order (`sweep` false), or the sweep: rows still not under
    the current key (skipped while locked, or sealed meanwhile by a server on the old key),
    repeated until none is left or they stay locked for SWEEP_GIVE_UP_AFTER seconds."""
    name, done, after = f"{model.__tablename__}.{column}", 0, 0
    give_up = time.monotonic() + SWEEP_GIVE_UP_AFTER
    while True:
        changed, last = _reseal_batch(model, column, context, actor, batch_size, after, sweep)
        done += changed
        if changed and progress is not None:
            progress(name, done)
        if not sweep:
            if last is None:
                return done
            after = last
        elif last is None:
            if _left(model, column) == 0 or time.monotonic() > give_up:
                return done
            time.sleep(0.05)  # only rows locked by requests are left: let them finish


def _reseal_batch(
    model: Any,
    column: str,
    context: Callable[[Any], str],
    actor: Actor,
    batch_size: int,
    after: int,
    sweep: bool,
) -> tuple[int, int | None]:
    """One batch in its own transaction: (values re-sealed, last row id seen or None)."""
    ring = sealer()
    ring.refresh()
    current = ring.ring.key_id
    sealed = getattr(model, column)
    query = (
        select(model)
        .where(model.id > after, sealed.is_not(None))
        .order_by(model.id)
        .limit(batch_size)
    )
    if sweep:
        query = query.where(not_(sealed.like(f"v1.{current}.%")))
    query = query.with_for_update(skip_locked=True)
    changed = 0
    with transaction() as session:
        rows = session.scalars(query).all()
        for row in rows:
            token = getattr(row, column)
            fresh = ring.reseal(token, context=context(row))
            if fresh != token:
                setattr(row, column, fresh)
                changed += 1
        if changed:
            audit.record(
                session,
                actor=actor,
                action="blinding_key.resealed",
                entity_type="key",
                entity_id="blinding_key",
                after={
                    "key_id": current,
                    "column": f"{model.__tablename__}.{column}",
                    "values": changed,
                    "last_id": rows[-1].id,
                },
            )
    return changed, (rows[-1].id if rows else None)


def _left(model: Any, column: str) -> int:
    session = read_session()
    session.rollback()
    current = sealer().ring.key_id
    return session.scalar(
        select(func.count()).where(
            getattr(model, column).is_not(None),
            not_(getattr(model, column).like(f"v1.{current}.%")),
        )
    )


def _refingerprint(actor: Actor, list_id: int) -> None:
    """The list's fingerprint under the current key, if another key made it. The slots are read
    and unsealed outside any lock; the short transaction then stores the new fingerprint only if
    the stored one has not changed meanwhile (an extension rewrites it with its new slots), and
    starts again otherwise. Conflict (list, `fingerprint`) if no key of the ring matches."""
    ring = sealer()
    while True:
        session = read_session()
        session.rollback()
        row = session.get(RandomizationList, list_id)
        if row is None:
            return
        seen, made_by = row.fingerprint, fingerprint_key(session, row)
        if made_by is None:
            raise Conflict(
                f"list {row.name}: its slots do not match its fingerprint (call the "
                "unblinded statistician)",
                field="list",
                rule="fingerprint",
            )
        current = ring.ring.key_id
        if made_by == current:
            return
        query = select(RandomizationSlot).where(RandomizationSlot.list_id == list_id)
        fresh = schedules.fingerprint(
            [stored_slot(s) for s in session.scalars(query)],
            key=ring.ring.sealer_for(current).derive_key(label=schedules.FINGERPRINT_LABEL),
        )
        with transaction() as writing:
            locked = writing.get(RandomizationList, list_id, with_for_update=True)
            if locked is None or locked.fingerprint != seen:
                continue  # extended (or replaced) meanwhile: read it again
            locked.fingerprint = fresh
            audit.record(
                writing,
                actor=actor,
                action="blinding_key.list_fingerprinted",
                entity_type="randomization_list",
                entity_id=list_id,
                before={"key_id": made_by},
                after={"key_id": current},
            )
        return


def rotate_blinding_key(
    *,
    actor: Actor,
    new_key: bytes,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
    activated: Callable[[str, str], None] | None = None,
) -> int:
    """Steps 1 and 2 in this process: `new_key` joins this server's ring and becomes current,
    then everything is re-sealed in batches (see the module). Other servers must find the key
    in their sources (the CLI writes it to instance/blinding_keys/ first). `activated(new key
    id, previous key id)` runs once the new key is current and before re-sealing (the CLI makes
    it the configured key file then). Returns the number of values re-sealed; errors as
    `activate_blinding_key` and `reseal_all`. Refused (`system_only`) before the new key joins
    this process's ring."""
    require_system(actor)
    ring = sealer()
    key_id = ring.add(new_key)
    previous = activate_blinding_key(actor=actor, key_id=key_id)
    settings = current_app.extensions["iwrs.settings"]
    settings.blinding_key = new_key  # this process's configured key follows the current one
    sweep_after = time.monotonic() + settings.key_refresh_seconds + 0.5
    if activated is not None:
        activated(key_id, previous)
    return reseal_all(
        actor=actor, batch_size=batch_size, progress=progress, sweep_after=sweep_after
    )


def retire_blinding_key(*, actor: Actor, key_id: str) -> None:
    """Step 3: record that `key_id` is retired; the caller then deletes its key file. Conflict
    (field key_id) with rule `current` if it is the current key, `in_use` while any value or
    list fingerprint is still under it (`iwrs keys check` lists them)."""
    require_system(actor)
    ring = sealer()
    ring.refresh(force=True)
    if key_id == ring.ring.key_id:
        raise Conflict(f"key_id: {key_id} is the current key", field="key_id", rule="current")
    left = remaining(actor=actor).under(key_id)
    if left:
        raise Conflict(
            f"key_id: {left} value(s) or list fingerprint(s) are still under {key_id}; run "
            "`iwrs keys reseal` first",
            field="key_id",
            rule="in_use",
        )
    with transaction() as session:
        audit.record(
            session,
            actor=actor,
            action="blinding_key.retired",
            entity_type="key",
            entity_id="blinding_key",
            before={"key_id": key_id},
        )
