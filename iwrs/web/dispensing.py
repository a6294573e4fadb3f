"""Pharmacist pages: today's and upcoming visits, dispense, confirm the kit in hand, replace."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.errors import IWRSError
from iwrs.inputs import load_form
from iwrs.inputs.randomization import ConfirmInput, DispenseInput
from iwrs.services import dispensing, randomization_views
from iwrs.web import flash_refusal

bp = Blueprint("dispensing", __name__, url_prefix="/dispensing")


@bp.get("/")
@requires(Permission.DISPENSE)
def index():  # type: ignore[no-untyped-def]
    board = randomization_views.visits_board(
        actor=Actor.of(current_user), after=request.args.get("after") or None
    )
    full = len(board) == randomization_views.BOARD_PAGE
    return render_template(
        "dispensing.html",
        board=board,
        next_after=board[-1].subject.screening_number if full else None,
    )


@bp.post("/<int:subject_id>")
@requires(Permission.DISPENSE)
def dispense(subject_id: int):  # type: ignore[no-untyped-def]
    try:  # the input first, as the API does: its refusals say nothing of the subject
        given = load_form(DispenseInput, request.form)
    except IWRSError as refusal:
        flash_refusal(refusal)
        return redirect(url_for("dispensing.index"))
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
        return redirect(url_for("dispensing.index"))
    flash(
        f"Give {result.subject} kit {result.kit_number} for {result.visit_code}, then confirm "
        "the number of the kit in hand below.",
        "info",
    )
    return redirect(url_for("dispensing.index") + f"#d{result.dispensation_id}")


@bp.post("/confirm/<int:dispensation_id>")
@requires(Permission.DISPENSE)
def confirm(dispensation_id: int):  # type: ignore[no-untyped-def]
    try:
        given = load_form(ConfirmInput, request.form)
        dispensing.confirm_kit(
            actor=Actor.of(current_user),
            dispensation_id=dispensation_id,
            kit_number=given["kit_number"],
        )
    except IWRSError as refusal:
        flash_refusal(refusal)
        return redirect(url_for("dispensing.index") + f"#d{dispensation_id}")
    flash("Kit confirmed.", "info")
    return redirect(url_for("dispensing.index"))
