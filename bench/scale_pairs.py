"""The read pages and API lists at two worlds in the same moments: paired, interleaved requests
(issue 13's 1.3x target, on a machine shared with other jobs).

    python bench/scale_pairs.py --small SMALL.json --scale SCALE.json [--rounds 40]
        [--ops supply_page,statistician_status,...] [--out bench/results/NAME]

Both worlds (bench/scale.py manifests) are served by two app instances in this one process
(no HTTP, no gunicorn: the WSGI application through Flask's test client, each as its user
signs in or with their API token, as `bench_http.py --ops all`). Each round requests every
operation once at the small world and once at the scale world, back to back, in alternating
order, so whatever else the machine does at that moment falls on both sides alike; one untimed
request of each first (steady state). Per operation: p50 and p95 (ms) at each world, the p50
ratio, the median of the per-round ratios, and the answer's size in bytes. Markdown and JSON.

Why (decision): `bench_http.py` measures each world's runs minutes apart; on this 2-core
machine shared with other sessions (load average 10-20) a page of a few milliseconds moves by
2x between two such minutes. Pairing measures the worlds under the same load. It leaves out the
HTTP server and the client process, which are the same at both sizes."""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_runs import API_LISTS, PAGES  # noqa: E402
from flask import Flask  # noqa: E402
from flask.testing import FlaskClient  # noqa: E402

CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def open_world(manifest: dict[str, Any]) -> Flask:
    from iwrs import create_app
    from iwrs.config import Settings

    os.environ.update(manifest["env"])
    return create_app(Settings.from_env())


def person(manifest: dict[str, Any], role: str) -> dict[str, Any]:
    found = manifest["users"][role]
    return found[0] if isinstance(found, list) else found


def request_of(app: Flask, manifest: dict[str, Any], op: str) -> tuple[FlaskClient, str, dict]:
    """A client (signed in for a page), the path and the headers of `op` at this world."""
    client = app.test_client()
    if op in PAGES:
        role, path = PAGES[op]
        who = person(manifest, role)
        token = CSRF.search(client.get("/sign-in").get_data(as_text=True))
        form = {"username": who["username"], "password": who["password"]}
        form["csrf_token"] = token.group(1) if token else ""
        answer = client.post("/sign-in", data=form)
        if answer.status_code != 302:
            raise SystemExit(f"{op}: sign-in of {who['username']} answered {answer.status_code}")
        return client, path.format(site=who.get("site_id")), {}
    role, path = API_LISTS[op]
    who = person(manifest, role)
    with app.app_context():
        from sqlalchemy import select

        from iwrs.db import read_session
        from iwrs.models.sites import Site

        code = read_session().scalar(select(Site.code).where(Site.id == who.get("site_id")))
    return client, path.format(site_code=code), {"Authorization": f"Bearer {who['token']}"}


def timed(client: FlaskClient, path: str, headers: dict) -> tuple[float, int]:
    started = time.perf_counter()
    answer = client.get(path, headers=headers)
    took = (time.perf_counter() - started) * 1000
    if answer.status_code != 200:
        raise SystemExit(f"GET {path} answered {answer.status_code}")
    return took, len(answer.data)


def measure(worlds: dict[str, tuple[Flask, dict]], ops: list[str], rounds: int) -> dict[str, Any]:
    """{op: {small_p50, scale_p50, p50_ratio, paired_ratio, small_p95, scale_p95, bytes}}."""
    requests = {
        op: {name: request_of(app, m, op) for name, (app, m) in worlds.items()} for op in ops
    }
    for by_world in requests.values():  # one untimed request each: a worker's steady state
        for client, path, headers in by_world.values():
            timed(client, path, headers)
    times: dict[str, dict[str, list[float]]] = {op: {"small": [], "scale": []} for op in ops}
    size: dict[str, dict[str, int]] = {op: {} for op in ops}
    for n in range(rounds):
        order = ("small", "scale") if n % 2 == 0 else ("scale", "small")
        for op in ops:
            for name in order:
                took, size[op][name] = timed(*requests[op][name])
                times[op][name].append(took)
        print(f"  round {n + 1}/{rounds}", file=sys.stderr)
    out: dict[str, Any] = {}
    for op in ops:
        small, scale = times[op]["small"], times[op]["scale"]
        p50 = statistics.median(small), statistics.median(scale)
        paired = statistics.median(b / a for a, b in zip(small, scale, strict=True))
        out[op] = {
            "small_p50_ms": round(p50[0], 1),
            "scale_p50_ms": round(p50[1], 1),
            "p50_ratio": round(p50[1] / p50[0], 2),
            "paired_ratio": round(paired, 2),
            "small_p95_ms": round(statistics.quantiles(small, n=20)[-1], 1),
            "scale_p95_ms": round(statistics.quantiles(scale, n=20)[-1], 1),
            "small_bytes": size[op]["small"],
            "scale_bytes": size[op]["scale"],
        }
    return out


def markdown(result: dict[str, Any], header: str) -> str:
    lines = [
        header,
        "",
        "| operation | p50 small ms | p50 scale ms | ratio (p50) | paired ratio (median) "
        "| p95 small / scale ms | bytes small / scale | within 1.3x |",
        "|---|---:|---:|---:|---:|---|---|---|",
    ]
    for op, r in result.items():
        verdict = "yes" if r["p50_ratio"] <= 1.3 else "**no**"
        lines.append(
            f"| {op} | {r['small_p50_ms']} | {r['scale_p50_ms']} | {r['p50_ratio']} "
            f"| {r['paired_ratio']} | {r['small_p95_ms']} / {r['scale_p95_ms']} "
            f"| {r['small_bytes']:,} / {r['scale_bytes']:,} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", type=Path, required=True)
    p.add_argument("--scale", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--ops", default=",".join([*PAGES, *API_LISTS]))
    p.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json")
    args = p.parse_args(argv)
    manifests = {
        "small": json.loads(args.small.read_text()),
        "scale": json.loads(args.scale.read_text()),
    }
    worlds = {name: (open_world(m), m) for name, m in manifests.items()}
    ops = [op for op in args.ops.split(",") if op]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()[0]
    result = measure(worlds, ops, args.rounds)
    header = (
        f"{started}, load average {load:.1f} at the start, {args.rounds} rounds: "
        f"`python bench/scale_pairs.py --small {args.small.name} --scale {args.scale.name} "
        f"--rounds {args.rounds}`"
    )
    text = markdown(result, header)
    print(text)
    if args.out is not None:
        args.out.with_suffix(".md").write_text(text, encoding="utf-8")
        document = {"started": started, "load": load, "rounds": args.rounds, "ops": result}
        args.out.with_suffix(".json").write_text(json.dumps(document, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
