"""The signed-in user's own account: password change, personal API tokens and notices."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, logout_user

from iwrs.audit import Actor
from iwrs.auth import Permission, requires
from iwrs.errors import IWRSError
from iwrs.inputs import load_form
from iwrs.inputs.users import PasswordChangeInput, TokenCreateInput
from iwrs.services import passwords, queries, users
from iwrs.web import flash_refusal

bp = Blueprint("account", __name__, url_prefix="/account")


def _render(new_token: str | None = None, status: int = 200):  # type: ignore[no-untyped-def]
    return render_template(
        "account.html",
        tokens=queries.tokens_of(current_user.id, actor=Actor.of(current_user)),
        notices=queries.notices_of(actor=Actor.of(current_user)),
        new_token=new_token,
    ), status


@bp.get("/")
@requires(Permission.OWN_API_TOKENS)
def index():  # type: ignore[no-untyped-def]
    return _render()


@bp.post("/tokens")
@requires(Permission.OWN_API_TOKENS)
def token_create():  # type: ignore[no-untyped-def]
    try:
        given = load_form(TokenCreateInput, request.form, prefix="token-")
        token, _ = users.create_api_token(
            actor=Actor.of(current_user),
            user_id=current_user.id,
            name=given["name"],
            password=given["password"],
        )
    except IWRSError as refusal:
        flash_refusal(refusal)
        return _render(status=refusal.status)
    return _render(new_token=token)


@bp.post("/tokens/<int:token_id>/revoke")
@requires(Permission.OWN_API_TOKENS)
def token_revoke(token_id: int):  # type: ignore[no-untyped-def]
    users.revoke_api_token(
        actor=Actor.of(current_user), token_id=token_id, owner_id=current_user.id
    )
    flash("Token revoked.", "info")
    return redirect(url_for("account.index"))


@bp.route("/password", methods=["GET", "POST"])
@requires()
def password_page():  # type: ignore[no-untyped-def]
    """Change one's own password; the only page a user with a temporary password can reach."""
    status = 200
    if request.method == "POST":
        try:
            given = load_form(PasswordChangeInput, request.form, prefix="pw-")
            passwords.change_own_password(actor=Actor.of(current_user), **given)
        except IWRSError as refusal:
            flash_refusal(refusal)
            status = refusal.status
        else:
            logout_user()
            flash("Password changed. Sign in with the new password.", "info")
            return redirect(url_for("auth.sign_in"))
    return render_template("password.html"), status


@bp.post("/notices/<int:notice_id>/read")
@requires()
def notice_read(notice_id: int):  # type: ignore[no-untyped-def]
    passwords.mark_notice_read(actor=Actor.of(current_user), notice_id=notice_id)
    # From the inbox, back to the inbox (a fixed choice of our own pages, never a given URL).
    back = "main.inbox_page" if request.form.get("back") == "inbox" else "main.home"
    return redirect(url_for(back))
