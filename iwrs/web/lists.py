"""The unblinded statistician's list pages: generate, import, extend, status and balance.
Every view is audited (the page shows arms)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.errors import IWRSError
from iwrs.inputs import load_form
from iwrs.inputs.lists import ListExtensionInput, ListGenerationInput, ListImportInput
from iwrs.services import randomization, randomization_views
from iwrs.uploads import MAX_UPLOAD_BYTES, decode_text
from iwrs.web import flash_refusal

bp = Blueprint("lists", __name__, url_prefix="/lists")


@bp.get("/")
@requires(Permission.MANAGE_LISTS, Permission.SEE_ARM)
def index():  # type: ignore[no-untyped-def]
    """A page of strata (`randomization_views.STRATA_PAGE`, keyset by stratum: "More strata")
    with the overall allocation; the CSV export holds every stratum."""
    status = randomization_views.list_status(
        actor=Actor.of(current_user), after=request.args.get("after") or None
    )
    return render_template("lists.html", status=status)


@bp.post("/generate")
@requires(Permission.MANAGE_LISTS)
def generate():  # type: ignore[no-untyped-def]
    try:
        given = load_form(ListGenerationInput, request.form)
        row = randomization.generate_list(actor=Actor.of(current_user), **given)
    except IWRSError as refusal:
        flash_refusal(refusal)
        return redirect(url_for("lists.index"))
    flash(f"List {row.name} generated (fingerprint {row.fingerprint[:16]}…).", "info")
    return redirect(url_for("lists.index"))


@bp.post("/import")
@requires(Permission.MANAGE_LISTS)
def import_():  # type: ignore[no-untyped-def]
    upload = request.files.get("file")
    try:
        given = load_form(ListImportInput, request.form)
        text = decode_text(upload.read(MAX_UPLOAD_BYTES + 1)) if upload else ""
        row = randomization.import_list(actor=Actor.of(current_user), csv_text=text, **given)
    except IWRSError as refusal:
        flash_refusal(refusal)
        return redirect(url_for("lists.index"))
    flash(f"List {row.name} imported.", "info")
    return redirect(url_for("lists.index"))


@bp.post("/extend")
@requires(Permission.MANAGE_LISTS)
def extend():  # type: ignore[no-untyped-def]
    try:
        given = load_form(ListExtensionInput, request.form)
        added = randomization.extend_list(actor=Actor.of(current_user), **given)
    except IWRSError as refusal:
        flash_refusal(refusal)
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
