"""The home page: what this user can do, at which sites."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user, login_required

from iwrs.audit import Actor
from iwrs.services import queries

bp = Blueprint("main", __name__)


@bp.get("/")
@login_required
def home():  # type: ignore[no-untyped-def]
    return render_template(
        "home.html",
        sites=queries.visible_sites(actor=Actor.of(current_user)),
        notices=queries.notices_of(actor=Actor.of(current_user), unread_only=True),
    )


@bp.get("/healthz")
def health():  # type: ignore[no-untyped-def]
    return {"status": "ok"}
