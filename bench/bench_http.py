"""Benchmark harness of issue 13: the app under gunicorn, HTTP load from a separate process.

    .venv/bin/python bench/bench_http.py [--quick] [--backends postgresql,sqlite]
        [--hasher cheap,default] [--world small|scale] [--clients 1,8,32,64] [--duration S]
        [--against bench/results/OTHER.json]

For each backend (PostgreSQL at --pg-url, a fresh database --db-name; SQLite, a file) it builds
a synthetic trial (--world small: bench/bench_world.py through the services; --world scale:
bench/scale.py, the scale generator; both write the same manifest), starts gunicorn on it and,
from one load process (bench/bench_load.py), measures at K clients:

- randomize   POST /api/v1/subjects/<id>/randomization, signed, with an idempotency key; the
              answer carries the day-1 kit, which randomization dispenses in the same transaction
- dispense    POST /api/v1/subjects/<id>/dispensations {"visit_code": "V2"} (pharmacist)
- supply_page GET /supply/ (supply manager, signed-in session)
- audit_page  GET /audit/ (auditor, signed-in session)
- ping        GET /api/v1/me (investigator token): the app's cheapest authenticated endpoint
- raw_sql     (PostgreSQL) the SQL of real randomizations replayed with plain psycopg, one
              transaction per operation, from K connections (see `capture_randomizations`)
- verify      Argon2id PasswordHasher.verify alone, one process per core (no HTTP, no SQL)

Each gives p50/p95/p99 latency (ms) and throughput (successful operations per second). The
results: bench/results/<stamp>.json and .md, the Markdown table printed. Ratios: randomize /
raw_sql and randomize / ping at each K; signed randomize at the default Argon2id / verify rate;
with --against a result of the other world, each operation's p50 here / there.

Hasher modes: `cheap` re-hashes the investigators' passwords (the signers) at the test suite's
Argon2id costs (t = 1, m = 8 MiB, p = 1; the server runs with IWRS_ARGON2_TIME_COST=1,
IWRS_ARGON2_MEMORY_KIB=8192); `default` at the app's defaults (OWASP: m = 19 MiB, t = 2, p = 1).
The hash is written straight into app_user.password_hash before the server starts: bench set-up,
outside the audit trail, on the bench's own database.

Decisions:
- One world per backend serves both hasher modes; every randomization takes a subject from one
  pool, so a run ends early (and says so) when the pool is spent.
- Pages are measured as pages (the issue's costs are in the pages' views); every load thread
  signs in once before the clock starts.
- gunicorn: gthread, --workers (default: the cores) x --threads (default 8), keep-alive.
- The raw-SQL replay runs on the same PostgreSQL server against byte-identical copies of the
  freshly built world (CREATE DATABASE ... TEMPLATE), not on the served database: its commits
  would otherwise use up the subjects, slots and kits of the HTTP runs (bench_runs.py says how
  faithful the replay is).
- The verify rate is measured right after each hasher mode's runs, and the load average at the
  start and end goes into the report: on a shared machine the load changes within minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_report import markdown, ratios, summarize  # noqa: E402
from bench_server import Server, pg_admin, set_signing_cost  # noqa: E402

CHEAP = {"IWRS_ARGON2_TIME_COST": "1", "IWRS_ARGON2_MEMORY_KIB": "8192"}
DEFAULT = {"IWRS_ARGON2_TIME_COST": "2", "IWRS_ARGON2_MEMORY_KIB": str(19 * 1024)}
HASHERS = {"cheap": CHEAP, "default": DEFAULT}
PAGE_OPS = ("ping", "randomize", "dispense", "supply_page", "audit_page")
# --ops all: the main pages and API lists too (bench_runs.PAGES, API_LISTS)
ALL_OPS = (
    *PAGE_OPS,
    "subject_list",
    "visit_board",
    "site_inventory",
    "statistician_status",
    "subjects_api",
    "inventory_api",
    "shipments_api",
    "audit_events_api",
)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="PostgreSQL, K = 1, 32, 2 s a run (< 2 minutes)"
    )
    p.add_argument("--backends", default=None, help="default postgresql,sqlite (quick: postgresql)")
    p.add_argument("--hasher", default="cheap,default")
    p.add_argument("--world", choices=("small", "scale"), default="small")
    p.add_argument("--clients", default=None, help="default 1,8,32,64 (quick: 1,32)")
    p.add_argument("--duration", type=float, default=None, help="seconds a run (15; quick 2)")
    p.add_argument("--subjects", type=int, default=None, help="awaiting randomization")
    p.add_argument("--visit-subjects", type=int, default=None)
    p.add_argument("--sites", type=int, default=None, help="small: subjects / 100, >= 8")
    p.add_argument("--scale-subjects", type=int, default=100_000, help="--world scale's size")
    p.add_argument("--capture", type=int, default=None, help="randomizations to replay")
    p.add_argument(
        "--replay",
        choices=("auto", "on", "off"),
        default="auto",
        help="the raw-SQL replay (PostgreSQL); auto: with --world small only (each K replays on "
        "a copy of the world, which for the scale world means copying gigabytes)",
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--db-name", default="iwrs_bench")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "iwrs-bench")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--against", type=Path, default=None, help="a result JSON of the other world")
    p.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="serve a world built before (its manifest: url, keys_dir, users, pools) instead of "
        "building one; PostgreSQL only; its pools shrink by what the runs use",
    )
    p.add_argument("--ops", default=None, help="comma-separated; 'all' = ALL_OPS; default PAGE_OPS")
    p.add_argument("--label", default="", help="added to the result file names")
    p.add_argument("--take", type=int, default=None, help="at most N subjects a taking run")
    a = p.parse_args(argv)
    a.clients = [int(k) for k in (a.clients or ("1,32" if a.quick else "1,8,32,64")).split(",")]
    a.duration = a.duration or (2.0 if a.quick else 15.0)
    backends = a.backends or ("postgresql" if a.quick else "postgresql,sqlite")
    a.backends = [b for b in backends.split(",") if b]
    a.hashers = [h for h in a.hasher.split(",") if h]
    a.ops = ALL_OPS if a.ops == "all" else tuple(a.ops.split(",")) if a.ops else PAGE_OPS
    if a.manifest:
        a.backends, a.replay = ["postgresql"], "off"
    # Pools: enough subjects for the longest runs this machine is likely to sustain.
    a.subjects = a.subjects or (150 if a.quick else 3000)
    a.visit_subjects = a.visit_subjects or (80 if a.quick else 1000)
    a.capture = a.capture or (50 if a.quick else 800)
    return a


def machine() -> dict[str, Any]:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "load_average_start": os.getloadavg(),
    }


def estimate(a: argparse.Namespace) -> float:
    """The run's expected duration (s): world building, runs, start-ups."""
    runs = 0
    for backend in a.backends:
        runs += len(a.ops) * len(a.clients)
        runs += (len(a.hashers) - 1) * len(a.clients)
        runs += len(a.clients) if backend == "postgresql" and a.replay != "off" else 0
    build = (a.subjects + a.visit_subjects) / 15 + a.capture / 20 + 10  # a busy 2-core machine
    return runs * (a.duration + 2) + len(a.backends) * build + len(a.hashers) * a.duration + 5


def build_world(a: argparse.Namespace, url: str, folder: Path) -> dict[str, Any]:
    """The world's manifest, built by bench_world.py (small) or scale.py (scale)."""
    manifest = folder / "manifest.json"
    script = "bench_world.py" if a.world == "small" else "scale.py"
    if not (ROOT / "bench" / script).exists():
        raise SystemExit(f"--world {a.world} needs bench/{script}, which is not there")
    command = [sys.executable, str(ROOT / "bench" / script), "build", "--url", url]
    command += ["--manifest", str(manifest)]
    if a.world == "small":
        # Sites enough that each shelf stays near 200 kits: a randomization's cost on today's
        # main grows with its site's shelf, and the small world is the baseline.
        sites = a.sites or max(8, (a.subjects + a.visit_subjects) // 100)
        command += ["--subjects", str(a.subjects), "--sites", str(sites)]
        command += ["--visit-subjects", str(a.visit_subjects), "--workdir", str(folder / "world")]
    else:  # scale.py: --subjects is the trial's size, --pool the subjects left to randomize
        command += ["--subjects", str(a.scale_subjects), "--pool", str(a.subjects)]
        command += ["--sites", str(a.sites)] if a.sites else []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(command, check=True, env=env, cwd=ROOT)  # noqa: S603 - our own scripts
    return json.loads(manifest.read_text())


def _database(a: argparse.Namespace, backend: str, folder: Path) -> str:
    if backend == "sqlite":
        path = folder / "bench.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}"
    with pg_admin(a.pg_url) as admin:
        for name in (a.db_name, f"{a.db_name}_pristine"):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{a.db_name}"')
    return _pg_url(a.pg_url, a.db_name)


def _pg_url(admin_url: str, name: str) -> str:
    base = admin_url.rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+psycopg://')}/{name}"


def run_backend(
    a: argparse.Namespace, backend: str, results: list[dict[str, Any]], progress: Any
) -> dict[str, Any]:
    """Everything measured on one backend; appends result rows; returns facts (version...)."""
    from bench_runs import Pools, http_runs, replay_runs, world_keys

    folder = a.workdir / backend
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if a.manifest:
        manifest = json.loads(a.manifest.read_text())
        url = manifest["url"].replace("postgresql://", "postgresql+psycopg://", 1)
        progress(f"[{backend}] serving the world of {a.manifest} ({url})")
    else:
        url = _database(a, backend, folder)
        progress(f"[{backend}] building the {a.world} world ({a.subjects} subjects awaiting)")
        manifest = build_world(a, url, folder)
    facts: dict[str, Any] = {"world_build_s": round(time.monotonic() - started, 1)}
    pools = Pools(manifest, url)
    facts["world"] = pools.describe()
    replay = a.replay == "on" or (a.replay == "auto" and a.world == "small")
    if backend == "postgresql":
        with pg_admin(a.pg_url) as admin:
            facts["server_version"] = admin.execute("SHOW server_version").fetchone()[0]
            if replay:
                admin.execute(f'CREATE DATABASE "{a.db_name}_pristine" TEMPLATE "{a.db_name}"')
        if replay:
            replay_runs(a, manifest, results, progress, facts)
    for hasher in a.hashers:
        set_signing_cost(url, manifest["users"]["investigators"], hasher)
        keys = {f"IWRS_{k.upper()}": v.hex() for k, v in world_keys(manifest).items()}
        env = {**keys, **HASHERS[hasher]}
        progress(f"[{backend}/{hasher}] starting gunicorn ({a.workers} x {a.threads} threads)")
        with Server(a, manifest, url, env, folder / f"gunicorn-{hasher}.log") as server:
            progress(f"[{backend}/{hasher}] gunicorn ready on port {server.port}")
            # The hasher changes only what a signature costs: other modes run randomize alone.
            ops = a.ops if hasher == a.hashers[0] else ("randomize",)
            later = len(a.hashers) - 1 - a.hashers.index(hasher)  # hasher modes still to come
            http_runs(a, server, pools, ops, backend, hasher, results, progress, later)
            if a.manifest:  # the next run on this world must not take the same subjects
                a.manifest.write_text(json.dumps(manifest | pools.left(), indent=1))
        # Right after its runs, with the server stopped: the machine's load then is the closest
        # to what the signed randomizations met (other work on a shared machine varies).
        facts.setdefault("verify", {})[hasher] = verify_rate(a, backend, hasher, progress)
    return facts


def verify_rate(a: argparse.Namespace, backend: str, hasher: str, progress: Any) -> Any:
    """Argon2id verifications per second alone at the mode's cost (bench_runs)."""
    from bench_runs import password_verify_rate

    out = password_verify_rate(hasher, seconds=max(2.0, a.duration))
    progress(f"[{backend}/{hasher}] Argon2id verify alone: {out['per_s']:.1f}/s")
    return out


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"{time.monotonic() - started:7.1f}s {line}", flush=True)

    info = machine()
    progress(
        f"plan: backends {a.backends}, hashers {a.hashers}, K {a.clients}, {a.duration} s a run; "
        f"expected duration about {estimate(a) / 60:.1f} min on {info['nproc']} cores"
    )
    results: list[dict[str, Any]] = []
    facts = {backend: run_backend(a, backend, results, progress) for backend in a.backends}
    against = json.loads(a.against.read_text()) if a.against else None
    report = {
        "command": "python bench/bench_http.py " + " ".join(argv or sys.argv[1:]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "backends": facts,
        "runs": [summarize(r) for r in results],
    }
    report["ratios"] = ratios(report, against)
    report["machine"]["load_average_end"] = os.getloadavg()
    report["duration_s"] = round(time.monotonic() - started, 1)
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ("-quick" if a.quick else "")
    stamp += f"-{a.label}" if a.label else ""
    (a.out / f"{stamp}.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (a.out / f"{stamp}.md").write_text(text)
    print(text)
    progress(f"written {a.out / stamp}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
