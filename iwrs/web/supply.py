"""Supply pages: the pharmacist's inventory, receipts and returns; the supply manager's depot,
shipments, alerts, quarantine, lots, reconciliation and stock chart. No page shows a treatment."""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from iwrs import clock
from iwrs.audit import Actor
from iwrs.auth import Permission, has_permission, requires
from iwrs.errors import IWRSError
from iwrs.inputs import load_form
from iwrs.inputs.supply import (
    CONDITIONS,
    DestructionInput,
    KitReportInput,
    LotExpiryInput,
    ManualShipmentInput,
    QuarantineDecisionInput,
    ReceiptPageInput,
    ReturnVerificationInput,
    ShipmentCancellationInput,
    ShippingInput,
)
from iwrs.services import accountability, queries, shipments, supply, supply_views
from iwrs.validation import page_key
from iwrs.web import flash_refusal

bp = Blueprint("supply", __name__, url_prefix="/supply")


def _actor() -> Actor:
    return Actor.of(current_user)


def _done(message: str, target: str) -> Any:
    flash(message, "info")
    return redirect(target)


def _refused(refusal: IWRSError, target: str) -> Any:
    flash_refusal(refusal)
    return redirect(target)


@bp.get("/")
@requires(Permission.VIEW_SUPPLY)
def index():  # type: ignore[no-untyped-def]
    """Decision (issue 13): summaries only, a fixed number of statements whatever the trial's
    size - a page of sites (keyset by code, `supply_views.SITE_PAGE`, "More sites") and one
    of lots (`LOT_PAGE`, "More lots"), their counts (sites' and the depot's) from the
    maintained `kit_count` summary (read by key, never a GROUP
    BY over the kits), the latest shipments (paged); the stock chart, which replays the
    availability history, and the reconciliation in counts (the kit numbers behind a
    difference come from `iwrs supply check-ledger`), which reads every received kit, are
    pages of their own (`supply.chart`, `supply.reconciliation`)."""
    manager = has_permission(current_user, Permission.MANAGE_SUPPLY)
    actor = Actor.of(current_user)
    before = request.args.get("before", type=page_key)
    sites = supply_views.site_page(actor=actor, after=request.args.get("after") or None)
    shown = supply_views.visible_shipments(
        actor=actor, before=before, limit=supply_views.SHIPMENT_PAGE
    )
    lots_after = request.args.get("lots_after") or None
    depot = supply_views.depot_stock(actor=actor, after=lots_after) if manager else []
    return render_template(
        "supply.html",
        manager=manager,
        sites=sites,
        next_after=sites[-1].code if len(sites) == supply_views.SITE_PAGE else None,
        site_code=supply_views.site_codes(actor=actor, site_ids={s.site_id for s in shown}),
        stock=supply_views.stock_by_site(actor=actor, site_ids=[site.id for site in sites])
        if manager
        else {},
        shipments=shown,
        next_before=shown[-1].id if len(shown) == supply_views.SHIPMENT_PAGE else None,
        depot=depot,
        next_lot=depot[-1][0].code if len(depot) == supply_views.LOT_PAGE else None,
        alerts=supply_views.open_alerts(actor=actor) if manager else [],
        quarantined=supply_views.quarantined(actor=actor) if manager else [],
    )


@bp.get("/reconciliation")
@requires(Permission.MANAGE_SUPPLY)
def reconciliation():  # type: ignore[no-untyped-def]
    """Received = accounted for, per site and overall, in counts (a report: its two GROUP BY
    statements read every received kit, 11 s at the scale world's 890,000 kits, so it is not
    part of the supply page; issue 13, bench/README.md)."""
    sites = queries.visible_sites(actor=Actor.of(current_user))
    return render_template(
        "supply_reconciliation.html",
        reconciliation=accountability.reconciliation_summary(actor=Actor.of(current_user)),
        site_code={site.id: site.code for site in sites},
    )


@bp.get("/chart")
@requires(Permission.MANAGE_SUPPLY)
def chart():  # type: ignore[no-untyped-def]
    """Available kits by site over time (replays the availability events: a report)."""
    return render_template(
        "supply_chart.html", history=supply_views.available_history(actor=Actor.of(current_user))
    )


@bp.get("/sites/<int:site_id>")
@requires(Permission.VIEW_SUPPLY)
def site_inventory(site_id: int):  # type: ignore[no-untyped-def]
    site = queries.visible_site(actor=Actor.of(current_user), site_id=site_id)
    limit = supply_views.INVENTORY_PAGE
    kits = supply_views.site_inventory(
        actor=Actor.of(current_user),
        site_id=site_id,
        after=request.args.get("after") or None,
        limit=limit,
    )
    return render_template(
        "supply_site.html",
        site=site,
        kits=kits,
        next_after=kits[-1].number if len(kits) == limit else None,
    )


def _shipment_page(shipment_id: int, status: int = 200, scan_status: str = "") -> Any:
    """The shipment page; after a refused receipt or a scan without JavaScript, the receipt
    form shows again with what was chosen."""
    actor = Actor.of(current_user)
    row = supply_views.visible_shipment(actor=actor, shipment_id=shipment_id)
    site = queries.visible_site(actor=actor, site_id=row.site_id)
    kits = supply_views.shipment_kits(actor=actor, shipment_id=row.id)
    chosen = {
        key.removeprefix("kit-"): value
        for key, value in request.form.items()
        if key.startswith("kit-") and value in CONDITIONS
    }
    scan_condition = request.form.get("scan_condition", "")
    scanned = (request.form.get("scan") or "").strip()
    if request.form.get("action") == "scan":
        if scan_condition not in CONDITIONS:
            scan_status = "Choose the condition of scanned kits first."
        elif scanned not in {k.number for k in kits}:
            scan_status = f"Kit {scanned[:20]} is not in this shipment."
        else:
            chosen[scanned] = scan_condition
            scan_status = f"Kit {scanned}: {scan_condition}."
    return render_template(
        "shipment.html",
        shipment=row,
        kits=kits,
        site=site,
        site_today=clock.today(site),
        shipped_on=clock.local_date(row.shipped_at, site) if row.shipped_at else None,
        conditions=CONDITIONS,
        chosen=chosen,
        scan_condition=scan_condition,
        scan_status=scan_status,
    ), status


@bp.get("/shipments/<int:shipment_id>")
@requires(Permission.VIEW_SUPPLY)
def shipment(shipment_id: int):  # type: ignore[no-untyped-def]
    return _shipment_page(shipment_id)


def _refused_receipt(refusal: IWRSError, shipment_id: int, target: str) -> Any:
    """The receipt form again with the refusal and what was chosen; a shipment the person may
    not see is refused as before (the flash on the page it redirects to)."""
    flash_refusal(refusal)
    try:
        supply_views.visible_shipment(actor=_actor(), shipment_id=shipment_id)
    except IWRSError:
        return redirect(target)
    return _shipment_page(shipment_id, refusal.status)


@bp.post("/shipments/<int:shipment_id>/receipt")
@requires(Permission.RECEIVE_SHIPMENTS)
def receive(shipment_id: int):  # type: ignore[no-untyped-def]
    """Decision (issue 15): every kit's condition and the temperature answer are chosen, never
    preset; a refused receipt shows the page again with what was chosen (status 422/409)."""
    target = url_for("supply.shipment", shipment_id=shipment_id)
    if request.form.get("action") == "scan":  # the scan field without JavaScript
        return _shipment_page(shipment_id)
    lines = [
        {"kit_number": key.removeprefix("kit-"), "condition": value}
        for key, value in request.form.items()
        if key.startswith("kit-")
    ]
    try:
        given = load_form(ReceiptPageInput, request.form, lines=lines)
        row = shipments.receive_shipment(
            actor=_actor(),
            shipment_id=shipment_id,
            lines=[(line["kit_number"], line["condition"]) for line in given["lines"]],
            excursion=given["temperature_excursion"],
            received_on=given["received_on"],
        )
    except IWRSError as refusal:
        return _refused_receipt(refusal, shipment_id, target)
    note = (
        " Kits are quarantined until the supply manager decides."
        if row.temperature_excursion
        else ""
    )
    return _done(f"Shipment {row.number} received.{note}", target)


@bp.post("/shipments/<int:shipment_id>/ship")
@requires(Permission.MANAGE_SUPPLY)
def ship(shipment_id: int):  # type: ignore[no-untyped-def]
    target = url_for("supply.shipment", shipment_id=shipment_id)
    try:
        given = load_form(ShippingInput, request.form)
        row = shipments.ship_shipment(
            actor=_actor(),
            shipment_id=shipment_id,
            courier=given["courier"],
            tracking_number=given["tracking_number"],
        )
    except IWRSError as refusal:
        return _refused(refusal, target)
    return _done(f"Shipment {row.number} shipped.", target)


@bp.post("/shipments/<int:shipment_id>/cancel")
@requires(Permission.MANAGE_SUPPLY)
def cancel(shipment_id: int):  # type: ignore[no-untyped-def]
    target = url_for("supply.shipment", shipment_id=shipment_id)
    try:
        given = load_form(ShipmentCancellationInput, request.form)
        row = shipments.cancel_shipment(
            actor=_actor(), shipment_id=shipment_id, reason=given["reason"]
        )
    except IWRSError as refusal:
        return _refused(refusal, target)
    return _done(f"Shipment {row.number} cancelled; its kits are back at the depot.", target)


@bp.post("/sites/<int:site_id>/shipment")
@requires(Permission.MANAGE_SUPPLY)
def request_shipment(site_id: int):  # type: ignore[no-untyped-def]
    site = queries.visible_site(actor=Actor.of(current_user), site_id=site_id)
    try:
        given = load_form(ManualShipmentInput, request.form, site_code=site.code)
        row = shipments.request_manual_shipment(
            actor=_actor(), site_id=site.id, quantity=given["quantity"]
        )
    except IWRSError as refusal:
        return _refused(refusal, url_for("supply.index"))
    kits = len(supply_views.shipment_kits(actor=Actor.of(current_user), shipment_id=row.id))
    return _done(
        f"Shipment {row.number} requested: {kits} kit(s), the whole request.",
        url_for("supply.shipment", shipment_id=row.id),
    )


def _kit_page(template: str, number: str, **context: Any) -> Any:
    line, site_id = supply_views.site_kit_line(actor=_actor(), kit_number=number)
    site = queries.visible_site(actor=_actor(), site_id=site_id)
    return render_template(template, kit=line, site=site, **context)


@bp.get("/kits/<number>/report")
@requires(Permission.DISPENSE)
def report_form(number: str):  # type: ignore[no-untyped-def]
    """What reporting the kit damaged or lost does, a reason, and a tick to confirm."""
    return _kit_page("kit_report.html", number)


@bp.post("/kits/<number>/report")
@requires(Permission.DISPENSE)
def report(number: str):  # type: ignore[no-untyped-def]
    try:
        given = load_form(KitReportInput, request.form)
        kit = accountability.report_kit(
            actor=_actor(), kit_number=number, lost=given["what"] == "lost", reason=given["reason"]
        )
    except IWRSError as refusal:
        flash_refusal(refusal)
        return _kit_page("kit_report.html", number), refusal.status
    _, site_id = supply_views.site_kit_line(actor=_actor(), kit_number=kit.number)
    target = url_for("supply.site_inventory", site_id=site_id)
    return _done(f"Kit {kit.number} recorded as {kit.state}.", target)


@bp.get("/kits/<number>/verify")
@requires(Permission.DISPENSE)
def verify_form(number: str):  # type: ignore[no-untyped-def]
    """The second step of a return: check the kit in hand, count what is left."""
    return _kit_page("kit_verify.html", number)


@bp.post("/kits/<number>/verify")
@requires(Permission.DISPENSE)
def verify(number: str):  # type: ignore[no-untyped-def]
    try:
        given = load_form(ReturnVerificationInput, request.form)
        kit = accountability.verify_return(
            actor=_actor(), kit_number=number, units_verified=given["units_verified"]
        )
    except IWRSError as refusal:
        flash_refusal(refusal)
        return _kit_page("kit_verify.html", number), refusal.status
    _, site_id = supply_views.site_kit_line(actor=_actor(), kit_number=kit.number)
    target = url_for("supply.site_inventory", site_id=site_id)
    return _done(f"Kit {kit.number} verified; it is pending destruction.", target)


@bp.post("/quarantine")
@requires(Permission.MANAGE_SUPPLY)
def quarantine():  # type: ignore[no-untyped-def]
    target = url_for("supply.index") + "#quarantine"
    try:  # the decision is required: never reject (irreversible) by default
        given = load_form(QuarantineDecisionInput, request.form)
        kits = shipments.decide_quarantine(
            actor=_actor(),
            kit_numbers=given["kit_numbers"],
            release=given["decision"] == "release",
            reason=given["reason"],
        )
    except IWRSError as refusal:
        return _refused(refusal, target)
    done = "released" if given["decision"] == "release" else "rejected"
    return _done(f"{len(kits)} kit(s) {done}.", target)


@bp.post("/lots/<code>/expiry")
@requires(Permission.MANAGE_SUPPLY)
def lot_expiry(code: str):  # type: ignore[no-untyped-def]
    target = url_for("supply.index") + "#lots"
    try:
        given = load_form(LotExpiryInput, request.form)
        lot = supply.change_lot_expiry(
            actor=_actor(),
            lot_code=code,
            new_expiry=date.fromisoformat(given["expiry"]),
            reason=given["reason"],
        )
    except IWRSError as refusal:
        return _refused(refusal, target)
    return _done(f"Lot {lot.code} now expires on {lot.expiry}.", target)


@bp.get("/destruction")
@requires(Permission.MANAGE_SUPPLY)
def destruction_list():  # type: ignore[no-untyped-def]
    """Kits that may be destroyed; the kits ticked and a reference lead to the confirmation
    (the same page with `review`): what will happen, the meaning of the signature, the
    password."""
    actor = _actor()
    chosen = sorted(set(request.args.getlist("kit_numbers")))
    reference = (request.args.get("reference") or "").strip()
    kits = supply_views.destroyable_kits(actor=actor, after=request.args.get("after") or None)
    review = bool(request.args.get("review")) and bool(chosen) and bool(reference)
    return render_template(
        "destruction.html",
        kits=kits,
        chosen=chosen,
        reference=reference,
        review=review,
        meaning=accountability.destruction_meaning(chosen, reference) if review else None,
        next_after=kits[-1].line.number if len(kits) == supply_views.DESTRUCTION_PAGE else None,
    )


@bp.post("/destruction")
@requires(Permission.MANAGE_SUPPLY)
def destruction():  # type: ignore[no-untyped-def]
    try:
        given = load_form(DestructionInput, request.form)
        record = accountability.destroy_kits(
            actor=_actor(),
            kit_numbers=given["kit_numbers"],
            reference=given["reference"],
            signer_password=given["signature_password"],
        )
    except IWRSError as refusal:
        flash_refusal(refusal)
        return redirect(
            url_for(
                "supply.destruction_list",
                kit_numbers=request.form.getlist("kit_numbers"),
                reference=request.form.get("reference", ""),
                review="1",
            )
        )
    n = len(given["kit_numbers"])
    return _done(
        f"{n} kit(s) destroyed under {record.reference}.", url_for("supply.destruction_list")
    )
