"""Pharmacist pages: the visits due (today, this week, overdue) with search, filter and paging;
one subject's page to dispense, confirm the kit in hand and record the kits brought back."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.errors import IWRSError
from iwrs.inputs import load_form
from iwrs.inputs.randomization import ConfirmInput, DispenseInput
from iwrs.inputs.supply import KitReturnInput
from iwrs.models.supply import ReturnCondition
from iwrs.services import accountability, dispensing, queries, randomization_views
from iwrs.services.supply import protocol
from iwrs.web import flash_refusal

bp = Blueprint("dispensing", __name__, url_prefix="/dispensing")


def _filters() -> dict[str, Any]:
    """The board's filters from the query string; an unknown `due` falls back to today's."""
    due = request.args.get("due", "today")
    site = request.args.get("site", type=int)
    return {
        "due": due if due in randomization_views.DUE_FILTERS else "today",
        "search": (request.args.get("q") or "").strip()[:32],
        "site_id": site,
    }


@bp.get("/")
@requires(Permission.DISPENSE)
def index():  # type: ignore[no-untyped-def]
    """Decision (issue 15): the board lists the visits due (window open today by default; this
    week; overdue; or every subject), one row per subject with its next visit and window, a
    page of BOARD_PAGE; the forms are on each subject's page."""
    actor = Actor.of(current_user)
    filters = _filters()
    sites = queries.visible_sites(actor=actor)
    if filters["site_id"] not in {site.id for site in sites}:
        filters["site_id"] = None
    board = randomization_views.visits_board(
        actor=actor, after=request.args.get("after") or None, **filters
    )
    full = len(board) == randomization_views.BOARD_PAGE
    return render_template(
        "dispensing.html",
        board=board,
        sites=sites,
        filters=filters,
        due_filters=randomization_views.DUE_FILTERS,
        next_after=board[-1].subject.screening_number if full else None,
    )


def _subject_page(subject_id: int) -> str:
    return url_for("dispensing.subject", subject_id=subject_id)


@bp.get("/<int:subject_id>")
@requires(Permission.DISPENSE)
def subject(subject_id: int):  # type: ignore[no-untyped-def]
    """One subject: the visit plan, the dispensing form, the kits given (confirm the one in
    hand) and the kits brought back (record a return)."""
    actor = Actor.of(current_user)
    row = randomization_views.visit_row(actor=actor, subject_id=subject_id)
    returns = randomization_views.returns_of(actor=actor, subject_id=subject_id)
    back = {r.kit_number for r in returns}
    return render_template(
        "dispensing_subject.html",
        row=row,
        returns=returns,
        returnable=[d for d in row.dispensations if d.kit_number not in back],
        return_visits=accountability.return_visits(protocol()),
        conditions=[(c.value, c.label) for c in ReturnCondition],
    )


@bp.post("/<int:subject_id>")
@requires(Permission.DISPENSE)
def dispense(subject_id: int):  # type: ignore[no-untyped-def]
    target = _subject_page(subject_id)
    try:  # the input first, as the API does: its refusals say nothing of the subject
        given = load_form(DispenseInput, request.form)
    except IWRSError as refusal:
        flash_refusal(refusal)
        return redirect(target)
    randomization_views.visible_randomized_subject(
        actor=Actor.of(current_user), subject_id=subject_id
    )
    try:
        result = dispensing.dispense(
            actor=Actor.of(current_user),
            subject_id=subject_id,
            visit_code=given["visit_code"],
            kind=given["kind"],
            reason=given["reason"],
            visit_date=given["visit_date"],
            backdate_reason=given["backdate_reason"],
        )
    except IWRSError as refusal:
        flash_refusal(refusal)
        return redirect(target)
    flash(
        f"Give {result.subject} kit {result.kit_number} for {result.visit_code}, then confirm "
        "the number of the kit in hand below.",
        "info",
    )
    return redirect(target + f"#d{result.dispensation_id}")


@bp.post("/<int:subject_id>/returns")
@requires(Permission.DISPENSE)
def record_return(subject_id: int):  # type: ignore[no-untyped-def]
    """A kit the subject brought back (or reports lost) at a visit."""
    target = _subject_page(subject_id)
    randomization_views.visible_randomized_subject(
        actor=Actor.of(current_user), subject_id=subject_id
    )
    try:
        given = load_form(KitReturnInput, request.form)
        kit = accountability.record_return(
            actor=Actor.of(current_user),
            kit_number=given["kit_number"],
            condition=given["condition"],
            visit_code=given["visit_code"],
            units_returned=given["units_returned"],
            returned_on=given["returned_on"],
            subject_id=subject_id,  # the kit must be this subject's
        )
    except IWRSError as refusal:
        flash_refusal(refusal)
        return redirect(target + "#returns")
    if given["condition"] == ReturnCondition.LOST:
        flash(f"Kit {kit.number} recorded as lost by the subject.", "info")
    else:
        flash(
            f"Kit {kit.number} recorded as returned; a pharmacist verifies it next, then it "
            "waits for destruction.",
            "info",
        )
    return redirect(target + "#returns")


@bp.post("/confirm/<int:dispensation_id>")
@requires(Permission.DISPENSE)
def confirm(dispensation_id: int):  # type: ignore[no-untyped-def]
    back = request.form.get("back", "")
    target = back if back.startswith("/dispensing/") else url_for("dispensing.index")
    try:
        given = load_form(ConfirmInput, request.form)
        dispensing.confirm_kit(
            actor=Actor.of(current_user),
            dispensation_id=dispensation_id,
            kit_number=given["kit_number"],
        )
    except IWRSError as refusal:
        flash_refusal(refusal)
        return redirect(target + f"#d{dispensation_id}")
    flash("Kit confirmed.", "info")
    return redirect(target)
