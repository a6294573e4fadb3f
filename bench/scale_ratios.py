"""Each operation's latency at 100,000 subjects over its latency at 100 (issue 13's target:
within 1.3x), from pairs of bench_http.py results, one Markdown table and one JSON.

    python bench/scale_ratios.py --out bench/results/scale-vs-small \\
        ROUND=SMALL.json,SCALE.json [ROUND=SMALL.json,SCALE.json ...]

Per operation and round: p50 (ms) small, p50 scale and their ratio (p95 too, in the JSON).
The verdict reads the rounds named by --judge (those run with every fix): "yes" when the p50
ratio is within 1.3x in all of them, "no" when in none, "noisy" otherwise. On a shared machine
other jobs add latency to one side or the other of a round: each round's `ping` (the cheapest
endpoint) shows the noise of its moment, and a page of a few milliseconds moves by 2x."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

TARGET = 1.3


def _runs(path: Path) -> dict[str, dict[str, Any]]:
    report = json.loads(path.read_text())
    return {r["op"]: r for r in report["runs"] if r["clients"] == 1}


def compare(rounds: dict[str, tuple[Path, Path]]) -> dict[str, Any]:
    """{op: {round: {small_p50, scale_p50, p50_ratio, small_p95, scale_p95, p95_ratio}}}."""
    out: dict[str, Any] = {}
    for name, (small_path, scale_path) in rounds.items():
        small, scale = _runs(small_path), _runs(scale_path)
        for op in small:
            if op not in scale:
                continue
            row = {}
            for q in ("p50_ms", "p95_ms"):
                a, b = small[op][q], scale[op][q]
                row[f"small_{q}"], row[f"scale_{q}"] = a, b
                row[f"{q[:3]}_ratio"] = round(b / a, 2) if a and b == b and a == a else None
            out.setdefault(op, {})[name] = row
    return out


def markdown(table: dict[str, Any], rounds: list[str], judge: list[str]) -> str:
    head = "| operation | " + " | ".join(f"{r}: p50 small / scale ms (ratio)" for r in rounds)
    lines = [head + " | within 1.3x |", "|---" * (len(rounds) + 2) + "|"]
    for op, by_round in table.items():
        cells, ratios = [], []
        for r in rounds:
            row = by_round.get(r)
            if row is None:
                cells.append("-")
                continue
            if r in judge and row["p50_ratio"] is not None:
                ratios.append(row["p50_ratio"])
            cells.append(
                f"{row['small_p50_ms']:.0f} / {row['scale_p50_ms']:.0f} ({row['p50_ratio']})"
            )
        within = [x <= TARGET for x in ratios]
        verdict = (
            "-"
            if not within
            else "yes"
            if all(within)
            else "**no**"
            if not any(within)
            else "noisy"
        )
        lines.append(f"| {op} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="path without suffix")
    p.add_argument("--judge", default="", help="comma-separated rounds the verdict reads")
    p.add_argument("pairs", nargs="+", help="ROUND=SMALL.json,SCALE.json")
    a = p.parse_args()
    rounds: dict[str, tuple[Path, Path]] = {}
    for pair in a.pairs:
        name, _, files = pair.partition("=")
        small, scale = files.split(",")
        rounds[name] = (Path(small), Path(scale))
    table = compare(rounds)
    a.out.with_suffix(".json").write_text(
        json.dumps(
            {"rounds": {k: [str(x) for x in v] for k, v in rounds.items()}, "ops": table}, indent=1
        )
    )
    judge = [r for r in a.judge.split(",") if r] or list(rounds)
    text = markdown(table, list(rounds), judge)
    a.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
