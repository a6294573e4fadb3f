"""A scripted trial world shared by the page tests that only read it (or undo what they change):
built once per test process (tests/web/blind_world.py, SQLite, ~6 s)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.web.blind_world import World, build_world, fresh_databases


@pytest.fixture(scope="session")
def trial_world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """The plain blind world on SQLite: randomizations, dispensations, received shipments,
    S3 emergency-unblinded by dr.li. Tests using it must leave it as they found it (a refusal
    they provoke may add audit events, nothing else)."""
    directory = tmp_path_factory.mktemp("trial-world")
    with fresh_databases(request, "sqlite", directory, 1) as (url,):
        built = build_world(directory / "w", url, mirror=False)
        yield built
        built.dispose()
