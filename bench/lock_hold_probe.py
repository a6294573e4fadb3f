"""A gunicorn config file that measures, in each worker, how long randomizations hold their
stratum's position row (issue 13: why p99 at K = 32 is seconds).

    GUNICORN_CMD_ARGS="-c bench/lock_hold_probe.py" python -m gunicorn ... wsgi:app

For each transaction that locks a `stratum_position` row (randomize), one line in
$IWRS_PROBE_DIR/hold-<pid>.log (default: the temporary folder): the hold from the lock's
answer to the end of the commit, the time spent inside the statements sent meanwhile, the
worker thread's own CPU meanwhile, how many statements, the wait for the lock itself and the
commit, all in ms.
`summary()` (python bench/lock_hold_probe.py) prints their distribution.

Measuring only: SQLAlchemy engine events and a wrapper around the dialect's commit, installed
after the worker loaded the app; the app's own code and transactions are unchanged.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

FOLDER = Path(os.environ.get("IWRS_PROBE_DIR") or tempfile.gettempdir())
COLUMNS = ("hold", "in_statements", "thread_cpu", "statements", "lock_wait", "commit")


def post_worker_init(worker: Any) -> None:
    from sqlalchemy import event

    engine = worker.wsgi.extensions["iwrs.engine"]
    out = (FOLDER / f"hold-{os.getpid()}.log").open("a", buffering=1)
    local = threading.local()

    def before(conn: Any, *_: Any) -> None:
        conn.info["probe_t0"] = time.perf_counter()

    def after(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        now = time.perf_counter()
        spent = now - conn.info["probe_t0"]
        if "FROM stratum_position" in statement and "FOR UPDATE" in statement:
            conn.info["probe_hold"] = [now, time.thread_time(), spent, 0.0, 0]
        elif "probe_hold" in conn.info:
            conn.info["probe_hold"][3] += spent
            conn.info["probe_hold"][4] += 1

    def on_commit(conn: Any) -> None:
        local.hold = conn.info.pop("probe_hold", None)

    commit = engine.dialect.do_commit

    def do_commit(dbapi_connection: Any) -> None:
        started = time.perf_counter()
        commit(dbapi_connection)
        hold, local.hold = getattr(local, "hold", None), None
        if hold is not None:
            ended = time.perf_counter()
            at, cpu, wait, inside, count = hold
            values = (ended - at, inside, time.thread_time() - cpu, count, wait, ended - started)
            fields = [f"{v * 1000:.1f}" if i != 3 else str(v) for i, v in enumerate(values)]
            out.write(" ".join(fields) + "\n")

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "commit", on_commit)
    engine.dialect.do_commit = do_commit


def summary() -> None:
    rows = [
        [float(v) for v in line.split()]
        for log in FOLDER.glob("hold-*.log")
        for line in log.read_text().splitlines()
        if line.strip()
    ]
    for i, name in enumerate(COLUMNS):
        values = sorted(r[i] for r in rows)
        if values:
            print(
                f"{name:14s} n={len(values)} mean={sum(values) / len(values):.1f} "
                f"p50={values[len(values) // 2]:.1f} p90={values[int(len(values) * 0.9)]:.1f} "
                f"max={values[-1]:.1f}"
            )


if __name__ == "__main__":
    summary()
