"""Admin pages: users, roles, site assignments, deactivation, password resets, token revocation,
requests for unblinded accounts. An admin never sets, sees or mints another person's credential."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.errors import InvalidInput, IWRSError
from iwrs.inputs import load_form
from iwrs.inputs.users import (
    AccessRequestCreateInput,
    DeactivationInput,
    PasswordResetInput,
    SiteAssignmentInput,
    UserCreateInput,
)
from iwrs.models.users import Role
from iwrs.services import passwords, queries, unblinded_access, users
from iwrs.web import flash_refusal

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("/users")
@requires(Permission.MANAGE_USERS)
def user_list():  # type: ignore[no-untyped-def]
    return render_template(
        "admin_users.html", users=queries.all_users(actor=Actor.of(current_user))
    )


@bp.route("/users/new", methods=["GET", "POST"])
@requires(Permission.MANAGE_USERS)
def user_new():  # type: ignore[no-untyped-def]
    status = 200
    if request.method == "POST":
        try:
            given = load_form(UserCreateInput, request.form)
            user = users.create_user(actor=Actor.of(current_user), **given)
        except IWRSError as refusal:
            flash_refusal(refusal)
            status = refusal.status
        else:
            flash(
                f"User {user.username} created; a temporary password went to their e-mail.", "info"
            )
            return redirect(url_for("admin.user_detail", user_id=user.id))
    return render_template(
        "admin_user_new.html",
        roles=[(role.value, role.label) for role in Role],
        site_options=queries.all_site_codes(actor=Actor.of(current_user)),
    ), status


def _detail_page(user, status: int = 200):  # type: ignore[no-untyped-def]
    """A user's page: facts, tokens and the admin's forms (sites, reset, deactivate)."""
    actor = Actor.of(current_user)
    return render_template(
        "admin_user.html",
        user=user,
        tokens=queries.tokens_of(user.id, actor=actor),
        site_options=queries.all_site_codes(actor=actor),
        assigned=user.site_codes if user.role.site_scoped else [],
    ), status


@bp.get("/users/<int:user_id>")
@requires(Permission.MANAGE_USERS)
def user_detail(user_id: int):  # type: ignore[no-untyped-def]
    return _detail_page(queries.user_by_id(user_id, actor=Actor.of(current_user)))


@bp.post("/users/<int:user_id>/<action>")
@requires(Permission.MANAGE_USERS)
def user_action(user_id: int, action: str):  # type: ignore[no-untyped-def]
    user = queries.user_by_id(user_id, actor=Actor.of(current_user))
    actor = Actor.of(current_user)
    status = 200
    try:
        if action == "sites":
            given = load_form(SiteAssignmentInput, request.form, prefix="assign-")
            users.assign_sites(actor=actor, user_id=user_id, **given)
            flash("Site assignments saved.", "info")
        elif action == "deactivate":
            given = load_form(DeactivationInput, request.form, prefix="deactivate-")
            users.deactivate_user(
                actor=actor,
                user_id=user_id,
                reason=given["reason"],
                signer_password=given["signature_password"],
                understood=given["understood"],
            )
            flash(f"User {user.username} deactivated.", "info")
        elif action == "reset-password":
            given = load_form(PasswordResetInput, request.form, prefix="reset-")
            passwords.reset_password(
                actor=actor, user_id=user_id, signer_password=given["signature_password"]
            )
            flash(
                "Password reset: a temporary password went to the user's e-mail; "
                "their sessions have ended.",
                "info",
            )
        else:
            raise InvalidInput(
                "action: must be one of sites, deactivate, reset-password",
                field="action",
                rule="choice",
            )
    except IWRSError as refusal:
        flash_refusal(refusal)
        status = refusal.status
    if status == 200:
        return redirect(url_for("admin.user_detail", user_id=user_id))
    return _detail_page(queries.user_by_id(user_id, actor=Actor.of(current_user)), status)


@bp.post("/tokens/<int:token_id>/revoke")
@requires(Permission.MANAGE_USERS)
def token_revoke(token_id: int):  # type: ignore[no-untyped-def]
    token = users.revoke_api_token(actor=Actor.of(current_user), token_id=token_id)
    flash(f"Token {token.prefix}… revoked.", "info")
    return redirect(url_for("admin.user_detail", user_id=token.user_id))


@bp.route("/unblinded-requests", methods=["GET", "POST"])
@requires(Permission.MANAGE_USERS)
def access_requests():  # type: ignore[no-untyped-def]
    """Request an unblinded statistician account; it exists only once an unblinded statistician
    approves it (the two-person rule)."""
    status = 200
    if request.method == "POST":
        try:
            given = load_form(AccessRequestCreateInput, request.form, prefix="request-")
            unblinded_access.request_unblinded_account(actor=Actor.of(current_user), **given)
        except IWRSError as refusal:
            flash_refusal(refusal)
            status = refusal.status
        else:
            flash("Request filed; an unblinded statistician must approve it.", "info")
            return redirect(url_for("admin.access_requests"))
    return render_template(
        "access_requests.html",
        requests=unblinded_access.access_requests(actor=Actor.of(current_user)),
        decide=False,
    ), status
