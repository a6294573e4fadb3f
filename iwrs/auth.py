"""Sign-in wiring, roles and permissions, site scoping, API tokens and the idle-session rule."""

from __future__ import annotations

import contextlib
import enum
import functools
import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Flask, current_app, flash, g, redirect, request, session, url_for
from flask_login import AnonymousUserMixin, LoginManager, current_user, logout_user
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from iwrs import clock
from iwrs.db import read_session
from iwrs.errors import AuthenticationFailed, Forbidden, NotFound
from iwrs.models.users import ApiToken, Role, User, UserSession


class Permission(enum.StrEnum):
    VIEW_SITES = "view_sites"
    MANAGE_USERS = "manage_users"
    MANAGE_SITES = "manage_sites"
    SCREEN_SUBJECTS = "screen_subjects"
    RANDOMIZE = "randomize"
    EMERGENCY_UNBLIND = "emergency_unblind"
    DISPENSE = "dispense"
    RECEIVE_SHIPMENTS = "receive_shipments"
    MANAGE_SUPPLY = "manage_supply"
    MANAGE_LISTS = "manage_lists"
    SEE_ARM = "see_arm"
    VIEW_AUDIT = "view_audit"
    OWN_API_TOKENS = "own_api_tokens"
    VIEW_SUPPLY = "view_supply"
    VIEW_UNBLINDING_REPORT = "view_unblinding_report"


# The one place that maps roles to permissions. Only the unblinded statistician holds SEE_ARM.
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.INVESTIGATOR: frozenset(
        {
            Permission.VIEW_SITES,
            Permission.VIEW_UNBLINDING_REPORT,
            Permission.SCREEN_SUBJECTS,
            Permission.RANDOMIZE,
            Permission.EMERGENCY_UNBLIND,
            Permission.OWN_API_TOKENS,
        }
    ),
    Role.PHARMACIST: frozenset(
        {
            Permission.VIEW_SITES,
            Permission.DISPENSE,
            Permission.RECEIVE_SHIPMENTS,
            Permission.VIEW_SUPPLY,
            Permission.OWN_API_TOKENS,
        }
    ),
    Role.SUPPLY_MANAGER: frozenset(
        {
            Permission.VIEW_SITES,
            Permission.MANAGE_SUPPLY,
            Permission.VIEW_SUPPLY,
            Permission.OWN_API_TOKENS,
        }
    ),
    Role.UNBLINDED_STATISTICIAN: frozenset(
        {
            Permission.VIEW_SITES,
            Permission.VIEW_UNBLINDING_REPORT,
            Permission.MANAGE_LISTS,
            Permission.SEE_ARM,
            Permission.OWN_API_TOKENS,
        }
    ),
    Role.AUDITOR: frozenset(
        {
            Permission.VIEW_SITES,
            Permission.VIEW_AUDIT,
            Permission.VIEW_UNBLINDING_REPORT,
            Permission.OWN_API_TOKENS,
        }
    ),
    Role.ADMIN: frozenset(
        {
            Permission.VIEW_SITES,
            Permission.VIEW_UNBLINDING_REPORT,
            Permission.MANAGE_USERS,
            Permission.MANAGE_SITES,
            Permission.OWN_API_TOKENS,
        }
    ),
}


def has_permission(user: Any, permission: Permission) -> bool:
    return bool(getattr(user, "is_authenticated", False)) and permission in ROLE_PERMISSIONS.get(
        user.role, frozenset()
    )


def site_scope(user: User) -> frozenset[int] | None:
    """The sites a user may see: assigned sites for site roles, None (all) for sponsor roles."""
    return user.site_ids if user.role.site_scoped else None


def not_found(kind: str, key: object, *, field: str) -> NotFound:
    """The one answer for a record that does not exist *or* is outside the caller's sites:
    the same status, text and rule either way, so nobody can enumerate other sites' records."""
    return NotFound(f"{kind} {key} does not exist", field=field, rule="exists")


def require_site(user: User, site_id: int, missing: NotFound | None = None) -> None:
    """Refuse a site outside the user's scope exactly as if the record did not exist: `missing`
    is the caller's own "does not exist" refusal for the record asked for (default: the site)."""
    require_in_scope(site_scope(user), site_id, missing)


def require_in_scope(
    scope: frozenset[int] | None, site_id: int, missing: NotFound | None = None
) -> None:
    """`require_site` for a scope already known (None: every site), as the read models get it
    from `users.site_reader`."""
    if scope is not None and site_id not in scope:
        raise missing or not_found("site", site_id, field="site_id")


# --- passwords -------------------------------------------------------------------------------


def password_hasher() -> PasswordHasher:
    return current_app.extensions["iwrs.password_hasher"]


def hash_password(password: str, *, low_priority: bool = False) -> str:
    """An Argon2id hash of `password` (the application's costs); `low_priority` as for
    `password_matches`."""
    hasher = password_hasher()
    return run_at_low_priority(hasher.hash, password) if low_priority else hasher.hash(password)


def password_matches(stored_hash: str | None, password: str, *, low_priority: bool = False) -> bool:
    """Argon2id check; an unknown user is checked against a dummy hash so timing says nothing.

    `low_priority`: verify in the niced pool (`run_at_low_priority`). Anonymous sign-ins do
    (known and unknown users alike, so timing stays equal); a signed-in owner's re-entered
    password (e-signatures, emergency unblinding) does not, so no storm can slow it."""
    hasher = password_hasher()
    candidate = stored_hash or current_app.extensions["iwrs.dummy_hash"]
    try:
        verified = (
            run_at_low_priority(hasher.verify, candidate, password)
            if low_priority
            else hasher.verify(candidate, password)
        )
        return verified and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


# Decision (issue 11, the sign-in storm): anonymous sign-ins' Argon2id runs in a small pool of
# threads niced to LOW_PRIORITY, so that on a busy machine the CPU goes first to requests that
# change data (an audited write) and sign-ins take what is left. argon2-cffi releases the GIL
# while hashing, so the request thread waiting on the pool costs nothing. Linux gives each
# thread its own nice value (setpriority on its native id); elsewhere the pool runs at normal
# priority. The trade, intended: under load a sign-in takes longer (it waits for idle CPU),
# writes do not. The pool also caps this process's concurrent Argon2id (memory: 19 MiB each).
LOW_PRIORITY = 19
T = TypeVar("T")
LOW_PRIORITY_THREADS = max(2, os.cpu_count() or 2)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _lower_this_thread() -> None:
    # Not Linux (no per-thread nice value): the pool runs at normal priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOW_PRIORITY)


def _forget_pool() -> None:
    global _pool
    _pool = None  # a forked child has none of the parent's threads: it starts its own


os.register_at_fork(after_in_child=_forget_pool)


def run_at_low_priority(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` on one of this process's LOW_PRIORITY_THREADS threads niced to
    LOW_PRIORITY; waits for and returns its result (or raises its exception)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                LOW_PRIORITY_THREADS, "iwrs-low-priority", initializer=_lower_this_thread
            )
        pool = _pool
    return pool.submit(function, *args).result()


# --- API tokens ------------------------------------------------------------------------------

TOKEN_PREFIX = "iwrs_"  # noqa: S105 - a label, not a secret


def token_digest(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough; only the digest is stored.
    return hashlib.sha256(token.encode()).hexdigest()


_digest = token_digest  # session keys are 256 random bits too


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


# --- flask-login wiring -------------------------------------------------------------------------


class Anonymous(AnonymousUserMixin):
    role = None


login_manager = LoginManager()
login_manager.anonymous_user = Anonymous
login_manager.login_view = "auth.sign_in"
login_manager.login_message = "Please sign in."
login_manager.session_protection = "basic"


SESSION_KEY = "sid"  # the server-side session's random key, in the signed session cookie


def _suspended(user: User | None) -> bool:
    """Inactive or locked (after wrong e-signatures): every session and token stops working
    while it lasts (the sign-in lock after failed sign-ins does not suspend anything)."""
    return (
        user is None
        or not user.active
        or (user.locked_until is not None and user.locked_until > clock.now())
    )


@login_manager.user_loader
def _load_user_from_session(user_key: str) -> User | None:
    """The session's user, only while its server-side row is open, within its absolute lifetime
    and the user's session version (one indexed look-up per request)."""
    if "Authorization" in request.headers:
        return None  # an API call with a token authenticates by the token alone
    user_id, _, version = user_key.partition(":")
    key = session.get(SESSION_KEY)
    if not user_id.isdigit() or not version.isdigit() or not isinstance(key, str):
        return None
    row = (
        read_session()
        .scalars(select(UserSession).where(UserSession.key_sha256 == _digest(key)))
        .one_or_none()
    )
    if (
        row is None
        or row.user_id != int(user_id)
        or row.ended_at is not None
        or row.expires_at <= clock.now()
    ):
        return None
    user = read_session().get(User, int(user_id))
    if _suspended(user) or user.session_version != int(version):  # type: ignore[union-attr]
        return None
    g.user_session_id = row.id
    return user


@login_manager.request_loader
def _load_user_from_token(_request: Any) -> User | None:
    token = _bearer_token()
    if token is None:
        return None
    # The token, its user and the user's sites in one statement.
    found = (
        read_session()
        .execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_sha256 == token_digest(token))
            .options(joinedload(User.site_links))
        )
        .unique()
        .one_or_none()
    )
    if found is None:
        return None
    row, user = found
    if row.revoked_at is not None or not is_api_request():
        return None
    lifetime = current_app.extensions["iwrs.settings"].token_lifetime
    if (row.expires_at or row.created_at + lifetime) <= clock.now():
        return None
    if _suspended(user):
        return None
    g.api_token_id = row.id
    return user


def is_api_request() -> bool:
    return request.path.startswith("/api/")


def _enforce_idle_timeout() -> Any:
    """End a browser session idle for longer than the configured limit (15 minutes)."""
    if is_api_request() and _bearer_token() is not None:
        return None
    if request.endpoint == "static":
        return None
    last_seen = session.get("last_seen")
    now = clock.now()
    if current_user.is_authenticated and last_seen is not None:
        idle = current_app.extensions["iwrs.settings"].session_idle
        if now - datetime.fromisoformat(last_seen) > idle:
            from iwrs.audit import Actor
            from iwrs.services.sessions import sign_out

            # End it server-side too, so that no copy of the cookie outlives the idle rule.
            sign_out(actor=Actor.of(current_user), session_id=g.get("user_session_id"), why="idle")
            logout_user()
            session.clear()
            if is_api_request():
                raise AuthenticationFailed(
                    "your session expired after inactivity; sign in again",
                    rule="session_idle_timeout",
                )
            flash(
                f"Your session expired after {int(idle.total_seconds() // 60)} idle minutes. "
                "Please sign in again.",
                "warning",
            )
            return redirect(url_for("auth.sign_in", next=_page_to_return_to()))
    if current_user.is_authenticated:
        session["last_seen"] = now.isoformat()
    return None


def _page_to_return_to() -> str | None:
    """Where a person whose session expired goes back to once signed in again (issue 15: the
    same subject, its eligibility draft restored): the page asked for, or for a form's POST the
    page the form was on (a same-site Referer). The sign-in checks it again (`safe_next`)."""
    if request.method == "GET":
        return request.full_path.rstrip("?")
    referrer = urlsplit(request.referrer or "")
    if referrer.netloc == request.host and referrer.path.startswith("/"):
        return referrer.path
    return None


def _tokens_only_for_the_api() -> None:
    """Bearer tokens authenticate /api/ only: a page or its CSV export answers only to a
    signed-in session (README rule 11), so a token never opens what a browser shows."""
    if not is_api_request() and _bearer_token() is not None:
        raise AuthenticationFailed(
            "API tokens are accepted only under /api/; sign in to use the pages",
            field="Authorization",
            rule="token_api_only",
        )


# Pages a user with a temporary password may still reach: the change form and signing out.
_WHILE_TEMPORARY = frozenset({"account.password_page", "auth.sign_out", "static"})


def _require_password_change() -> Any:
    """A temporary password must be replaced before anything else: every page redirects to the
    change form, every API call answers 403 password_change_required."""
    if not current_user.is_authenticated or not current_user.password_temporary:
        return None
    if is_api_request():
        raise Forbidden(
            "change your temporary password (signed in, on the account page) before anything else",
            rule="password_change_required",
        )
    if request.endpoint in _WHILE_TEMPORARY:
        return None
    return redirect(url_for("account.password_page"))


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    app.before_request(_tokens_only_for_the_api)
    app.before_request(_enforce_idle_timeout)
    app.before_request(_require_password_change)


F = TypeVar("F", bound=Callable[..., Any])


def requires(*permissions: Permission) -> Callable[[F], F]:
    """Let the view run only for a signed-in user holding every named permission.

    The second wall, never the only one: every use case and every read of protected data
    checks its caller itself (iwrs/services; tests/authorization_table.py is the one table
    of who may do what, tests/integration/test_authorization_matrix.py calls each as every
    role). On an API method it is the outermost decorator, so a refused role gets 403 before
    its body is validated (it learns nothing of the schema)."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                if is_api_request():
                    raise _authentication_required()
                return login_manager.unauthorized()
            missing = [p for p in permissions if not has_permission(current_user, p)]
            if missing:
                raise Forbidden(
                    f"your role ({current_user.role.label}) may not "
                    f"{missing[0].value.replace('_', ' ')}",
                    rule="permission",
                )
            return view(*args, **kwargs)

        # Read by api_authentication_first and the OpenAPI document (iwrs.api): this view
        # needs a caller (401), and these permissions (403).
        wrapper.required_permissions = permissions  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _authentication_required() -> AuthenticationFailed:
    return AuthenticationFailed(
        "a valid API token (Authorization: Bearer …) or a signed-in session is required",
        field="Authorization",
        rule="authentication_required",
    )


def required_permissions(view: Any) -> tuple[Permission, ...] | None:
    """The permissions `@requires` put on a view (a function or a method), None if public."""
    return getattr(view, "required_permissions", None)


def api_operation(endpoint: str | None, method: str) -> Any:
    """The function that answers `method` at an API endpoint (a MethodView's method), if any."""
    view = current_app.view_functions.get(endpoint or "")
    view_class = getattr(view, "view_class", None)
    if view_class is None:
        return view
    return getattr(view_class, method.lower(), None)


def api_authentication_first() -> None:
    """An API operation that needs a caller answers an anonymous one 401 before anything else
    reads the request: the body's size, type, syntax and characters (iwrs.request_guard), CSRF,
    the input schema (issue 15). Registered as the first before-request hook. A path that
    matches no route, or a method the route lacks, goes on to its 404 or 405."""
    if not is_api_request() or request.url_rule is None:
        return
    operation = api_operation(request.url_rule.endpoint, request.method)
    if operation is None or required_permissions(operation) is None:
        return  # a public operation (the OpenAPI document, the audit public key)
    _enforce_idle_timeout()  # a session idle too long is no caller either (401 at once)
    if not current_user.is_authenticated:
        raise _authentication_required()
