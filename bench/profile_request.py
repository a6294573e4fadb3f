"""Profile the signed randomize and the visit dispense requests in one process (issue 13).

    PYTHONPATH=$PWD .venv/bin/python bench/profile_request.py [--pg-url URL] [--db-name NAME]
        [--n 20] [--out DIR]

Builds the bench's small world (bench/bench_world.py) on a fresh PostgreSQL database, creates
the app the way wsgi.py does (settings from the environment the harness gives gunicorn) and sends
`--n` requests of each kind through the app's WSGI stack (Flask's test client: the same request
handling as under gunicorn, without the socket). Prints per request: the SQL statements (each
distinct statement and how often) and the cProfile functions by cumulative and own time; the
profiles go to --out as .prof files (for snakeviz / pstats).

Decision: the test client, not a real server, so that one process holds the profile and the
statement listener; gunicorn adds its socket handling only, which the harness measures."""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_server import pg_admin  # noqa: E402


def _world(a: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import bench_world

    with pg_admin(a.pg_url) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{a.db_name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{a.db_name}"')
    url = a.pg_url.rsplit("/", 1)[0] + "/" + a.db_name
    url = url.replace("postgresql://", "postgresql+psycopg://")
    return bench_world.build(
        url, workdir, subjects=2 * a.n + 5, sites=4, visit_subjects=a.n + 5, progress=print
    )


def _app(manifest: dict[str, Any]) -> Any:
    os.environ.update(manifest["keys"])
    os.environ.update(
        IWRS_DATABASE_URL=manifest["url"],
        IWRS_INSTANCE_PATH=manifest["instance_path"],
        IWRS_PROTOCOL=manifest["protocol_file"],
        IWRS_RATELIMIT_ENABLED="0",
        IWRS_ARGON2_TIME_COST="1",
        IWRS_ARGON2_MEMORY_KIB="8192",
    )
    from iwrs import create_app

    return create_app()


def _requests(manifest: dict[str, Any]) -> dict[str, list[tuple[str, dict, dict]]]:
    people = manifest["users"]
    inv = {str(p["site_id"]): p for p in people["investigators"]}
    ph = {p["site_id"]: p for p in people["pharmacists"]}
    randomize = []
    for site, ids in manifest["awaiting_randomization"].items():
        for subject_id in ids:
            randomize.append(
                (
                    f"/api/v1/subjects/{subject_id}/randomization",
                    {"signature_password": inv[site]["password"], "understood": True},
                    {
                        "Authorization": f"Bearer {inv[site]['token']}",
                        "Idempotency-Key": str(uuid.uuid4()),
                    },
                )
            )
    from iwrs.db import read_session
    from iwrs.models.subjects import Subject

    dispense = []
    for subject_id, code in manifest["awaiting_visit"]:
        site_id = read_session().get(Subject, subject_id).site_id  # type: ignore[union-attr]
        dispense.append(
            (
                f"/api/v1/subjects/{subject_id}/dispensations",
                {"visit_code": code},
                {
                    "Authorization": f"Bearer {ph[site_id]['token']}",
                    "Idempotency-Key": str(uuid.uuid4()),
                },
            )
        )
    read_session().rollback()
    return {"randomize": randomize, "dispense": dispense}


@contextlib.contextmanager
def _where(app: Any) -> Iterator[list[str]]:
    """The project's innermost frames (file:line function) of each statement sent."""
    from sqlalchemy import event

    origins: list[str] = []

    def listen(*_args: Any) -> None:
        frames = [
            f"{Path(f.filename).name}:{f.lineno} {f.name}"
            for f in traceback.extract_stack()
            if "/iwrs/" in f.filename
        ]
        origins.append(" < ".join(reversed(frames[-3:])))

    def ended(how: str) -> Any:
        return lambda *_args: origins.append(f"-- {how}")

    engine = app.extensions["iwrs.engine"]
    listeners = [("before_cursor_execute", listen)]
    listeners += [(how, ended(how)) for how in ("commit", "rollback")]
    for name, function in listeners:
        event.listen(engine, name, function)
    try:
        yield origins
    finally:
        for name, function in listeners:
            event.remove(engine, name, function)


def _measure(app: Any, what: str, items: list, n: int, out: Path) -> None:
    from tests.statements import counted

    client = app.test_client()
    for path, body, headers in items[:3]:  # warm: first requests fill the caches
        assert client.post(path, json=body, headers=headers).status_code == 201
    items = items[3 : 3 + n]
    path, body, headers = items[0]
    with counted(app) as tally, _where(app) as where:
        assert client.post(path, json=body, headers=headers).status_code == 201
    print(f"\n=== {what}: {tally.count} statements a request (+ BEGIN/COMMIT/ROLLBACK)")
    statements = iter(tally.statements)
    for origin in where:
        if origin.startswith("--"):
            print(f"  {origin}")
            continue
        print(f"  {' '.join(next(statements).split())[:90]:90}  <- {origin}")
    profile = cProfile.Profile()
    began = time.perf_counter()
    profile.enable()
    for path, body, headers in items[1:]:
        response = client.post(path, json=body, headers=headers)
        assert response.status_code == 201, response.get_data(as_text=True)
    profile.disable()
    took = (time.perf_counter() - began) / (len(items) - 1)
    print(f"  {took * 1000:.1f} ms a request (wall, profiled)")
    profile.dump_stats(out / f"{what}.prof")
    for key in ("cumulative", "tottime"):
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats(key).print_stats(45)
        print(text.getvalue())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--db-name", default="iwrs_profile")
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "iwrs-profile")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    manifest = _world(a, a.out / "world")
    app = _app(manifest)
    with app.app_context():
        items = _requests(manifest)
    for what, listed in items.items():  # no outer app context: each request has its own `g`
        _measure(app, what, listed, a.n, a.out)
    app.extensions["iwrs.engine"].dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
