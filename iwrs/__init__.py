"""IWRS: the Flask application factory."""

from __future__ import annotations

import logging
from typing import Any

from argon2 import PasswordHasher
from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from iwrs import auth, config, db, request_guard
from iwrs.config import ConfigError, Settings
from iwrs.protocol import load_protocol
from iwrs.services import kit_counts  # noqa: F401  (the kit_count summary's flush hook)

csrf = CSRFProtect()
log = logging.getLogger("iwrs")


class _SessionInterface(SecureCookieSessionInterface):
    """Mark the session cookie Secure whenever the request came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


class _RowId(IntegerConverter):
    """<int:…> in routes: a database row id, so out of range is simply not found."""

    def __init__(self, url_map: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(url_map, *args, **kwargs)


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """Build the application from `settings` (default: the environment)."""
    settings = settings or Settings.from_env()
    for name, value in overrides.items():
        setattr(settings, name, value)
    app = Flask(
        __name__,
        instance_path=str(settings.instance_path),
        template_folder="web/templates",
        static_folder="web/static",
    )
    app.extensions["iwrs.settings"] = settings

    missing = settings.missing_keys()
    if missing and not settings.testing and not config.loaded_for_a_command():
        raise ConfigError(
            f"missing key(s): {', '.join(missing)}. Set IWRS_SECRET_KEY, IWRS_AUDIT_KEY, "
            "IWRS_BLINDING_KEY and IWRS_AUDIT_SIGNING_KEY (64 hex digits each) or run "
            f"`flask --app wsgi iwrs init` to create key files under {settings.instance_path}"
        )
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        SESSION_COOKIE_NAME="iwrs_session",
        WTF_CSRF_CHECK_DEFAULT=False,  # checked in _protect_forms, where API tokens are exempt
        WTF_CSRF_TIME_LIMIT=None,  # the idle-session rule already bounds a form's life
        TESTING=settings.testing,
        API_TITLE="IWRS API",
        API_VERSION="v1",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        JSON_SORT_KEYS=False,
    )
    app.session_interface = _SessionInterface()
    app.url_map.converters["int"] = _RowId
    if config.behind_proxy():
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]

    # Argon2id (memory-hard). Tests use the same algorithm with smaller costs to stay fast.
    hasher = (
        PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
        if settings.testing
        else PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
    )
    app.extensions["iwrs.password_hasher"] = hasher
    app.extensions["iwrs.dummy_hash"] = hasher.hash("not-a-real-password-for-timing")
    app.extensions["iwrs.protocol"] = load_protocol(settings.protocol_path)

    db.init_app(app, settings)
    # An anonymous API call meets 401 first; every other request's body is checked first.
    app.before_request(auth.api_authentication_first)
    request_guard.init_app(app)
    auth.init_app(app)
    csrf.init_app(app)
    app.before_request(_protect_forms)

    from iwrs import cli
    from iwrs.api import init_app as init_api
    from iwrs.web import init_app as init_web

    init_web(app)
    init_api(app)
    cli.init_app(app)
    return app


def _protect_forms() -> None:
    """CSRF on every state-changing request, except API calls authenticated by a bearer token.
    A request no route takes (404, or 405 with Allow) changes nothing: it gets that answer."""
    if request.method in ("GET", "HEAD", "OPTIONS") or request.routing_exception is not None:
        return
    if auth.is_api_request() and request.headers.get("Authorization", "").lower().startswith(
        "bearer "
    ):
        return
    csrf.protect()
