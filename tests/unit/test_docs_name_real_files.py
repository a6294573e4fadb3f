"""The docs name only things that exist (issue 14): every file or folder path written in
backticks in the READMEs (the top one and each package's) and in the code's docstrings and
comments exists in the repository, and every "README rule N" cited is a rule of the README's
"Rules that never break"; no design file outside the repository is cited."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READMES = sorted(p for p in ROOT.rglob("README*.md") if ".venv" not in p.parts)
CODE = sorted(
    p
    for top in ("iwrs", "blinding", "supply", "tests", "bench", "migrations")
    for p in (ROOT / top).rglob("*.py")
) + [ROOT / "wsgi.py"]
TICKED = re.compile(r"`([^`\n]+)`")
FILE = re.compile(r"^[\w.-]*[\w-](?:/[\w.-]+)*\.(?:py|md|toml|txt|ini|html|cfg|csv|sh)$")
FOLDER = re.compile(r"^[\w-]+(?:/[\w.-]+)*/$")
# Paths made when the application runs (the instance folder), never in the repository.
MADE_AT_RUN_TIME = ("instance/", ".venv/")


def named_paths(text: str) -> set[str]:
    """Every word inside backticks that is a relative file path (`iwrs/auth.py`, `bench/RESULTS.md`)
    or folder (`bench/results/`)."""
    found = set()
    for ticked in TICKED.findall(text):
        for word in ticked.split():
            word = word.strip("()[],;:'\"")
            if word.startswith(MADE_AT_RUN_TIME):
                continue
            if FILE.match(word) or FOLDER.match(word):
                found.add(word)
    return found


def _missing(path: Path) -> list[str]:
    here = path.parent
    return sorted(
        name
        for name in named_paths(path.read_text())
        if not (here / name).exists() and not (ROOT / name).exists()
    )


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_a_readme_names_exists(readme):
    assert _missing(readme) == []


def test_every_path_the_code_names_exists():
    missing = {str(p.relative_to(ROOT)): _missing(p) for p in CODE}
    assert {k: v for k, v in missing.items() if v} == {}


def test_the_paths_found_are_the_paths_written():
    text = (
        "see `iwrs/auth.py`, `bench/results/`, `python bench/bench_http.py --quick`, "
        "`iwrs.auth`, `/api/v1`"
    )
    assert named_paths(text) == {"iwrs/auth.py", "bench/results/", "bench/bench_http.py"}


def _rules() -> set[int]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Rules that never break", 1)[1].split("\n## ", 1)[0]
    return {int(n) for n in re.findall(r"^(\d+)\. ", section, re.MULTILINE)}


def test_every_rule_cited_is_a_rule_of_the_readme_and_no_outside_design_file_is_cited():
    rules = _rules()
    assert rules == set(range(1, len(rules) + 1)) and len(rules) >= 14
    cited: dict[str, set[int]] = {}
    outside = []
    for path in [*CODE, *READMES, *sorted((ROOT / "iwrs").rglob("*.toml"))]:
        text = path.read_text()
        for numbers in re.findall(r"README rules? ([\d, and]+\d)", text):
            cited.setdefault(str(path.relative_to(ROOT)), set()).update(
                int(n) for n in re.findall(r"\d+", numbers)
            )
        if re.search(r"DESIGN\b|shared/DESIGN", text) and path.name != Path(__file__).name:
            outside.append(str(path.relative_to(ROOT)))
    assert {k: v - rules for k, v in cited.items() if v - rules} == {}
    assert outside == []
