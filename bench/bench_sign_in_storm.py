"""Benchmark: write latency under a storm of unknown-user sign-ins (issue 11).

The embedded SQLite default, production Argon2id costs. A writer in the main process revokes
API tokens one by one through the API (DELETE /api/v1/tokens/<id>: an audited write, no
password check) and times each request, first alone (idle), then during a storm of 4 clients
looping POST /sign-in with unknown usernames, each from its own loopback address: with the
sign-in throttle as shipped (a throttled attempt answered 429 after the tarpit's delay,
IWRS_SIGN_IN_TARPIT_MS, read as in production), and with the throttle switched off (every
attempt then runs Argon2id, outside any write lock, and writes its audit event in a short
transaction). Prints progress, a JSON summary and a line for the README.

    .venv/bin/python bench/bench_sign_in_storm.py [--writes 300] [--interval 0.25] [--clients 4]
        [--argon2 production|test] [--client-nice 0,19] [--no-throttle-off]

Who runs where (all on this machine's cores, which is the point):
- each storm client is its own process, talking real HTTP/1.1 (one keep-alive connection) to
  its own storm server: a process serving the application with werkzeug, at normal priority,
  as several app processes would serve the storm;
- the clients stand for machines elsewhere. On a small machine their own CPU (building and
  parsing hundreds of requests a second) competes with the server, which a real attacker's
  does not. So each storm runs once per `--client-nice` value: 0 (the clients compete with
  the server as equals: the worst case, reported) and 19 (the clients yield the CPU to
  anything else, as if they were elsewhere). Only the clients are niced, never a server.
The writes are paced (one every `interval` s) so that the storm is sampled over whole throttle
windows, not only the first seconds before any limit is reached, and alternate in blocks of
SEGMENT writes between the storm running and its clients stopped (SIGSTOP; the servers and
their throttle counters stay up): `--writes` of each, so 2 x 300 x 0.25 s = 150 s a storm. The
idle figure is thus taken over the same minutes as the storm's, and other load on a shared
machine weighs on both alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import secrets
import signal
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
SEGMENT = 20  # writes in a row under one condition (storm running, or its clients stopped)
SETTLE = 0.5  # seconds after starting or stopping the clients before the next write
CHEAP = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)


def _app(folder: Path, *, throttle: bool, cheap: bool = False) -> Any:
    from iwrs.services import trial, users

    url = f"sqlite:///{folder / 'iwrs.sqlite'}"
    if not (folder / "iwrs.sqlite").exists():
        engine = make_engine(url)
        upgrade_schema(engine)
        engine.dispose()
    # The production settings path (every IWRS_* variable, e.g. IWRS_SIGN_IN_TARPIT_MS), but
    # the bench's own database, keys and throttle switch.
    settings = dataclasses.replace(
        Settings.from_env(instance_path=folder),
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


def _writes(
    app: Any, keep: str, ids: list[int], label: str, interval: float, storm: Any
) -> dict[str, list[float]]:
    """One write every `interval` seconds, alternating blocks of `SEGMENT` writes with the storm
    running and with its clients stopped (SIGSTOP): both conditions are sampled over the same
    minutes, so other load on the machine weighs on both alike."""
    client = app.test_client()
    headers = {"Authorization": f"Bearer {keep}"}
    latencies: dict[str, list[float]] = {"storm": [], "idle": []}
    for done, token_id in enumerate(ids):
        block, within = divmod(done, SEGMENT)
        condition = "storm" if block % 2 == 0 else "idle"
        if within == 0:
            storm(condition == "storm")
            time.sleep(SETTLE)
        started = time.perf_counter()
        response = client.delete(f"/api/v1/tokens/{token_id}", headers=headers)
        elapsed = time.perf_counter() - started
        latencies[condition].append(elapsed * 1000)
        assert response.status_code == 204, response.get_data(as_text=True)
        if (done + 1) % 100 == 0:
            print(f"  {label}: {done + 1}/{len(ids)} writes", file=sys.stderr, flush=True)
        time.sleep(max(0.0, interval - elapsed))
    return latencies


def _serve(folder: Path, throttle: bool, cheap: bool, ports: Any) -> None:
    """One storm server: the app in its own process (as several app processes would serve the
    storm), behind werkzeug's threaded HTTP/1.1 server (concurrent, like gunicorn's gthread
    workers of `make serve`, so a throttled sign-in is tarpitted), at normal priority."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class KeepAlive(WSGIRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    app = _app(folder, throttle=throttle, cheap=cheap)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=KeepAlive)
    ports.put(server.server_port)
    server.serve_forever()


def _storm(port: int, index: int, nice: int, stop: Any, answers: Any) -> None:
    """One anonymous client (a machine elsewhere) in its own process, at nice `nice`, from its
    own loopback address: POST /sign-in with a fresh unknown username, as fast as the answers
    come, over one keep-alive connection."""
    import http.client
    import re

    os.nice(nice)
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, source_address=(f"127.0.9.{index + 1}", 0)
    )
    connection.request("GET", "/sign-in")
    response = connection.getresponse()
    page = response.read().decode()
    cookie = response.getheader("Set-Cookie", "").split(";")[0]
    found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert found is not None
    headers = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
    while not stop.is_set():
        body = f"username=nobody{secrets.token_hex(4)}&password=wrong+password%21&csrf_token="
        connection.request("POST", "/sign-in", body + found.group(1), headers)
        response = connection.getresponse()
        response.read()
        with answers.get_lock():
            answers[0 if response.status == 401 else 1 if response.status == 429 else 2] += 1


def _summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "median_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
        "max_ms": round(ordered[-1], 1),
    }


def _start_storm(
    folder: Path, *, throttle: bool, cheap: bool, clients: int, nice: int
) -> tuple[list[Any], Any, Any]:
    """`clients` server processes and one client process for each (processes, stop, answers)."""
    context = multiprocessing.get_context("fork")
    stop, answers, ports = context.Event(), context.Array("i", [0, 0, 0]), context.Queue()
    servers = [
        context.Process(target=_serve, args=(folder, throttle, cheap, ports))
        for _ in range(clients)
    ]
    for server in servers:
        server.start()
    storm = [
        context.Process(target=_storm, args=(ports.get(timeout=60), i, nice, stop, answers))
        for i in range(clients)
    ]
    for client in storm:
        client.start()
    return servers + storm, stop, answers


def _phase(
    folder: Path,
    *,
    throttle: bool,
    cheap: bool,
    clients: int,
    nice: int,
    writes: int,
    interval: float,
    label: str,
) -> dict:
    app = _app(folder, throttle=throttle, cheap=cheap)
    keep, ids = _tokens(app, 2 * writes)
    processes, stop, answers = _start_storm(
        folder, throttle=throttle, cheap=cheap, clients=clients, nice=nice
    )

    def storm(running: bool) -> None:
        for client in processes[clients:]:
            os.kill(client.pid, signal.SIGCONT if running else signal.SIGSTOP)

    time.sleep(WARM_UP)
    try:
        latencies = _writes(app, keep, ids, label, interval, storm)
    finally:
        storm(True)
        stop.set()
        for process in processes[clients:]:
            process.join()
        for process in processes[:clients]:
            process.terminate()
            process.join()
    app.extensions["iwrs.engine"].dispose()
    idle, stormy = _summary(latencies["idle"]), _summary(latencies["storm"])
    return {
        "idle": idle,
        "storm": stormy,
        "median_vs_idle": round(stormy["median_ms"] / idle["median_ms"], 2),
        "p95_vs_idle": round(stormy["p95_ms"] / idle["p95_ms"], 2),
        "sign_in_answers": {
            "401 (checked)": answers[0],
            "429 (throttled)": answers[1],
            "other": answers[2],
        },
    }


def _arguments() -> argparse.Namespace:
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
    parser.add_argument(
        "--client-nice",
        default="0,19",
        help="comma-separated nice values of the storm's client processes, one storm per value "
        "(the servers always run at normal priority)",
    )
    parser.add_argument(
        "--throttle-off",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also storm with the throttle switched off",
    )
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    cheap = args.argon2 == "test"
    folder = Path(tempfile.mkdtemp(prefix="iwrs-bench-storm-"))
    phases = []
    for nice in (int(value) for value in args.client_nice.split(",")):
        phases.append((f"throttled, clients nice {nice}", True, nice))
        if args.throttle_off:
            phases.append((f"throttle off, clients nice {nice}", False, nice))
    results = {}
    for label, throttle, nice in phases:
        print(f"{label} …", file=sys.stderr, flush=True)
        results[label] = _phase(
            folder,
            throttle=throttle,
            cheap=cheap,
            clients=args.clients,
            nice=nice,
            writes=args.writes,
            interval=args.interval,
            label=label,
        )
    command = (
        f"python bench/bench_sign_in_storm.py --writes {args.writes} --interval {args.interval} "
        f"--clients {args.clients} --argon2 {args.argon2} --client-nice {args.client_nice}"
        + ("" if args.throttle_off else " --no-throttle-off")
    )
    load = [round(x, 1) for x in os.getloadavg()]
    cpus = os.cpu_count()
    tarpit_ms = Settings.from_env(instance_path=folder).sign_in_tarpit_ms
    summary = {"command": command, "cpus": cpus, "load": load, "tarpit_ms": tarpit_ms}
    print(json.dumps(summary | {"results": results}, indent=2))
    storms = "; ".join(
        f"{label}: {r['storm']['median_ms']}/{r['storm']['p95_ms']} ms against "
        f"{r['idle']['median_ms']}/{r['idle']['p95_ms']} ms idle "
        f"({r['median_vs_idle']}x/{r['p95_vs_idle']}x; {r['sign_in_answers']['401 (checked)']} "
        f"checked, {r['sign_in_answers']['429 (throttled)']} answered 429)"
        for label, r in results.items()
    )
    print(
        f"| `{command}` | audited write (API token revocation) median/p95 during a "
        f"{args.clients}-client unknown-user sign-in storm, and idle in between: {storms} "
        f"({cpus} CPUs, load {load[0]}, tarpit {tarpit_ms} ms) |"
    )


if __name__ == "__main__":
    main()
