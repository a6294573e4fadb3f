"""Kit choice without unsealing the shelf (issue 13): a randomization or a dispensing unseals
the site's kits lazily in pick order and stops once the decision is made, and a later operation
at the site opens nothing it has opened before (the per-process cache keyed by kit and token).

Measured with a real Sealer that counts its kit unseals (the app's sealer is replaced by a
counting subclass with the same key), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from blinding.sealing import Sealer
from iwrs.services import dispensing
from iwrs.services import supply as supply_service
from tests.integration.randomization_worker import (
    World,
    eligible_subject,
    make_world,
    randomize,
)

LOT_SIZE = 10  # kits per lot, both arms (5 + 5)
LOTS = tuple((f"L-{n:04d}", LOT_SIZE, 700 + 10 * n) for n in range(1, 5))  # 4 lots, 40 kits
ARMS = 2
# The kit cross-check at randomization re-reads the chosen kit's row and opens its token with
# the key, never through the cache (services.randomization._sealed_treatment_now, issue 14).
CROSS_CHECK = 1


class CountingSealer(Sealer):
    """The real sealer, counting the kit treatments it opens."""

    kit_unseals = 0

    def refresh(self, *, force: bool = False) -> None:
        """A fixed key: nothing to re-read (the live ring's interface, iwrs/keyring.py)."""

    def seal_held(self, plaintext: str, *, context: str) -> str:
        return self.seal(plaintext, context=context)

    def unseal(self, token: str, *, context: str) -> str:
        if context.startswith("kit:"):
            self.kit_unseals += 1
        return super().unseal(token, context=context)


@pytest.fixture
def world(tmp_path, database_url, clock) -> Iterator[World]:
    """CN01 active with a shelf of 40 kits in four lots of 10 (5 of each arm)."""
    w = make_world(
        tmp_path,
        database_url,
        clock,
        replacements={"quantity = 8": "quantity = 40"},
        sites=("CN01",),
        lots=LOTS,
    )
    with w.app.app_context():
        yield w
    w.app.extensions["iwrs.engine"].dispose()


def counting(world: World) -> CountingSealer:
    """Replace the app's sealer with a counting one and empty the process's unseal cache."""
    counter = CountingSealer(world.app.extensions["iwrs.settings"].blinding_key)
    world.app.extensions["iwrs.sealer"] = counter
    world.app.extensions.pop("iwrs.unsealed_kits", None)
    return counter


def shelf_size() -> int:
    from sqlalchemy import func, select

    from iwrs.db import read_session
    from iwrs.models.supply import Kit

    read_session().rollback()
    return (
        read_session().scalar(select(func.count()).select_from(Kit).where(Kit.state == "available"))
        or 0
    )


def test_randomize_unseals_at_most_the_first_lot_and_the_next_hits_the_cache(world):
    assert shelf_size() == 40
    first, second = eligible_subject(world, "CN01"), eligible_subject(world, "CN01")
    counter = counting(world)
    randomize(world, first)
    # + CROSS_CHECK: the chosen kit is opened once more, from its row, bypassing the cache.
    assert 0 < counter.kit_unseals <= LOT_SIZE + ARMS + CROSS_CHECK
    opened = counter.kit_unseals
    randomize(world, second)
    # The first lot is still the pick lot and every kit of it was opened already: only the
    # chosen kit's cross-check opens a token.
    assert counter.kit_unseals == opened + CROSS_CHECK


def test_dispense_unseals_at_most_the_first_lot_and_the_next_hits_the_cache(world, clock):
    subjects = [eligible_subject(world, "CN01") for _ in range(2)]
    for subject_id in subjects:
        randomize(world, subject_id)
    clock.advance(days=28)
    counter = counting(world)
    dispensing.dispense(actor=world.actor("ph-CN01"), subject_id=subjects[0], visit_code="V2")
    # + CROSS_CHECK: dispensing checks its kit against the slot as randomization does.
    assert 0 < counter.kit_unseals <= LOT_SIZE + ARMS + CROSS_CHECK
    opened = counter.kit_unseals
    dispensing.dispense(actor=world.actor("ph-CN01"), subject_id=subjects[1], visit_code="V2")
    assert counter.kit_unseals == opened + CROSS_CHECK


def test_a_resealed_token_is_a_new_cache_key(world):
    """A kit whose token changed (key rotation re-seals) is opened again, never served stale."""
    from sqlalchemy import select

    from iwrs.db import read_session
    from iwrs.models.supply import Kit

    counter = counting(world)
    kit = read_session().scalars(select(Kit).order_by(Kit.number)).first()
    assert kit is not None
    treatment = supply_service.treatment_of(kit)
    supply_service.treatment_of(kit)
    assert counter.kit_unseals == 1
    kit.sealed_treatment = counter.seal(treatment, context=f"kit:{kit.number}")
    assert supply_service.treatment_of(kit) == treatment
    assert counter.kit_unseals == 2


def test_the_cache_is_bounded(world):
    """Least recently used entries leave once the cap is reached; nothing grows without end."""
    cache = supply_service._UnsealedKits(3)
    for n in range(5):
        cache.put((n, f"token{n}"), "A")
    assert cache.get((0, "token0")) is None and cache.get((4, "token4")) == "A"
    assert "A" not in repr(cache)


def test_a_resupply_run_with_no_top_up_due_unseals_only_what_the_emergency_check_needs(world):
    """Full shelf, no top-up: the per-arm emergency question (any arm below its minimum?) reads
    kits in pick order until every arm has its minimum, never the whole shelf."""
    from iwrs.services import resupply

    counter = counting(world)
    assert resupply.run_resupply(slot="daily") == []
    assert counter.kit_unseals <= LOT_SIZE
