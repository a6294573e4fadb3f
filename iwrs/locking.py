"""The lock order, in one place, and the small locking steps the services share.

Every use case that writes takes its row locks in this order, and only those its rule needs
(README rules 4, 5, 7 and 8; issue 13 "locks that match the rules"):

1. the subject row (per subject: one randomization, one dispensation of a visit at a time), then
   the subject's own rows (its kit requests). The idempotency key row is settled last, after
   the counters: only the claim, refusal and release transactions hold it, and they take no
   other lock, so that wait can never close a cycle;
2. site rows, several by code (per site: its stock, its site cap, its screening numbers);
   a shipment row, when the use case starts from one, comes before its site;
3. the active randomization list row, FOR KEY SHARE by randomize and extend_list (so any number
   of them run together), FOR UPDATE only by the writers that replace or re-key the list
   (`_store_list`, key rotation): they wait for randomizations in flight and hold new ones back;
4. the stratum's position row (per stratum: the next slot, strictly in sequence), taken as late
   as possible, after every site and stock check;
5. the slot row, then kit rows (by kit number when several), then their `kit_count` summary
   rows (iwrs.services.kit_counts: written at the flush, in key order, one executemany);
6. LAST, held only through commit: the counters that enforce the study, site and stratum caps
   and number the randomizations (`take_counter`, a conditional increment), site, stratum, study;
7. the audit chain head, in the commit hook (iwrs.audit), after everything else.

Where the use cases stand (read for issue 13): randomize follows every step; dispensing takes
subject, site, then the kit (its kit request, a row of the subject's, after the site: rows only
ever written under their subject's lock cannot deadlock); receipt takes the shipment, its site,
then its kits by number; the resupply run takes one site per transaction (never every site at
once), then depot kits by number. The expiry sweep (supply.apply_expiry, run before shipments
and quarantine decisions) locks expiring kits of every place by number without their sites:
an expired kit is never one that randomize or dispensing picks (usable stock excludes it), and
every multi-kit lock is by kit number, so the sweep waits but closes no cycle. Because the
sweep and a lot's expiry change touch kits without their sites, randomize and dispensing judge
a picked kit again once it is locked (services.supply.lock_dispensable) and pass over one that
changed between the pick and the lock (failpoints `randomize.after_pick`, `dispense.after_pick`).

Nothing wider: no use case locks the trial row but loading the protocol and storing a list
(which also serializes two list stores). A wait is bounded: on PostgreSQL by `lock_timeout`
and `idle_in_transaction_session_timeout` (settings `IWRS_DB_LOCK_TIMEOUT_MS`,
`IWRS_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS`), on SQLite by the busy timeout
(`IWRS_SQLITE_BUSY_TIMEOUT_MS`), where the single write lock (BEGIN IMMEDIATE) makes every
write wait for the one in flight; a wait that times out is answered 503 with rule `busy` and
`Retry-After`, the transaction rolled back (`is_busy`, iwrs.web.handle_unexpected).

Failpoints: `failpoint(name)` freezes the process at a named point when the environment
variable IWRS_FAILPOINT names it (tests of a stuck holder, e.g. `randomize.after_site_lock`);
unset, it costs one dictionary look-up.
"""

from __future__ import annotations

import os
import signal

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from iwrs import config

STUDY = "study"

# SQLSTATEs of a bounded wait that ran out, or of a transaction the server gave up on:
# lock_not_available (lock_timeout, NOWAIT), query_canceled (statement or lock timeout),
# idle_in_transaction_session_timeout, deadlock_detected, serialization_failure.
BUSY_SQLSTATES = frozenset({"55P03", "57014", "25P03", "40P01", "40001"})
# Seconds a client is told to wait before retrying (Retry-After).
RETRY_AFTER_SECONDS = 2


def counter_name(kind: str, key: object = None) -> str:
    """The counter's row name: "study", "site:<site id>" or "stratum:<stratum key>"."""
    return STUDY if kind == STUDY else f"{kind}:{key}"


def read_counters(session: Session, names: list[str]) -> dict[str, int]:
    """The counters' committed values, unlocked (0 for a counter not created yet): the early
    cap check that keeps the refusals' order; `take_counter` decides."""
    from iwrs.models.randomization import RandomizationCounter  # iwrs.db imports this module

    rows = session.execute(
        select(RandomizationCounter.name, RandomizationCounter.value).where(
            RandomizationCounter.name.in_(names)
        )
    ).all()
    found = {name: value for name, value in rows}
    return {name: found.get(name, 0) for name in names}


def take_counter(session: Session, name: str, cap: int) -> int | None:
    """Raise the counter by one if it is below `cap`; return its new value, or None at the cap.

    One conditional UPDATE ... RETURNING, like the audit chain head: it locks the counter row
    until commit, so take it last (lock order step 6). A rolled-back transaction gives its
    increment back, so the study counter numbers randomizations without gaps. A counter not
    created yet is created at 0 (INSERT ... ON CONFLICT DO NOTHING waits for a concurrent
    creator), then raised."""
    from iwrs.models.randomization import RandomizationCounter

    for _ in range(2):
        value = session.execute(
            update(RandomizationCounter)
            .where(RandomizationCounter.name == name, RandomizationCounter.value < cap)
            .values(value=RandomizationCounter.value + 1)
            .returning(RandomizationCounter.value)
        ).scalar_one_or_none()
        if value is not None:
            return value
        exists = session.scalar(
            select(func.count())
            .select_from(RandomizationCounter)
            .where(RandomizationCounter.name == name)
        )
        if exists or cap < 1:
            return None
        session.execute(_insert_if_absent(session).values(name=name, value=0))
    raise RuntimeError(f"counter {name} could not be created")  # pragma: no cover


def _insert_if_absent(session: Session):  # type: ignore[no-untyped-def]
    from iwrs.models.randomization import RandomizationCounter

    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return pg_insert(RandomizationCounter).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite_insert(RandomizationCounter).on_conflict_do_nothing()
    return insert(RandomizationCounter)  # pragma: no cover - the two supported backends


def is_busy(error: BaseException) -> bool:
    """Whether a database error is a bounded wait that ran out (a lock or busy timeout, the
    idle-in-transaction limit, a deadlock or serialization failure): the request may be retried.
    A server that cannot be reached is not busy."""
    if not isinstance(error, DBAPIError):
        return False
    orig = error.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in BUSY_SQLSTATES:
        return True
    message = str(orig).lower()
    return "database is locked" in message or "database is busy" in message


def failpoint(name: str) -> None:
    """Freeze here when IWRS_FAILPOINT names this point (tests of a stuck holder): write the
    marker file IWRS_FAILPOINT_MARKER (if set), then stop the whole process with SIGSTOP, as a
    debugger or a stalled machine would; SIGCONT resumes it, SIGKILL ends it."""
    armed, marker = config.failpoint_armed(name)
    if not armed:
        return
    if marker:
        marker.write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGSTOP)
