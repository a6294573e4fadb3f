"""Sign-in and sign-out pages."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from iwrs import clock
from iwrs.audit import Actor
from iwrs.auth import SESSION_KEY
from iwrs.errors import AuthenticationFailed, InvalidInput
from iwrs.inputs import load_form
from iwrs.inputs.users import SignInInput
from iwrs.services import users
from iwrs.web import flash_refusal

bp = Blueprint("auth", __name__)


def safe_next(target: str) -> str:
    """Only a same-site path: never an open redirect, whatever the browser would normalize."""
    if (
        not target.startswith("/")
        or target.startswith(("//", "/\\"))
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F or ch == "\\" for ch in target)
    ):
        return url_for("main.home")
    return target


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():  # type: ignore[no-untyped-def]
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next", "")))
    status = 200
    if request.method == "POST":
        try:
            signed_in = users.sign_in(**load_form(SignInInput, request.form))
        except AuthenticationFailed as refusal:
            flash(refusal.message[0].upper() + refusal.message[1:] + ".", "error")
            status = 401
        except InvalidInput as refusal:
            flash_refusal(refusal)
            status = refusal.status
        else:
            session.clear()
            login_user(signed_in.user)
            session[SESSION_KEY] = signed_in.session_key
            session["last_seen"] = clock.now().isoformat()
            return redirect(safe_next(request.args.get("next", "")))
    return render_template("sign_in.html"), status


@bp.post("/sign-out")
@login_required
def sign_out():  # type: ignore[no-untyped-def]
    users.sign_out(actor=Actor.of(current_user), session_id=g.get("user_session_id"))
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.sign_in"))


@bp.post("/session/alive")
@login_required
def keep_alive():  # type: ignore[no-untyped-def]
    """ "Stay signed in" on the session warning (static/session.js): a request like any other
    restarts the idle clock (iwrs.auth); it changes nothing else."""
    return "", 204
