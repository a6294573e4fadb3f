"""The load side of bench/bench_http.py: runs in its own process, never in the server's.

`http_load(job)`: K threads, each with its own keep-alive http.client connection (and, for
pages, its own signed-in session), take requests from one shared queue until the queue is empty
or the duration is over. `sql_replay(job)`: K threads, each with its own psycopg connection,
replay captured transactions (one per operation) the same way. Both return one record per
operation: (started, seconds, status) — seconds from the run's start, status the HTTP status or
"ok"/the error class for SQL — and the run's wall time.

Decision: threads, not processes, in the load process: each thread spends its time blocked on a
socket (the GIL is released), and one load process leaves the machine's cores to the server.
At 64 clients this process can itself take a noticeable share of a core: the JSON records each
run's client CPU seconds (`client_cpu_s`) so a reader can see it.
"""

from __future__ import annotations

import http.client
import json
import pickle
import queue
import re
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def _cookie(response: http.client.HTTPResponse, jar: dict[str, str]) -> None:
    for header, value in response.getheaders():
        if header.lower() == "set-cookie":
            name, _, rest = value.partition("=")
            jar[name.strip()] = rest.split(";", 1)[0]


def _cookie_header(jar: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in jar.items())


def sign_in(connection: http.client.HTTPConnection, username: str, password: str) -> str:
    """A session cookie header for `username` (GET the form, POST it with its CSRF token)."""
    jar: dict[str, str] = {}
    connection.request("GET", "/sign-in")
    response = connection.getresponse()
    page = response.read().decode()
    _cookie(response, jar)
    match = CSRF.search(page)
    if match is None:
        raise RuntimeError("no CSRF token on the sign-in page")
    body = urllib.parse.urlencode(
        {"csrf_token": match.group(1), "username": username, "password": password}
    )
    connection.request(
        "POST",
        "/sign-in",
        body=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": _cookie_header(jar),
        },
    )
    response = connection.getresponse()
    response.read()
    _cookie(response, jar)
    if response.status != 302:
        raise RuntimeError(f"sign-in of {username} answered {response.status}")
    return _cookie_header(jar)


def _request(
    connection: http.client.HTTPConnection, item: dict[str, Any], cookie: str | None
) -> int:
    headers = dict(item.get("headers") or {})
    body = None
    if item.get("json") is not None:
        body = json.dumps(item["json"])
        headers["Content-Type"] = "application/json"
    if cookie:
        headers["Cookie"] = cookie
    connection.request(item["method"], item["path"], body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    return response.status


class _Feed:
    """The run's requests: a finite list taken once each, or one request repeated forever."""

    def __init__(self, items: list[Any], repeat: bool) -> None:
        self.repeat = repeat
        self.items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for item in items:
            self.items.put(item)
        self.first = items[0] if items else None

    def take(self) -> Any | None:
        if self.repeat:
            return self.first
        try:
            return self.items.get_nowait()
        except queue.Empty:
            return None


def _http_client(
    job: dict[str, Any], feed: _Feed, start: threading.Barrier, out: list[tuple[float, float, Any]]
) -> None:
    connection = http.client.HTTPConnection(job["host"], job["port"], timeout=120)
    cookie = sign_in(connection, *job["sign_in"]) if job.get("sign_in") else None
    if feed.repeat and feed.first is not None:
        # One untimed request first (pages and lists): the latency measured is the steady
        # state, not a worker's first view (its caches, e.g. the statistician's arm tally).
        _request(connection, feed.first, cookie)
    start.wait()
    began = job["_began"][0]
    deadline = began + job["duration"]
    while time.monotonic() < deadline:
        item = feed.take()
        if item is None:
            break
        t0 = time.monotonic()
        try:
            status: Any = _request(connection, item, cookie)
        except (OSError, http.client.HTTPException) as error:
            status = type(error).__name__
            connection.close()
            connection = http.client.HTTPConnection(job["host"], job["port"], timeout=120)
        out.append((t0 - began, time.monotonic() - t0, status))
    connection.close()


def _run_threads(job: dict[str, Any], target: Any, feed: Any) -> dict[str, Any]:
    clients = job["clients"]
    records: list[list[tuple[float, float, Any]]] = [[] for _ in range(clients)]
    job["_began"] = [0.0]

    def go() -> None:
        job["_began"][0] = time.monotonic()

    start = threading.Barrier(clients + 1, action=go)
    threads = [
        threading.Thread(target=target, args=(job, feed, start, records[n]), daemon=True)
        for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    cpu0 = time.process_time()
    start.wait()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - job["_began"][0]
    return {
        "records": [r for rs in records for r in rs],
        "wall_s": wall,
        "client_cpu_s": time.process_time() - cpu0,
    }


def http_load(job: dict[str, Any]) -> dict[str, Any]:
    """Run one HTTP load (see the module doc); job: host, port, clients, duration, items,
    repeat, sign_in ([username, password] or None)."""
    return _run_threads(job, _http_client, _Feed(job["items"], job["repeat"]))


def _replay_one(cursor: Any, statements: list[tuple[str, Any, bool]]) -> None:
    for sql, params, many in statements:
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)


def _sql_client(
    job: dict[str, Any], feed: _Feed, start: threading.Barrier, out: list[tuple[float, float, Any]]
) -> None:
    import psycopg

    connection = psycopg.connect(job["dsn"])
    start.wait()
    began = job["_began"][0]
    deadline = began + job["duration"]
    while time.monotonic() < deadline:
        statements = feed.take()
        if statements is None:
            break
        t0 = time.monotonic()
        try:
            with connection.transaction(), connection.cursor() as cursor:
                _replay_one(cursor, statements)
            status: Any = "ok"
        except psycopg.Error as error:
            status = type(error).__name__
        out.append((t0 - began, time.monotonic() - t0, status))
    connection.close()


def sql_replay(job: dict[str, Any]) -> dict[str, Any]:
    """Replay captured transactions (job["capture"]: a pickle file of a list of operations, each
    a list of (sql, params, executemany)) against job["dsn"] from K connections."""
    operations = pickle.loads(Path(job["capture"]).read_bytes())  # noqa: S301 - our own file
    return _run_threads(job, _sql_client, _Feed(operations, repeat=False))


def run(kind: str, job: dict[str, Any], result_path: str) -> None:
    """The load process's entry point: run the job, write the result (JSON) to result_path."""
    result = http_load(job) if kind == "http" else sql_replay(job)
    Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    import sys

    run(sys.argv[1], json.loads(Path(sys.argv[2]).read_text()), sys.argv[3])
