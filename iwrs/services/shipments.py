"""Use cases for shipments: requesting (initial, resupply, manual), shipping, cancelling,
receipt kit by kit, quarantine decisions.
The resupply run that decides top-ups is in services/resupply.py.

Treatments are decided inside these functions from sealed data; what leaves them (manifests,
alerts, audit events) names kits by number and counts in totals only."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from iwrs import audit, clock, validation
from iwrs.audit import Actor
from iwrs.auth import Permission, not_found, require_site
from iwrs.db import transaction
from iwrs.errors import Conflict, InvalidInput, NotFound
from iwrs.models.sites import Depot, Site, SiteStatus
from iwrs.models.supply import Kit, Lot, Shipment
from iwrs.services.supply import (
    _apply,
    _apply_events,
    _depot,
    acting_user,
    apply_expiry,
    depot_today,
    kits_by_number,
    lock_sites,
    open_alert,
    protocol,
    treatment_of,
)
from supply import expiry as expiry_rules
from supply import resupply
from supply import shipments as rules
from supply.shipments import ShipmentError, ShipmentState
from supply.states import KitAction, KitState

OPEN_STATES = (ShipmentState.REQUESTED, ShipmentState.SHIPPED, ShipmentState.DELIVERED)


def _refused(error: ShipmentError) -> Conflict:
    return Conflict(error.message, field=error.field, rule="shipment")


def _value(session: Session, row: Shipment) -> rules.Shipment:
    """The shipment as the pure rules see it: its kits in manifest (kit-number) order."""
    numbers = session.scalars(
        select(Kit.number).where(Kit.shipment_id == row.id).order_by(Kit.number)
    ).all()
    return rules.Shipment(
        id=row.id,
        depot=row.depot_id,
        site=row.site_id,
        kits=tuple(numbers),
        state=ShipmentState(row.state),
        courier=row.courier or "",
        tracking=row.tracking_number or "",
        excursion=row.temperature_excursion,
    )


def _locked_shipment(session: Session, shipment_id: int) -> Shipment:
    row = session.scalars(
        select(Shipment).where(Shipment.id == shipment_id).with_for_update()
    ).first()
    if row is None:
        raise NotFound(f"shipment {shipment_id} does not exist", field="shipment_id", rule="exists")
    return row


DEPOT_BATCH = 256  # depot kits read (and unsealed) at a time while picking


def _depot_pick(
    session: Session, kit_type: str, order: resupply.Order, *, today: date
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Unblinded, inside the service: the depot kits of one kit type for `order`, per arm, and
    the shortfall per short arm - exactly what `supply.resupply.allocate_from_depot` decides
    (shippable kits first-expiry-first-out, ties by kit number).

    Decision (issue 13, no cost that grows with the trial): the kits are read in that order in
    batches of DEPOT_BATCH and unsealed one by one (through the process's cache), stopping once
    every arm's share is met, so a pick neither unseals nor locks the whole depot. The depot row
    is locked instead (after the site, before any kit: see `lock_sites`), so picks run one at a
    time; the kits picked are locked by number when reserved, and their transition refuses a
    kit that left the depot meanwhile (rule kit_transition)."""
    session.execute(
        select(Depot.id).where(Depot.code == protocol().depot.code).with_for_update()
    ).all()
    wanted = dict(order.per_arm)
    chosen: dict[str, list[str]] = {arm: [] for arm in sorted(wanted)}
    first = today + timedelta(days=protocol().do_not_ship_days)  # expiry_rules.can_ship
    after: tuple[date, str] | None = None
    while any(len(chosen[arm]) < n for arm, n in wanted.items()):
        query = (
            select(Kit, Lot.expiry)
            .join(Lot, Kit.lot_id == Lot.id)
            .where(Kit.state == KitState.AT_DEPOT, Kit.kit_type == kit_type, Lot.expiry >= first)
        )
        if after is not None:
            query = query.where(
                or_(Lot.expiry > after[0], and_(Lot.expiry == after[0], Kit.number > after[1]))
            )
        rows = session.execute(query.order_by(Lot.expiry, Kit.number).limit(DEPOT_BATCH)).all()
        for kit, lot_expiry in rows:
            if not expiry_rules.can_ship(lot_expiry, today, protocol().do_not_ship_days):
                continue  # never: the query asks for these expiries (the rule's one source)
            arm = treatment_of(kit)
            if arm in chosen and len(chosen[arm]) < wanted[arm]:
                chosen[arm].append(kit.number)
        if len(rows) < DEPOT_BATCH:
            break
        after = (rows[-1][1], rows[-1][0].number)
    shortfall = {arm: n - len(chosen[arm]) for arm, n in wanted.items() if len(chosen[arm]) < n}
    return chosen, shortfall


def _shippable_at_depot(session: Session, kit_type: str, today: date) -> int:
    """The depot's shippable kits of a type, all treatments together (one COUNT)."""
    first = today + timedelta(days=protocol().do_not_ship_days)
    return int(
        session.scalar(
            select(func.count())
            .select_from(Kit)
            .join(Lot, Kit.lot_id == Lot.id)
            .where(Kit.state == KitState.AT_DEPOT, Kit.kit_type == kit_type, Lot.expiry >= first)
        )
        or 0
    )


def _pick(
    session: Session, orders: Mapping[str, resupply.Order], *, kind: str, today: date
) -> tuple[list[str], int]:
    """Decide the depot kits for each kit type's order; return them and the kits short."""
    whole = kind in ("resupply", "emergency", "manual")
    picked: list[str] = []
    short = 0
    for kit_type, order in sorted(orders.items()):
        chosen, shortfall = _depot_pick(session, kit_type, order, today=today)
        if kind == "manual" and shortfall:
            shippable = _shippable_at_depot(session, kit_type, today)
            raise _manual_shortfall(kit_type, order.total, shippable)
        # An initial or manual shipment never carries one treatment only: without every arm,
        # send none of it. A top-up is sent whole or not at all.
        if (whole and shortfall) or any(
            not chosen.get(arm) for arm, wanted in order.per_arm.items() if wanted or not whole
        ):
            short += order.total
            continue
        picked += [number for numbers in chosen.values() for number in numbers]
        short += sum(shortfall.values())
    return picked, short


def _alert_shortfall(
    session: Session,
    site: Site,
    depot_code: str,
    short: int,
    *,
    kind: str,
    actor: Actor,
    trigger: Mapping[str, object] | None,
) -> None:
    """Raise the depot shortfall alert, in totals only."""
    open_alert(
        session,
        kind="depot_shortfall",
        site_id=site.id,
        actor=Actor.system("stock-check"),
        message=f"Depot {depot_code} could not fill the {kind} shipment for site "
        f"{site.code}: {short} kit(s) short. Release or import kits.",
        trigger=trigger or {"event": f"{kind} shipment requested", "by": actor.username},
    )


def _new_shipment(
    session: Session, site: Site, depot_id: int, *, kind: str, actor: Actor
) -> Shipment:
    """Record the requested shipment under the next shipment number."""
    number = int(session.scalar(select(func.count()).select_from(Shipment)) or 0) + 1
    row = Shipment(
        number=f"SHP-{number:05d}",
        kind=kind,
        depot_id=depot_id,
        site_id=site.id,
        state=ShipmentState.REQUESTED,
        requested_at=clock.now(),
        requested_by_id=actor.user_id,
        temperature_excursion=False,
    )
    session.add(row)
    session.flush()
    return row


def _reserve_kits(
    session: Session, row: Shipment, site: Site, picked: list[str], *, actor: Actor
) -> None:
    """Reserve the picked kits in the shipment, as the pure rules decide."""
    try:
        _, events = rules.request(
            shipment_id=row.id, depot=row.depot_id, site=site.id, kits=sorted(picked)
        )
    except ShipmentError as error:
        raise _refused(error) from None
    kits = kits_by_number(session, picked)
    _apply_events(session, events, kits, actor=actor, shipment_id=row.id)
    for kit in kits.values():
        kit.shipment_id = row.id


def _record_request(
    session: Session,
    row: Shipment,
    site: Site,
    picked: list[str],
    *,
    kind: str,
    actor: Actor,
    trigger: Mapping[str, object] | None,
) -> None:
    """Audit the request: the shipment's number, kind, site and kit numbers (no treatment)."""
    audit.record(
        session,
        actor=actor,
        action="shipment.emergency_requested" if kind == "emergency" else "shipment.requested",
        entity_type="shipment",
        entity_id=row.id,
        site_id=site.id,
        after={
            "number": row.number,
            "kind": kind,
            "site": site.code,
            "kits": sorted(picked),
            **({"trigger": dict(trigger)} if trigger else {}),
        },
    )


def _request(
    session: Session,
    site: Site,
    orders: Mapping[str, resupply.Order],
    *,
    kind: str,
    actor: Actor,
    trigger: Mapping[str, object] | None = None,
) -> Shipment | None:
    """Pick depot kits for each kit type's order, reserve them in a new shipment; raise a
    shortfall alert (totals only) when the depot cannot fill it.

    Decision: a top-up (kind resupply or emergency) is sent whole or not at all: a partly
    filled one would have a size that depends on the split by arm. A manual request is never
    shrunk either (issue 12, finding 7): when the depot cannot fill all of it, it is refused
    (`_manual_shortfall`), nothing requested and no alert kept."""
    today = depot_today()  # the kits leave the depot: its calendar decides do-not-ship
    apply_expiry(session, actor=actor)
    picked, short = _pick(session, orders, kind=kind, today=today)
    depot = _depot(session)
    if short:
        _alert_shortfall(session, site, depot.code, short, kind=kind, actor=actor, trigger=trigger)
    if not picked:
        return None
    row = _new_shipment(session, site, depot.id, kind=kind, actor=actor)
    _reserve_kits(session, row, site, picked, actor=actor)
    _record_request(session, row, site, picked, kind=kind, actor=actor, trigger=trigger)
    return row


def request_initial_shipment(session: Session, site: Site, *, actor: Actor) -> Shipment | None:
    """Activation's first shipment: the protocol's quantity per kit type, split by ratio."""
    ratio = {a.code: a.ratio for a in protocol().arms}
    arms = [a.code for a in protocol().arms]
    orders = {
        level.kit_type: resupply.initial_order(level.quantity, ratio=ratio, arms=arms)
        for level in protocol().initial_shipment
    }
    return _request(session, site, orders, kind="initial", actor=actor)


def _open_shipment(session: Session, site_id: int) -> bool:
    return (
        session.scalar(
            select(func.count())
            .select_from(Shipment)
            .where(Shipment.site_id == site_id, Shipment.state.in_(OPEN_STATES))
        )
        > 0
    )


def request_manual_shipment(*, actor: Actor, site_id: int, quantity: int) -> Shipment:
    """The supply manager sends `quantity` kits of each kit type (split by ratio) to a site."""
    if quantity < 1 or quantity > 500:
        raise InvalidInput("quantity: between 1 and 500 kits", field="quantity", rule="range")
    with transaction() as session:
        acting_user(session, actor, Permission.MANAGE_SUPPLY)
        site = session.scalars(select(Site).where(Site.id == site_id).with_for_update()).first()
        if site is None or site.status != SiteStatus.ACTIVE:
            raise Conflict(
                "site_id: shipments go only to active sites", field="site_id", rule="site_active"
            )
        ratio = {a.code: a.ratio for a in protocol().arms}
        arms = [a.code for a in protocol().arms]
        orders = {
            k.code: resupply.initial_order(quantity, ratio=ratio, arms=arms)
            for k in protocol().kit_types
        }
        row = _request(session, site, orders, kind="manual", actor=actor)
        assert row is not None  # a manual request is filled whole or refused in _request
        return row


class DepotShortfall(Conflict):
    """A manual request larger than the depot can ship: field quantity, rule depot_stock, with
    the kits requested and the depot's shippable kits of the type (totals, both blinded)."""

    def __init__(self, message: str, *, requested: int, available: int) -> None:
        super().__init__(message, field="quantity", rule="depot_stock")
        self.requested, self.available = requested, available

    def problems(self) -> list[dict[str, str]]:
        return [
            entry | {"requested": str(self.requested), "available": str(self.available)}
            for entry in super().problems()
        ]


def _manual_shortfall(kit_type: str, requested: int, shippable: int) -> DepotShortfall:
    """The refusal of a manual request the depot cannot fill whole: the kits requested, the
    depot's shippable kits of the type (a total: never a count by arm) and the shortfall.

    Decision: refused, not confirmed with a smaller quantity: the manager asks again for what
    the depot can ship. When the total would do but one treatment is short (lots are packed
    balanced, so rarely), the same refusal names a shortfall of 0 by total."""
    return DepotShortfall(
        f"quantity: {requested} kit(s) of {kit_type} requested, the depot holds {shippable} "
        f"shippable (short by {max(requested - shippable, 0)}"
        f"{'' if requested > shippable else ' in the allocation ratio'}); nothing was "
        "requested: ask for fewer kits, or release or import kits",
        requested=requested,
        available=shippable,
    )


def ship_shipment(
    *, actor: Actor, shipment_id: int, courier: str, tracking_number: str
) -> Shipment:
    """Hand a requested shipment to the courier; every kit must still be shippable.
    Decision: a shipment cannot leave without a courier and a tracking number (fields courier
    and tracking_number, as the page and the API name them; rule required), checked here so the
    CLI and any caller get the rule, not only the input schema."""
    courier = validation.text(courier, field="courier", kind="reference")
    tracking = validation.text(tracking_number, field="tracking_number", kind="reference")
    with transaction() as session:
        acting_user(session, actor, Permission.MANAGE_SUPPLY)
        row = _locked_shipment(session, shipment_id)
        value = _value(session, row)
        try:
            shipped, events = rules.ship(value, courier=courier, tracking=tracking)
        except ShipmentError as error:
            raise _refused(error) from None
        kits = kits_by_number(session, value.kits)
        from supply.expiry import can_ship

        today = depot_today()
        short_dated = sorted(
            n
            for n, k in kits.items()
            if not can_ship(
                session.get(Lot, k.lot_id).expiry,
                today,  # type: ignore[union-attr]
                protocol().do_not_ship_days,
            )
        )
        if short_dated:
            raise Conflict(
                f"kit {short_dated[0]} expires within "
                f"{protocol().do_not_ship_days} days and may not be shipped; "
                "cancel and request again",
                field="kits",
                rule="do_not_ship",
            )
        _apply_events(session, events, kits, actor=actor, shipment_id=row.id)
        row.state, row.courier, row.tracking_number = (
            shipped.state,
            shipped.courier,
            shipped.tracking,
        )
        row.shipped_at = clock.now()
        audit.record(
            session,
            actor=actor,
            action="shipment.shipped",
            entity_type="shipment",
            entity_id=row.id,
            site_id=row.site_id,
            after={
                "number": row.number,
                "courier": row.courier,
                "tracking_number": row.tracking_number,
            },
        )
        return row


def cancel_shipment(*, actor: Actor, shipment_id: int, reason: str) -> Shipment:
    """Cancel a requested shipment: its kits go back to depot stock."""
    reason = validation.reason(reason)
    with transaction() as session:
        acting_user(session, actor, Permission.MANAGE_SUPPLY)
        row = _locked_shipment(session, shipment_id)
        value = _value(session, row)
        try:
            cancelled, events = rules.cancel(value)
        except ShipmentError as error:
            raise _refused(error) from None
        kits = kits_by_number(session, value.kits)
        _apply_events(session, events, kits, actor=actor, shipment_id=row.id)
        for kit in kits.values():
            kit.shipment_id = None
        row.state, row.cancelled_at, row.note = cancelled.state, clock.now(), reason.strip()
        audit.record(
            session,
            actor=actor,
            action="shipment.cancelled",
            entity_type="shipment",
            entity_id=row.id,
            site_id=row.site_id,
            reason=reason.strip(),
            after={"number": row.number, "kits_returned_to_depot": len(kits)},
        )
        return row


def receive_shipment(
    *,
    actor: Actor,
    shipment_id: int,
    lines: Mapping[str, str] | Iterable[tuple[str, str]],
    excursion: bool,
    received_on: date | str | None = None,
) -> Shipment:
    """The pharmacist confirms every kit as good, damaged or missing; after a temperature
    excursion the good kits are quarantined until the supply manager decides.
    `received_on`: the site's local date of receipt (today there if not given); never in the
    future (rule future_date) nor before the shipment left (rule before_shipping).
    Decision: `lines` may be (kit number, condition) pairs, passed on as given, so a kit listed
    twice is refused here by the receipt rules (field lines, rule shipment) whatever the door;
    a dict would silently keep the last."""
    with transaction() as session:
        user = acting_user(session, actor, Permission.RECEIVE_SHIPMENTS)
        row = _locked_shipment(session, shipment_id)
        require_site(user, row.site_id, not_found("shipment", shipment_id, field="shipment_id"))
        lock_sites(session, [row.site_id])  # the site before its kits
        on = _received_on(received_on, row, session.get(Site, row.site_id))
        value = _value(session, row)
        try:
            received, events = rules.receive(value, lines, excursion=excursion)
        except ShipmentError as error:
            raise _refused(error) from None
        kits = kits_by_number(session, value.kits)
        _apply_events(session, events, kits, actor=actor, shipment_id=row.id)
        row.state, row.received_at = received.state, clock.now()
        row.received_by_id, row.temperature_excursion = actor.user_id, excursion
        row.received_on = on
        tally = rules.tally(received)
        audit.record(
            session,
            actor=actor,
            action="shipment.received",
            entity_type="shipment",
            entity_id=row.id,
            site_id=row.site_id,
            after={
                "number": row.number,
                "good": tally.received,
                "damaged": tally.damaged,
                "missing": tally.missing,
                "temperature_excursion": excursion,
                "received_on": on.isoformat(),
                "conditions": dict(received.conditions),
            },
        )
        return row


def _received_on(value: date | str | None, row: Shipment, site: Site | None) -> date:
    """The receipt's date at the destination site: today there if not given."""
    from iwrs.services.stated_dates import parse_stated_date_text

    assert site is not None  # a shipment's site is a foreign key
    today = clock.today(site)
    if value is None or (isinstance(value, str) and not value.strip()):
        return today
    on = parse_stated_date_text(value, "received_on")
    if on > today:
        raise InvalidInput(
            f"received_on: {on} is in the future (today at the site is {today})",
            field="received_on",
            rule="future_date",
        )
    shipped = clock.local_date(row.shipped_at, site) if row.shipped_at else None
    if shipped is not None and on < shipped:
        raise InvalidInput(
            f"received_on: {on} is before the shipment left the depot ({shipped})",
            field="received_on",
            rule="before_shipping",
        )
    return on


def decide_quarantine(
    *, actor: Actor, kit_numbers: list[str], release: bool, reason: str
) -> list[str]:
    """The supply manager releases quarantined kits to use, or rejects them (damaged)."""
    reason = validation.reason(reason)
    if not kit_numbers:
        raise InvalidInput(
            "kit_numbers: name at least one kit", field="kit_numbers", rule="required"
        )
    with transaction() as session:
        acting_user(session, actor, Permission.MANAGE_SUPPLY)
        places = session.execute(
            select(Kit.place_kind, Kit.place_id).where(Kit.number.in_(set(kit_numbers)))
        ).all()
        lock_sites(session, [p.place_id for p in places if p.place_kind == "site"])
        apply_expiry(session, actor=actor)
        kits = kits_by_number(session, kit_numbers)
        action = KitAction.RELEASE if release else KitAction.REJECT
        for number in sorted(kits):
            _apply(session, kits[number], action, actor=actor, detail=reason.strip())
        audit.record(
            session,
            actor=actor,
            action="kits.released" if release else "kits.rejected",
            entity_type="kit",
            entity_id=None,
            reason=reason.strip(),
            after={"kits": sorted(kits)},
        )
        return sorted(kits)
