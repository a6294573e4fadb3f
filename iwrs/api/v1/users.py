"""/api/v1/me, /api/v1/users and /api/v1/tokens."""

from __future__ import annotations

from flask.views import MethodView
from flask_login import current_user
from flask_smorest import Blueprint

from iwrs.api.v1.schemas import (
    NewTokenSchema,
    ProblemSchema,
    TokenCreateSchema,
    TokenSchema,
    UserCreateSchema,
    UserSchema,
)
from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.services import queries, users

blp = Blueprint("Users", __name__, url_prefix="", description="Users and API tokens")
PROBLEM = {"schema": ProblemSchema, "content_type": "application/problem+json"}


def _user_view(user):  # type: ignore[no-untyped-def]
    return {
        "id": user.id,
        "username": user.username,
        "full_name": user.full_name,
        "email": user.email,
        "role": str(user.role),
        "active": user.active,
        "site_codes": sorted(s.code for s in queries.visible_sites(user))
        if user.role.site_scoped
        else [],
    }


@blp.route("/me")
class Me(MethodView):
    @blp.response(200, UserSchema)
    @blp.alt_response(401, **PROBLEM)
    @requires()
    def get(self):  # type: ignore[no-untyped-def]
        """Who am I: the authenticated user, role and sites."""
        return _user_view(current_user)


@blp.route("/users")
class Users(MethodView):
    @blp.response(200, UserSchema(many=True))
    @blp.alt_response(403, **PROBLEM)
    @requires(Permission.MANAGE_USERS)
    def get(self):  # type: ignore[no-untyped-def]
        """All users (admins only)."""
        return [_user_view(u) for u in queries.all_users()]

    @blp.arguments(UserCreateSchema)
    @blp.response(201, UserSchema)
    @blp.alt_response(422, **PROBLEM)
    @blp.alt_response(409, **PROBLEM)
    @requires(Permission.MANAGE_USERS)
    def post(self, body):  # type: ignore[no-untyped-def]
        """Create a user with one role (admins only)."""
        user = users.create_user(
            actor=Actor.of(current_user),
            username=body["username"],
            full_name=body["full_name"],
            email=body["email"],
            role=body["role"],
            password=body["password"],
            site_codes=body["site_codes"],
        )
        return _user_view(queries.user_by_id(user.id))


@blp.route("/tokens")
class Tokens(MethodView):
    @blp.response(200, TokenSchema(many=True))
    @requires(Permission.OWN_API_TOKENS)
    def get(self):  # type: ignore[no-untyped-def]
        """The caller's own API tokens (never the tokens themselves)."""
        return queries.tokens_of(current_user.id)

    @blp.arguments(TokenCreateSchema)
    @blp.response(201, NewTokenSchema)
    @blp.alt_response(422, **PROBLEM)
    @requires(Permission.OWN_API_TOKENS)
    def post(self, body):  # type: ignore[no-untyped-def]
        """Create a personal API token; the response is the only time it is shown."""
        token, row = users.create_api_token(
            actor=Actor.of(current_user), user_id=current_user.id, name=body["name"]
        )
        return {
            "id": row.id,
            "name": row.name,
            "prefix": row.prefix,
            "created_at": row.created_at,
            "revoked_at": None,
            "token": token,
        }


@blp.route("/tokens/<int:token_id>")
class TokenById(MethodView):
    @blp.response(204)
    @blp.alt_response(404, **PROBLEM)
    @requires(Permission.OWN_API_TOKENS)
    def delete(self, token_id: int):  # type: ignore[no-untyped-def]
        """Revoke one of the caller's tokens."""
        users.revoke_api_token(
            actor=Actor.of(current_user), token_id=token_id, owner_id=current_user.id
        )
