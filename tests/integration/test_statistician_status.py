"""The statistician's status counts arms without re-reading the trial (issue 13: at 100,000
subjects each view unsealed every used slot, 80,000 at the scale world): a view unseals only
the randomizations made since the process's last view, and its counts stay those of a full
count, also when a randomization committed out of id order."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from iwrs.db import read_session
from iwrs.models.randomization import Randomization, RandomizationSlot
from iwrs.services import randomization_views
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


def test_a_view_unseals_only_the_randomizations_since_the_last(world):
    for n in range(4):
        randomize(world, eligible_subject(world, "CN01", disease="RA" if n % 2 else "SSc"))
    assert shown(world) == full_count()
    world.app.extensions["iwrs.unsealed_kits"]._entries.clear()
    randomize(world, eligible_subject(world, "CN02"))
    world.app.extensions["iwrs.unsealed_kits"]._entries.clear()  # randomize opened its slot
    second = shown(world)
    assert opened_slots(world) == 1
    assert second == full_count()


def test_a_randomization_counted_out_of_id_order_is_not_lost(world):
    """A view that counted id n+1 before id n committed: the count check recounts in full."""
    for _ in range(3):
        randomize(world, eligible_subject(world, "CN01"))
    assert shown(world) == full_count()
    tally = world.app.extensions["iwrs.arm_tallies"]
    (list_tally,) = tally.values()
    list_tally.last_id += 1  # as if a later id had been counted before an earlier committed
    randomize(world, eligible_subject(world, "CN02"))
    assert shown(world) == full_count()
    assert sum(sum(c.values()) for c in shown(world).values()) == 4
