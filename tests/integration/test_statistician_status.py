"""The statistician's status reads a sealed tally per stratum (issue 13: at 100,000 subjects
each view unsealed every used slot, 80,000 at the scale world, then each process's first view
still counted the whole list): its counts stay those of a full count, a view opens no slot's
token, a list from before the tally (NULL) is counted once and kept after, and the page lists
strata a page at a time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select, update

from iwrs.db import read_session
from iwrs.models.randomization import Randomization, RandomizationSlot, StratumTally
from iwrs.services import randomization_views, stratum_tallies
from iwrs.services.randomization import slot_arm
from tests.integration.randomization_worker import (
    BIG_TRIAL,
    World,
    eligible_subject,
    make_world,
    randomize,
)


@pytest.fixture
def world(tmp_path, database_url, clock) -> Iterator[World]:
    w = make_world(tmp_path, database_url, clock, replacements=BIG_TRIAL)
    with w.app.app_context():
        yield w
    w.app.extensions["iwrs.engine"].dispose()


def full_count() -> dict[str, Counter[str]]:
    """Every used slot unsealed: the status's answer by definition."""
    read_session().rollback()
    out: dict[str, Counter[str]] = {}
    used = read_session().scalars(
        select(RandomizationSlot).join(Randomization, Randomization.slot_id == RandomizationSlot.id)
    )
    for slot in used:
        out.setdefault(slot.stratum, Counter())[slot_arm(slot)] += 1
    return out


def shown(world: World) -> dict[str, Counter[str]]:
    status = randomization_views.list_status(actor=world.actor("stat"))
    assert status is not None
    return {
        s.stratum: Counter({a: n for a, n in s.by_arm.items() if n})
        for s in status.strata
        if s.used
    }


def opened_slots(world: World) -> int:
    """Slot tokens opened by this process since the cache was last emptied."""
    cache = world.app.extensions["iwrs.unsealed_kits"]
    return sum(1 for key in cache._entries if key[0] == "randomization_slot")


def shown_all(world: World) -> dict[str, Counter[str]]:
    status = randomization_views.list_status(actor=world.actor("stat"), limit=None)
    assert status is not None
    return {
        s.stratum: Counter({a: n for a, n in s.by_arm.items() if n})
        for s in status.strata
        if s.used
    }


def test_the_tallies_equal_a_full_count_and_a_view_opens_no_slot(world):
    for n in range(4):
        randomize(world, eligible_subject(world, "CN01", disease="RA" if n % 2 else "SSc"))
    world.app.extensions["iwrs.unsealed_kits"]._entries.clear()
    seen = shown_all(world)
    assert opened_slots(world) == 0
    assert seen == full_count() and sum(sum(c.values()) for c in seen.values()) == 4
    status = randomization_views.list_status(actor=world.actor("stat"), limit=None)
    assert status is not None
    overall = sum(full_count().values(), Counter())
    assert status.overall_by_arm == {code: overall[code] for code in ("A", "P")}
    # the overall allocation the process keeps is read again once a randomization moved it
    randomize(world, eligible_subject(world, "CN02"))
    first_page = randomization_views.list_status(actor=world.actor("stat"), limit=1)
    overall = sum(full_count().values(), Counter())
    assert first_page is not None and sum(overall.values()) == 5
    assert first_page.overall_by_arm == {code: overall[code] for code in ("A", "P")}


def test_a_list_from_before_the_tally_is_counted_once_then_advanced(world):
    for _ in range(3):
        randomize(world, eligible_subject(world, "CN01"))
    engine = world.app.extensions["iwrs.engine"]
    with engine.begin() as connection:  # as migration 0021 leaves a list already in use
        connection.execute(update(StratumTally).values(sealed_counts=None))
    assert shown_all(world) == full_count()
    read_session().rollback()
    assert (
        read_session().scalar(select(func.count()).where(StratumTally.sealed_counts.is_(None))) == 0
    )
    randomize(world, eligible_subject(world, "CN02"))
    world.app.extensions["iwrs.unsealed_kits"]._entries.clear()
    seen = shown_all(world)
    assert opened_slots(world) == 0
    assert seen == full_count()
    assert sum(sum(c.values()) for c in full_count().values()) == 4


def test_the_page_lists_strata_a_page_at_a_time(world):
    randomize(world, eligible_subject(world, "CN01"))
    whole = randomization_views.list_status(actor=world.actor("stat"), limit=None)
    assert whole is not None and len(whole.strata) >= 2 and whole.next_after is None
    first = randomization_views.list_status(actor=world.actor("stat"), limit=1)
    assert first is not None and first.next_after == whole.strata[0].stratum
    assert first.overall_by_arm == whole.overall_by_arm
    rest = randomization_views.list_status(
        actor=world.actor("stat"), after=first.next_after, limit=len(whole.strata)
    )
    assert rest is not None and rest.next_after is None
    assert first.strata + rest.strata == whole.strata


def test_a_tally_token_has_one_length_whatever_the_counts():
    codes = ["A", "P"]
    lengths = {
        len(stratum_tallies.encode({"A": a, "P": p}, codes))
        for a, p in [(0, 0), (9, 5), (10, 5), (9, 6), (99, 100), (12345, 7)]
    }
    assert len(lengths) == 1
    assert stratum_tallies.decode(stratum_tallies.encode({"A": 10, "P": 5}, codes)) == {
        "A": 10,
        "P": 5,
    }
