"""The sign-in throttle (Flask-Limiter): failed sign-ins are limited per source, per username
and per source and username, instead of letting anonymous failures lock the account.

Limits, counting only failed attempts (status 401; a success costs nothing), fixed windows:
- source + username, 5 per minute and 20 per hour: one place guessing one account; a person
  who mistypes gets five tries a minute.
- username, from anywhere, 10 per minute: guessing one account from many places (a botnet)
  stays at 10 a minute, 14,400 a day, far below what a zxcvbn-3 password needs (10^8).
  A stranger can hold this open for an account, which only delays a new sign-in: open
  sessions, tokens and e-signatures are never throttled (iwrs/services/sessions.py).
- source, 30 per minute: one place trying many accounts (spraying), yet a ward behind one
  NAT address with several users mistyping is not shut out.
A throttled attempt is refused before its password is checked (no Argon2, no database write)
with 429 and Retry-After; one audit event is written per throttled key and window, not one
per attempt, so a storm cannot flood the trail. Counters live in `ratelimit_storage_url`:
memory:// in the single embedded process, redis://… shared by several processes."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, current_app, flash, render_template, request
from flask_limiter import Limiter, RequestLimit
from flask_limiter.util import get_remote_address
from limits import RateLimitItemPerSecond

from iwrs import audit
from iwrs.audit import Actor
from iwrs.db import transaction
from iwrs.web.forms import SignInForm

SOURCE_AND_USERNAME = "5 per minute;20 per hour"
USERNAME = "10 per minute"
SOURCE = "30 per minute"


def _username() -> str:
    return (request.form.get("username") or "").strip().lower()[:64]


def _source_and_username() -> str:
    return f"{get_remote_address()}|{_username()}"


def _username_key() -> str:
    return _username() or "(blank)"


def _failed(response: Any) -> bool:
    return bool(response.status_code == 401)


def _retry_after(limit: RequestLimit) -> int:
    return max(1, int(limit.reset_at - time.time()) + 1)


def _on_breach(limit: RequestLimit) -> Any:
    """Answer a throttled sign-in: 429, Retry-After, the sign-in page with a message; audit the
    first throttled attempt of each key and window only."""
    limiter: Limiter = current_app.extensions["iwrs.limiter"]
    window = limit.limit.get_expiry()
    if limiter.limiter.hit(RateLimitItemPerSecond(1, window), "throttle-audit", limit.key):
        with transaction() as session:
            audit.record(
                session,
                actor=Actor(None, _username() or "(blank)", "unknown", "password"),
                action="auth.sign_in_throttled",
                entity_type="user",
                after={"limit": str(limit.limit), "source": get_remote_address()},
            )
    retry = _retry_after(limit)
    flash(
        f"Too many failed sign-in attempts. Try again in {retry} seconds "
        "(an open session is not affected).",
        "error",
    )
    response = current_app.make_response((render_template("sign_in.html", form=SignInForm()), 429))
    response.headers["Retry-After"] = str(retry)
    return response


def init_app(app: Flask) -> None:
    """Throttle POST /sign-in of this application (one Limiter and storage per application)."""
    settings = app.extensions["iwrs.settings"]
    limiter = Limiter(
        key_func=get_remote_address,
        app=app,
        storage_uri=settings.ratelimit_storage_url,
        strategy="fixed-window",
        headers_enabled=True,
        enabled=settings.ratelimit_enabled,
        key_prefix="iwrs-sign-in",
        # A shared store that cannot be reached falls back to per-process counting rather than
        # refusing every sign-in.
        in_memory_fallback_enabled=True,
    )
    app.extensions["iwrs.limiter"] = limiter
    view = app.view_functions["auth.sign_in"]
    for limits, key in (
        (SOURCE_AND_USERNAME, _source_and_username),
        (USERNAME, _username_key),
        (SOURCE, get_remote_address),
    ):
        view = limiter.limit(
            limits,
            key_func=key,
            methods=["POST"],
            deduct_when=_failed,
            on_breach=_on_breach,
            scope=f"sign-in:{key.__name__}",
        )(view)
    app.view_functions["auth.sign_in"] = view
