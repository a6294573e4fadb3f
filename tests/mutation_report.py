"""The score of the last `make mutation` run, per module, from mutmut's results in mutants/.

Usage: python tests/mutation_report.py [--survivors]  (from the project root, after `mutmut run`)
Prints a Markdown table (killed / survived / timeout / no covering test, and the score: killed
and timed out over all); --survivors also lists every surviving mutant by name.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

# mutmut's exit codes (mutmut/stats.py): 1 and 3 a failing test, 0 all covering tests passed.
STATUS = {0: "survived", 1: "killed", 3: "killed", 5: "no tests", 33: "no tests", 36: "timeout"}
STATUS |= {-24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", None: "not run"}
COLUMNS = ("killed", "timeout", "survived", "no tests", "not run")


def results(root: Path) -> dict[str, dict[str, str]]:
    """Module -> mutant name -> status."""
    found: dict[str, dict[str, str]] = {}
    for meta in sorted(root.glob("**/*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            module = str(meta.relative_to(root))[: -len(".meta")]
            found[module] = {name: STATUS.get(code, "other") for name, code in codes.items()}
    return found


def row(name: str, counts: Counter[str]) -> str:
    total = sum(counts.values())
    score = (counts["killed"] + counts["timeout"]) / total if total else 0.0
    cells = [str(counts[column]) for column in COLUMNS]
    return f"| {name} | {total} | {' | '.join(cells)} | {score:.1%} |"


def main(argv: list[str]) -> int:
    found = results(Path("mutants"))
    if not found:
        print("no results in mutants/: run `make mutation` first", file=sys.stderr)
        return 1
    print(f"| module | mutants | {' | '.join(COLUMNS)} | score |")
    print("|---|" + "---:|" * (len(COLUMNS) + 2))
    total: Counter[str] = Counter()
    for module, statuses in found.items():
        counts = Counter(statuses.values())
        total += counts
        print(row(module, counts))
    print(row("**total**", total))
    if "--survivors" in argv:
        for statuses in found.values():
            for name, status in statuses.items():
                if status in ("survived", "no tests", "other"):
                    print(f"{status}: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
