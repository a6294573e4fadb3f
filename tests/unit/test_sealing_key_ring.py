"""A key ring seals with the current key it was given and draws every nonce from its one nonce
source, for every key it holds and every ring derived from it (found by `make mutation`)."""

from __future__ import annotations

import itertools

import pytest

from blinding.sealing import NONCE_BYTES, KeyRing, key_id_for
from tests.unit.test_sealing_nonces import token_parts

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def counting_nonces():  # type: ignore[no-untyped-def]
    counter = itertools.count(1)
    return lambda size: next(counter).to_bytes(size, "big")


def test_a_ring_starts_on_the_current_key_it_is_given():
    ring = KeyRing([KEY, OTHER_KEY], current=key_id_for(OTHER_KEY))
    assert ring.key_id == key_id_for(OTHER_KEY)
    assert ring.seal("ACTIVE", context="kit:1").split(".")[1] == key_id_for(OTHER_KEY)


def test_a_ring_refuses_a_current_key_it_does_not_hold_naming_that_key_id():
    with pytest.raises(KeyError) as refused:
        KeyRing([KEY]).set_current("0badc0de")
    assert refused.value.args == ("0badc0de",)


def test_every_key_of_a_ring_and_of_its_derived_ring_draws_from_the_rings_nonce_source():
    ring = KeyRing([KEY], nonce_source=counting_nonces())
    ring.add(OTHER_KEY)
    ring.set_current(key_id_for(OTHER_KEY))
    derived = ring.derived(label="iwrs/list-fingerprint/v1")
    nonces = [token_parts(sealer.seal("ACTIVE", context="kit:1"))[0] for sealer in (ring, derived)]
    assert nonces == [n.to_bytes(NONCE_BYTES, "big") for n in (1, 2)]


def test_a_ring_shows_and_answers_for_its_key_ids_only():
    ring = KeyRing([KEY, OTHER_KEY])
    ids = sorted([key_id_for(KEY), key_id_for(OTHER_KEY)])
    assert repr(ring) == f"KeyRing(current={key_id_for(KEY)!r}, keys={ids!r})"
    assert key_id_for(OTHER_KEY) in ring and "0badc0de" not in ring
