"""No function over 80 lines without a written reason (issue 14): a function longer than
LIMIT lines in the application, the pure packages, the migrations or the benchmarks must say
why in its docstring, starting a sentence with "Long because:"."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 80
TREES = ("iwrs", "blinding", "supply", "migrations", "bench")


def long_functions_without_reason(root: Path = ROOT) -> list[str]:
    found = []
    files = [root / "wsgi.py", *(f for tree in TREES for f in sorted((root / tree).rglob("*.py")))]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > LIMIT and "Long because:" not in (ast.get_docstring(node) or ""):
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_every_function_over_the_limit_gives_its_reason():
    assert long_functions_without_reason() == []


def test_a_long_function_without_a_reason_is_found(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT + 1))
    (tmp_path / "wsgi.py").write_text("")
    for tree in TREES:
        (tmp_path / tree).mkdir()
    (tmp_path / "iwrs" / "long.py").write_text(f"def long():\n{body}\n")
    (tmp_path / "iwrs" / "reasoned.py").write_text(
        f'def reasoned():\n    """Long because: a table."""\n{body}\n'
    )
    assert long_functions_without_reason(tmp_path) == [f"iwrs/long.py:1 long ({LIMIT + 2} lines)"]
