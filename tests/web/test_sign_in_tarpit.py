"""The sign-in tarpit (issue 11; OWASP's progressive delay): a throttled sign-in is answered only
after IWRS_SIGN_IN_TARPIT_MS, holding nothing while it waits; at most IWRS_SIGN_IN_TARPIT_MAX
wait at once, the others are answered at once; only a concurrent server tarpits."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, select

from iwrs import create_app
from iwrs.config import Settings
from iwrs.db import read_session
from iwrs.models import AuditEvent
from iwrs.web.throttle import Throttle
from tests.conftest import csrf_from, make_settings, sign_in

SOURCE = "10.9.9.9"
LONG = 30.0  # seconds: a tarpit no passing test ever waits out


@pytest.fixture
def app_with(tmp_path: Path, database_url: str) -> Iterator[Callable[..., Flask]]:
    """An application with the tarpit settings given, its SOURCE already over its limit."""
    made: list[Flask] = []

    def _make(**settings: Any) -> Flask:
        application = create_app(make_settings(tmp_path, database_url, **settings))
        made.append(application)
        for attempt in range(30):  # the source's 30 failures a minute
            client = application.test_client()
            client.environ_base["REMOTE_ADDR"] = SOURCE
            assert sign_in(client, f"nobody{attempt}", "wrong password!!").status_code == 401
        return application

    yield _make
    for application in made:
        application.extensions["iwrs.engine"].dispose()


def _throttled(app: Flask, *, concurrent: bool = True) -> tuple[Any, float]:
    """One sign-in from SOURCE, served as by gunicorn's gthread workers (`concurrent`) or by a
    sync worker; (the answer, seconds it took)."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = SOURCE
    started = time.monotonic()
    answer = client.post(
        "/sign-in", data={"username": "dr.wu", "password": "x"}, multithread=concurrent
    )
    return answer, time.monotonic() - started


def _refused_as_throttled(answer: Any) -> None:
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0
    assert "Set-Cookie" not in answer.headers


def test_a_throttled_sign_in_is_answered_only_after_the_tarpit(app_with):
    app = app_with(sign_in_tarpit_ms=300)
    for _ in range(2):  # the first (audited) refusal of the window, and one after it
        answer, elapsed = _throttled(app)
        _refused_as_throttled(answer)
        assert elapsed >= 0.3
    with app.app_context():
        refusals = read_session().scalars(
            select(AuditEvent).where(AuditEvent.action == "auth.sign_in_throttled")
        )
        assert len(list(refusals)) == 1  # one per key and window, as without the tarpit


def test_the_tarpit_waits_without_a_database_connection(app_with):
    """The first refusal of a window writes its audit event, then waits: every connection it
    took is back in the pool at least the whole delay before the answer is sent."""
    app = app_with(sign_in_tarpit_ms=300)
    engine = app.extensions["iwrs.engine"]
    taken, returned = [], []
    event.listen(engine, "checkout", lambda *_: taken.append(time.monotonic()))
    event.listen(engine, "checkin", lambda *_: returned.append(time.monotonic()))
    answer, _ = _throttled(app)
    answered = time.monotonic()
    _refused_as_throttled(answer)
    assert taken and len(returned) == len(taken)  # the audit event, in its own transaction
    assert max(returned) <= answered - 0.3


def test_with_every_tarpit_place_taken_a_throttled_sign_in_is_answered_at_once(app_with):
    app = app_with(sign_in_tarpit_ms=int(LONG * 1000), sign_in_tarpit_max=2)
    throttle: Throttle = app.extensions["iwrs.limiter"]
    assert throttle.tarpit.acquire(blocking=False) and throttle.tarpit.acquire(blocking=False)
    try:  # two attackers' attempts are waiting: a third gets its 429 now, never worse than that
        answer, elapsed = _throttled(app)
    finally:
        throttle.tarpit.release()
        throttle.tarpit.release()
    _refused_as_throttled(answer)
    assert elapsed < LONG


def test_a_server_serving_one_request_at_a_time_never_tarpits(app_with):
    """Under gunicorn's sync workers a waiting request would hold the whole worker."""
    answer, elapsed = _throttled(app_with(sign_in_tarpit_ms=int(LONG * 1000)), concurrent=False)
    _refused_as_throttled(answer)
    assert elapsed < LONG


def test_a_tarpit_of_0_answers_at_once(app_with, monkeypatch, tmp_path):
    monkeypatch.setenv("IWRS_SIGN_IN_TARPIT_MS", "0")
    tarpit_ms = Settings.from_env(instance_path=tmp_path).sign_in_tarpit_ms
    assert tarpit_ms == 0
    answer, elapsed = _throttled(app_with(sign_in_tarpit_ms=tarpit_ms))
    _refused_as_throttled(answer)
    assert elapsed < Settings.sign_in_tarpit_ms / 1000  # sooner than the default delay


def test_a_sign_in_not_yet_throttled_is_never_tarpitted(app_with):
    """A wrong password under the limits is checked (401) at once, however long the tarpit."""
    app = app_with(sign_in_tarpit_ms=int(LONG * 1000))
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "10.9.9.10"
    token = csrf_from(client.get("/sign-in").get_data(as_text=True))
    started = time.monotonic()
    answer = client.post(
        "/sign-in",
        data={"username": "nobody-here", "password": "wrong password!!", "csrf_token": token},
        multithread=True,
    )
    assert answer.status_code == 401
    assert time.monotonic() - started < LONG
