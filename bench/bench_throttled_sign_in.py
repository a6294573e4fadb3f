"""Benchmark: the server's CPU time for one throttled sign-in attempt (issue 11).

A storm of sign-ins is mostly answered 429 by the throttle, so what each 429 costs the server is
what the storm costs everyone else. This builds the application (production settings, SQLite),
sends one source's failed sign-ins until its limit is reached, then times `--attempts` more
throttled POST /sign-in calls straight into the WSGI application (no HTTP server, no client:
the server's own work only) and prints microseconds of CPU per attempt and the answer's size.

    .venv/bin/python bench/bench_throttled_sign_in.py [--attempts 5000]
"""

from __future__ import annotations

import argparse
import io
import json
import re
import tempfile
import time
from pathlib import Path

from werkzeug.test import EnvironBuilder

from bench.bench_sign_in_storm import _app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=5000)
    args = parser.parse_args()
    app = _app(Path(tempfile.mkdtemp(prefix="iwrs-bench-429-")), throttle=True, cheap=True)
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "10.9.0.1"
    page = client.get("/sign-in").get_data(as_text=True)
    found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert found is not None
    answers: dict[int, int] = {}
    for i in range(40):  # past the source's 30 failures a minute
        status = client.post(
            "/sign-in",
            data={"username": f"n{i}", "password": "wrong password!", "csrf_token": found[1]},
        ).status_code
        answers[status] = answers.get(status, 0) + 1
    cookie = client.get_cookie("iwrs_session")
    assert cookie is not None
    body = f"username=someone&password=wrong+password%21&csrf_token={found[1]}".encode()
    environ = EnvironBuilder(
        path="/sign-in",
        method="POST",
        data=body,
        content_type="application/x-www-form-urlencoded",
        headers={"Cookie": f"iwrs_session={cookie.value}"},
        environ_base={"REMOTE_ADDR": "10.9.0.1"},
    ).get_environ()
    statuses: list[str] = []
    size = 0
    started = time.process_time()
    for _ in range(args.attempts):
        request = {**environ, "wsgi.input": io.BytesIO(body)}
        result = app.wsgi_app(request, lambda status, headers, *_: statuses.append(status))
        size = len(b"".join(result))
    cpu = time.process_time() - started
    assert all(status.startswith("429") for status in statuses), set(statuses)
    print(
        json.dumps(
            {
                "warm_up_answers": answers,
                "attempts": args.attempts,
                "cpu_us_per_throttled_attempt": round(cpu / args.attempts * 1e6),
                "answer_bytes": size,
            }
        )
    )


if __name__ == "__main__":
    main()
