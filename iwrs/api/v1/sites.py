"""/api/v1/sites: the sites the caller may see."""

from __future__ import annotations

from flask.views import MethodView
from flask_login import current_user

from iwrs.api import Blueprint
from iwrs.api.v1.schemas import ProblemSchema, SiteSchema
from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.services import queries

blp = Blueprint("Sites", __name__, url_prefix="/sites", description="Trial sites")


@blp.route("")
class Sites(MethodView):
    @requires(Permission.VIEW_SITES)
    @blp.response(200, SiteSchema(many=True))
    @blp.alt_response(401, schema=ProblemSchema, content_type="application/problem+json")
    def get(self):  # type: ignore[no-untyped-def]
        """List the sites in the caller's scope."""
        return queries.visible_sites(actor=Actor.of(current_user))


@blp.route("/<int:site_id>")
class SiteById(MethodView):
    @requires(Permission.VIEW_SITES)
    @blp.response(200, SiteSchema)
    @blp.alt_response(404, schema=ProblemSchema, content_type="application/problem+json")
    def get(self, site_id: int):  # type: ignore[no-untyped-def]
        """One site, if it is in the caller's scope (404 otherwise)."""
        return queries.visible_site(actor=Actor.of(current_user), site_id=site_id)
