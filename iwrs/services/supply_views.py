"""Read-side views of supply for pages and the API: what blinded users may see (kit numbers,
types, blinded lots, expiry, states, totals), scoped to the user's sites."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import aliased

from iwrs import clock
from iwrs.audit import Actor
from iwrs.auth import Permission, not_found, require_in_scope
from iwrs.db import read_session
from iwrs.models.sites import Site
from iwrs.models.subjects import Subject
from iwrs.models.supply import Kit, KitCount, KitEvent, Lot, Shipment, SupplyAlert
from supply.shipments import ShipmentState
from supply.states import KitState


@dataclass(frozen=True)
class KitLine:
    number: str
    kit_type: str
    lot: str
    expiry: date
    state: str


def _lines(query) -> list[KitLine]:  # type: ignore[no-untyped-def]
    return [line for _, line in _lines_by_id(query)]


INVENTORY_PAGE = 200  # kits per page of a site's inventory


def _reader(actor: Actor) -> frozenset[int] | None:
    """The wall of the site-scoped supply views: VIEW_SUPPLY (pharmacists, supply managers,
    the operator); the sites the actor may read (None: every site)."""
    from iwrs.services.users import site_reader

    return site_reader(actor, Permission.VIEW_SUPPLY)


def site_inventory(
    *, actor: Actor, site_id: int, after: str | None = None, limit: int | None = None
) -> list[KitLine]:
    """Every kit at the site (any state), by number: never its treatment. Paged by keyset
    when asked (the `limit` kits numbered after `after`)."""
    require_in_scope(_reader(actor), site_id)
    return [
        KitLine(k.number, k.kit_type, code, expiry, str(k.state))
        for k, code, expiry in read_session().execute(
            site_inventory_query(site_id, after=after, limit=limit)
        )
    ]


def site_inventory_query(site_id: int, *, after: str | None, limit: int | None) -> Select[Any]:
    """The statement of `site_inventory`: rows (Kit, lot code, lot expiry) by kit number: the
    kits at the site and those dispensed to its subjects (issue 15: a dispensed kit stays in
    the site's inventory, in its state, until it comes back)."""
    subjects = select(Subject.id).where(Subject.site_id == site_id)
    shelf = select(Kit).where(
        or_(
            and_(Kit.place_kind == "site", Kit.place_id == site_id),
            and_(Kit.place_kind == "subject", Kit.place_id.in_(subjects)),
        )
    )
    if after:
        shelf = shelf.where(Kit.number > after)
    # Decision (issue 13, found at 890,000 kits): the site's kits are gathered first (a
    # MATERIALIZED CTE, by the place index; a shelf is bounded by the site's stock), then sorted
    # and cut. As one `ORDER BY number LIMIT n`, PostgreSQL walked the kit-number index across
    # every kit of the trial, filtering for the site (2.6 s a page at the scale world). The test:
    # tests/integration/test_site_inventory_plan.py.
    cte = shelf.cte("shelf").prefix_with("MATERIALIZED")
    kit = aliased(Kit, cte)
    query = select(kit, Lot.code, Lot.expiry).join(Lot, kit.lot_id == Lot.id).order_by(kit.number)
    return query.limit(limit) if limit is not None else query


def site_kit_line(*, actor: Actor, kit_number: str) -> tuple[KitLine, int]:
    """One kit at (or dispensed from) one of the actor's sites, and that site's id, for the
    pages that confirm an act on it first (NotFound `exists` for a kit elsewhere or none)."""
    scope = _reader(actor)
    missing = not_found("kit", kit_number, field="kit_number")
    found = (
        read_session()
        .execute(
            select(Kit, Lot.code, Lot.expiry)
            .join(Lot, Kit.lot_id == Lot.id)
            .where(Kit.number == kit_number)
        )
        .first()
    )
    if found is None:
        raise missing
    kit, code, expiry = found
    site_id: int | None = kit.place_id if kit.place_kind == "site" else None
    if kit.place_kind == "subject":
        subject = read_session().get(Subject, kit.place_id)
        site_id = subject.site_id if subject else None
    if site_id is None:
        raise missing
    require_in_scope(scope, site_id, missing)
    return KitLine(kit.number, kit.kit_type, code, expiry, str(kit.state)), site_id


DESTROYABLE = (KitState.PENDING_DESTRUCTION, KitState.DAMAGED, KitState.EXPIRED)
DESTRUCTION_PAGE = 100  # kits per page of the destruction list


@dataclass(frozen=True)
class DestroyableKit:
    line: KitLine
    where: str  # the site's code, or "depot"


def destroyable_kits(
    *, actor: Actor, after: str | None = None, limit: int = DESTRUCTION_PAGE
) -> list[DestroyableKit]:
    """Kits that may be destroyed (pending destruction, damaged, expired), by number, with the
    site holding them: the supply manager's list to pick from (keyset: numbers after `after`)."""
    _manager(actor)
    query = (
        select(Kit, Lot.code, Lot.expiry, Site.code)
        .join(Lot, Kit.lot_id == Lot.id)
        .outerjoin(Site, and_(Kit.place_kind == "site", Site.id == Kit.place_id))
        .where(Kit.state.in_([str(s) for s in DESTROYABLE]))
        .order_by(Kit.number)
        .limit(limit)
    )
    if after:
        query = query.where(Kit.number > after)
    return [
        DestroyableKit(KitLine(k.number, k.kit_type, code, expiry, str(k.state)), site or "depot")
        for k, code, expiry, site in read_session().execute(query)
    ]


def shipment_kits(*, actor: Actor, shipment_id: int) -> list[KitLine]:
    """The shipment's kits, by number, each in the state the shipment left it (in transit,
    available on receipt, damaged, missing, quarantined on an excursion, back at the depot on a
    cancellation), never the kit's later life. Decision (issue 10, found by the partition-world
    test): a top-up's per-arm make-up depends on the arms, so showing which of a shipment's kits
    were later dispensed would hint at who shares an arm; the site inventory shows kits now.
    Only a shipment the actor may see (NotFound `exists` otherwise)."""
    visible_shipment(actor=actor, shipment_id=shipment_id)
    last: dict[int, str] = {}
    for kit_id, to_state in read_session().execute(
        select(KitEvent.kit_id, KitEvent.to_state)
        .where(KitEvent.shipment_id == shipment_id)
        .order_by(KitEvent.id)
    ):
        last[kit_id] = to_state
    if not last:
        return []
    return [
        KitLine(line.number, line.kit_type, line.lot, line.expiry, last[kit_id])
        for kit_id, line in _lines_by_id(select(Kit).where(Kit.id.in_(last)))
    ]


def _lines_by_id(query) -> list[tuple[int, KitLine]]:  # type: ignore[no-untyped-def]
    rows = read_session().execute(
        query.join(Lot, Kit.lot_id == Lot.id).add_columns(Lot.code, Lot.expiry).order_by(Kit.number)
    )
    return [
        (k.id, KitLine(k.number, k.kit_type, code, expiry, str(k.state)))
        for k, code, expiry in rows
    ]


SHIPMENT_PAGE = 25  # the latest shipments the supply page lists (issue 13: 50 before)

# What a site sees of its shipments (issue 15): from the moment they leave the depot. A requested
# (or cancelled before shipping) shipment is the depot's plan, nothing a site can act on.
SITE_VISIBLE = (ShipmentState.SHIPPED, ShipmentState.DELIVERED, ShipmentState.RECEIVED)


def visible_shipments(
    *, actor: Actor, before: int | None = None, limit: int | None = None
) -> list[Shipment]:
    """Shipments to the actor's sites, newest first; paged by keyset (ids below `before`). A
    site-scoped reader sees them from "shipped" on (SITE_VISIBLE)."""
    scope = _reader(actor)
    query = select(Shipment).order_by(Shipment.id.desc())
    if before is not None:
        query = query.where(Shipment.id < before)
    if limit is not None:
        query = query.limit(limit)
    if scope is not None:
        query = query.where(
            Shipment.site_id.in_(scope), Shipment.state.in_([str(s) for s in SITE_VISIBLE])
        )
    return list(read_session().scalars(query))


def visible_shipment(*, actor: Actor, shipment_id: int) -> Shipment:
    """One shipment to one of the actor's sites, from "shipped" on for a site-scoped reader
    (NotFound `exists` otherwise, as for none)."""
    scope = _reader(actor)
    row = read_session().get(Shipment, shipment_id)
    missing = not_found("shipment", shipment_id, field="shipment_id")
    if row is None or (scope is not None and row.state not in SITE_VISIBLE):
        raise missing
    require_in_scope(scope, row.site_id, missing)
    return row


LOT_PAGE = 25  # blinded lots per page of the depot table (the full world has 89)


def _manager(actor: Actor) -> None:
    """The depot and cross-site views are the supply manager's (and the operator's):
    Forbidden `permission` for anyone else."""
    from iwrs.services.users import require

    require(actor, Permission.MANAGE_SUPPLY)


def depot_stock(
    *, actor: Actor, after: str | None = None, limit: int | None = None
) -> list[tuple[Lot, dict[str, int]]]:
    """Per blinded lot of a page (keyset by lot code: the `limit` lots coded after `after`): the
    depot's kits by state (all treatments together), read from the `kit_count` summary
    (iwrs.services.kit_counts) by key: O(page x states) rows whatever the number of kits.
    Decision (issue 13): the table shows the depot's stock, as its heading says; counts across
    every place of a lot (a sum over every site's and subject's rows, growing with the trial)
    belong to the reconciliation report, not to this page."""
    _manager(actor)
    session = read_session()
    query = select(Lot).order_by(Lot.code).limit(limit or LOT_PAGE)
    if after:
        query = query.where(Lot.code > after)
    lots = list(session.scalars(query))
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    if not lots:
        return []
    for lot_id, state, n in session.execute(
        select(KitCount.lot_id, KitCount.state, func.sum(KitCount.n))
        .where(
            KitCount.place_kind == "depot",
            KitCount.lot_id.in_(sorted(lot.id for lot in lots)),
            KitCount.n > 0,
        )
        .group_by(KitCount.lot_id, KitCount.state)
    ):
        counts[lot_id][state] = int(n)
    return [(lot, counts[lot.id]) for lot in lots]


SITE_PAGE = 25  # sites per page of the supply page's site table


def site_page(*, actor: Actor, after: str | None = None, limit: int | None = None) -> list[Site]:
    """The actor's sites by code, paged by keyset (the `limit` sites, SITE_PAGE by default,
    coded after `after`)."""
    scope = _reader(actor)
    query = select(Site).order_by(Site.code).limit(limit or SITE_PAGE)
    if after:
        query = query.where(Site.code > after)
    if scope is not None:
        query = query.where(Site.id.in_(scope))
    return list(read_session().scalars(query))


def stock_by_site(*, actor: Actor, site_ids: Collection[int] = ()) -> dict[int, dict[str, int]]:
    """Per site of `site_ids` (a page): counts of the kits there by state (all treatments
    together), from the `kit_count` summary by primary-key prefix: O(page) rows."""
    _manager(actor)
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    if not site_ids:
        return counts
    for site_id, state, n in read_session().execute(
        select(KitCount.place_id, KitCount.state, func.sum(KitCount.n))
        .where(
            KitCount.place_kind == "site",
            KitCount.place_id.in_(sorted(site_ids)),
            KitCount.n > 0,
        )
        .group_by(KitCount.place_id, KitCount.state)
    ):
        counts[site_id][state] = int(n)
    return counts


def site_codes(*, actor: Actor, site_ids: Collection[int]) -> dict[int, str]:
    """Site code by id, for the ids given (a page's shipments) that the actor may see."""
    scope = _reader(actor)
    if scope is not None:
        site_ids = set(site_ids) & scope
    if not site_ids:
        return {}
    rows = read_session().execute(select(Site.id, Site.code).where(Site.id.in_(sorted(site_ids))))
    return {site_id: code for site_id, code in rows}


def open_alerts(*, actor: Actor) -> list[SupplyAlert]:
    _manager(actor)
    return list(
        read_session().scalars(
            select(SupplyAlert)
            .where(SupplyAlert.resolved_at.is_(None))
            .order_by(SupplyAlert.id.desc())
        )
    )


def quarantined(*, actor: Actor) -> list[KitLine]:
    _manager(actor)
    return _lines(select(Kit).where(Kit.state == KitState.QUARANTINED))


def available_history(*, actor: Actor) -> dict[str, list[tuple[date, int]]]:
    """Available kits per site code at the end of each of the site's local days with a change
    (for the chart)."""
    _manager(actor)
    session = read_session()
    rows = {s.id: s for s in session.scalars(select(Site))}
    sites = {site_id: s.code for site_id, s in rows.items()}
    where: dict[int, int] = {}
    level: Counter[int] = Counter()
    points: dict[str, dict[date, int]] = defaultdict(dict)
    for event in session.scalars(select(KitEvent).order_by(KitEvent.id)):
        before_site = where.get(event.kit_id)
        if event.from_state == KitState.AVAILABLE and before_site is not None:
            level[before_site] -= 1
            day = clock.local_date(event.at, rows[before_site])
            points[sites[before_site]][day] = level[before_site]
        if event.to_place_kind == "site":
            where[event.kit_id] = event.to_place_id
            if event.to_state == KitState.AVAILABLE:
                level[event.to_place_id] += 1
                code = sites[event.to_place_id]
                day = clock.local_date(event.at, rows[event.to_place_id])
                points[code][day] = level[event.to_place_id]
    return {code: sorted(days.items()) for code, days in sorted(points.items())}
