"""/api/v1/me, /api/v1/users, /api/v1/tokens and /api/v1/unblinded-access-requests."""

from __future__ import annotations

from flask.views import MethodView
from flask_login import current_user

from iwrs.api import Blueprint, beyond_schema
from iwrs.api.v1.schemas import (
    AccessRequestSchema,
    NewTokenSchema,
    ProblemSchema,
    TokenSchema,
    UserSchema,
)
from iwrs.audit import Actor
from iwrs.auth import Permission, has_permission, requires
from iwrs.errors import Forbidden
from iwrs.inputs.users import (
    AccessDecisionInput,
    AccessRequestCreateInput,
    TokenCreateInput,
    UserCreateInput,
)
from iwrs.services import queries, unblinded_access, users

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
        "site_codes": user.site_codes if user.role.site_scoped else [],
    }


@blp.route("/me")
class Me(MethodView):
    @requires()
    @blp.response(200, UserSchema)
    @blp.alt_response(401, **PROBLEM)
    def get(self):  # type: ignore[no-untyped-def]
        """Who am I: the authenticated user, role and sites."""
        return _user_view(current_user)


@blp.route("/users")
class Users(MethodView):
    @requires(Permission.MANAGE_USERS)
    @blp.response(200, UserSchema(many=True))
    @blp.alt_response(403, **PROBLEM)
    def get(self):  # type: ignore[no-untyped-def]
        """All users (admins only)."""
        return [_user_view(u) for u in queries.all_users(actor=Actor.of(current_user))]

    @requires(Permission.MANAGE_USERS)
    @beyond_schema(
        site_roles_only="only investigators and pharmacists are given site_codes",
        known_site="every site code names an existing site",
    )
    @blp.arguments(UserCreateInput)
    @blp.response(201, UserSchema)
    @blp.alt_response(422, **PROBLEM)
    @blp.alt_response(409, **PROBLEM)
    def post(self, body):  # type: ignore[no-untyped-def]
        """Create a user with one role (admins only). The system sends a temporary password to
        the user's e-mail (required); an unblinded statistician account is requested instead
        (POST /unblinded-access-requests)."""
        user = users.create_user(
            actor=Actor.of(current_user),
            username=body["username"],
            full_name=body["full_name"],
            email=body["email"],
            role=body["role"],
            site_codes=body["site_codes"],
        )
        return _user_view(queries.user_by_id(user.id, actor=Actor.of(current_user)))


@blp.route("/tokens")
class Tokens(MethodView):
    @requires(Permission.OWN_API_TOKENS)
    @blp.response(200, TokenSchema(many=True))
    def get(self):  # type: ignore[no-untyped-def]
        """The caller's own API tokens (never the tokens themselves)."""
        return queries.tokens_of(current_user.id, actor=Actor.of(current_user))

    @requires(Permission.OWN_API_TOKENS)
    @blp.arguments(TokenCreateInput)
    @blp.response(201, NewTokenSchema)
    @blp.alt_response(422, **PROBLEM)
    def post(self, body):  # type: ignore[no-untyped-def]
        """Create a personal API token (from a signed-in session, never with a token, with the
        password re-entered); the response is the only time it is shown."""
        token, row = users.create_api_token(
            actor=Actor.of(current_user),
            user_id=current_user.id,
            name=body["name"],
            password=body["password"],
        )
        return {
            "id": row.id,
            "name": row.name,
            "prefix": row.prefix,
            "created_at": row.created_at,
            "revoked_at": None,
            "expires_at": row.expires_at,
            "token": token,
        }


@blp.route("/tokens/<int:token_id>")
class TokenById(MethodView):
    @requires(Permission.OWN_API_TOKENS)
    @blp.response(204)
    @blp.alt_response(404, **PROBLEM)
    def delete(self, token_id: int):  # type: ignore[no-untyped-def]
        """Revoke one of the caller's tokens."""
        users.revoke_api_token(
            actor=Actor.of(current_user), token_id=token_id, owner_id=current_user.id
        )


@blp.route("/unblinded-access-requests")
class AccessRequests(MethodView):
    @requires()
    @blp.response(200, AccessRequestSchema(many=True))
    @blp.alt_response(403, **PROBLEM)
    def get(self):  # type: ignore[no-untyped-def]
        """Requests for unblinded accounts (admins and unblinded statisticians)."""
        if not (
            has_permission(current_user, Permission.MANAGE_USERS)
            or has_permission(current_user, Permission.SEE_ARM)
        ):
            raise Forbidden("your role may not see access requests", rule="permission")
        return unblinded_access.access_requests(actor=Actor.of(current_user))

    @requires(Permission.MANAGE_USERS)
    @blp.arguments(AccessRequestCreateInput)
    @blp.response(201, AccessRequestSchema)
    @blp.alt_response(422, **PROBLEM)
    @blp.alt_response(409, **PROBLEM)
    def post(self, body):  # type: ignore[no-untyped-def]
        """Request an unblinded statistician account (admins); it takes effect only once an
        unblinded statistician approves it."""
        return unblinded_access.request_unblinded_account(actor=Actor.of(current_user), **body)


@blp.route("/unblinded-access-requests/<int:request_id>/decision")
class AccessDecision(MethodView):
    @requires(Permission.SEE_ARM)
    @beyond_schema(**{"reason:required": "a rejection needs a reason"})
    @blp.arguments(AccessDecisionInput)
    @blp.response(200, AccessRequestSchema)
    @blp.alt_response(403, **PROBLEM)
    @blp.alt_response(409, **PROBLEM)
    def post(self, body, request_id: int):  # type: ignore[no-untyped-def]
        """Approve or reject a pending request, signed (unblinded statisticians, not the
        requester)."""
        return unblinded_access.decide_unblinded_request(
            actor=Actor.of(current_user),
            request_id=request_id,
            approve=body["decision"] == "approve",
            signer_password=body["signature_password"],
            reason=body["reason"],
        )
