"""The site inventory page's statement gathers the site's kits before it sorts and cuts (issue
13): as one `ORDER BY number LIMIT n`, PostgreSQL walked the kit-number index over every kit of
the trial filtering for the site (2.6 s a page at the scale world's 890,000 kits; a small test
database cannot reproduce that plan choice, so this checks the statement's shape, and on
PostgreSQL that its plan never scans the kit-number index)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from iwrs.audit import Actor
from iwrs.db import read_session
from iwrs.services import supply_views
from tests.integration.randomization_worker import World, make_world
from tests.statements import counted


@pytest.fixture
def world(tmp_path, database_url, clock) -> Iterator[World]:
    w = make_world(tmp_path, database_url, clock)
    with w.app.app_context():
        yield w
    w.app.extensions["iwrs.engine"].dispose()


def inventory_statement(world: World) -> str:
    pharmacist, site = world.people["ph-CN01"], world.sites["CN01"]
    with counted(world.app) as tally:
        kits = supply_views.site_inventory(
            actor=Actor.of(pharmacist), site_id=site, limit=supply_views.INVENTORY_PAGE
        )
    assert kits  # make_world stocks the site
    (statement,) = [s for s in tally.statements if "FROM kit" in s or "FROM shelf" in s]
    return statement


def test_the_site_inventory_gathers_the_shelf_first(world):
    statement = inventory_statement(world)
    assert " ".join(statement.split()).startswith("WITH shelf AS MATERIALIZED")


def test_the_site_inventory_plan_never_walks_the_kit_number_index(world):
    if read_session().get_bind().dialect.name != "postgresql":
        pytest.skip("a PostgreSQL plan")
    site = world.sites["CN01"]
    query = supply_views.site_inventory_query(site, after=None, limit=200)
    with world.app.extensions["iwrs.engine"].connect() as connection:
        compiled = query.compile(connection)
        plan = connection.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params).scalars().all()
    assert not any("uq_kit_number" in line for line in plan), plan
