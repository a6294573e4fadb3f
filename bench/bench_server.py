"""The server side of bench/bench_http.py: gunicorn on the bench database, and set-up helpers."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COSTS = {"cheap": (1, 8 * 1024), "default": (2, 19 * 1024)}  # (time_cost, memory_kib)


@contextlib.contextmanager
def pg_admin(url: str) -> Iterator[Any]:
    """An autocommit psycopg connection to the server's admin database."""
    import psycopg

    connection = psycopg.connect(url, autocommit=True)
    try:
        yield connection
    finally:
        connection.close()


def set_signing_cost(url: str, signers: list[dict[str, Any]], hasher: str) -> None:
    """Re-hash the signers' passwords (the manifest's) at the hasher mode's Argon2id cost:
    bench set-up, written straight into app_user on the bench's own database."""
    from argon2 import PasswordHasher
    from sqlalchemy import create_engine, text

    time_cost, memory = COSTS[hasher]
    hasher_ = PasswordHasher(time_cost=time_cost, memory_cost=memory, parallelism=1)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE app_user SET password_hash = :h WHERE username = :u"),
            [{"h": hasher_.hash(u["password"]), "u": u["username"]} for u in signers],
        )
    engine.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """gunicorn (gthread) serving wsgi:app on `url` with the world's keys and protocol."""

    def __init__(self, a: Any, manifest: dict[str, Any], url: str, env: dict[str, str], log: Path):
        self.host, self.port = "127.0.0.1", _free_port()
        self.workers, self.threads = a.workers, a.threads
        self.env = {
            **os.environ,
            **env,
            "PYTHONPATH": str(ROOT),
            "IWRS_DATABASE_URL": url,
            "IWRS_INSTANCE_PATH": manifest.get("instance_path")
            or manifest.get("keys_dir")
            or str(log.parent / "instance"),
            "IWRS_RATELIMIT_ENABLED": "0",
        }
        self.env.pop("IWRS_PROTOCOL", None)
        if manifest.get("protocol_file"):
            self.env["IWRS_PROTOCOL"] = manifest["protocol_file"]
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        command = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread"]
        command += ["--workers", str(self.workers), "--threads", str(self.threads)]
        command += ["--bind", f"{self.host}:{self.port}", "--keep-alive", "30"]
        command += ["--no-control-socket", "wsgi:app"]  # several servers may run side by side
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own command
                command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited; see {self.log}")
            try:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=5)
                connection.request("GET", "/sign-in")
                if connection.getresponse().status == 200:
                    connection.close()
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn not ready within 60 s; see {self.log}")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
