"""Summaries, ratios and the Markdown table of bench/bench_http.py."""

from __future__ import annotations

from typing import Any

# The targets (issue 13, "Done when").
RAW_SQL_SHARE = 1 / 3  # randomize over HTTP at K = 32, cheap hasher, >= 1/3 of the raw SQL
P99_MS = 300.0  # ... with p99 under 300 ms
VERIFY_SHARE = 0.8  # signed throughput at the default Argon2id >= 80 % of the verify rate
TARGET_K = 32
SCALE_RATIO = 1.3  # each operation and page at 100,000 subjects within 1.3x of 100


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values` (not empty)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summarize(row: dict[str, Any]) -> dict[str, Any]:
    """One run: ok/failed counts, throughput (ok per wall second), p50/p95/p99 of the ok ones
    (ms); the failures by status. Rows already summarized are returned as they are."""
    if "records" not in row:
        return row
    ok_status = {"ok", 200, 201, 204}
    ok = [seconds * 1000 for _, seconds, status in row["records"] if status in ok_status]
    failures: dict[str, int] = {}
    for _, _, status in row["records"]:
        if status not in ok_status:
            failures[str(status)] = failures.get(str(status), 0) + 1
    wall = row["wall_s"] or 1e-9
    out = {k: v for k, v in row.items() if k != "records"}
    out |= {"ok": len(ok), "failed": sum(failures.values()), "failures": failures}
    out["per_s"] = len(ok) / wall
    for q in (50, 95, 99):
        out[f"p{q}_ms"] = _percentile(ok, q) if ok else float("nan")
    out["mean_ms"] = sum(ok) / len(ok) if ok else float("nan")
    # Every client sends its next request when the last is answered (a closed loop), so by
    # Little's law the mean latency is about K / throughput: at K clients the latency is set by
    # the throughput, and a p99 target at K is a throughput target (K / per_s, the queue's mean).
    out["little_ms"] = row["clients"] / out["per_s"] * 1000 if ok else float("nan")
    return out


def _run(report: dict[str, Any], **where: Any) -> dict[str, Any] | None:
    for run in report["runs"]:
        if all(run.get(k) == v for k, v in where.items()):
            return run  # type: ignore[no-any-return]
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b in (None, 0) else a / b  # type: ignore[operator]


def ratios(report: dict[str, Any], against: dict[str, Any] | None) -> dict[str, Any]:
    """randomize/raw_sql and randomize/ping per K (PostgreSQL, cheap), signed/verify per K
    (default hasher), each run's p50 here/there with `against`; and the targets' verdicts."""
    out: dict[str, Any] = {"randomize_per_raw_sql": {}, "randomize_per_ping": {}}
    out["signed_per_verify"] = {}
    for run in report["runs"]:
        if run["op"] != "randomize":
            continue
        k, b, h = run["clients"], run["backend"], run["hasher"]
        raw = _run(report, op="raw_sql", clients=k, backend=b)
        ping = _run(report, op="ping", clients=k, backend=b, hasher=h)
        key = f"{b}/{h}/K={k}"
        if raw and h == "cheap":
            out["randomize_per_raw_sql"][key] = _ratio(run["per_s"], raw["per_s"])
        if ping:
            out["randomize_per_ping"][key] = _ratio(run["per_s"], ping["per_s"])
        verify = report["backends"][b].get("verify", {}).get(h, {}).get("per_s")
        if h == "default" and verify:
            out["signed_per_verify"][key] = _ratio(run["per_s"], verify)
    if against:
        out["p50_here_per_against"] = {
            f"{r['backend']}/{r['hasher']}/{r['op']}/K={r['clients']}": _ratio(
                r["p50_ms"], (_run(against, **_key(r)) or {}).get("p50_ms")
            )
            for r in report["runs"]
        }
    out["targets"] = _targets(report, out)
    if against:
        # Issue 13: each operation and page at 100,000 subjects within 1.3x of its latency at
        # 100; judged at K = 1, where the latency is the operation's own, not a queue's.
        at_one = [v for k, v in out["p50_here_per_against"].items() if k.endswith("/K=1")]
        known = [v for v in at_one if v is not None]
        out["targets"][f"p50 here / --against at K=1 <= {SCALE_RATIO}"] = (
            max(known) <= SCALE_RATIO if known else None
        )
    return out


def _key(run: dict[str, Any]) -> dict[str, Any]:
    return {k: run[k] for k in ("backend", "hasher", "op", "clients")}


def _targets(report: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    cheap = _run(report, op="randomize", backend="postgresql", hasher="cheap", clients=TARGET_K)
    share = out["randomize_per_raw_sql"].get(f"postgresql/cheap/K={TARGET_K}")
    signed = out["signed_per_verify"].get(f"postgresql/default/K={TARGET_K}")
    return {
        f"randomize/raw_sql at K={TARGET_K} >= 1/3": None if share is None else share >= 1 / 3,
        f"randomize p99 at K={TARGET_K} < {P99_MS:.0f} ms": None
        if cheap is None
        else cheap["p99_ms"] < P99_MS,
        f"signed/verify at K={TARGET_K} >= {VERIFY_SHARE:.0%}": None
        if signed is None
        else signed >= VERIFY_SHARE,
    }


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """The results table, the ratios and the machine, as Markdown."""
    m = report["machine"]
    versions = ", ".join(
        f"PostgreSQL {f['server_version']}"
        for f in report["backends"].values()
        if "server_version" in f
    )
    lines = [
        f"Machine: {m['nproc']} cores, {m['cpu']}, Python {m['python']}"
        + (f", {versions}" if versions else "")
        + (
            f"; load average {m['load_average_start'][0]:.1f} at the start, "
            f"{m.get('load_average_end', [float('nan')])[0]:.1f} at the end"
            if "load_average_start" in m
            else ""
        ),
        f"Command: `{report['command']}` ({report['when']}, {report['duration_s']} s)",
        "",
        "| backend | hasher | operation | K | ok | failed | per s | p50 ms | p95 ms | p99 ms "
        "| mean ms | K / per s, ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['backend']} | {r['hasher']} | {r['op']} | {r['clients']} | {r['ok']}"
            f"{' (pool spent)' if r.get('pool_spent') else ''} | "
            f"{r['failed']} | {_fmt(r['per_s'])} | {_fmt(r['p50_ms'], 0)} | "
            f"{_fmt(r['p95_ms'], 0)} | {_fmt(r['p99_ms'], 0)} | {_fmt(r.get('mean_ms'), 0)} | "
            f"{_fmt(r.get('little_ms'), 0)} |"
        )
    verify = "; ".join(
        f"{h} {v['per_s']:.1f}/s (after the {b} runs)"
        for b, f in report["backends"].items()
        for h, v in f.get("verify", {}).items()
    )
    lines += ["", f"Argon2id verify alone ({m['nproc']} processes): {verify}", ""]
    lines += ["| ratio | at | value |", "|---|---|---:|"]
    for name, values in report["ratios"].items():
        if name == "targets":
            continue
        for at, value in values.items():
            lines.append(f"| {name} | {at} | {_fmt(value, 2)} |")
    lines += ["", "(pool spent: the run ended when its subjects ran out, before its duration)"]
    lines += [
        "(K / per s: each client waits for its answer before it sends again, so the mean latency",
        "is about K over the throughput (Little's law); a p99 at K is bounded below by it)",
    ]
    lines += ["", "| target (issue 13) | met |", "|---|---|"]
    for name, met in report["ratios"]["targets"].items():
        lines.append(f"| {name} | {'-' if met is None else ('yes' if met else 'NO')} |")
    return "\n".join(lines) + "\n"
