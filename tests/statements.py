"""A reusable test helper: count the SQL statements an application sends to its database.

    with counted(app) as tally:
        client.get("/supply/")
    assert tally.count <= 12, tally.statements

Listens to SQLAlchemy's `before_cursor_execute` on the app's own engine, so every statement of
every session and connection of that app is counted (SAVEPOINTs and PRAGMAs too); the statements
are kept, for the failure message, with their parameters left out."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from sqlalchemy import event


@dataclass
class Tally:
    """The statements seen while counting."""

    statements: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.statements)

    def shapes(self) -> dict[str, int]:
        """Each distinct statement (first 120 characters) and how often it ran."""
        seen: dict[str, int] = {}
        for statement in self.statements:
            key = " ".join(statement.split())[:120]
            seen[key] = seen.get(key, 0) + 1
        return seen


@contextmanager
def counted(app: Flask) -> Iterator[Tally]:
    """Count the statements the app's engine executes inside the block."""
    engine = app.extensions["iwrs.engine"]
    tally = Tally()

    def listen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        tally.statements.append(statement)

    event.listen(engine, "before_cursor_execute", listen)
    try:
        yield tally
    finally:
        event.remove(engine, "before_cursor_execute", listen)
