"""Use cases for drug supply: kit lists, lots and expiry, shipments and receipt, site stock,
returns and destruction. Every kit state change goes through `_apply`, the one write gateway
of the kit ledger: a pure transition computed by `supply.states`, saved as an insert-only kit
event, audited in the same transaction."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from blinding.kit_mapping import KitListMapping, remap_kit_list
from blinding.kits import ALGORITHM as KIT_NUMBERS_V1
from blinding.kits import ALGORITHMS as KIT_NUMBER_SCHEMES
from blinding.kits import (
    KitSpec,
    generate_kit_list,
    number_rank_test,
    parse_kit_list_csv,
    verify_kit_list,
)
from blinding.kits import RowError as KitRowError
from blinding.sealing import SealError
from iwrs import audit, clock, validation
from iwrs.audit import Actor
from iwrs.auth import Permission, has_permission, not_found, require_site
from iwrs.db import transaction
from iwrs.errors import Conflict, InvalidInput, NotFound
from iwrs.keyring import LiveRing, live_ring
from iwrs.models.sites import Depot, Site
from iwrs.models.supply import Kit, KitEvent, Lot, SupplyAlert
from iwrs.models.users import User
from iwrs.protocol import Protocol
from iwrs.services import kit_counts  # noqa: F401  (keeps kit_count in every kit flush)
from supply import expiry, kit_choice
from supply.kit_choice import ShelfKit
from supply.ledger import KitEvent as LedgerEvent
from supply.states import (
    IllegalTransition,
    KitAction,
    KitPosition,
    KitState,
    Place,
    PlaceKind,
    transition,
)

KIT_CONTEXT = "kit:{number}"


def protocol() -> Protocol:
    return current_app.extensions["iwrs.protocol"]


def sealer() -> LiveRing:
    """The blinding key ring (iwrs.keyring): seals under the current key, unseals under the key
    each token names. The keys are never in the database."""
    return live_ring()


# Decision (issue 13, kit choice without unsealing the shelf): a per-process cache of unsealed
# kit treatments (and slot arms, services.randomization.slot_arm), keyed by (table, row id,
# sealed token). A rotated (re-sealed) token is a new key, so
# an entry can never be stale: it is the opening of exactly that token. Bounded (LRU, below), in
# memory only - never persisted, never logged, never returned to a caller other than
# `treatment_of`. A site's shelf is read again at every randomization and dispensing there, so
# the second operation at a site unseals nothing it has seen. The cap holds a few dozen kits for
# each of 1,500 sites (about 30 MB at most per process).
UNSEALED_KITS_MAX = 65_536


class _UnsealedKits:
    """The bounded, thread-safe LRU of sealed values opened by this process."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, int, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the values
        return f"<unsealed kits: {len(self._entries)} of {self.capacity}>"

    def get(self, key: tuple[str, int, str]) -> str | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: tuple[str, int, str], treatment: str) -> None:
        with self._lock:
            self._entries[key] = treatment
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)


def _unsealed_kits() -> _UnsealedKits:
    cache = current_app.extensions.get("iwrs.unsealed_kits")
    if cache is None:
        cache = current_app.extensions.setdefault(
            "iwrs.unsealed_kits", _UnsealedKits(UNSEALED_KITS_MAX)
        )
    return cache


def unseal_cached(table: str, row_id: int | None, token: str, *, context: str) -> str:
    """Unseal `token` (of row `row_id` of `table`, bound to `context`) through the process's
    cache: a token opened before is not opened again; a row not yet flushed (no id) always is."""
    key = (table, row_id, token) if row_id is not None else None
    if key is not None and (known := _unsealed_kits().get(key)) is not None:
        return known
    value = sealer().unseal(token, context=context)
    if key is not None:
        _unsealed_kits().put(key, value)
    return value


def treatment_of(kit: Kit) -> str:
    """Unseal a kit's treatment: only ever inside a service, never shown to a blinded user.
    Served from the process's cache of (kit id, sealed token) when this token was opened before
    (see UNSEALED_KITS_MAX)."""
    return unseal_cached(
        "kit", kit.id, kit.sealed_treatment, context=KIT_CONTEXT.format(number=kit.number)
    )


def position(kit: Kit) -> KitPosition:
    return KitPosition(KitState(kit.state), Place(PlaceKind(kit.place_kind), kit.place_id))


def _apply(
    session: Session,
    kit: Kit,
    action: KitAction,
    *,
    actor: Actor,
    to: Place | None = None,
    shipment_id: int | None = None,
    detail: str | None = None,
) -> None:
    """The kit ledger's one write gateway: pure transition, kit row, insert-only kit event."""
    try:
        new = transition(position(kit), action, to=to, kit=kit.number)
    except IllegalTransition as refusal:
        raise Conflict(refusal.message, field=refusal.field, rule="kit_transition") from None
    now = clock.now()
    session.add(
        KitEvent(
            kit_id=kit.id,
            action=str(action),
            from_state=str(kit.state),
            to_state=str(new.state),
            to_place_kind=str(new.place.kind),
            to_place_id=new.place.id,
            shipment_id=shipment_id,
            detail=detail,
            at=now,
            user_id=actor.user_id,
        )
    )
    kit.state, kit.place_kind, kit.place_id = new.state, str(new.place.kind), new.place.id
    kit.updated_at = now


def _apply_events(
    session: Session,
    events: Iterable[LedgerEvent],
    kits: Mapping[str, Kit],
    *,
    actor: Actor,
    shipment_id: int | None = None,
    detail: str | None = None,
) -> None:
    for event in events:
        _apply(
            session,
            kits[event.kit],
            event.action,
            actor=actor,
            to=event.to,
            shipment_id=shipment_id,
            detail=detail,
        )


# --- kit lists -------------------------------------------------------------------------------


def _depot(session: Session) -> Depot:
    depot = session.scalars(select(Depot).where(Depot.code == protocol().depot.code)).first()
    if depot is None:
        raise NotFound("the protocol's depot is not set up: run `iwrs init`", rule="depot")
    return depot


LOT_CODE_MAX = 32  # the width of lot.code


def _lot_refusal(code: str) -> InvalidInput | None:
    """A lot code the database would refuse (PostgreSQL) or store blank (SQLite), by name."""
    if not code.strip():
        return InvalidInput("lot: a lot code is required", field="lot", rule="required")
    if validation.refused_character(code) is not None:
        validation.check_characters(code, field="lot")
    if len(code) > LOT_CODE_MAX or not code.isprintable():
        shown = code[:LOT_CODE_MAX] if code.isprintable() else repr(code[:LOT_CODE_MAX])
        return InvalidInput(
            f"lot {shown}: at most {LOT_CODE_MAX} printable characters",
            field="lot",
            rule="max_length",
        )
    return None


@dataclass(frozen=True)
class KitImportReport:
    """What an import or generation stored: the kit count, and the rank test of kit numbers by
    treatment (its p-value and whether it warns; never which kit holds which treatment)."""

    kits: int
    lots: tuple[str, ...]
    rank_p_value: float
    rank_warning: bool


def _lots_for(
    session: Session, specs: Sequence[KitSpec], *, now: datetime, kit_numbers: str | None
) -> dict[str, Lot]:
    """The lots the kits name, by code: existing ones checked (one kit type and one expiry per
    lot, rule lot_consistent), new ones added."""
    lots: dict[str, Lot] = {lot.code: lot for lot in session.scalars(select(Lot))}
    for code in sorted({s.lot for s in specs}):
        first = next(s for s in specs if s.lot == code)
        if code in lots:
            lot = lots[code]
            if (lot.kit_type, lot.expiry) != (first.kit_type, first.expiry):
                raise InvalidInput(
                    f"lot {code}: already exists with kit type {lot.kit_type} and expiry "
                    f"{lot.expiry}; a lot has one kit type and one expiry",
                    field="lot",
                    rule="lot_consistent",
                )
        else:
            lots[code] = Lot(
                code=code,
                kit_type=first.kit_type,
                expiry=first.expiry,
                created_at=now,
                kit_numbers=kit_numbers,
            )
            session.add(lots[code])
    return lots


def _refuse_unverified(specs: Sequence[KitSpec]) -> None:
    """Raises InvalidInput (every error, with field and rule) unless each lot may take kits and
    the list passes the protocol's checks (`verify_kit_list` of blinding/kits.py)."""
    for code in sorted({s.lot for s in specs}):
        refusal = _lot_refusal(code)
        if refusal is not None:
            raise refusal
    errors = verify_kit_list(
        specs,
        treatments=[a.code for a in protocol().arms],
        ratios={a.code: a.ratio for a in protocol().arms},
        lot_balance_tolerance=protocol().lot_balance_tolerance,
    )
    if errors:
        raise InvalidInput(
            "; ".join(e.message for e in errors),
            errors=[{"field": e.field, "rule": e.rule, "message": e.message} for e in errors],
        )


def _store_kits(
    session: Session,
    specs: Sequence[KitSpec],
    *,
    actor: Actor,
    how: str,
    mapping: KitListMapping | None = None,
    kit_numbers: str | None = None,
) -> KitImportReport:
    """Insert verified kits at the depot, treatments sealed; audited without any treatment."""
    _refuse_unverified(specs)
    depot = _depot(session)
    now = clock.now()
    lots = _lots_for(session, specs, now=now, kit_numbers=kit_numbers)
    session.flush()
    for spec in specs:
        if (spec.kit_type, spec.expiry) != (lots[spec.lot].kit_type, lots[spec.lot].expiry):
            raise InvalidInput(
                f"kit {spec.number}: its kit type and expiry must be those of lot {spec.lot}",
                field="lot",
                rule="lot_consistent",
            )
        kit = Kit(
            number=spec.number,
            kit_type=spec.kit_type,
            lot_id=lots[spec.lot].id,
            state=KitState.AT_DEPOT,
            place_kind="depot",
            place_id=depot.id,
            sealed_treatment=sealer().seal(
                spec.treatment, context=KIT_CONTEXT.format(number=spec.number)
            ),
            updated_at=now,
        )
        session.add(kit)
    session.flush()
    ranks = number_rank_test(specs)
    report = KitImportReport(
        kits=len(specs),
        lots=tuple(sorted({s.lot for s in specs})),
        rank_p_value=float(f"{ranks.p_value:.4g}"),
        rank_warning=ranks.warning,
    )
    # One lot: its code; several (a vendor file may hold hundreds): no single id, every lot is
    # listed in `after` (an id of joined codes overflowed the column, issue 12 finding 9).
    audit.record(
        session,
        actor=actor,
        action=f"kits.{how}",
        entity_type="lot",
        entity_id=report.lots[0] if len(report.lots) == 1 else None,
        after={
            "kits": len(specs),
            "lots": sorted({s.lot for s in specs}),
            "kit_types": sorted({s.kit_type for s in specs}),
            "depot": depot.code,
            **({"kit_numbers": kit_numbers} if kit_numbers is not None else {}),
            # The test's outcome only: a p-value and a flag, never a kit with its treatment.
            "number_rank_test": {
                "p_value": report.rank_p_value,
                "warning": report.rank_warning,
            },
            # The vendor's columns, kit types and date format; of the treatments only how
            # many raw values were mapped (the trail is read by blinded auditors).
            **({"mapping": _audited_kit_mapping(mapping)} if mapping is not None else {}),
        },
    )
    return report


def _audited_kit_mapping(mapping: KitListMapping) -> dict[str, object]:
    return {
        "columns": dict(mapping.columns),
        "kit_types": dict(mapping.kit_types),
        "expiry_format": mapping.expiry_format,
        "treatments_mapped": len(mapping.treatments),
    }


def _taken_numbers(session: Session) -> set[str]:
    return set(session.scalars(select(Kit.number)))


def generate_kits(
    *,
    actor: Actor,
    kit_type: str,
    lot: str,
    expiry_date: date,
    count: int,
    seed: bytes,
    kit_numbers: str = KIT_NUMBERS_V1,
) -> KitImportReport:
    """Generate a blinded kit list at the depot: `count` kits split by the allocation ratio,
    numbered by the scheme `kit_numbers` (blinding.kits.ALGORITHMS; recorded on the lot and in
    the event, so the list re-derives from its seed). The supply manager's or the operator's
    (Forbidden `permission` otherwise)."""
    from iwrs.services.users import require

    require(actor, Permission.MANAGE_SUPPLY)
    if kit_numbers not in KIT_NUMBER_SCHEMES:
        raise InvalidInput(
            f"kit_numbers: {kit_numbers!r} is not a kit number scheme "
            f"({', '.join(KIT_NUMBER_SCHEMES)})",
            field="kit_numbers",
            rule="choice",
        )
    known = {k.code for k in protocol().kit_types}
    if kit_type not in known:
        raise InvalidInput(
            f"kit_type: {kit_type!r} is not a kit type of this protocol ({', '.join(known)})",
            field="kit_type",
            rule="known",
        )
    arms = protocol().arms
    if count <= 0 or count % protocol().ratio_sum:
        raise InvalidInput(
            f"count: must be a positive multiple of the ratio sum {protocol().ratio_sum}",
            field="count",
            rule="ratio_multiple",
        )
    if expiry.is_expired(expiry_date, depot_today()):
        raise InvalidInput("expiry: is in the past", field="expiry", rule="future")
    refusal = _lot_refusal(lot)
    if refusal is not None:
        raise refusal
    per_arm = {a.code: count * a.ratio // protocol().ratio_sum for a in arms}
    with transaction() as session:
        try:
            specs = generate_kit_list(
                seed=seed,
                kit_type=kit_type,
                lot=lot,
                expiry=expiry_date,
                per_treatment=per_arm,
                taken=_taken_numbers(session),
                algorithm=kit_numbers,
            )
        except ValueError as error:  # the kit number space cannot hold that many more kits
            raise InvalidInput(f"count: {error}", field="count", rule="number_space") from None
        return _store_kits(session, specs, actor=actor, how="generated", kit_numbers=kit_numbers)


def import_kits(
    *, actor: Actor, csv_text: str, mapping: KitListMapping | None = None
) -> KitImportReport:
    """Import a packaging vendor's kit list (native, or the vendor's own layout through a column
    mapping, recorded in the import's audit event); any bad row or unbalanced lot rejects the
    whole file, every one named; kit numbers that correlate with treatment warn in the report.
    The supply manager's or the operator's (Forbidden `permission` otherwise)."""
    from iwrs.services.users import require

    require(actor, Permission.MANAGE_SUPPLY)
    kit_types = [k.code for k in protocol().kit_types]
    treatments = [a.code for a in protocol().arms]
    errors: list[KitRowError] = []
    if mapping is not None:
        csv_text, errors = remap_kit_list(
            csv_text, mapping, kit_types=kit_types, treatments=treatments
        )
    with transaction() as session:
        specs: list[KitSpec] = []
        if not errors:
            specs, errors = parse_kit_list_csv(
                csv_text,
                kit_types=kit_types,
                treatments=treatments,
                today=depot_today(),
                taken=_taken_numbers(session),
            )
        if errors:
            shown = "; ".join(e.message for e in errors[:20])
            rest = sorted({e.row for e in errors[20:]})
            if rest:  # every bad row is still named, if only by number
                shown += f"; and {len(errors) - 20} more in rows " + ", ".join(map(str, rest))
            raise InvalidInput(
                f"the kit list was rejected whole: {len(errors)} problem(s); {shown}",
                errors=[{"field": e.field, "rule": e.rule, "message": e.message} for e in errors],
            )
        return _store_kits(session, specs, actor=actor, how="imported", mapping=mapping)


# --- places and access -----------------------------------------------------------------------


def acting_user(session: Session, actor: Actor, permission: Permission) -> User:
    """The signed-in user behind the actor, if they hold the permission (404 otherwise)."""
    user = (  # the user and their sites in one statement
        session.get(User, actor.user_id, options=[joinedload(User.site_links)])
        if actor.user_id is not None
        else None
    )
    if user is None or not has_permission(user, permission):
        raise NotFound("not available to your role", rule="permission")
    return user


def kits_by_number(
    session: Session, numbers: Iterable[str], *, lock: bool = True
) -> dict[str, Kit]:
    """The kits named, locked for the decision; an unknown number is refused by name."""
    wanted = sorted(set(numbers))
    query = select(Kit).where(Kit.number.in_(wanted)).order_by(Kit.number)
    if lock:  # the locked rows as committed now, even if this session read them before
        query = query.with_for_update().execution_options(populate_existing=True)
    found = {k.number: k for k in session.scalars(query)}
    unknown = [n for n in wanted if n not in found]
    if unknown:
        raise not_found("kit", unknown[0], field="kit_number")
    return found


def site_kit(session: Session, actor: Actor, number: str, permission: Permission) -> Kit:
    """A kit at (or dispensed from) one of the actor's sites, locked. A kit elsewhere (another
    site, the depot) or no kit at all is refused alike, naming neither where it is nor whether
    it exists."""
    user = acting_user(session, actor, permission)
    refused = not_found("kit", number, field="kit_number")
    place = session.execute(
        select(Kit.place_kind, Kit.place_id).where(Kit.number == number)
    ).first()
    site_id = _site_of_place(session, place.place_kind, place.place_id) if place else None
    if site_id is None:
        raise refused
    try:
        require_site(user, site_id)
    except NotFound:
        raise refused from None
    lock_sites(session, [site_id])  # the site first, then the kit (see lock_sites)
    kit = kits_by_number(session, [number])[number]
    if site_of(session, kit) != site_id:
        raise Conflict(
            f"kit {number} was moved while this was recorded; try again",
            field="kit_number",
            rule="concurrent_change",
        )
    return kit


def lock_sites(session: Session, site_ids: Iterable[int]) -> None:
    """Lock site rows before any of their kits: every use case that changes a site's stock
    takes its site first (by code when several), so two of them at one site run one after the
    other and see each other's stock (one resupply, not two). The lock order: iwrs/locking.py."""
    ids = sorted(set(site_ids))
    if ids:
        session.execute(
            select(Site.id).where(Site.id.in_(ids)).order_by(Site.code).with_for_update()
        ).all()


def site_of(session: Session, kit: Kit) -> int | None:
    """The site accountable for a kit: where it is, or where its subject is."""
    return _site_of_place(session, kit.place_kind, kit.place_id)


def _site_of_place(session: Session, place_kind: str, place_id: int) -> int | None:
    if place_kind == "site":
        return place_id
    if place_kind == "subject":
        from iwrs.models.subjects import Subject

        subject = session.get(Subject, place_id)
        return subject.site_id if subject else None
    return None


# --- expiry ----------------------------------------------------------------------------------


def depot_today() -> date:
    """The depot's local date ([depot] time_zone of the protocol): the date of depot decisions
    (kit import, do-not-ship) and of kits at the depot or in transit from it."""
    return clock.today(protocol().depot)


def site_todays(session: Session) -> dict[int, date]:
    """Each site's local date, by site id."""
    return {site.id: clock.today(site) for site in session.scalars(select(Site))}


def kit_today(kit: Kit, sites: Mapping[int, date], depot: date) -> date:
    """The local date of the place the kit is in: its site's (at a site or with a subject of
    it, resolved by the caller), else the depot's (at the depot or in transit)."""
    if kit.place_kind == "site":
        return sites.get(kit.place_id, depot)
    return depot


def apply_expiry(session: Session, *, actor: Actor) -> list[str]:
    """Expire every usable or held kit past its lot's expiry (run before each stock decision).

    Decision (issue 12): a kit expires at the end of its lot's expiry date in the zone of the
    place it is in: its site's zone at a site, the depot's zone at the depot or in transit.
    An automatic action: recorded as the system's (`expiry`), never as the user whose request
    ran the sweep first; the triggering actor is referenced in the event (issue 10)."""
    sites, depot = site_todays(session), depot_today()
    latest = max([depot, *sites.values()])
    trigger = f"{actor.role}:{actor.username}"
    actor = actor if actor.role == "system" else Actor.system("expiry")
    rows = session.execute(
        select(Kit, Lot.expiry)
        .join(Lot, Kit.lot_id == Lot.id)
        .where(
            Kit.state.in_([KitState.AT_DEPOT, KitState.AVAILABLE, KitState.QUARANTINED]),
            Lot.expiry < latest,
        )
        .order_by(Kit.number)  # never import-row order: a vendor file may be grouped by arm
        .with_for_update(of=Kit)
    ).all()
    expired = [
        kit
        for kit, lot_expiry in rows
        if expiry.is_expired(lot_expiry, kit_today(kit, sites, depot))
    ]
    for kit in expired:
        _apply(session, kit, KitAction.EXPIRE, actor=actor, detail="expiry sweep")
    if expired:
        audit.record(
            session,
            actor=actor,
            action="kits.expired",
            entity_type="kit",
            entity_id=None,
            after={
                "kits": sorted(k.number for k in expired),
                "on": depot.isoformat(),
                "trigger": trigger,
            },
        )
    return sorted(k.number for k in expired)


def change_lot_expiry(*, actor: Actor, lot_code: str, new_expiry: date, reason: str) -> Lot:
    """Extend or shorten a lot's expiry; shortened to today or earlier, its usable kits are
    quarantined at once (they stay accountable, and the supply manager decides)."""
    reason = validation.reason(reason)
    with transaction() as session:
        acting_user(session, actor, Permission.MANAGE_SUPPLY)
        sites, depot = site_todays(session), depot_today()
        lot = session.scalars(select(Lot).where(Lot.code == lot_code).with_for_update()).first()
        if lot is None:
            raise NotFound(f"lot {lot_code} does not exist", field="lot", rule="exists")
        if new_expiry == lot.expiry:
            raise Conflict(
                f"expiry: lot {lot_code} already expires on {new_expiry}",
                field="expiry",
                rule="changed",
            )
        before = {"expiry": lot.expiry.isoformat()}
        lot.expiry = new_expiry
        held = []
        if new_expiry <= max([depot, *sites.values()]):
            usable = [
                kit
                for kit in session.scalars(
                    select(Kit)
                    .where(
                        Kit.lot_id == lot.id,
                        Kit.state.in_([KitState.AT_DEPOT, KitState.AVAILABLE]),
                    )
                    .order_by(Kit.number)
                    .with_for_update()
                )
                if new_expiry <= kit_today(kit, sites, depot)
            ]
            for kit in usable:
                _apply(
                    session,
                    kit,
                    KitAction.QUARANTINE,
                    actor=actor,
                    detail=f"lot {lot_code} expiry shortened to {new_expiry}",
                )
            held = sorted(k.number for k in usable)
        audit.record(
            session,
            actor=actor,
            action="lot.expiry_changed",
            entity_type="lot",
            entity_id=lot.code,
            before=before,
            after={"expiry": new_expiry.isoformat(), "quarantined": held},
            reason=reason.strip(),
        )
    return lot


# --- site stock --------------------------------------------------------------------------------


def schedule() -> tuple[expiry.ScheduleVisit, ...]:
    """The protocol's visit schedule as the pure expiry rule reads it."""
    return tuple(
        expiry.ScheduleVisit(v.code, v.day, v.window_before, v.window_after, v.kits > 0)
        for v in protocol().visits
    )


def kit_through(day1: date, visit_code: str) -> date:
    """The date a kit dispensed at `visit_code` to a subject randomized on `day1` must stay
    usable through (plus the do-not-dispense buffer): `supply.expiry.must_last_through`."""
    return expiry.must_last_through(schedule(), day1=day1, dispensed=visit_code)


def usable_through(today: date) -> date:
    """The date usable stock must last through: what the kit of a subject randomized today
    needs (the randomization visit's kit: through the next dosing visit's window end)."""
    first = min((v for v in protocol().visits if v.kits), key=lambda v: v.day)
    return kit_through(today, first.code)


def _site_shelf(session: Session, site_id: int) -> list[tuple[Kit, str, date]]:
    """The site's available kits with their lot code and expiry, by kit number."""
    rows = session.execute(
        select(Kit, Lot.code, Lot.expiry)
        .join(Lot, Kit.lot_id == Lot.id)
        .where(Kit.place_kind == "site", Kit.place_id == site_id, Kit.state == KitState.AVAILABLE)
        .order_by(Kit.number)
    ).all()
    return [(kit, code, lot_expiry) for kit, code, lot_expiry in rows]


def dispensable_shelf(
    session: Session, site_id: int, *, today: date, through: date
) -> list[tuple[Kit, ShelfKit]]:
    """The site's kits that may be dispensed today for a kit that must last through `through`
    (`supply.expiry.usable_kits`), as blinded users see them (nothing unsealed)."""
    return expiry.usable_kits(
        (
            ((kit, ShelfKit(kit.number, code, lot_expiry)), lot_expiry)
            for kit, code, lot_expiry in _site_shelf(session, site_id)
        ),
        today=today,
        through=through,
        do_not_dispense_days=protocol().do_not_dispense_days,
    )


def usable_shelf(session: Session, site_id: int, *, today: date) -> list[tuple[Kit, ShelfKit]]:
    """The site's USABLE stock: kits that could serve the next randomization today. The one
    definition randomization, resupply and the daily run share (`usable_through`)."""
    return dispensable_shelf(session, site_id, today=today, through=usable_through(today))


class ShelfTreatments:
    """Unseals a shelf's kits on demand, each at most once (kit choice reads lot by lot)."""

    def __init__(self, shelf: Sequence[tuple[Kit, ShelfKit]]) -> None:
        self.kits = {kit.number: kit for kit, _ in shelf}
        self.shelf = [entry for _, entry in shelf]
        self._known: dict[str, str] = {}

    def __call__(self, number: str) -> str:
        if number not in self._known:
            self._known[number] = treatment_of(self.kits[number])
        return self._known[number]

    def arms_in_stock(self) -> frozenset[str]:
        """The arms with a dispensable kit on the shelf (stops unsealing once all are found)."""
        return kit_choice.arms_on_shelf(
            self.shelf, arms=[a.code for a in protocol().arms], treatment_of=self
        )

    def pick(self, arm: str, rng_index: Callable[[int], int]) -> Kit | None:
        """The kit for a slot of `arm` by `supply.kit_choice.choose_kit`, or None."""
        number = kit_choice.choose_kit(self.shelf, arm=arm, treatment_of=self, rng_index=rng_index)
        return None if number is None else self.kits[number]


def lock_dispensable(
    session: Session, kit: Kit, *, site_id: int, today: date, through: date
) -> bool:
    """Lock a picked kit (lock order step 5) and judge it again as its row and lot stand now:
    still AVAILABLE at the site and dispensable today for a kit that must last through
    `through` (`supply.expiry.can_dispense_kit`). The kit object is refreshed from the row.

    The shelf is read without kit locks: the site lock holds back every use case that moves
    the site's kits, but the expiry sweep and a lot's expiry change touch kits without their
    site, so a kit may have expired, been quarantined or fallen inside the do-not-dispense
    window between the read and this lock. Locked, it cannot change until commit."""
    found = session.execute(
        select(Kit, Lot.expiry)
        .join(Lot, Kit.lot_id == Lot.id)
        .where(Kit.id == kit.id)
        .with_for_update(of=Kit)
        .execution_options(populate_existing=True)
    ).one_or_none()
    if found is None:
        return False
    row, lot_expiry = found
    return (
        row.place_kind == PlaceKind.SITE
        and row.place_id == site_id
        and expiry.can_dispense_kit(
            position(row),
            lot_expiry,
            today=today,
            through=through,
            do_not_dispense_days=protocol().do_not_dispense_days,
        )
    )


def _sealed_treatment_now(kit: Kit) -> str | None:
    """The kit's treatment as its row holds it (refreshed by `lock_dispensable`), opened with
    the key directly, never through the process's unseal cache the kit choice read; None when
    the token does not open (altered, or copied from another kit).

    Decision (issue 14): the kit's own sealed value is the independent record a dispensing
    is checked against, so a token swapped or altered after the shelf was read, or a cache entry
    that disagrees with the token, refuses (rule kit_check) instead of dispensing. Treatments are
    compared, not tokens: an online key rotation re-seals a kit without changing its treatment."""
    try:
        return sealer().unseal(kit.sealed_treatment, context=KIT_CONTEXT.format(number=kit.number))
    except SealError:
        return None


def kit_check(
    session: Session, site: Site, kit: Kit | None, *, arm: str, use_case: str
) -> Conflict | None:
    """None when the kit's own sealed treatment (`_sealed_treatment_now`) is the slot's `arm`.
    Otherwise (or with no kit to check) alert the supply manager and the unblinded team, and
    return the refusal, in words, field and rule that are the same whatever the arm (rule
    kit_check). The alert names the site and the kit, never the subject."""
    if kit is not None and _sealed_treatment_now(kit) == arm:
        return None
    open_alert(
        session,
        kind="kit_mismatch",
        site_id=site.id,
        actor=Actor.system("stock-check"),
        trigger={"event": f"{use_case} refused: kit check failed", "site": site.code},
        message=f"Kit {kit.number if kit else '?'} failed the treatment check at {use_case}; "
        "quarantine the site's stock and call the unblinded team.",
    )
    return Conflict(
        f"{use_case} refused: a kit check failed; the team has been alerted",
        field="kit",
        rule="kit_check",
    )


def open_alert(
    session: Session,
    *,
    kind: str,
    site_id: int | None,
    message: str,
    actor: Actor,
    trigger: Mapping[str, object] | None = None,
    once: bool = True,
) -> SupplyAlert:
    """Raise an alert for the supply manager (worded for blinded readers); with `once`, only
    while no alert of the kind is open at the site (an event that must alert every time
    passes once=False). `trigger` references the event that raised it (never a subject or an
    arm)."""
    existing = session.scalars(
        select(SupplyAlert).where(
            SupplyAlert.kind == kind,
            SupplyAlert.site_id == site_id,
            SupplyAlert.resolved_at.is_(None),
        )
    ).first()
    if existing is not None and once:
        return existing
    alert = SupplyAlert(kind=kind, site_id=site_id, message=message, created_at=clock.now())
    session.add(alert)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="supply.alert_raised",
        entity_type="supply_alert",
        entity_id=alert.id,
        site_id=site_id,
        after={"kind": kind, "message": message, **({"trigger": dict(trigger)} if trigger else {})},
    )
    return alert
