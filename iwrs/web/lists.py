"""The unblinded statistician's list pages: generate, import, extend, status and balance.
Every view is audited (the page shows arms)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from blinding import list_mapping
from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.errors import InvalidInput, IWRSError
from iwrs.inputs import load_form
from iwrs.inputs.lists import (
    ListExtensionInput,
    ListGenerationInput,
    ListImportInput,
    ListMappingInput,
)
from iwrs.services import randomization, randomization_views
from iwrs.uploads import MAX_UPLOAD_BYTES, decode_text
from iwrs.web import flash_refusal

bp = Blueprint("lists", __name__, url_prefix="/lists")
MAPPING_VALUES_SHOWN = 30


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


def _mapping_page(csv_text: str, form: Any, status: int = 200) -> Any:
    columns, values = list_mapping.header_and_values(csv_text, limit=MAPPING_VALUES_SHOWN)
    options = [("", "— none —")] + [(column, column) for column in columns if column]
    factor_names = [f.factor for f in current_app.extensions["iwrs.protocol"].stratification]
    layout, suggested = list_mapping.suggested_fields(columns, factor_names)
    page = render_template(
        "list_mapping.html",
        csv_text=csv_text,
        columns=columns,
        values=values,
        options=options,
        layout=layout,
        suggested=suggested,
        form=form,
        limit=MAPPING_VALUES_SHOWN,
    )
    return page, status


@bp.post("/import/map")
@requires(Permission.MANAGE_LISTS, Permission.SEE_ARM)
def import_map():  # type: ignore[no-untyped-def]
    """The mapping step: the uploaded file's columns and values, and the mapping form."""
    upload = request.files.get("file")
    try:
        load_form(ListImportInput, request.form)
        text = decode_text(upload.read(MAX_UPLOAD_BYTES + 1)) if upload else ""
        if not text.strip():
            raise InvalidInput("file: choose a file", field="file", rule="required")
    except IWRSError as refusal:
        flash_refusal(refusal)
        return redirect(url_for("lists.index"))
    return _mapping_page(text, request.form)


@bp.post("/import/mapped")
@requires(Permission.MANAGE_LISTS, Permission.SEE_ARM)
def import_mapped():  # type: ignore[no-untyped-def]
    """Import the file through the mapping; refused: the mapping page again, inputs kept."""
    try:
        given = load_form(ListMappingInput, request.form)
        row = randomization.import_list(actor=Actor.of(current_user), **given)
    except IWRSError as refusal:
        flash_refusal(refusal)
        return _mapping_page(request.form.get("csv_text", ""), request.form, 422)
    flash(f"List {row.name} imported through the column mapping.", "info")
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
