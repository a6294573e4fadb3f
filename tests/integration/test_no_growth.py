"""No cost that grows with the trial (issue 13): every main page and operation sends the same
number of SQL statements to the database at a small trial and at one with three times the
subjects, kits and events. A statement per row (N+1) fails here, on SQLite and PostgreSQL.

Measured with tests.statements.counted (SQLAlchemy's before_cursor_execute on the app's
engine). The pages are fetched through the real app as their users; the operations are the
services the pages and the API call."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from iwrs.audit import Actor
from iwrs.services import dispensing, randomization_views, resupply, shipments, supply_views
from tests.conftest import sign_in
from tests.integration.randomization_worker import (
    BIG_TRIAL,
    World,
    add_kits,
    eligible_subject,
    make_world,
    randomize,
)
from tests.statements import counted

GROWTH = 3
FIRST = 3  # subjects randomized before the small measurement

PROTOCOL = BIG_TRIAL | {'default_policy = "threshold"': 'default_policy = "predictive"'}


@pytest.fixture
def world(tmp_path, database_url, clock) -> Iterator[World]:
    w = make_world(
        tmp_path, database_url, clock, replacements=PROTOCOL, lots=(("L-0001", 600, 730),)
    )
    w.user("auditor", name="auditor")
    with w.app.app_context():
        yield w
    w.app.extensions["iwrs.engine"].dispose()


def client_of(world: World, name: str) -> FlaskClient:
    client = world.app.test_client()
    with world.app.app_context():  # a request's own context: `g` is not the test's
        assert sign_in(client, world.people[name].username).status_code == 302
    return client


def measure(world: World, *, due: int, fresh: int) -> dict:
    """Statements per page and operation: `due` a subject whose next visit is due today,
    `fresh` a confirmed-eligible subject not yet randomized."""
    cn01 = world.sites["CN01"]
    pages: dict[str, tuple[str, str]] = {
        "subject list": ("inv-CN01", "/subjects/"),
        "visit board": ("ph-CN01", "/dispensing/"),
        "visit board, this week": ("ph-CN01", "/dispensing/?due=week"),
        "visit board, every subject": ("ph-CN01", "/dispensing/?due=all&q=CN01"),
        "subject's dispensing page": ("ph-CN01", f"/dispensing/{due}"),
        "destruction list": ("manager", "/supply/destruction"),
        "supply page": ("manager", "/supply/"),
        "site inventory": ("ph-CN01", f"/supply/sites/{cn01}"),
        "audit page": ("auditor", "/audit/"),
        # the role homes (issue 15), each with the header's inbox count
        "investigator home": ("inv-CN01", "/"),
        "pharmacist home": ("ph-CN01", "/"),
        "supply manager home": ("manager", "/"),
        "statistician home": ("stat", "/"),
        "auditor home": ("auditor", "/"),
        "admin home": ("admin", "/"),
        "inbox": ("ph-CN01", "/inbox"),
        "statistician page": ("stat", "/lists/"),
    }
    clients = {who: client_of(world, who) for who, _ in pages.values()}
    counts: dict[str, int] = {}
    shapes: dict[str, dict[str, int]] = {}
    for what, (who, path) in pages.items():
        with world.app.app_context():  # warm: the first request loads the session
            clients[who].get(path)
            fresh_key_id()
        with world.app.app_context(), counted(world.app) as tally:
            response = clients[who].get(path)
        assert response.status_code == 200, (what, response.status_code)
        counts[what], shapes[what] = tally.count, tally.shapes()
    shipment = shipments.request_manual_shipment(
        actor=world.actor("manager"), site_id=world.sites["CN02"], quantity=2
    )
    shipments.ship_shipment(
        actor=world.actor("manager"), shipment_id=shipment.id, courier="C", tracking_number="T"
    )
    lines = {
        k.number: "good"
        for k in supply_views.shipment_kits(actor=world.actor("manager"), shipment_id=shipment.id)
    }
    due_visit = next_due_visit(world, due)
    assert due_visit is not None
    operations: dict[str, Callable[[], Any]] = {
        "randomize": lambda: randomize(world, fresh),
        "dispense": lambda: dispensing.dispense(
            actor=world.actor("ph-CN01"), subject_id=due, visit_code=due_visit
        ),
        "receive shipment": lambda: shipments.receive_shipment(
            actor=world.actor("ph-CN02"), shipment_id=shipment.id, lines=lines, excursion=False
        ),
        "resupply run": lambda: resupply.run_resupply(slot="daily"),
        "statistician status": lambda: randomization_views.list_status(actor=world.actor("stat")),
    }
    for what, operation in operations.items():
        fresh_key_id()
        with counted(world.app) as tally:
            operation()
        counts[what], shapes[what] = tally.count, tally.shapes()
    return {"counts": counts, "shapes": shapes}


def fresh_key_id() -> None:
    """Read the current blinding key id now, so that no counted request re-reads it: that read
    happens once every IWRS_KEY_REFRESH_SECONDS whatever the trial's size (iwrs/keyring.py), so
    whether it falls inside a count depends on the wall clock, not on growth."""
    from iwrs.services.supply import sealer

    sealer().refresh(force=True)


def grow(world: World, clock: Any, subjects: int) -> list[int]:
    """Randomize `subjects` more at CN01 and CN02 and give each of their next visits."""
    ids = [eligible_subject(world, "CN01" if n % 2 else "CN02") for n in range(subjects)]
    for subject_id in ids:
        randomize(world, subject_id)
    return ids


def dispense_all_due(world: World, subject_ids: list[int]) -> None:
    """Give every subject's visit that is due today."""
    for subject_id in subject_ids:
        code = next_due_visit(world, subject_id)
        if code:
            dispensing.dispense(
                actor=world.actor(f"ph-{site_of(world, subject_id)}"),
                subject_id=subject_id,
                visit_code=code,
            )


def site_of(world: World, subject_id: int) -> str:
    from iwrs.db import read_session
    from iwrs.models.subjects import Subject

    subject = read_session().get(Subject, subject_id)
    assert subject is not None
    return next(code for code, i in world.sites.items() if i == subject.site_id)


def next_due_visit(world: World, subject_id: int) -> str | None:
    """The subject's next visit if it is due today at the site, as the visit board says."""
    from iwrs.db import read_session

    read_session().rollback()
    pharmacist = read_session().merge(world.people["ph-" + site_of(world, subject_id)])
    row = next(
        r
        for r in randomization_views.visits_board(actor=Actor.of(pharmacist), limit=None)
        if r.subject.id == subject_id
    )
    if row.next_visit is None or not row.next_visit.earliest <= row.today <= row.next_visit.latest:
        return None
    return row.next_visit.code


def test_no_main_page_or_operation_sends_more_statements_as_the_trial_grows(world, clock):
    first = grow(world, clock, FIRST)
    due_small = eligible_subject(world, "CN01")
    randomize(world, due_small)
    clock.advance(days=28)
    dispense_all_due(world, first)
    small = measure(world, due=due_small, fresh=eligible_subject(world, "CN01"))

    more = grow(world, clock, FIRST * (GROWTH - 1) + 1)
    add_kits(world, lot="L-0002", count=1200, expiry=clock.current.date() + timedelta(days=730))
    due_big = eligible_subject(world, "CN01")
    randomize(world, due_big)
    clock.advance(days=28)
    dispense_all_due(world, first + more)
    big = measure(world, due=due_big, fresh=eligible_subject(world, "CN01"))

    grew = {
        what: (small["counts"][what], big["counts"][what])
        for what in small["counts"]
        if big["counts"][what] > small["counts"][what]
    }
    report = {what: small["counts"][what] for what in small["counts"]}
    print("statements at the small trial:", report)
    print("statements at 3x:", big["counts"])
    assert not grew, {
        what: {
            shape: (small["shapes"][what].get(shape, 0), n)
            for shape, n in big["shapes"][what].items()
            if n > small["shapes"][what].get(shape, 0)
        }
        for what in grew
    }
