"""Run mutmut with one of the other mutation configurations of pyproject.toml, from a copy.

Usage: python tests/mutation_profile.py PROFILE [MUTANT_NAME_PATTERN ...]  (from the project root)

mutmut reads its settings only from the `[tool.mutmut]` table of the pyproject.toml in the folder
it runs in, and keeps its results in that folder's mutants/. `make mutation` runs the default
table on the pure core. A profile, `[tool.iwrs-mutation.PROFILE]`, names other modules and other
tests (the services with integration tests on SQLite, the eligibility engine with its own tests):
this script copies the project to build/mutation/PROFILE/ (git-ignored), writes there a
pyproject.toml whose `[tool.mutmut]` is the default table overridden by the profile's keys, runs
`nice -n 10 mutmut run --max-children N` in it (N from MUTATION_CHILDREN, 2 by default), and prints
the score table (tests/mutation_report.py). Results stay in build/mutation/PROFILE/mutants/: a
second run resumes, and re-tests only the functions a change touched.

One key is the script's own, not mutmut's: `hypothesis_examples` caps each property test at that
many examples for the run (IWRS_MUTATION_EXAMPLES, read by tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What a run needs of the project: the packages, their tests, the migrations the database tests
# apply. The copy is refreshed before each run (mutmut then sees which functions changed).
COPIED = ("blinding", "supply", "iwrs", "tests", "migrations", "alembic.ini", "wsgi.py")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
OWN_KEYS = ("hypothesis_examples",)


def toml_value(value: object) -> str:
    """A TOML literal for the values mutmut's table holds (strings, lists of them, numbers, bools);
    JSON's string escapes are TOML's basic-string escapes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")


def profile_settings(pyproject: dict, name: str) -> tuple[dict, dict]:
    """(mutmut's table for the profile, the script's own keys)."""
    profiles = pyproject["tool"].get("iwrs-mutation", {})
    if name not in profiles:
        raise SystemExit(f"no profile {name!r}; pyproject.toml has: {', '.join(profiles)}")
    merged = {**pyproject["tool"]["mutmut"], **profiles[name]}
    own = {key: merged.pop(key) for key in OWN_KEYS if key in merged}
    return merged, own


def written_pyproject(text: str, table: dict) -> str:
    """The project's pyproject.toml with its `[tool.mutmut]` renamed out of the way and the
    profile's table in its place (pytest's settings stay as they are)."""
    renamed = re.sub(r"(?m)^\[tool\.mutmut\]$", "[tool.iwrs-mutation-default]", text)
    lines = [f"{key} = {toml_value(value)}" for key, value in table.items()]
    return renamed + "\n[tool.mutmut]\n" + "\n".join(lines) + "\n"


def prepare(name: str) -> tuple[Path, dict]:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    table, own = profile_settings(tomllib.loads(text), name)
    where = ROOT / "build" / "mutation" / name
    where.mkdir(parents=True, exist_ok=True)
    for entry in COPIED:
        source = ROOT / entry
        if source.is_dir():
            shutil.copytree(source, where / entry, dirs_exist_ok=True, ignore=IGNORED)
        elif source.exists():
            shutil.copy2(source, where / entry)
    (where / "pyproject.toml").write_text(written_pyproject(text, table), encoding="utf-8")
    return where, own


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    name, mutants = argv[0], argv[1:]
    where, own = prepare(name)
    environment = dict(os.environ)
    if "hypothesis_examples" in own:
        environment["IWRS_MUTATION_EXAMPLES"] = str(own["hypothesis_examples"])
    environment.pop("PYTHONPATH", None)  # the copy's own packages, never the project's
    # One migrated SQLite template for every mutant's session (tests/conftest.py), made afresh
    # by the first session of each run.
    template = where / "template.sqlite"
    template.unlink(missing_ok=True)
    environment["IWRS_TEST_SQLITE_TEMPLATE"] = str(template)
    mutmut = Path(sys.executable).with_name("mutmut")
    children = os.environ.get("MUTATION_CHILDREN", "2")
    command = ["nice", "-n", "10", str(mutmut), "run", "--max-children", children, *mutants]
    print(f"in {where.relative_to(ROOT)}: {' '.join(command)}", flush=True)
    status = subprocess.run(command, cwd=where, env=environment, check=False).returncode
    subprocess.run(
        [sys.executable, str(ROOT / "tests" / "mutation_report.py")], cwd=where, check=False
    )
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
