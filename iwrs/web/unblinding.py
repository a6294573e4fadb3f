"""The unblinding report: every emergency unblinding (who, when, why — never the arm)."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user

from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.services import unblinding

bp = Blueprint("unblinding", __name__, url_prefix="/unblinding")


@bp.get("/")
@requires(Permission.VIEW_UNBLINDING_REPORT)
def report():  # type: ignore[no-untyped-def]
    return render_template(
        "unblinding_report.html", lines=unblinding.report(actor=Actor.of(current_user))
    )
