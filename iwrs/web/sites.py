"""Site pages, scoped to the user's sites."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user

from iwrs.auth import Permission, requires
from iwrs.services import queries

bp = Blueprint("sites", __name__, url_prefix="/sites")


@bp.get("/")
@requires(Permission.VIEW_SITES)
def index():  # type: ignore[no-untyped-def]
    return render_template("sites.html", sites=queries.visible_sites(current_user))


@bp.get("/<int:site_id>")
@requires(Permission.VIEW_SITES)
def detail(site_id: int):  # type: ignore[no-untyped-def]
    return render_template("site.html", site=queries.visible_site(current_user, site_id))
