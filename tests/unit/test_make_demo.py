"""`make demo` says it is a demo, where it serves and how to change the port (issue 15, 14)."""

from __future__ import annotations

import re
from pathlib import Path

MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"


def _recipe(target: str) -> list[str]:
    lines = MAKEFILE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_make_demo_runs_in_demo_mode_and_prints_its_url_port_and_how_to_change_it():
    recipe = _recipe("demo")
    assert all("IWRS_ENVIRONMENT=demo" in line for line in recipe if "$(FLASK)" in line)
    echoed = " ".join(line for line in recipe if line.startswith("@echo"))
    assert "http://$(HOST):$(PORT)/" in echoed and "port $(PORT)" in echoed
    assert re.search(r"PORT=\d+", echoed) and "DEMO" in echoed
    served = next(line for line in recipe if " run " in line)
    assert "--port $(PORT)" in served and "--host $(HOST)" in served
