"""The runs of bench/bench_http.py: HTTP loads at K clients, the raw-SQL replay, Argon2 alone.

The raw-SQL replay (`capture_randomizations`, `replay_runs`) and how faithful it is:
- On a byte-identical copy of the freshly built world (PostgreSQL CREATE DATABASE … TEMPLATE),
  the harness randomizes N subjects one after another in-process through the real service
  (`iwrs.services.randomization.randomize`, signature, idempotency key and all) and records every
  statement the app sends to the database with its bound values (SQLAlchemy
  `before_cursor_execute`): the reads, the locks (SELECT … FOR UPDATE), the day-1 kit's
  dispensation, the audit event, any resupply request.
- For each K, a new copy of the same world; K psycopg connections take the recorded operations
  in their recorded order and replay each as one transaction (BEGIN; the statements; COMMIT).
  The values are the real ones of N different randomizations (different subjects, slots, kits,
  randomization numbers, audit sequence numbers), so replays do not collide on unique keys, and
  they contend on the same shared rows the app locks (trial, stratum, site, chain head).
- What it leaves out: Python (Flask, SQLAlchemy, the service's logic), the password check, and
  the statements' dependence on each other's results (a replayed UPDATE … WHERE guard written
  for its recorded predecessor may match nothing when replayed out of order: a row not changed,
  never an error). It is therefore an upper bound of what the database alone can do for this
  transaction shape - the "raw SQL" of the issue. Statements the app sends outside the write
  transaction (reads before it) are replayed inside it.
- Left out of the capture: `SET LOCAL synchronous_commit TO OFF`, which the app sends in the
  idempotency claim's own short transaction only (iwrs.services.idempotency); inside the one
  replayed transaction it would make the replay's commit, which stands for the randomization's
  own (synchronous, durable) commit, skip its WAL flush.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import pickle
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class Pools:
    """The world's subjects to randomize and visits to dispense, taken once each, and the
    people's tokens by site."""

    def __init__(self, manifest: dict[str, Any], url: str) -> None:
        people = manifest["users"]
        self.manifest = manifest
        self.investigator = {u["site_id"]: u for u in people["investigators"]}
        self.pharmacist = {u["site_id"]: u for u in people["pharmacists"]}
        sites = _subject_sites(url, manifest)
        self.randomize = _interleaved(_awaiting(manifest["awaiting_randomization"]), sites)
        self.visits = [(s, v, sites[s]) for s, v, *_ in manifest.get("awaiting_visit") or []]
        self.site_codes = _site_codes(url)

    def left(self) -> dict[str, Any]:
        """The manifest's pools as the runs left them (--manifest writes them back)."""
        waiting: dict[str, list[int]] = {}
        for subject, site in self.randomize:
            waiting.setdefault(str(site), []).append(subject)
        return {
            "awaiting_randomization": waiting,
            "awaiting_visit": [[s, v] for s, v, _ in self.visits],
        }

    def describe(self) -> dict[str, Any]:
        return {
            "sites": len(self.investigator),
            "awaiting_randomization": len(self.randomize),
            "awaiting_visit": len(self.visits),
        }


def world_keys(manifest: dict[str, Any]) -> dict[str, bytes]:
    """The world's four keys: the manifest's "keys" ({IWRS_SECRET_KEY: hex, ...}) or the key
    files of its "keys_dir" (an instance folder, as `iwrs init` writes them)."""
    from iwrs.config import KEY_NAMES, read_key

    if manifest.get("keys"):
        return {
            k.removeprefix("IWRS_").lower(): bytes.fromhex(v) for k, v in manifest["keys"].items()
        }
    folder = Path(manifest["keys_dir"])
    return {name: read_key(name, folder) or b"" for name in KEY_NAMES}


def _awaiting(value: Any) -> list[int]:
    """Subject ids from the manifest's awaiting_randomization: {site: [ids]} or [ids]."""
    if isinstance(value, dict):
        return [int(s) for ids in value.values() for s in ids]
    return [int(s[0] if isinstance(s, list | tuple) else s) for s in value]


def _subject_sites(url: str, manifest: dict[str, Any]) -> dict[int, int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, site_id FROM subject")).all()
    engine.dispose()
    return {int(i): int(s) for i, s in rows}


def _site_codes(url: str) -> dict[int, str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, code FROM site")).all()
    engine.dispose()
    return {int(i): str(c) for i, c in rows}


def _interleaved(subjects: list[int], sites: dict[int, int]) -> list[tuple[int, int]]:
    """Site by turn, so that concurrent randomizations spread over the sites."""
    by_site: dict[int, list[int]] = {}
    for s in subjects:
        by_site.setdefault(sites[s], []).append(s)
    out: list[tuple[int, int]] = []
    queues = list(by_site.items())
    while any(q for _, q in queues):
        for site, q in queues:
            if q:
                out.append((q.pop(0), site))
    return out


# The pages and API lists measured as their users see them: (manifest role, path). Pages sign
# in (a session); API lists use the person's token. {site} is the person's own site.
PAGES = {
    "supply_page": ("supply_manager", "/supply/"),
    "audit_page": ("auditor", "/audit/"),
    "subject_list": ("investigators", "/subjects/"),
    "visit_board": ("pharmacists", "/dispensing/"),
    "site_inventory": ("pharmacists", "/supply/sites/{site}"),
    "statistician_status": ("statistician", "/lists/"),
}
API_LISTS = {
    "subjects_api": ("investigators", "/api/v1/subjects"),
    "inventory_api": ("pharmacists", "/api/v1/inventory?site_code={site_code}"),
    "shipments_api": ("supply_manager", "/api/v1/shipments"),
    "audit_events_api": ("auditor", "/api/v1/audit/events"),
}


def _person(people: dict[str, Any], role: str) -> dict[str, Any]:
    """The manifest's person of `role` (the first of a per-site list)."""
    found = people.get(role)
    if not found:
        raise SystemExit(f"the world's manifest has no {role} (rebuild it with bench/scale.py)")
    return found[0] if isinstance(found, list) else found


def _items(op: str, pools: Pools, manifest: dict[str, Any]) -> tuple[list[Any], bool, Any]:
    """The run's requests, whether one repeats forever, and the sign-in (pages)."""
    people = manifest["users"]
    bearer = {"Authorization": f"Bearer {people['investigators'][0]['token']}"}
    if op == "ping":
        return [{"method": "GET", "path": "/api/v1/me", "headers": bearer}], True, None
    if op in PAGES:
        role, path = PAGES[op]
        who = _person(people, role)
        path = path.format(site=who.get("site_id"))
        return [{"method": "GET", "path": path}], True, [who["username"], who["password"]]
    if op in API_LISTS:
        role, path = API_LISTS[op]
        who = _person(people, role)
        path = path.format(site_code=pools.site_codes.get(who.get("site_id") or 0))
        token = {"Authorization": f"Bearer {who['token']}"}
        return [{"method": "GET", "path": path, "headers": token}], True, None
    if op == "randomize":
        items = [
            {
                "method": "POST",
                "path": f"/api/v1/subjects/{subject}/randomization",
                "headers": {"Authorization": f"Bearer {pools.investigator[site]['token']}"},
                "json": {
                    "signature_password": pools.investigator[site]["password"],
                    "understood": True,
                    "idempotency_key": str(uuid.uuid4()),
                },
            }
            for subject, site in pools.randomize
        ]
        return items, False, None
    items = [
        {
            "method": "POST",
            "path": f"/api/v1/subjects/{subject}/dispensations",
            "headers": {"Authorization": f"Bearer {pools.pharmacist[site]['token']}"},
            "json": {"visit_code": visit},
        }
        for subject, visit, site in pools.visits
    ]
    return items, False, None


def load(kind: str, job: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Run one job in a new load process (bench_load.py); its result."""
    job_path, out_path = folder / "job.json", folder / "result.json"
    job_path.write_text(json.dumps(job))
    out_path.unlink(missing_ok=True)
    command = [sys.executable, str(ROOT / "bench" / "bench_load.py"), kind, str(job_path)]
    subprocess.run([*command, str(out_path)], check=True, cwd=ROOT)  # noqa: S603
    result: dict[str, Any] = json.loads(out_path.read_text())
    return result


def _line(row: dict[str, Any]) -> str:
    from bench_report import summarize

    s = summarize(row)
    return (
        f"{s['ok']} ok, {s['failed']} failed, {s['per_s']:.1f}/s, p50 {s['p50_ms']:.0f} "
        f"p95 {s['p95_ms']:.0f} p99 {s['p99_ms']:.0f} ms"
    )


def http_runs(
    a: Any,
    server: Any,
    pools: Pools,
    ops: tuple[str, ...],
    backend: str,
    hasher: str,
    results: list[dict[str, Any]],
    progress: Any,
    later: int = 0,
) -> None:
    """Each operation at each K against the running server; appends a row per run.

    A run that takes subjects (randomize, dispense) gets a share of what is left of its pool
    among the runs still to come (`later`: hasher modes after this one, for randomize), in
    proportion to the square root of K (more clients get through more subjects, less than in
    proportion), so that no K level finds the pool spent by the one before it."""
    folder = a.workdir / backend
    for op in ops:
        for n, k in enumerate(a.clients):
            items, repeat, sign_in = _items(op, pools, pools.manifest)
            if not repeat:
                to_come = a.clients[n:] + (a.clients * later if op == "randomize" else [])
                share = len(items) * math.sqrt(k) / sum(math.sqrt(c) for c in to_come)
                items = items[: max(1, int(share))]
                items = items[: a.take] if getattr(a, "take", None) else items
            if not items:
                progress(f"[{backend}/{hasher}] {op} K={k}: pool spent, skipped")
                continue
            job = {"host": server.host, "port": server.port, "clients": k}
            job |= {"duration": a.duration, "items": items, "repeat": repeat, "sign_in": sign_in}
            progress(f"[{backend}/{hasher}] {op} K={k} for {a.duration:.0f} s ...")
            out = load("http", job, folder)
            if not repeat:  # the items taken are the first ones, one record each
                taken = len(out["records"])
                if op == "randomize":
                    pools.randomize = pools.randomize[taken:]
                else:
                    pools.visits = pools.visits[taken:]
                out["pool_spent"] = taken == len(items)
            row = {"backend": backend, "hasher": hasher, "op": op, "clients": k, **out}
            results.append(row)
            progress(f"[{backend}/{hasher}] {op} K={k}: {_line(row)}")


_ASYNC_COMMIT = "SET LOCAL synchronous_commit"


def capture_randomizations(
    manifest: dict[str, Any], url: str, subjects: list[tuple[int, int]], path: Path
) -> dict[str, Any]:
    """Randomize `subjects` in-process on the database at `url` and pickle each one's
    statements (see the module doc) to `path`; facts about them."""
    from sqlalchemy import event, select

    from iwrs import create_app
    from iwrs.audit import Actor
    from iwrs.config import Settings
    from iwrs.db import read_session
    from iwrs.models import User
    from iwrs.services import randomization

    keys = world_keys(manifest)
    instance = manifest.get("instance_path") or manifest.get("keys_dir") or path.parent
    protocol = manifest.get("protocol_file")
    settings = Settings(
        instance_path=Path(instance),
        database_url=url,
        protocol_path=Path(protocol) if protocol else None,
        argon2_memory_kib=8 * 1024,
        argon2_time_cost=1,
        **keys,
    )
    app = create_app(settings)
    current: list[tuple[str, Any, bool]] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        current.append((statement, parameters, executemany))

    event.listen(app.extensions["iwrs.engine"], "before_cursor_execute", record)
    operations, failed = [], 0
    investigators = {u["site_id"]: u for u in manifest["users"]["investigators"]}
    with app.app_context():
        people = {u.username: u for u in read_session().scalars(select(User))}
        for subject, site in subjects:
            current.clear()
            try:
                randomization.randomize(
                    actor=Actor.of(people[investigators[site]["username"]]),
                    subject_id=subject,
                    signer_password=investigators[site]["password"],
                    understood=True,
                    idempotency_key=str(uuid.uuid4()),
                )
            except Exception:  # noqa: BLE001 - counted and reported; not replayed
                failed += 1
                continue
            operations.append([c for c in current if not c[0].startswith(_ASYNC_COMMIT)])
    app.extensions["iwrs.engine"].dispose()
    path.write_bytes(pickle.dumps(operations))
    sizes = sorted(len(o) for o in operations)
    return {
        "captured": len(operations),
        "capture_failed": failed,
        "statements_per_operation": sizes[len(sizes) // 2] if sizes else 0,
        "example": [s for s, _, _ in operations[0]] if operations else [],
    }


def replay_runs(
    a: Any, manifest: dict[str, Any], results: list[dict[str, Any]], progress: Any, facts: Any
) -> None:
    """Capture on a copy of the pristine world, then replay on a new copy for each K."""
    from bench_http import _pg_url
    from bench_server import pg_admin

    folder = a.workdir / "postgresql"
    pristine, capture, replay = (f"{a.db_name}_{n}" for n in ("pristine", "capture", "replay"))
    with pg_admin(a.pg_url) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{capture}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{capture}" TEMPLATE "{pristine}"')
    pool = Pools(manifest, _pg_url(a.pg_url, a.db_name)).randomize[: a.capture]
    progress(f"[postgresql] capturing {len(pool)} randomizations' SQL in-process")
    facts["replay"] = capture_randomizations(
        manifest, _pg_url(a.pg_url, capture), pool, folder / "capture.pickle"
    )
    dsn = a.pg_url.rsplit("/", 1)[0] + f"/{replay}"
    progress(f"[postgresql] captured: {json.dumps(facts['replay'], default=str)[:120]}...")
    for k in a.clients:
        with pg_admin(a.pg_url) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{replay}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{replay}" TEMPLATE "{pristine}"')
        job = {"dsn": dsn, "clients": k, "duration": max(60.0, a.duration), "capture": ""}
        job["capture"] = str(folder / "capture.pickle")
        out = load("sql", job, folder)
        row = {"backend": "postgresql", "hasher": "-", "op": "raw_sql", "clients": k, **out}
        results.append(row)
        progress(f"[postgresql] raw_sql K={k}: {_line(row)}")
    with pg_admin(a.pg_url) as admin:
        for name in (capture, replay):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _verify_loop(args: tuple[str, float]) -> int:
    from argon2 import PasswordHasher
    from bench_server import COSTS

    time_cost, memory = COSTS[args[0]]
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory, parallelism=1)
    digest = hasher.hash("bench horse battery staple")
    count, deadline = 0, time.monotonic() + args[1]
    while time.monotonic() < deadline:
        hasher.verify(digest, "bench horse battery staple")
        count += 1
    return count


def password_verify_rate(hasher: str, *, seconds: float) -> dict[str, Any]:
    """Argon2id verifications per second at the mode's cost, one process per core."""
    processes = multiprocessing.cpu_count()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        counts = pool.map(_verify_loop, [(hasher, seconds)] * processes)
    return {"processes": processes, "seconds": seconds, "per_s": sum(counts) / seconds}
