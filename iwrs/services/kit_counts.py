"""The kit summary `kit_count` (issue 13): kits per (place kind, place id, blinded lot, state).

Why: the supply page counted every kit by GROUP BY (160 ms at 890,000 kits, growing with the
trial). The summary answers its counts by primary key, O(rows shown).

How it is kept (decisions):
- In the same flush as the kit rows: a Session `after_flush` hook reads each new, changed or
  deleted `Kit` (the attribute history of state, place and lot) and sends the deltas as one
  upsert (`INSERT .. ON CONFLICT DO UPDATE SET n = n + delta`, executemany) on the flush's
  connection, so the summary commits, or rolls back (savepoints too), with the kits. Every
  ORM write of a kit is caught, whichever service makes it (the ledger gateway
  `supply._apply`, kit creation `supply._store_kits`); a bulk SQL write of kits (the scale
  generator, a migration) must call `rebuild` (bench/scale.py does).
- Rows are upserted in key order, so two transactions lock shared rows in the same order (no
  deadlock); a row that falls to 0 stays (no delete/insert race); readers skip n = 0.
- Contention: a row is one place's lot in one state, so concurrent dispensings at different
  sites never touch the same row (no trial-wide hot row, unlike a per-lot total).
- Depot rows are shared by every transaction that moves the depot's kits of a lot (shipment
  requests, cancellations, a resupply run's sites): they queue on that row from the flush to
  commit. Kit-number locks come first (iwrs.locking step 5), so the queue closes no cycle.
- The blind: no arm or treatment in the key; counts by blinded lot as the pages showed before.
- Consistency: `mismatches` compares the summary with a fresh COUNT(*) GROUP BY; `iwrs supply
  check-ledger` reports each difference (tests/integration/test_kit_counts.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import String, cast, delete, event, func, inspect, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from iwrs.audit import Actor
from iwrs.db import read_session
from iwrs.models.supply import Kit, KitCount

Key = tuple[str, int, int, str]  # place kind, place id, lot id, state


def _state(value: Any) -> str:
    return str(value.value if hasattr(value, "value") else value)


def _key_now(kit: Kit) -> Key:
    return (kit.place_kind, kit.place_id, kit.lot_id, _state(kit.state))


def _key_before(kit: Kit) -> Key | None:
    """The kit's key as last flushed (None when no counted column changed)."""
    state = inspect(kit)
    values = []
    changed = False
    for name in ("place_kind", "place_id", "lot_id", "state"):
        history = state.attrs[name].history
        if history.deleted:
            changed = True
            values.append(history.deleted[0])
        else:
            values.append(getattr(kit, name))
    if not changed:
        return None
    return (values[0], values[1], values[2], _state(values[3]))


def deltas(session: Session) -> Counter[Key]:
    """The flush's changes to the summary: +1/-1 per kit key added/left."""
    moves: Counter[Key] = Counter()
    for obj in session.new:
        if isinstance(obj, Kit):
            moves[_key_now(obj)] += 1
    for obj in session.dirty:
        if isinstance(obj, Kit):
            before = _key_before(obj)
            if before is not None and before != _key_now(obj):
                moves[before] -= 1
                moves[_key_now(obj)] += 1
    for obj in session.deleted:
        if isinstance(obj, Kit):
            moves[_key_before(obj) or _key_now(obj)] -= 1
    return moves


def apply(session: Session, moves: Counter[Key]) -> None:
    """Upsert the non-zero deltas, in key order, in one executemany on the session's connection."""
    rows = [
        {"place_kind": k[0], "place_id": k[1], "lot_id": k[2], "state": k[3], "n": d}
        for k, d in sorted(moves.items())
        if d
    ]
    if not rows:
        return
    connection = session.connection()
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(KitCount)
    statement = insert.on_conflict_do_update(
        index_elements=["place_kind", "place_id", "lot_id", "state"],
        set_={"n": KitCount.n + insert.excluded.n},
    )
    connection.execute(statement, rows)


@event.listens_for(Session, "after_flush")
def _keep_counts(session: Session, _context: Any) -> None:
    apply(session, deltas(session))


def fresh_counts(session: Session) -> dict[Key, int]:
    """The summary as a COUNT(*) GROUP BY over every kit computes it (a report: reads them all)."""
    query = select(
        Kit.place_kind, Kit.place_id, Kit.lot_id, cast(Kit.state, String), func.count()
    ).group_by(Kit.place_kind, Kit.place_id, Kit.lot_id, cast(Kit.state, String))
    return {(pk, pid, lot, _state(st)): n for pk, pid, lot, st, n in session.execute(query)}


def mismatches(*, actor: Actor) -> list[tuple[Key, int, int]]:
    """Each key whose summary count differs from the kits: (key, summary, fresh), by key (the
    operator's `iwrs supply check-ledger`: Forbidden `system_only` for a person)."""
    from iwrs.services.users import require_system

    require_system(actor)
    session = read_session()
    fresh = fresh_counts(session)
    kept = {
        (r.place_kind, r.place_id, r.lot_id, r.state): r.n
        for r in session.scalars(select(KitCount))
    }
    keys = sorted(set(fresh) | {k for k, n in kept.items() if n})
    return [(k, kept.get(k, 0), fresh.get(k, 0)) for k in keys if kept.get(k, 0) != fresh.get(k, 0)]


REBUILD_SQL = (
    "INSERT INTO kit_count (place_kind, place_id, lot_id, state, n) "
    "SELECT place_kind, place_id, lot_id, CAST(state AS VARCHAR(24)), count(*) FROM kit "
    "GROUP BY place_kind, place_id, lot_id, CAST(state AS VARCHAR(24))"
)


def rebuild(session: Session) -> None:
    """Recount the summary from the kits (after a bulk SQL write of kits; one GROUP BY)."""
    session.execute(delete(KitCount))
    session.execute(text(REBUILD_SQL))
