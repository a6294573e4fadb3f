"""The sealed used-slots-by-arm summary of each stratum (`StratumTally`, issue 13).

The statistician's list status read and unsealed every used slot at each view (80,000 at the
scale world); it now reads one sealed row per stratum. Kept like `kit_count` and the
randomization counters, in the writer's own transaction:
- a new list's strata start at zero (`add_zero`, with their position rows);
- a randomization, holding its stratum's position lock, reads the tally in the same locking
  statement (`_next_slot`) and advances it (`advanced`): never a lock of its own, never held
  by another stratum;
- a stratum whose tally is NULL (a list from before migration 0021) is counted once by the
  statistician's view (`count_missing`), stratum by stratum, each under its position lock.
The blind: the counts are sealed with the blinding key under TALLY_CONTEXT (bound to the list
and stratum) as fixed-width text, so neither the token's length nor anything else in the row
tells which arm's count grew; the token changes at every randomization in the stratum, which the
position's `next_sequence` already shows. Only the unblinded statistician's views open it.
Key rotation re-seals it with every other sealed column (services.keys.SEALED).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from iwrs import audit
from iwrs.audit import Actor
from iwrs.auth import Permission
from iwrs.db import read_session, transaction
from iwrs.models.randomization import (
    Randomization,
    RandomizationList,
    RandomizationSlot,
    StratumPosition,
    StratumTally,
)
from iwrs.services.supply import acting_user, protocol, sealer, unseal_cached
from iwrs.services.users import require_system

TALLY_CONTEXT = "stratum-tally:{list_id}:{stratum}"
WIDTH = 10  # digits per count: a stratum never holds 10,000,000,000 slots


def _codes() -> list[str]:
    return [arm.code for arm in protocol().arms]


def encode(counts: Mapping[str, int], codes: Sequence[str]) -> str:
    """Fixed-width text of the counts, every arm of the protocol in its order."""
    return ";".join(f"{code}={counts.get(code, 0):0{WIDTH}d}" for code in codes)


def decode(text: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for part in text.split(";"):
        code, _, n = part.partition("=")
        counts[code] = int(n)
    return counts


def _context(tally: StratumTally) -> str:
    return TALLY_CONTEXT.format(list_id=tally.list_id, stratum=tally.stratum)


def _seal(tally: StratumTally, counts: Mapping[str, int]) -> str:
    return sealer().seal(encode(counts, _codes()), context=_context(tally))


def counts_of(tally: StratumTally) -> Counter[str] | None:
    """The tally's counts by arm (None: not counted yet). Through the process's cache."""
    return opened(tally.id, tally.list_id, tally.stratum, tally.sealed_counts)


def opened(
    tally_id: int, list_id: int, stratum: str, sealed_counts: str | None
) -> Counter[str] | None:
    """`counts_of` from a plain row (id, list_id, stratum, sealed_counts)."""
    if sealed_counts is None:
        return None
    context = TALLY_CONTEXT.format(list_id=list_id, stratum=stratum)
    return decode(unseal_cached("stratum_tally", tally_id, sealed_counts, context=context))


def add_zero(session: Session, list_id: int, stratum: str) -> None:
    """A new stratum's tally: nothing used."""
    tally = StratumTally(list_id=list_id, stratum=stratum)
    tally.sealed_counts = _seal(tally, {})
    session.add(tally)


def advanced(tally: StratumTally, arm: str) -> None:
    """Count one more used slot of `arm` (the caller holds the stratum's position lock). A tally
    not counted yet stays NULL: the statistician's view counts it whole."""
    counts = counts_of(tally)
    if counts is None:
        return
    counts[arm] += 1
    # Inside the randomization's write transaction: under the key held (refreshed before it).
    tally.sealed_counts = sealer().seal_held(encode(counts, _codes()), context=_context(tally))


def count_missing(session: Session, list_id: int) -> None:
    """Count, in this transaction, every stratum of the list whose tally is NULL."""
    missing = session.scalars(
        select(StratumTally.stratum)
        .where(StratumTally.list_id == list_id, StratumTally.sealed_counts.is_(None))
        .order_by(StratumTally.stratum)
    ).all()
    for stratum in missing:
        count_stratum(session, list_id, stratum)


def fill_missing(actor: Actor) -> int:
    """Count the strata of the active list not counted yet, each in its own short transaction
    under its position lock (the randomizations of that stratum wait for it; no other does), so
    the first view after migration 0021 never holds every stratum at once; returns how many.
    One statement when nothing is missing. `iwrs init` runs it right after migrating (the
    scale world's 200 strata, 80,000 used slots: about 10-55 s), so no view waits for it.
    The unblinded statistician's or the operator's (as `acting_user` / `require_system`)."""
    missing = (
        read_session()
        .execute(
            select(StratumTally.list_id, StratumTally.stratum)
            .join(RandomizationList, RandomizationList.id == StratumTally.list_id)
            .where(RandomizationList.active.is_(True), StratumTally.sealed_counts.is_(None))
            .order_by(StratumTally.list_id, StratumTally.stratum)
        )
        .all()
    )
    counted = 0
    for list_id, stratum in missing:
        with transaction() as session:
            if actor.role == "system":
                require_system(actor)
            else:
                acting_user(session, actor, Permission.SEE_ARM)
            if count_stratum(session, list_id, stratum):
                counted += 1
                audit.record(  # the stratum only: never a count
                    session,
                    actor=actor,
                    action="stratum_tally.counted",
                    entity_type="randomization_list",
                    entity_id=str(list_id),
                    after={"stratum": stratum},
                )
    return counted


def count_stratum(session: Session, list_id: int, stratum: str) -> bool:
    """Lock the stratum's position (and tally) and count its used slots by arm, if its tally is
    still NULL (True then)."""
    from iwrs.services.randomization import slot_arm

    locked = session.execute(
        select(StratumPosition, StratumTally)
        .join(
            StratumTally,
            (StratumTally.list_id == StratumPosition.list_id)
            & (StratumTally.stratum == StratumPosition.stratum),
        )
        .where(StratumPosition.list_id == list_id, StratumPosition.stratum == stratum)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if locked is None or locked[1].sealed_counts is not None:
        return False
    tally = locked[1]
    slots = session.scalars(
        select(RandomizationSlot)
        .join(Randomization, Randomization.slot_id == RandomizationSlot.id)
        .where(RandomizationSlot.list_id == list_id, RandomizationSlot.stratum == stratum)
    )
    tally.sealed_counts = _seal(tally, Counter(slot_arm(slot) for slot in slots))
    session.flush()
    return True
