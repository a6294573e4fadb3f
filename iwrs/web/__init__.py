"""Server-rendered pages by area, and the one error handler for pages and the API."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, current_app, flash, g, render_template, request
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable

from iwrs import clock, padding, signatures
from iwrs.audit import Actor
from iwrs.auth import Permission, has_permission, is_api_request
from iwrs.db import busy_error
from iwrs.errors import Busy, IWRSError
from iwrs.locking import is_busy
from iwrs.models.randomization import DispensationKind, KitRequestKind
from iwrs.services import refusals

log = logging.getLogger("iwrs.web")


def init_app(app: Flask) -> None:
    from iwrs.web import (
        access,
        account,
        admin,
        audit,
        auth,
        calendar,
        dispensing,
        lists,
        main,
        receipts,
        sites,
        subject_actions,  # noqa: F401 (its routes join subjects.bp before it is registered)
        subjects,
        supply,
        throttle,
        unblinding,
        words,
    )

    for blueprint in (
        auth.bp,
        main.bp,
        sites.bp,
        subjects.bp,
        dispensing.bp,
        lists.bp,
        supply.bp,
        admin.bp,
        account.bp,
        audit.bp,
        unblinding.bp,
        access.bp,
        receipts.bp,
    ):
        app.register_blueprint(blueprint)
    app.register_error_handler(IWRSError, handle_error)
    app.register_error_handler(HTTPException, handle_error)
    app.register_error_handler(Exception, handle_unexpected)
    app.context_processor(_template_helpers)
    calendar.init_app(app)
    words.init_app(app)
    app.after_request(_security_headers)
    throttle.init_app(app)


def _template_helpers() -> dict[str, Any]:
    def can(permission: str) -> bool:
        return has_permission(current_user, Permission(permission))

    def unread() -> int:
        """The signed-in person's unread notices and messages (the header's inbox count)."""
        from sqlalchemy.exc import SQLAlchemyError

        from iwrs.services import inbox

        try:
            return inbox.unread_count(actor=Actor.of(current_user))
        except (SQLAlchemyError, IWRSError):  # the error page of a database that is down
            return 0

    return {
        "can": can,
        "unread": unread,
        "mode": current_app.extensions["iwrs.settings"].environment,
        "protocol": current_app.extensions["iwrs.protocol"],
        "signatures": signatures,
        # The kinds a page offers come from the enums the services check them against.
        "dispensation_kinds": tuple(DispensationKind),
        "kit_request_kinds": tuple(KitRequestKind),
        "json_loads": json.loads,
        # Answers that show arms are padded to arm-independent lengths (iwrs/padding.py).
        "arm_padding": padding.html_label_padding,
        "count_padding": padding.html_count_padding,
        # The idle limit, for the warning before a session ends (static/session.js).
        "session_idle_seconds": int(
            current_app.extensions["iwrs.settings"].session_idle.total_seconds()
        ),
        # When a page is drawn: a printed page names its study, reader and time (issue 15).
        "printed_at": clock.now(),
    }


def _security_headers(response: Any) -> Any:
    """Security headers on every answer. Decision: every answer but the static files is
    `Cache-Control: no-store` (pages, the API, exports): an answer may carry an arm (the
    statistician's, the unblinding investigator's) or a person's data, and no browser, proxy or
    shared cache may keep it; the static files hold neither."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    )
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
    retry_after = g.get("iwrs_retry_after")
    if retry_after is not None and response.status_code == 503:
        # A wait for a lock ran out (iwrs.db.busy_error): retry the same request later.
        response.headers["Retry-After"] = str(retry_after)
    return response


def _audit_refusal(error: IWRSError) -> None:
    """A refused request for an unblinding or an arm view is recorded (iwrs/services/refusals.py),
    whether the route's permission check or the service refused it. The requests concerned:
    the statistician's list pages and exports (/lists…, /api/v1/lists…) and the unblinding
    pages, endpoints and receipts (…/unblind, …/unblinded, …/unblinding, /receipts/unblinding…)."""
    rule = request.url_rule.rule if request.url_rule is not None else ""
    if rule.endswith(("/unblind", "/unblind/confirm", "/unblinded", "/unblinding")) or (
        rule.startswith("/receipts/unblinding")
    ):
        action = refusals.UNBLINDING_REFUSED
    elif rule.startswith(("/lists", "/api/v1/lists")):
        action = refusals.ARM_ACCESS_REFUSED
    else:
        return
    if not getattr(current_user, "is_authenticated", False):
        return
    subject_id = (request.view_args or {}).get("subject_id")
    refusals.record(
        actor=Actor.of(current_user), action=action, refusal=error, subject_id=subject_id
    )


def flash_refusal(refusal: IWRSError) -> None:
    """A refusal on a page: each of its problems flashed with its field and rule (the same
    {field, rule, message} the API answers in problem+json), or its message alone."""
    found = refusal.problems()
    if not found:
        flash(refusal.message, "error")
    for problem in found:
        flash(problem, "problem")


def handle_error(error: Exception) -> Any:
    """A domain refusal or HTTP error: problem+json for the API, a page otherwise."""
    if isinstance(error, HTTPException) and error.response is not None:
        return error.response  # already made for this refusal (the sign-in throttle's page)
    if isinstance(error, IWRSError):
        if not isinstance(error, Busy):  # nothing was decided: no refusal to record
            _audit_refusal(error)
        status, title, detail, problems = error.status, error.title, error.message, error.problems()
    elif isinstance(error, CSRFError):
        status, title, problems = (
            400,
            "Form expired",
            [{"field": "csrf_token", "rule": "csrf", "message": error.description}],
        )
        detail = (
            "The form was missing its security token or it did not match (CSRF). "
            "Reload the page and try again."
        )
    elif isinstance(error, HTTPException):
        status, title, detail, problems = error.code or 500, error.name, error.description or "", []
        messages = (getattr(error, "data", None) or {}).get("messages")
        if messages:  # a validation outside iwrs.inputs' parser (none is expected)
            from iwrs.inputs import problems as listed

            problems = listed(messages)
            title, detail = "Invalid input", "; ".join(p["message"] for p in problems)
    else:  # pragma: no cover - handled by handle_unexpected
        raise error
    # Headers a refusal carries: Retry-After (in progress), Idempotent-Replayed (a replay);
    # an HTTP error's own, such as Allow on a 405 (RFC 9110 15.5.6), page or API alike.
    headers = dict(getattr(error, "headers", None) or {}) if isinstance(error, IWRSError) else {}
    if isinstance(error, HTTPException):
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
    if is_api_request():
        from iwrs.api.problems import problem_response

        response = problem_response(status, title, detail, problems, getattr(error, "rule", None))
        response.headers.update(headers)
        return response
    return (
        render_template("error.html", status=status, title=title, detail=detail, problems=problems),
        status,
        headers,
    )


def handle_unexpected(error: Exception) -> Any:
    """Never a traceback to the user: log it, answer with a plain 500."""
    if isinstance(error, HTTPException | IWRSError):
        return handle_error(error)
    if is_busy(error):  # a wait that ran out outside a use case's transaction (a read)
        log.warning("database busy on %s %s: %s", request.method, request.path, error.orig)  # type: ignore[attr-defined]
        return handle_error(busy_error())
    if isinstance(error, OperationalError):
        log.error("database unavailable: %s", error.orig)
        return handle_error(
            ServiceUnavailable(
                "The database cannot be reached; nothing was saved. Try again in a moment, and "
                "tell the system administrator if it persists."
            )
        )
    if current_app.config.get("IWRS_PROPAGATE_UNEXPECTED"):
        raise error  # tests see the real traceback
    log.exception("unexpected error on %s %s", request.method, request.path)
    return handle_error(
        InternalServerError(
            "An unexpected error occurred; nothing was saved. The error was logged for the "
            "system administrator."
        )
    )
