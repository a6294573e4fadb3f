"""Site pages, scoped to the user's sites; admins activate and close sites here."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.errors import IWRSError
from iwrs.inputs import load_form
from iwrs.inputs.sites import SiteStatusInput, SiteTimeZoneInput
from iwrs.models.sites import SiteStatus
from iwrs.services import queries, sites
from iwrs.web import flash_refusal

bp = Blueprint("sites", __name__, url_prefix="/sites")


@bp.get("/")
@requires(Permission.VIEW_SITES)
def index():  # type: ignore[no-untyped-def]
    return render_template("sites.html", sites=queries.visible_sites(actor=Actor.of(current_user)))


@bp.get("/<int:site_id>")
@requires(Permission.VIEW_SITES)
def detail(site_id: int):  # type: ignore[no-untyped-def]
    return render_template(
        "site.html", site=queries.visible_site(actor=Actor.of(current_user), site_id=site_id)
    )


@bp.post("/<int:site_id>/status")
@requires(Permission.MANAGE_SITES)
def change_status(site_id: int):  # type: ignore[no-untyped-def]
    try:
        given = load_form(SiteStatusInput, request.form)
        site = sites.change_site_status(
            actor=Actor.of(current_user),
            site_id=site_id,
            status=SiteStatus(given["status"]),
            signer_password=given["signature_password"],
            understood=given["understood"],
        )
    except IWRSError as refusal:
        flash_refusal(refusal)
        return detail(site_id), refusal.status
    flash(f"Site {site.code} is now {site.status}.", "info")
    return redirect(url_for("sites.detail", site_id=site_id))


@bp.post("/<int:site_id>/time-zone")
@requires(Permission.MANAGE_SITES)
def change_time_zone(site_id: int):  # type: ignore[no-untyped-def]
    try:
        given = load_form(SiteTimeZoneInput, request.form)
        site = sites.change_site_time_zone(actor=Actor.of(current_user), site_id=site_id, **given)
    except IWRSError as refusal:
        flash_refusal(refusal)
        return detail(site_id), refusal.status
    flash(f"Site {site.code} is now in time zone {site.time_zone}.", "info")
    return redirect(url_for("sites.detail", site_id=site_id))
