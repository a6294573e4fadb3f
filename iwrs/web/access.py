"""The unblinded statistician's page of pending requests for unblinded accounts: approve or
reject, with an e-signature (the second person of the two-person rule)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.errors import IWRSError
from iwrs.inputs import load_form
from iwrs.inputs.users import AccessDecisionInput
from iwrs.services import unblinded_access
from iwrs.web import flash_refusal

bp = Blueprint("access", __name__, url_prefix="/access-requests")


@bp.get("/")
@requires(Permission.SEE_ARM)
def index(status: int = 200):  # type: ignore[no-untyped-def]
    return render_template(
        "access_requests.html",
        requests=unblinded_access.access_requests(actor=Actor.of(current_user)),
        decide=True,
    ), status


@bp.post("/<int:request_id>/decision")
@requires(Permission.SEE_ARM)
def decide(request_id: int):  # type: ignore[no-untyped-def]
    try:
        given = load_form(AccessDecisionInput, request.form, prefix="decide-")
        row = unblinded_access.decide_unblinded_request(
            actor=Actor.of(current_user),
            request_id=request_id,
            approve=given["decision"] == "approve",
            signer_password=given["signature_password"],
            reason=given["reason"],
        )
    except IWRSError as refusal:
        flash_refusal(refusal)
        return index(status=refusal.status)
    flash(f"Request for {row.username} {row.status}.", "info")
    return redirect(url_for("access.index"))
