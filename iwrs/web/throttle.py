"""The sign-in throttle: failed sign-ins are limited per source, per username and per source and
username, instead of letting anonymous failures lock the account.

Limits, counting only failed attempts (status 401; a success costs nothing), fixed windows:
- source + username, 5 per minute and 20 per hour: one place guessing one account; a person
  who mistypes gets five tries a minute.
- username, from anywhere, 10 per minute: guessing one account from many places (a botnet)
  stays at 10 a minute, 14,400 a day, far below what a zxcvbn-3 password needs (10^8).
  A stranger can hold this open for an account, which only delays a new sign-in: open
  sessions, tokens and e-signatures are never throttled (iwrs/services/sessions.py).
- source, 30 per minute: one place trying many accounts (spraying), yet a ward behind one
  NAT address with several users mistyping is not shut out.

A throttled attempt is the cheapest answer the application gives (issue 11: a 4-client storm
of unknown-user sign-ins must not slow other users' writes by more than half). It is answered
by `refuse_throttled`, the hook right after the body checks (iwrs/request_guard.py) and before
authentication, the session, CSRF, the database and any template: 429, Retry-After and a small
fixed page. No password is checked and nothing is written, except one audit event per throttled
key and window (not one per attempt), so a storm cannot flood the trail either. Measured
(bench/bench_throttled_sign_in.py): about 0.2 ms of server CPU per throttled attempt, against
1.3 ms when Flask-Limiter answered it from the view with the sign-in page.

The tarpit (OWASP Authentication Cheat Sheet: a progressive delay). A cheap 429 lets a client
that loops sign-ins ask again at once, hundreds of times a second, and on a small machine that
client's own CPU (and parsing its requests) is what other users' writes wait for: the storm
measured 3.25x idle with the clients as busy as the server. So a throttled attempt is answered
only after `sign_in_tarpit_ms` (default 1 s): the looping client spends its time waiting
(1.09-1.43x idle with the clients at nice 0, bench/RESULTS.md). The
wait holds no database connection, lock or session (it follows the audit of the first refusal,
whose transaction is closed by then) and only a throttled POST /sign-in waits: a wrong password
not yet throttled runs Argon2 as before, e-signatures are never throttled.

Decision, on what a wait costs: a thread. At most `sign_in_tarpit_max` (default 4) throttled
attempts wait at once per process (a semaphore, taken without blocking); beyond that the 429
is sent at once, as without the tarpit. Only a server that serves requests concurrently
tarpits (WSGI `wsgi.multithread`: gunicorn's gthread and async workers, werkzeug's threaded
server): under gunicorn's sync workers a waiting request would hold the whole worker, so
there the 429 is sent at once. `make serve` runs gthread workers with 8 threads and the cap
stays at 4, below the thread count, so waiting attempts never hold every thread of a worker;
raise `IWRS_SIGN_IN_TARPIT_MAX` only together with `--threads`.

Decision: the counting is done by `limits` (the library Flask-Limiter is built on, same
maintainers) rather than by Flask-Limiter's decorators. Flask-Limiter evaluated the sign-in
limits twice per request, late (after the session, CSRF and the other hooks), and ran its
hook on every request of the application; here only POST /sign-in pays anything. Counters
live in `ratelimit_storage_url`: memory:// in the single embedded process, redis://… shared
by several processes. A shared store that cannot be reached falls back to counting in this
process (logged) and is tried again after `RETRY_STORE` seconds, rather than refusing every
sign-in or letting every attempt through."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, current_app, request
from limits import RateLimitItem, RateLimitItemPerSecond, parse_many
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from iwrs import audit
from iwrs.audit import Actor
from iwrs.db import transaction

log = logging.getLogger("iwrs.throttle")

SOURCE_AND_USERNAME = "5 per minute;20 per hour"
USERNAME = "10 per minute"
SOURCE = "30 per minute"
ENDPOINT = "auth.sign_in"
PREFIX = "iwrs-sign-in"
RETRY_STORE = 30.0  # seconds before a failed shared store is tried again

# The whole answer to a throttled attempt: no template, no session, no form.
PAGE = (
    "<!doctype html><html lang=en><meta charset=utf-8><title>Too many sign-in attempts</title>"
    "<p>Too many failed sign-in attempts. Try again in {retry} seconds "
    "(an open session is not affected).</p><p><a href=/sign-in>Sign in</a></p></html>"
)


def _source() -> str:
    return request.remote_addr or "(unknown)"


def _username() -> str:
    return (request.form.get("username") or "").strip().lower()[:64]


LIMITS = {
    "source_and_username": parse_many(SOURCE_AND_USERNAME),
    "username": parse_many(USERNAME),
    "source": parse_many(SOURCE),
}


def _keys() -> list[tuple[str, RateLimitItem, str]]:
    """(scope, limit, key) of every limit on this request, most specific first."""
    source, username = _source(), _username()
    keys = {
        "source_and_username": f"{source}|{username}",
        "username": username or "(blank)",
        "source": source,
    }
    return [(scope, item, keys[scope]) for scope, items in LIMITS.items() for item in items]


@dataclass
class Throttle:
    """The sign-in counters of one application: `storage` (from `ratelimit_storage_url`), and
    an in-process fallback used while the shared store cannot be reached."""

    storage: Storage
    enabled: bool = True
    fallback: MemoryStorage = field(default_factory=MemoryStorage)
    failed_at: float | None = None
    tarpit_seconds: float = 0.0
    tarpit: threading.BoundedSemaphore = field(default_factory=threading.BoundedSemaphore)

    def _call(self, method: str, item: RateLimitItem, *ids: str) -> Any:
        """`FixedWindowRateLimiter.<method>(item, *ids)` on the store, or on the fallback."""
        if self.failed_at is not None and time.monotonic() - self.failed_at > RETRY_STORE:
            self.failed_at = None
        if self.failed_at is None:
            try:
                return getattr(FixedWindowRateLimiter(self.storage), method)(item, PREFIX, *ids)
            except Exception:  # the shared store is down: count here, and say so
                log.warning("sign-in throttle store unreachable; counting in this process")
                self.failed_at = time.monotonic()
        return getattr(FixedWindowRateLimiter(self.fallback), method)(item, PREFIX, *ids)

    def breached(self) -> tuple[str, RateLimitItem, int] | None:
        """The first limit this request is over: (its key, the limit, seconds until it
        resets), or None."""
        for scope, item, key in _keys():
            if not self._call("test", item, scope, key):
                reset = self._call("get_window_stats", item, scope, key).reset_time
                return f"{scope}|{key}", item, max(1, int(reset - time.time()) + 1)
        return None

    def count_failure(self) -> None:
        """Count one failed sign-in (status 401) against every limit of the request."""
        for scope, item, key in _keys():
            self._call("hit", item, scope, key)

    def first_in_window(self, key: str, item: RateLimitItem) -> bool:
        """True once per breached `key` and `item` window (only the first refusal is audited)."""
        once = RateLimitItemPerSecond(1, item.get_expiry())
        return bool(
            self._call("test", once, "audited", str(item), key)
            and self._call("hit", once, "audited", str(item), key)
        )

    def hold_back(self) -> None:
        """The tarpit: wait `tarpit_seconds` before a throttled attempt is answered, if the
        server serves requests concurrently and fewer than the cap are waiting already."""
        concurrent = bool(request.environ.get("wsgi.multithread"))
        if self.tarpit_seconds <= 0 or not concurrent or not self.tarpit.acquire(blocking=False):
            return
        try:
            time.sleep(self.tarpit_seconds)
        finally:
            self.tarpit.release()

    def reset(self) -> None:
        """Forget every count (tests: a window waited out)."""
        for storage in (self.storage, self.fallback):
            storage.reset()


def _is_sign_in() -> bool:
    return request.method == "POST" and request.endpoint == ENDPOINT


def refuse_throttled() -> Response | None:
    """Before authentication, the session, CSRF and the view: answer a POST /sign-in that is
    over a limit with 429, Retry-After and `PAGE`; audit the first of each key and window."""
    throttle: Throttle = current_app.extensions["iwrs.limiter"]
    if not throttle.enabled or not _is_sign_in():
        return None
    found = throttle.breached()
    if found is None:
        return None
    key, item, retry = found
    if throttle.first_in_window(key, item):
        with transaction() as session:
            audit.record(
                session,
                actor=Actor(None, _username() or "(blank)", "unknown", "password"),
                action="auth.sign_in_throttled",
                entity_type="user",
                after={"limit": str(item), "source": _source()},
            )
    throttle.hold_back()
    response = Response(PAGE.format(retry=retry), 429, mimetype="text/html")
    response.headers["Retry-After"] = str(retry)
    return response


def _count_failure(response: Response) -> Response:
    throttle: Throttle = current_app.extensions["iwrs.limiter"]
    if throttle.enabled and response.status_code == 401 and _is_sign_in():
        throttle.count_failure()
    return response


def init_app(app: Flask) -> None:
    """Throttle POST /sign-in: `refuse_throttled` runs right after the body checks (its key
    reads the form, which they bound), before every other hook; failures are counted once the
    view has answered 401."""
    from iwrs.request_guard import guard_request

    settings = app.extensions["iwrs.settings"]
    app.extensions["iwrs.limiter"] = Throttle(
        storage_from_string(settings.ratelimit_storage_url),
        enabled=settings.ratelimit_enabled,
        tarpit_seconds=settings.sign_in_tarpit_ms / 1000,
        tarpit=threading.BoundedSemaphore(settings.sign_in_tarpit_max),
    )
    hooks = app.before_request_funcs.setdefault(None, [])
    hooks.insert(hooks.index(guard_request) + 1, refuse_throttled)
    app.after_request(_count_failure)
