"""The home page, a task list for the user's role (iwrs/services/homes.py); the in-app inbox;
the supply manager's acknowledging and resolving of alerts from the home page."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.errors import IWRSError
from iwrs.inputs import load_form
from iwrs.inputs.supply import AlertResolutionInput
from iwrs.models.users import Role
from iwrs.services import alerts, homes, inbox, queries
from iwrs.web import flash_refusal

bp = Blueprint("main", __name__)

# Each role's home: its read model (homes.py) under the name its template part reads.
_HOMES: dict[Role, tuple[str, Any]] = {
    Role.INVESTIGATOR: ("investigator", homes.investigator_home),
    Role.PHARMACIST: ("pharmacist", homes.pharmacist_home),
    Role.SUPPLY_MANAGER: ("supply_manager", homes.supply_home),
    Role.UNBLINDED_STATISTICIAN: ("statistician", homes.statistician_home),
    Role.AUDITOR: ("auditor", homes.auditor_home),
    Role.ADMIN: ("admin", homes.admin_home),
}


@bp.get("/")
@login_required
def home():  # type: ignore[no-untyped-def]
    actor = Actor.of(current_user)
    part, read_model = _HOMES[current_user.role]
    return render_template(
        "home.html",
        sites=queries.visible_sites(actor=actor),
        part=part,
        tasks=read_model(actor=actor),
        notices=queries.notices_of(actor=actor, unread_only=True),
    )


@bp.get("/inbox")
@login_required
def inbox_page():  # type: ignore[no-untyped-def]
    return render_template("inbox.html", items=inbox.inbox_of(actor=Actor.of(current_user)))


@bp.post("/inbox/messages/<int:notification_id>/read")
@login_required
def message_read(notification_id: int):  # type: ignore[no-untyped-def]
    inbox.mark_message_read(actor=Actor.of(current_user), notification_id=notification_id)
    flash("Marked as read.", "info")
    return redirect(url_for("main.inbox_page"))


@bp.post("/alerts/<int:alert_id>/acknowledge")
@requires(Permission.MANAGE_SUPPLY)
def alert_acknowledge(alert_id: int):  # type: ignore[no-untyped-def]
    try:
        alerts.acknowledge_alert(actor=Actor.of(current_user), alert_id=alert_id)
    except IWRSError as refusal:
        if refusal.status == 404:
            raise
        flash_refusal(refusal)
        return redirect(url_for("main.home") + "#alerts")
    flash("Alert acknowledged.", "info")
    return redirect(url_for("main.home") + "#alerts")


@bp.post("/alerts/<int:alert_id>/resolve")
@requires(Permission.MANAGE_SUPPLY)
def alert_resolve(alert_id: int):  # type: ignore[no-untyped-def]
    try:
        given = load_form(AlertResolutionInput, request.form, prefix=f"a{alert_id}-")
        alerts.resolve_alert(
            actor=Actor.of(current_user), alert_id=alert_id, reason=given["reason"]
        )
    except IWRSError as refusal:
        if refusal.status == 404:
            raise
        flash_refusal(refusal)
        return redirect(url_for("main.home") + "#alerts")
    flash("Alert resolved.", "info")
    return redirect(url_for("main.home") + "#alerts")


@bp.get("/healthz")
def health():  # type: ignore[no-untyped-def]
    return {"status": "ok"}
