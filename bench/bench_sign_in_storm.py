"""Benchmark: write latency under a storm of unknown-user sign-ins (issue 11).

One process, the embedded SQLite default, production Argon2id costs. A writer thread revokes API
tokens one by one through the API (DELETE /api/v1/tokens/<id>: an audited write, no password
check) and times each request, first alone (idle), then while 4 clients loop POST /sign-in with
unknown usernames, each from its own address: with the sign-in throttle as shipped, and with the
throttle switched off (every attempt then runs Argon2id, outside any write lock, and writes its
audit event in a short transaction). Prints progress, a JSON summary and a line for the README.

    .venv/bin/python bench/bench_sign_in_storm.py [--writes 300] [--interval 0.25] [--clients 4]
        [--argon2 production|test]

The writes are paced (one every `interval` s, 75 s by default) so that the storm is sampled over
whole throttle windows, not only the first seconds before any limit is reached.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy import select

from iwrs import create_app
from iwrs.audit import Actor
from iwrs.config import Settings
from iwrs.db import make_engine, read_session, upgrade_schema
from iwrs.models import User

PASSWORD = "correct horse battery staple"  # noqa: S105 - the bench's own throw-away account
SECRET = bytes(range(32))  # one session secret for every process of the bench
WARM_UP = 2.0  # seconds of storm before the writes are timed
CHEAP = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)


def _app(folder: Path, *, throttle: bool, cheap: bool = False) -> Any:
    from iwrs.services import trial, users

    url = f"sqlite:///{folder / 'iwrs.sqlite'}"
    if not (folder / "iwrs.sqlite").exists():
        engine = make_engine(url)
        upgrade_schema(engine)
        engine.dispose()
    settings = Settings(
        instance_path=folder,
        database_url=url,
        secret_key=SECRET,
        audit_key=bytes(32),
        blinding_key=bytes(32),
        audit_signing_key=bytes(32),
        ratelimit_enabled=throttle,
    )
    app = create_app(settings)
    if cheap:  # the test suite's Argon2id costs: the storm then costs CPU little beyond its writes
        app.extensions["iwrs.password_hasher"] = CHEAP
        app.extensions["iwrs.dummy_hash"] = CHEAP.hash("not-a-real-password-for-timing")
    with app.app_context():
        if not read_session().scalars(select(User)).first():
            trial.load_protocol(
                actor=Actor.system("bench"), protocol=app.extensions["iwrs.protocol"]
            )
            # The bench's own account gets a cheap hash (its token minting is set-up, not
            # measured); the storm's unknown users are checked against the app's dummy hash.
            app.extensions["iwrs.password_hasher"], real = (
                CHEAP,
                app.extensions["iwrs.password_hasher"],
            )
            users.create_user(
                actor=Actor.system("bench"),
                username="bench.admin",
                full_name="Bench Admin",
                role="admin",
                password=PASSWORD,
            )
            app.extensions["iwrs.password_hasher"] = real
    return app


def _tokens(app: Any, count: int) -> tuple[str, list[int]]:
    from iwrs.services import users

    with app.app_context():
        admin = read_session().scalars(select(User).where(User.username == "bench.admin")).one()
        actor = Actor.of(admin)
        keep, _ = users.create_api_token(
            actor=actor, user_id=admin.id, name="keep", password=PASSWORD
        )
        ids = [
            users.create_api_token(actor=actor, user_id=admin.id, name=f"t{i}", password=PASSWORD)[
                1
            ].id
            for i in range(count)
        ]
    return keep, ids


def _writes(app: Any, keep: str, ids: list[int], label: str, interval: float) -> list[float]:
    """One write every `interval` seconds (so the storm is sampled over whole throttle windows)."""
    client = app.test_client()
    headers = {"Authorization": f"Bearer {keep}"}
    latencies = []
    for done, token_id in enumerate(ids, 1):
        started = time.perf_counter()
        response = client.delete(f"/api/v1/tokens/{token_id}", headers=headers)
        elapsed = time.perf_counter() - started
        latencies.append(elapsed * 1000)
        assert response.status_code == 204, response.get_data(as_text=True)
        if done % 50 == 0:
            print(f"  {label}: {done}/{len(ids)} writes", file=sys.stderr, flush=True)
        time.sleep(max(0.0, interval - elapsed))
    return latencies


def _storm(folder: Path, throttle: bool, cheap: bool, index: int, stop: Any, answers: Any) -> None:
    """One anonymous client in its own process (as several app processes would serve them):
    POST /sign-in with a fresh unknown username, as fast as the answers come."""
    import re

    app = _app(folder, throttle=throttle, cheap=cheap)
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = f"10.9.0.{index + 1}"
    page = client.get("/sign-in").get_data(as_text=True)
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert found is not None
    while not stop.is_set():
        response = client.post(
            "/sign-in",
            data={
                "username": f"nobody{secrets.token_hex(4)}",
                "password": "wrong password!",
                "csrf_token": found.group(1),
            },
        )
        with answers.get_lock():
            answers[0 if response.status_code == 401 else 1] += 1


def _summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "median_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
        "max_ms": round(ordered[-1], 1),
    }


def _phase(
    folder: Path,
    *,
    throttle: bool,
    cheap: bool,
    clients: int,
    writes: int,
    interval: float,
    label: str,
) -> dict:
    app = _app(folder, throttle=throttle, cheap=cheap)
    keep, ids = _tokens(app, writes)
    context = multiprocessing.get_context("fork")
    stop, answers = context.Event(), context.Array("i", [0, 0])
    storm = [
        context.Process(target=_storm, args=(folder, throttle, cheap, i, stop, answers))
        for i in range(clients)
    ]
    for process in storm:
        process.start()
    time.sleep(WARM_UP if clients else 0)
    try:
        latencies = _writes(app, keep, ids, label, interval)
    finally:
        stop.set()
        for process in storm:
            process.join()
    app.extensions["iwrs.engine"].dispose()
    return {
        **_summary(latencies),
        "sign_in_answers": {"401 (checked)": answers[0], "429 (throttled)": answers[1]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between writes")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--argon2",
        choices=("production", "test"),
        default="production",
        help="Argon2id costs: the shipped ones, or the test suite's (isolates lock effects)",
    )
    args = parser.parse_args()
    cheap = args.argon2 == "test"
    folder = Path(tempfile.mkdtemp(prefix="iwrs-bench-storm-"))
    results = {}
    for label, throttle, clients in (
        ("idle", True, 0),
        ("storm, throttled", True, args.clients),
        ("storm, throttle off", False, args.clients),
    ):
        print(f"{label} …", file=sys.stderr, flush=True)
        results[label] = _phase(
            folder,
            throttle=throttle,
            cheap=cheap,
            clients=clients,
            writes=args.writes,
            interval=args.interval,
            label=label,
        )
    idle = results["idle"]["median_ms"]
    for label in ("storm, throttled", "storm, throttle off"):
        results[label]["median_vs_idle"] = round(results[label]["median_ms"] / idle, 2)
    command = (
        f"python bench/bench_sign_in_storm.py --writes {args.writes} --interval {args.interval} "
        f"--clients {args.clients} --argon2 {args.argon2}"
    )
    load = [round(x, 1) for x in os.getloadavg()]
    cpus = os.cpu_count()
    print(
        json.dumps({"command": command, "cpus": cpus, "load": load, "results": results}, indent=2)
    )
    storm, off = results["storm, throttled"], results["storm, throttle off"]
    print(
        f"| `{command}` | audited write (API token revocation) median/p95: idle "
        f"{idle}/{results['idle']['p95_ms']} ms; {args.clients}-client unknown-user sign-in "
        f"storm {storm['median_ms']}/{storm['p95_ms']} ms ({storm['median_vs_idle']}x) throttled, "
        f"{off['median_ms']}/{off['p95_ms']} ms ({off['median_vs_idle']}x) with the throttle off "
        f"({cpus} CPUs, load {load[0]}) |"
    )


if __name__ == "__main__":
    main()
