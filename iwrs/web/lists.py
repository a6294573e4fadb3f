"""The unblinded statistician's list pages: generate, import, extend, status and balance.
Every view is audited (the page shows arms)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from iwrs import validation
from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.errors import IWRSError
from iwrs.services import randomization, randomization_views
from iwrs.uploads import MAX_UPLOAD_BYTES, decode_text

bp = Blueprint("lists", __name__, url_prefix="/lists")


@bp.get("/")
@requires(Permission.MANAGE_LISTS, Permission.SEE_ARM)
def index():  # type: ignore[no-untyped-def]
    status = randomization_views.list_status(actor=Actor.of(current_user))
    return render_template("lists.html", status=status)


@bp.post("/generate")
@requires(Permission.MANAGE_LISTS)
def generate():  # type: ignore[no-untyped-def]
    try:
        seed_hex = request.form.get("seed", "").strip()
        seed = validation.hex_bytes(seed_hex, field="seed", length=32) if seed_hex else None
        row = randomization.generate_list(
            actor=Actor.of(current_user),
            name=request.form.get("name", "").strip() or "list",
            dummy=request.form.get("dummy") == "y",
            seed=seed,
        )
    except IWRSError as refusal:
        flash(refusal.message, "error")
        return redirect(url_for("lists.index"))
    flash(f"List {row.name} generated (fingerprint {row.fingerprint[:16]}…).", "info")
    return redirect(url_for("lists.index"))


@bp.post("/import")
@requires(Permission.MANAGE_LISTS)
def import_():  # type: ignore[no-untyped-def]
    upload = request.files.get("file")
    try:
        text = decode_text(upload.read(MAX_UPLOAD_BYTES + 1)) if upload else ""
        row = randomization.import_list(
            actor=Actor.of(current_user),
            name=request.form.get("name", "").strip() or "imported",
            csv_text=text,
            dummy=request.form.get("dummy") == "y",
        )
    except IWRSError as refusal:
        flash(refusal.message, "error")
        return redirect(url_for("lists.index"))
    flash(f"List {row.name} imported.", "info")
    return redirect(url_for("lists.index"))


@bp.post("/extend")
@requires(Permission.MANAGE_LISTS)
def extend():  # type: ignore[no-untyped-def]
    try:
        added = randomization.extend_list(
            actor=Actor.of(current_user),
            stratum=request.form.get("stratum", ""),
            blocks=validation.integer(
                request.form.get("blocks", ""), field="blocks", minimum=1, maximum=100
            ),
            reason=request.form.get("reason", ""),
        )
    except IWRSError as refusal:
        flash(refusal.message, "error")
        return redirect(url_for("lists.index"))
    flash(f"{added} slot(s) appended.", "info")
    return redirect(url_for("lists.index"))


@bp.get("/allocations")
@requires(Permission.SEE_ARM)
def allocations():  # type: ignore[no-untyped-def]
    from iwrs.services import statistics

    return render_template(
        "allocations.html", allocations=statistics.allocations(actor=Actor.of(current_user))
    )


@bp.get("/allocations.csv")
@requires(Permission.SEE_ARM)
def allocations_csv():  # type: ignore[no-untyped-def]
    from flask import Response

    from iwrs.services import statistics

    return Response(
        statistics.allocations_csv(actor=Actor.of(current_user)),
        mimetype="text/csv",
        headers={"Content-Disposition": "attachment; filename=allocations.csv"},
    )


@bp.get("/status.csv")
@requires(Permission.SEE_ARM)
def status_csv():  # type: ignore[no-untyped-def]
    from flask import Response

    from iwrs.services import statistics

    return Response(
        statistics.list_status_csv(actor=Actor.of(current_user)),
        mimetype="text/csv",
        headers={"Content-Disposition": "attachment; filename=list-status.csv"},
    )
