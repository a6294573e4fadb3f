"""The auditor's pages: the trail filtered and paged, an event's detail, the chain's integrity
status with "verify now", and exports (CSV, JSON Lines) that verify offline."""

from __future__ import annotations

import json

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_login import current_user

from iwrs import audit_anchor
from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.errors import IWRSError
from iwrs.models.users import Role
from iwrs.services import audit_views
from iwrs.validation import page_key
from iwrs.web import flash_refusal

bp = Blueprint("audit", __name__, url_prefix="/audit")
# A CSV export is a ZIP: the plain CSV and its signed manifest (iwrs/audit_export.py).
TRAIL_ARGUMENTS = (
    "username",
    "role",
    "action",
    "subject",
    "site",
    "date_from",
    "date_to",
    "before",
    "after",
)
EXPORT_NAMES = {"csv": "audit-trail-csv.zip", "jsonl": "audit-trail.jsonl"}


@bp.get("/")
@requires(Permission.VIEW_AUDIT)
def index():  # type: ignore[no-untyped-def]
    """The trail, filtered, a page at a time both ways; a refused filter (a reversed date
    range, a malformed date) is named beside the form, which keeps what was typed."""
    actor = Actor.of(current_user)
    status, events, next_before, newer_after = 200, [], None, None
    try:
        filters = audit_views.Filters.parse(request.args)
    except IWRSError as refusal:
        flash_refusal(refusal)
        status, filters = refusal.status, audit_views.Filters()
    else:
        events, next_before, newer_after = audit_views.page(
            filters,
            actor=actor,
            before=request.args.get("before", type=page_key),
            after=request.args.get("after", type=page_key),
        )
    checkpoint, head, full_walk = audit_views.integrity(actor=actor)
    return render_template(
        "audit.html",
        events=events,
        names=audit_views.names_of(events, actor=Actor.of(current_user)),
        next_before=next_before,
        newer_after=newer_after,
        filters=filters,
        typed=request.args,
        # An event's link carries this page, so its "Back to the trail" returns here.
        here={
            **filters.as_dict(),
            **{k: v for k, v in request.args.items() if k in ("before", "after") and v},
        },
        categories=audit_views.ACTION_CATEGORIES,
        checkpoint=checkpoint,
        head=head,
        full_walk=full_walk,
        roles=[r.value for r in Role] + ["system", "unknown"],
    ), status


@bp.get("/events/<int:seq>")
@requires(Permission.VIEW_AUDIT)
def detail(seq: int):  # type: ignore[no-untyped-def]
    event = audit_views.event(seq, actor=Actor.of(current_user))

    def pretty(text: str | None) -> str:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False) if text else ""

    # "Back to the trail" returns to the page and filters the event was opened from.
    back = {k: v for k, v in request.args.items() if k in TRAIL_ARGUMENTS and v}
    return render_template(
        "audit_event.html",
        event=event,
        name=audit_views.names_of([event], actor=Actor.of(current_user))[event.seq],
        before=pretty(event.before),
        after=pretty(event.after),
        back=back,
    )


@bp.post("/verify")
@requires(Permission.VIEW_AUDIT)
def verify():  # type: ignore[no-untyped-def]
    checkpoint = audit_views.verify_now(actor=Actor.of(current_user))
    if checkpoint.ok:
        flash(f"Chain verified: {checkpoint.seq} events intact.", "info")
    else:
        flash(f"Chain verification FAILED: {checkpoint.problem}", "error")
    return redirect(url_for("audit.index"))


@bp.get("/public-key")
def public_key():  # type: ignore[no-untyped-def]
    """The Ed25519 public key that verifies exports and checkpoints (PEM; public, no sign-in)."""
    return Response(audit_anchor.public_key_pem(), mimetype="application/x-pem-file")


@bp.get("/export.<kind>")
@requires(Permission.VIEW_AUDIT)
def export(kind: str):  # type: ignore[no-untyped-def]
    if kind not in ("csv", "jsonl"):
        return redirect(url_for("audit.index"))
    content, media = audit_views.export(
        audit_views.Filters.parse(request.args), kind=kind, actor=Actor.of(current_user)
    )
    return Response(
        content,
        mimetype=media,
        headers={"Content-Disposition": f"attachment; filename={EXPORT_NAMES[kind]}"},
    )
