"""Use cases for randomization: lists (generate, import, extend, status) and `randomize`, the
transaction at the heart of the trial.

Locking, so each slot and each kit is used once under any concurrency, on SQLite and PostgreSQL,
and no lock is wider than its rule (the order and the timeouts: iwrs/locking.py). SQLite takes
its write lock at BEGIN IMMEDIATE (iwrs.db.transaction). PostgreSQL locks rows where the decision
is made: the subject (a retry returns the first result), the site row (its stock), the active
list FOR KEY SHARE (never replaced under a randomization), the stratum's position row (the next
slot, strictly in sequence), the slot and the kit; last, held only through commit, the counters
of the site, stratum and study caps, whose study value is the randomization number; then the
audit chain head at commit. No trial-wide lock: a randomization stuck at one site delays no
other site until it holds the counters, and then for at most the lock timeout.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.orm import Session, lazyload

from blinding import list_mapping, schedules
from iwrs import audit, clock, locking, signatures, validation
from iwrs.audit import Actor
from iwrs.auth import Permission, not_found
from iwrs.db import transaction
from iwrs.errors import Conflict, Forbidden, InvalidInput, NotFound
from iwrs.models.randomization import (
    Dispensation,
    Randomization,
    RandomizationList,
    RandomizationSlot,
    StratumPosition,
    StratumTally,
)
from iwrs.models.sites import Site, SiteStatus, Trial
from iwrs.models.subjects import Subject, SubjectStatus
from iwrs.models.supply import Kit
from iwrs.services import stratum_tallies
from iwrs.services.subjects import _investigator, require_confirmed_eligible
from iwrs.services.supply import (
    ShelfTreatments,
    _apply,
    acting_user,
    kit_check,
    lock_dispensable,
    open_alert,
    protocol,
    sealer,
    unseal_cached,
    usable_shelf,
    usable_through,
)
from iwrs.services.users import confirm_signature, sign
from supply.states import KitAction, Place

SLOT_CONTEXT = "slot:{list_id}:{stratum}:{sequence}"
BLOCK_CONTEXT = "slot-block:{list_id}:{stratum}:{sequence}"
SEED_CONTEXT = "list-seed:{list_id}"
MAPPING_CONTEXT = "list-mapping:{list_id}"
# Reads of the shelf when picked kits keep changing under the pick (expiry, quarantine).
REPICKS = 3
NO_STOCK = (
    "randomization refused: site {site} holds no dispensable kit for a new subject. Nothing was "
    "recorded; the supply manager has been alerted. Try again when the resupply is received."
)


def tie_break() -> Callable[[int], int]:
    """The source of random choices that are not the arm (kit tie-breaks): cryptographic in
    production, seedable in tests so two mirror-image worlds make the same choices."""
    return current_app.extensions.get("iwrs.tie_break", secrets.randbelow)


def _strata() -> list[str]:
    return schedules.strata(
        [(f.factor, [lv.code for lv in f.levels]) for f in protocol().stratification]
    )


def _arms() -> list[tuple[str, int]]:
    return [(a.code, a.ratio) for a in protocol().arms]


def slot_arm(slot: RandomizationSlot) -> str:
    """Unseal a slot's arm: only inside services, behind SEE_ARM or the randomize transaction.
    Through the process's cache of opened tokens (services.supply.unseal_cached, issue 13: the
    statistician's status reads every used slot at each view)."""
    return unseal_cached(
        "randomization_slot",
        slot.id,
        slot.sealed_arm,
        context=SLOT_CONTEXT.format(
            list_id=slot.list_id, stratum=slot.stratum, sequence=slot.sequence
        ),
    )


def slot_block(slot: RandomizationSlot) -> tuple[int, int]:
    """Unseal a slot's (block number, block size); (0, 0) for an imported table without blocks."""
    block, _, size = (
        sealer()
        .unseal(
            slot.sealed_block,
            context=BLOCK_CONTEXT.format(
                list_id=slot.list_id, stratum=slot.stratum, sequence=slot.sequence
            ),
        )
        .partition("/")
    )
    return int(block), int(size)


def stored_slot(slot: RandomizationSlot) -> schedules.Slot:
    """A stored slot, unsealed (arm and block): only for the statistician's use cases."""
    block, size = slot_block(slot)
    return schedules.Slot(slot.stratum, slot.sequence, block, size, slot_arm(slot))


def list_fingerprint(slots: list[schedules.Slot]) -> str:
    """The list's keyed fingerprint (blinding.schedules.fingerprint) under the current key."""
    return schedules.fingerprint(slots, key=sealer().derive_key(label=schedules.FINGERPRINT_LABEL))


def _stored_slots(session: Session, list_id: int) -> list[schedules.Slot]:
    query = select(RandomizationSlot).where(RandomizationSlot.list_id == list_id)
    return [stored_slot(s) for s in session.scalars(query)]


def _environment_allows(dummy: bool) -> None:
    if dummy and current_app.extensions["iwrs.settings"].environment == "production":
        raise Conflict(
            "a dummy (UAT) list can never be used in a production trial database",
            field="dummy",
            rule="no_dummy_in_production",
        )


def _store_list(
    session: Session,
    slots: list[schedules.Slot],
    *,
    actor: Actor,
    name: str,
    dummy: bool,
    source: str,
    seed: bytes,
    mapping: list_mapping.ListMapping | None = None,
) -> RandomizationList:
    # The trial row serializes list stores (lists stored at the same moment leave one of them
    # active); randomize never takes it. The active list FOR UPDATE waits for randomizations
    # in flight (they hold it FOR KEY SHARE, share_active_list) and holds new ones back, so a
    # list is never replaced while a subject is being randomized on it (iwrs/locking.py).
    session.scalars(select(Trial).with_for_update()).one()
    current = session.scalars(
        select(RandomizationList).where(RandomizationList.active.is_(True)).with_for_update()
    ).first()
    if current is not None:
        if current.locked_at is not None:
            raise Conflict(
                f"list {current.name} is locked since the first randomization: it can only be "
                "extended by whole blocks, never replaced",
                field="list",
                rule="locked",
            )
        current.active = False
    row = RandomizationList(
        name=name,
        dummy=dummy,
        source=source,
        algorithm=schedules.ALGORITHM_VERSION,
        sealed_seed="",
        fingerprint=list_fingerprint(slots),
        active=True,
        created_at=clock.now(),
        created_by_id=actor.user_id,
    )
    session.add(row)
    session.flush()
    row.sealed_seed = sealer().seal(seed.hex(), context=SEED_CONTEXT.format(list_id=row.id))
    if mapping is not None:
        row.sealed_mapping = sealer().seal(
            mapping.to_json(), context=MAPPING_CONTEXT.format(list_id=row.id)
        )
    _add_slots(session, row, slots)
    audit.record(
        session,
        actor=actor,
        action=f"list.{source}",
        entity_type="randomization_list",
        entity_id=row.id,
        after={
            "name": name,
            "dummy": dummy,
            # No fingerprint here: keyed, it reveals nothing, but it differs whenever the arms
            # do, and the trail is read by blinded auditors. The statistician sees it.
            "algorithm": row.algorithm,
            "slots_per_stratum": {
                s: sum(1 for x in slots if x.stratum == s)
                for s in sorted({x.stratum for x in slots})
            },
            "replaces": current.name if current else None,
            # The columns and factor levels, never which raw value is which arm (the trail
            # is read by blinded auditors): that map is sealed with the list.
            **({"mapping": _audited_mapping(mapping)} if mapping is not None else {}),
        },
    )
    return row


def _audited_mapping(mapping: list_mapping.ListMapping) -> dict[str, object]:
    return {
        "columns": mapping.columns(),
        "sequence_scope": mapping.sequence_scope,
        "factor_levels": {name: dict(f.levels) for name, f in mapping.factors.items()},
        "arm_values_mapped": len(mapping.arm_values),
    }


def list_mapping_of(row: RandomizationList) -> list_mapping.ListMapping | None:
    """The unsealed mapping an imported list was read through (None: generated or native)."""
    if row.sealed_mapping is None:
        return None
    text = sealer().unseal(row.sealed_mapping, context=MAPPING_CONTEXT.format(list_id=row.id))
    return list_mapping.ListMapping.from_json(text)


def _add_slots(session: Session, row: RandomizationList, slots: list[schedules.Slot]) -> None:
    for slot in slots:
        where = {"list_id": row.id, "stratum": slot.stratum, "sequence": slot.sequence}
        session.add(
            RandomizationSlot(
                **where,
                sealed_arm=sealer().seal(slot.arm, context=SLOT_CONTEXT.format(**where)),
                sealed_block=sealer().seal(
                    f"{slot.block}/{slot.block_size}", context=BLOCK_CONTEXT.format(**where)
                ),
            )
        )
    for stratum in sorted({s.stratum for s in slots}):
        last = max(s.sequence for s in slots if s.stratum == stratum)
        position = session.get(StratumPosition, (row.id, stratum))
        if position is None:
            session.add(
                StratumPosition(
                    list_id=row.id, stratum=stratum, next_sequence=1, last_sequence=last
                )
            )
            stratum_tallies.add_zero(session, row.id, stratum)
        else:
            position.last_sequence = last
    session.flush()


def generate_list(
    *, actor: Actor, name: str, dummy: bool = False, seed: bytes | None = None
) -> RandomizationList:
    """Generate stratified permuted-block lists from a 256-bit seed (the statistician)."""
    name = validation.text(name, field="name", kind="name")
    _environment_allows(dummy)
    seed = seed or secrets.token_bytes(32)
    p = protocol()
    slots = schedules.generate_schedule(
        seed=seed,
        strata=_strata(),
        arms=_arms(),
        block_sizes=p.block_sizes,
        slots_per_stratum=p.slots_per_stratum,
        algorithm=p.algorithm,
    )
    with transaction() as session:
        acting_user(session, actor, Permission.MANAGE_LISTS)
        return _store_list(
            session, slots, actor=actor, name=name, dummy=dummy, source="generated", seed=seed
        )


def import_list(
    *,
    actor: Actor,
    name: str,
    csv_text: str,
    dummy: bool = False,
    mapping: list_mapping.ListMapping | None = None,
) -> RandomizationList:
    """Import a statistician-supplied list (native or REDCap layout, or any file through a
    column mapping, which is stored sealed with the list); every bad row named.
    Decision: the role is checked before the file is parsed (a refused role learns nothing
    from the parser and costs no parse), and again on the stored user in the transaction."""
    from iwrs.services.users import may

    if actor.user_id is None or not may(actor, Permission.MANAGE_LISTS):
        raise Forbidden("only the unblinded statistician imports a list", rule="permission")
    name = validation.text(name, field="name", kind="name")
    _environment_allows(dummy)
    p = protocol()
    factor_names = [f.factor for f in p.stratification]
    if mapping is None:
        slots, errors = schedules.import_schedule(
            csv_text,
            arms=_arms(),
            strata=_strata(),
            factor_names=factor_names,
            block_sizes=p.block_sizes,
        )
    else:
        slots, errors = list_mapping.import_mapped(
            csv_text,
            mapping,
            arms=_arms(),
            strata=_strata(),
            factor_names=factor_names,
            factor_levels={f.factor: [lv.code for lv in f.levels] for f in p.stratification},
            block_sizes=p.block_sizes,
        )
    if errors:
        raise InvalidInput(
            f"the list was rejected whole: {len(errors)} problem(s); "
            + "; ".join(e.message for e in errors[:20]),
            errors=[{"field": e.field, "rule": e.rule, "message": e.message} for e in errors],
        )
    missing = sorted(set(_strata()) - {s.stratum for s in slots})
    if missing:
        raise InvalidInput(
            f"the list has no slots for stratum {', '.join(missing)}",
            field="stratum",
            rule="every_stratum",
        )
    with transaction() as session:
        acting_user(session, actor, Permission.MANAGE_LISTS)
        # Extensions of an imported list draw from this fresh seed (kept sealed with the list).
        return _store_list(
            session,
            slots,
            actor=actor,
            name=name,
            dummy=dummy,
            source="imported",
            seed=secrets.token_bytes(32),
            mapping=mapping,
        )


def extend_list(*, actor: Actor, stratum: str, blocks: int, reason: str) -> int:
    """Append whole blocks to one stratum of the active list (never edits existing slots)."""
    reason = validation.reason(reason)
    if not 1 <= blocks <= 100:
        raise InvalidInput("blocks: between 1 and 100", field="blocks", rule="range")
    with transaction() as session:
        acting_user(session, actor, Permission.MANAGE_LISTS)
        row = share_active_list(session)  # never extends a list being replaced
        if row is None:
            raise NotFound("there is no active randomization list", field="list", rule="exists")
        position = session.scalars(
            select(StratumPosition)
            .where(StratumPosition.list_id == row.id, StratumPosition.stratum == stratum)
            .with_for_update()
        ).first()
        if position is None:
            raise NotFound(
                f"stratum: {stratum!r} is not a stratum of the list", field="stratum", rule="exists"
            )
        every = _stored_slots(session, row.id)
        existing = sorted((s for s in every if s.stratum == stratum), key=lambda s: s.sequence)
        seed = bytes.fromhex(
            sealer().unseal(row.sealed_seed, context=SEED_CONTEXT.format(list_id=row.id))
        )
        new = schedules.extend_stratum(
            existing,
            seed=seed,
            arms=_arms(),
            block_sizes=protocol().block_sizes,
            blocks=blocks,
            stratum=stratum,
        )
        _add_slots(session, row, new)
        # The fingerprint names the list as it now is (every slot, the new blocks included).
        row.fingerprint = list_fingerprint(every + new)
        audit.record(
            session,
            actor=actor,
            action="list.extended",
            entity_type="randomization_list",
            entity_id=row.id,
            reason=reason.strip(),
            # Not the slots added: the trail is read by blinded auditors, and the number of
            # slots in the appended blocks is the sum of their (sealed) sizes.
            after={"stratum": stratum, "blocks": blocks},
        )
        return len(new)


# --- randomize -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VisitPlan:
    code: str
    name: str
    target: date
    earliest: date
    latest: date
    kits: int


@dataclass(frozen=True)
class RandomizationResult:
    """What the investigator sees: never the arm."""

    subject_id: int
    screening_number: str
    randomization_number: str
    kit_number: str
    stratum: dict[str, str]
    randomized_on: date
    visits: tuple[VisitPlan, ...]


def visit_plan(day1: date) -> tuple[VisitPlan, ...]:
    return tuple(
        VisitPlan(
            v.code,
            v.name,
            day1 + timedelta(days=v.day - 1),
            day1 + timedelta(days=v.day - 1 - v.window_before),
            day1 + timedelta(days=v.day - 1 + v.window_after),
            v.kits,
        )
        for v in protocol().visits
    )


def _result(session: Session, row: Randomization, kit: Kit | None = None) -> RandomizationResult:
    """The result of the randomization `row`; `kit`: its day-1 kit when the caller has it (the
    transaction that just dispensed it), else read (the subject's first dispensation)."""
    subject = session.get(Subject, row.subject_id)
    assert subject is not None
    if kit is None:
        first = session.scalars(
            select(Dispensation)
            .where(Dispensation.subject_id == subject.id)
            .order_by(Dispensation.id)
        ).first()
        kit = session.get(Kit, first.kit_id) if first else None
    day1 = row.randomized_on
    return RandomizationResult(
        subject.id,
        subject.screening_number,
        row.randomization_number,
        kit.number if kit else "",
        dict(schedules.stratum_levels(row.stratum)),
        day1,
        visit_plan(day1),
    )


class _Refusal(Exception):
    """A refusal decided inside the transaction whose alert must still be committed."""

    def __init__(self, error: Conflict) -> None:
        self.error = error


def randomize(
    *,
    actor: Actor,
    subject_id: int,
    signer_password: str,
    understood: bool,
    idempotency_key: str | None = None,
) -> RandomizationResult:
    """Randomize a confirmed-eligible subject at an active site with stock of every arm:
    next slot of the stratum, a kit of the slot's arm, all in one transaction. A retried
    request for the same subject returns the first result. `understood`: the caller confirmed
    randomization cannot be undone (rule required, field understood; checked first).

    With `idempotency_key` (1-100 characters, scoped to the actor) the key's first outcome,
    success or refusal, is stored and every retry with the key gets it back, never a new
    decision (iwrs.services.keyed_randomization; the rules in iwrs.services.idempotency)."""
    validation.require_understood(understood, step="randomization")
    if idempotency_key is not None:
        from iwrs.services import keyed_randomization

        answer = keyed_randomization.randomize_answer(
            actor=actor,
            subject_id=subject_id,
            signer_password=signer_password,
            understood=understood,
            idempotency_key=idempotency_key,
        )
        return keyed_randomization.result_from_document(answer.body)
    earlier = _earlier(actor, subject_id)
    if earlier is not None:
        return earlier
    confirm_signature(signer_id=actor.user_id, password=signer_password)
    sealer().refresh()  # the current key id, read before the write lock (LiveRing.seal_held)
    refusal: Conflict | None = None
    with transaction() as session:
        try:
            result = _randomize(session, actor, subject_id)
        except _Refusal as stop:
            refusal, result = stop.error, None
    if refusal is not None:
        raise refusal
    assert result is not None
    return result


def _earlier(actor: Actor, subject_id: int) -> RandomizationResult | None:
    """The subject's randomization if it exists (a retry without a key), answered only to an
    investigator of the subject's site. A short read of its own: no write transaction (on
    SQLite, no wait for the write lock), and its connection back in the pool before the
    randomization's transaction takes one."""
    with current_app.extensions["iwrs.sessionmaker"]() as session:
        subject = session.get(Subject, subject_id)
        if subject is None:
            return None  # refused by _randomize, after the signature
        try:
            _investigator(session, actor, subject.site_id)
        except NotFound:
            return None  # another site's subject: refused alike, after the signature
        row = session.scalars(
            select(Randomization).where(Randomization.subject_id == subject_id)
        ).first()
        return _result(session, row) if row is not None else None


def _randomize(session: Session, actor: Actor, subject_id: int) -> RandomizationResult:
    """The randomize transaction, its locks in the order of iwrs/locking.py: subject, site,
    the list (shared), the stratum's position and slot, the kit, and last the counters (site,
    stratum, study) that enforce the caps and give the number; the chain head at commit."""
    # The site is read once, locked, by _lock_active_site (not also by the relationship's
    # selectin load here): `subject.site` then comes from the session's identity map.
    subject = session.scalars(
        select(Subject)
        .where(Subject.id == subject_id)
        .options(lazyload(Subject.site))
        .with_for_update()
    ).first()
    if subject is None:
        raise NotFound(f"subject {subject_id} does not exist", field="subject_id", rule="exists")
    _investigator(
        session, actor, subject.site_id, not_found("subject", subject_id, field="subject_id")
    )
    done = session.scalars(
        select(Randomization).where(Randomization.subject_id == subject.id)
    ).first()
    if done is not None:  # a concurrent retry won: return its result
        return _result(session, done)
    confirmed = require_confirmed_eligible(session, subject)
    site = _lock_active_site(session, subject)
    locking.failpoint("randomize.after_site_lock")
    stratum = schedules.stratum_key(
        json.loads(confirmed.stratum or "{}"), [f.factor for f in protocol().stratification]
    )
    caps = _Caps.of(site, stratum)
    caps.check(locking.read_counters(session, caps.names()))
    today = clock.today(site)
    shelf = _require_stock(session, site, today)
    rlist = _share_list_to_randomize(session)
    position, tally, slot = _next_slot(session, rlist, stratum)
    locking.failpoint("randomize.after_stratum_lock")
    arm = slot_arm(slot)
    kit = _checked_kit(session, site, shelf, arm, today)
    now = clock.now()
    position.next_sequence += 1
    stratum_tallies.advanced(tally, arm)  # under the position lock, whichever the arm
    if rlist.locked_at is None:  # the first randomization locks the list; the first time stays
        session.execute(
            update(RandomizationList)
            .where(RandomizationList.id == rlist.id, RandomizationList.locked_at.is_(None))
            .values(locked_at=now)
        )
    _dispense_first_kit(session, actor, subject, kit, now)
    # The subject's new status is written before the counters too: the study counter is held
    # from its increment to the commit (by every randomization in turn), so what does not need
    # the number is done before it is taken. A cap reached there rolls all of it back.
    was = str(subject.status)
    subject.status, subject.status_changed_at = SubjectStatus.RANDOMIZED, now
    session.flush()  # every row change above reaches the database before the counters
    number = caps.take(session)
    locking.failpoint("randomize.after_counters")
    return _record(session, actor, subject, site, slot, kit, rlist, (number, today, now), was)


def _lock_active_site(session: Session, subject: Subject) -> Site:
    """The subject's site, locked (per site: its stock and its site cap), which must be active."""
    site = session.scalars(select(Site).where(Site.id == subject.site_id).with_for_update()).one()
    if site.status != SiteStatus.ACTIVE:
        raise Conflict(
            f"site {site.code} is {site.status}; randomization needs an active site",
            field="site",
            rule="site_active",
        )
    return site


@dataclass(frozen=True)
class _Caps:
    """The three caps of a randomization and their counters (iwrs.locking.take_counter), in the
    order they are taken: the site's, the stratum's, the study's (widest last)."""

    limits: tuple[tuple[str, int, str], ...]  # (counter name, cap, what, for the refusal)

    @classmethod
    def of(cls, site: Site, stratum: str) -> _Caps:
        p = protocol()
        return cls(
            (
                (locking.counter_name("site", site.id), p.site_cap, f"site {site.code}"),
                (locking.counter_name("stratum", stratum), p.stratum_cap, f"stratum {stratum}"),
                (locking.counter_name(locking.STUDY), p.enrolment_cap, "the study"),
            )
        )

    def names(self) -> list[str]:
        return [name for name, _, _ in self.limits]

    def check(self, counts: dict[str, int]) -> None:
        """Refuse early (unlocked read) when a cap is reached: the refusal comes before any
        stock or list check, as it always did; `take` decides under the counters' locks."""
        # Study first, as before: the refusal names the widest cap reached.
        for name, cap, what in reversed(self.limits):
            if counts[name] >= cap:
                raise self._refusal(cap, what)

    def take(self, session: Session) -> int:
        """Raise every counter (lock order step 6); the study's new value numbers the
        randomization. A cap reached meanwhile refuses, and the rollback undoes everything."""
        value = 0
        for name, cap, what in self.limits:
            taken = locking.take_counter(session, name, cap)
            if taken is None:
                raise self._refusal(cap, what)
            value = taken
        return value

    @staticmethod
    def _refusal(cap: int, what: str) -> Conflict:
        return Conflict(
            f"randomization refused: {what} has reached its cap of {cap}",
            field="subject_id",
            rule="cap",
        )


def _require_stock(session: Session, site: Site, today: date) -> ShelfTreatments:
    """The site's usable shelf, which must hold every arm (else refused, rule site_stock)."""
    # Stock of EVERY arm, checked before the list is consulted: a refusal never hints at an arm.
    # Usable stock: the one definition resupply uses too (services.supply.usable_shelf).
    shelf = ShelfTreatments(usable_shelf(session, site.id, today=today))
    if shelf.arms_in_stock() != {arm for arm, _ in _arms()}:
        raise _no_stock(session, site)
    return shelf


def _no_stock(session: Session, site: Site) -> _Refusal:
    """The refusal site_stock, with its alert to the supply manager."""
    # The refusal is decided on every arm, so this alert says no more than the refusal the
    # investigator sees: some treatment has no usable kit. Resupply is left to the scheduled
    # run (its emergency check serves this case); the alert is the system's.
    open_alert(
        session,
        kind="site_stock_randomization",
        site_id=site.id,
        actor=Actor.system("stock-check"),
        trigger={"event": "randomization refused for stock", "site": site.code},
        message=f"Site {site.code} refused a randomization: no dispensable kit for "
        "a new subject. Ship kits to the site.",
    )
    return _Refusal(Conflict(NO_STOCK.format(site=site.code), field="site", rule="site_stock"))


def share_active_list(session: Session) -> RandomizationList | None:
    """The active list, locked FOR KEY SHARE (lock order step 3, iwrs/locking.py): any number
    of randomizations and extensions hold it together, while a list store or a key rotation
    (FOR UPDATE) waits for them and holds new ones back. A list replaced while this waited is
    seen replaced, and the new active list is read (and locked) instead. None: no active list."""
    # One statement: the active list read and locked together. A list replaced while this
    # waited is re-checked by PostgreSQL (no longer active: no row), and the next look, a new
    # statement, sees the new active list; no active list at all costs three looks (a refusal).
    for _ in range(3):
        locked = session.scalars(
            select(RandomizationList)
            .where(RandomizationList.active.is_(True))
            .with_for_update(read=True, key_share=True)
            .execution_options(populate_existing=True)
        ).first()
        if locked is not None:
            return locked
    return None


def _share_list_to_randomize(session: Session) -> RandomizationList:
    rlist = share_active_list(session)
    if rlist is None:
        raise Conflict(
            "randomization refused: no randomization list is loaded",
            field="list",
            rule="list_loaded",
        )
    _environment_allows(rlist.dummy)
    return rlist


def _next_slot(
    session: Session, rlist: RandomizationList, stratum: str
) -> tuple[StratumPosition, StratumTally, RandomizationSlot]:
    """The stratum's position row, locked (per stratum: slots strictly in sequence; taken as late
    as possible, after the site and stock checks), with its sealed tally (locked by the same
    statement: read after the wait, never a stale copy), and its next slot, locked."""
    found = session.execute(
        select(StratumPosition, StratumTally)
        .join(
            StratumTally,
            (StratumTally.list_id == StratumPosition.list_id)
            & (StratumTally.stratum == StratumPosition.stratum),
        )
        .where(StratumPosition.list_id == rlist.id, StratumPosition.stratum == stratum)
        .with_for_update()
    ).first()
    position, tally = found if found is not None else (None, None)
    if position is None or tally is None or position.next_sequence > position.last_sequence:
        open_alert(
            session,
            kind="stratum_exhausted",
            site_id=None,
            actor=Actor.system("list-check"),
            trigger={"event": "randomization refused: no slot left", "stratum": stratum},
            message=f"Stratum {stratum} of list {rlist.name} has no slot left; extend "
            "the list by whole blocks.",
        )
        raise _Refusal(
            Conflict(
                f"randomization refused: stratum {stratum} has no slot left; "
                "the statistician has been alerted",
                field="stratum",
                rule="stratum_exhausted",
            )
        )
    slot = session.scalars(
        select(RandomizationSlot)
        .where(
            RandomizationSlot.list_id == rlist.id,
            RandomizationSlot.stratum == stratum,
            RandomizationSlot.sequence == position.next_sequence,
        )
        .with_for_update()
    ).one()
    used = session.scalar(select(Randomization.id).where(Randomization.slot_id == slot.id))
    if used is not None:  # the position row and the randomizations disagree: stop everything
        raise Conflict(
            "the list is inconsistent: the next slot is already used",
            field="list",
            rule="integrity",
        )
    return position, tally, slot


def _checked_kit(
    session: Session, site: Site, shelf: ShelfTreatments, arm: str, today: date
) -> Kit:
    """The kit for the slot's arm (first expiry first out by lot, across every arm), locked and
    judged again as it stands now (`lock_dispensable`), then checked against the slot: a
    mismatch alerts and refuses (rule kit_check)."""
    kit = _locked_kit(session, site, shelf, arm, today)
    # Defence in depth: the sealed kit must match the slot. The choice saw the shelf as it was
    # read, through the process's unseal cache, so checking it against the same source could
    # never fail (issue 14): the check opens the locked row's own token (`kit_check`).
    refusal = kit_check(session, site, kit, arm=arm, use_case="randomization")
    if refusal is not None:
        raise _Refusal(refusal)
    return kit


def _locked_kit(session: Session, site: Site, shelf: ShelfTreatments, arm: str, today: date) -> Kit:
    """The kit for the slot's arm, locked and still dispensable.

    The first pick of EVERY arm is locked and judged again (`lock_dispensable`, in kit id
    order), not only the slot's: a kit that expired, was quarantined or fell inside the
    do-not-dispense window since the shelf was read then changes the outcome the same way
    whichever arm the slot holds (README rule 2: were only the slot's kit judged, a lot made
    unusable during the request would refuse the subjects of one arm and not the other's).
    A changed kit is passed over and the shelf read again, every arm checked as before the
    slot; after REPICKS reads of a shelf that keeps changing, the refusal is site_stock."""
    through = usable_through(today)
    # The slot's arm is picked first, so its kit takes the same tie-break draw whichever arm
    # the slot holds (two mirror-image worlds pick the same kit number: the noninterference
    # tests); the other arms' picks are only locked and judged, never shown.
    arms = [arm, *sorted(a for a, _ in _arms() if a != arm)]
    for _ in range(REPICKS):
        picks = [shelf.pick(a, tie_break()) for a in arms]
        locking.failpoint("randomize.after_pick")
        chosen = [kit for kit in picks if kit is not None]
        if len(chosen) == len(arms) and all(
            lock_dispensable(session, kit, site_id=site.id, today=today, through=through)
            for kit in sorted(chosen, key=lambda kit: kit.id)
        ):
            return chosen[0]
        shelf = _require_stock(session, site, today)
    raise _no_stock(session, site)


def _dispense_first_kit(
    session: Session, actor: Actor, subject: Subject, kit: Kit, now: datetime
) -> None:
    """The day-1 kit goes to the subject (the kit ledger's gateway), and the subject is
    randomized."""
    p = protocol()
    _apply(
        session,
        kit,
        KitAction.DISPENSE,
        actor=actor,
        to=Place.subject(subject.id),
        detail=f"{p.visits[0].code} at randomization",
    )
    session.add(
        Dispensation(
            subject_id=subject.id,
            kit_id=kit.id,
            visit_code=p.visits[0].code,
            kind="scheduled",
            out_of_window=False,
            dispensed_at=now,
            dispensed_by_id=actor.user_id,
        )
    )


def _record(
    session: Session,
    actor: Actor,
    subject: Subject,
    site: Site,
    slot: RandomizationSlot,
    kit: Kit,
    rlist: RandomizationList,
    numbered: tuple[int, date, datetime],
    was: str,
) -> RandomizationResult:
    """The randomization row numbered by the study counter (`numbered`: the number, day 1 (the
    site's date) and the time), its e-signature and the audit event (`was`: the subject's
    status before `_randomize` set it to randomized, for the event's "before"): inserts after
    the counters that wait on no lock (the key, the subject, the slot and the signer's user
    row, by the dispensation's foreign key, are already held)."""
    p = protocol()
    number, today, now = numbered
    row = Randomization(
        subject_id=subject.id,
        randomization_number=f"R{number:04d}",
        slot_id=slot.id,
        site_id=site.id,
        randomized_at=now,
        randomized_on=today,  # day 1: the date the stock was judged on
        randomized_by_id=actor.user_id,
    )
    session.add(row)
    session.flush()
    signature = sign(
        session,
        actor=actor,
        meaning=signatures.randomize(
            screening_number=subject.screening_number, study_id=p.study_id
        ),
        entity_type="randomization",
        entity_id=row.id,
    )
    row.signature_id = signature.id
    before = {"status": was}  # the status the subject had (`_randomize` changed it already)
    audit.record(
        session,
        actor=actor,
        action="subject.randomized",
        entity_type="subject",
        entity_id=subject.id,
        site_id=site.id,
        subject_id=subject.id,
        before=before,
        after={
            "screening_number": subject.screening_number,
            "randomization_number": row.randomization_number,
            "stratum": slot.stratum,
            "kit": kit.number,
            "list": rlist.name,
            "status": "randomized",
        },
    )
    return _result(session, row, kit)
