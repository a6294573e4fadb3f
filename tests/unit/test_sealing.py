"""Sealing rules: a treatment code is stored only as a random, authenticated, row-bound token."""

from __future__ import annotations

import hashlib
import hmac
import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blinding.sealing import (
    PAD_BLOCK,
    SEAL_ERROR_MESSAGE,
    KeyRing,
    Sealer,
    SealError,
    derive_key,
    key_id_for,
    reseal,
    token_key_id,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SEALER = Sealer(KEY)
CONTEXT = "kit:1234567"
TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_."
TOKEN_SHAPE = re.compile(r"v1\.[0-9a-f]{8}\.[A-Za-z0-9_-]+")
PROPERTY = settings(deadline=None, max_examples=200)
CODES = st.text(
    alphabet=st.characters(min_codepoint=1, max_codepoint=126), min_size=0, max_size=PAD_BLOCK
)


def test_seal_round_trips():
    token = SEALER.seal("A", context=CONTEXT)
    assert SEALER.unseal(token, context=CONTEXT) == "A"


def test_token_is_ascii_with_version_and_key_id():
    token = SEALER.seal("P", context=CONTEXT)
    assert TOKEN_SHAPE.fullmatch(token)
    assert token.split(".")[1] == SEALER.key_id
    assert token_key_id(token) == SEALER.key_id


def test_two_seals_of_the_same_value_differ():
    assert SEALER.seal("A", context=CONTEXT) != SEALER.seal("A", context=CONTEXT)


def test_wrong_key_refuses():
    token = SEALER.seal("A", context=CONTEXT)
    with pytest.raises(SealError):
        Sealer(OTHER_KEY).unseal(token, context=CONTEXT)


def test_wrong_key_refuses_even_with_the_right_key_id_in_the_token():
    # A forged key id must not get a token past authentication.
    other = Sealer(OTHER_KEY)
    token = other.seal("A", context=CONTEXT)
    forged = token.replace(other.key_id, SEALER.key_id, 1)
    with pytest.raises(SealError):
        SEALER.unseal(forged, context=CONTEXT)


def test_value_copied_onto_another_kit_refuses():
    token = SEALER.seal("A", context="kit:1234567")
    with pytest.raises(SealError):
        SEALER.unseal(token, context="kit:7654321")
    with pytest.raises(SealError):
        SEALER.unseal(token, context="slot:disease=RA:17")


def test_any_single_changed_character_refuses():
    token = SEALER.seal("A", context=CONTEXT)
    for position, original in enumerate(token):
        for replacement in TOKEN_ALPHABET + "=+/ \x00é":
            if replacement == original:
                continue
            altered = token[:position] + replacement + token[position + 1 :]
            with pytest.raises(SealError):
                SEALER.unseal(altered, context=CONTEXT)


def test_truncated_or_extended_token_refuses():
    token = SEALER.seal("A", context=CONTEXT)
    for altered in (token[:-1], token + "A", token[:10], "", token + ".x", token.upper()):
        with pytest.raises(SealError):
            SEALER.unseal(altered, context=CONTEXT)


@PROPERTY
@given(junk=st.text(max_size=120))
def test_junk_never_opens_and_fails_only_with_seal_error(junk: str):
    with pytest.raises(SealError):
        SEALER.unseal(junk, context=CONTEXT)


def test_seal_error_has_one_message_that_never_names_the_plaintext():
    token = SEALER.seal("SECRET-ARM", context=CONTEXT)
    messages = set()
    for attempt in (
        lambda: Sealer(OTHER_KEY).unseal(token, context=CONTEXT),
        lambda: SEALER.unseal(token, context="kit:1"),
        lambda: SEALER.unseal(token[:-2], context=CONTEXT),
        lambda: SEALER.unseal("garbage", context=CONTEXT),
    ):
        with pytest.raises(SealError) as caught:
            attempt()
        messages.add(str(caught.value))
        assert caught.value.__cause__ is None
    assert messages == {SEAL_ERROR_MESSAGE}
    assert "SECRET" not in SEAL_ERROR_MESSAGE


def test_seal_error_message_stays_fixed_whatever_is_passed():
    assert str(SealError("plaintext A")) == SEAL_ERROR_MESSAGE


def test_reseal_opens_under_the_new_key_and_not_the_old():
    old, new = Sealer(KEY), Sealer(OTHER_KEY)
    token = old.seal("P", context=CONTEXT)
    rotated = reseal(token, context=CONTEXT, old=old, new=new)
    assert token_key_id(rotated) == new.key_id
    assert new.unseal(rotated, context=CONTEXT) == "P"
    with pytest.raises(SealError):
        old.unseal(rotated, context=CONTEXT)
    with pytest.raises(SealError):
        reseal(token, context="kit:7654321", old=old, new=new)


@PROPERTY
@given(first=CODES, second=CODES, context=st.text(min_size=1, max_size=40))
def test_token_length_says_nothing_about_the_code(first: str, second: str, context: str):
    # Every code of up to 16 bytes pads to one block, so all tokens have the same length.
    one, two = SEALER.seal(first, context=context), SEALER.seal(second, context=context)
    assert len(one) == len(two)
    assert SEALER.unseal(one, context=context) == first
    assert SEALER.unseal(two, context=context) == second


@PROPERTY
@given(data=st.data())
def test_arms_a_and_p_have_the_same_token_length_distribution(data: st.DataObject):
    contexts = data.draw(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=20))
    lengths_a = sorted(len(SEALER.seal("A", context=c)) for c in contexts)
    lengths_p = sorted(len(SEALER.seal("P", context=c)) for c in contexts)
    assert lengths_a == lengths_p


def test_longer_values_round_trip_padded_to_whole_blocks():
    long_value = "x" * 40 + "é"
    token = SEALER.seal(long_value, context=CONTEXT)
    assert SEALER.unseal(token, context=CONTEXT) == long_value
    assert len(token) > len(SEALER.seal("A", context=CONTEXT))


def test_key_id_is_a_short_public_fingerprint_not_the_key():
    assert re.fullmatch(r"[0-9a-f]{8}", SEALER.key_id)
    assert SEALER.key_id == key_id_for(KEY)
    assert SEALER.key_id != Sealer(OTHER_KEY).key_id
    assert KEY.hex()[:8] not in SEALER.key_id
    assert KEY.hex() not in repr(SEALER) and SEALER.key_id in repr(SEALER)


@pytest.mark.parametrize("key", [b"", bytes(16), bytes(31), bytes(33), "k" * 32])
def test_key_must_be_32_bytes(key: bytes):
    with pytest.raises(ValueError):
        Sealer(key)


def test_injected_nonce_source_makes_sealing_deterministic():
    def fixed(size: int) -> bytes:
        return bytes(size)

    sealer = Sealer(KEY, nonce_source=fixed)
    assert sealer.seal("A", context=CONTEXT) == sealer.seal("A", context=CONTEXT)
    assert SEALER.unseal(sealer.seal("A", context=CONTEXT), context=CONTEXT) == "A"


def test_seal_refuses_an_unbound_value_or_nul():
    with pytest.raises(ValueError):
        SEALER.seal("A", context="")
    with pytest.raises(ValueError):
        SEALER.seal("A\x00", context=CONTEXT)


def test_derived_keys_follow_hkdf_and_differ_by_label_and_from_the_key():
    """derive_key is HKDF-SHA256 (RFC 5869: no salt, info = label), as the module documents."""
    key = bytes(range(32))
    prk = hmac.new(b"\x00" * 32, key, hashlib.sha256).digest()
    expected = hmac.new(prk, b"iwrs/list-fingerprint/v1" + b"\x01", hashlib.sha256).digest()
    assert derive_key(key, label="iwrs/list-fingerprint/v1") == expected
    assert Sealer(key).derive_key(label="iwrs/list-fingerprint/v1") == expected
    assert derive_key(key, label="another purpose") not in (expected, key)
    with pytest.raises(ValueError):
        derive_key(key, label="")
    with pytest.raises(ValueError):
        derive_key(b"short", label="x")


@given(st.binary(min_size=32, max_size=32), st.text(min_size=1, max_size=40))
def test_a_derived_key_never_equals_its_key_and_depends_on_it(key: bytes, label: str):
    derived = derive_key(key, label=label)
    assert len(derived) == 32 and derived != key
    assert derive_key(bytes(b ^ 1 for b in key), label=label) != derived


# --- the key ring (online rotation) ------------------------------------------------------------


def test_ring_seals_under_the_current_key_and_opens_under_the_key_a_token_names():
    ring = KeyRing([KEY, OTHER_KEY])
    assert ring.key_id == SEALER.key_id
    old_token = ring.seal("A", context=CONTEXT)
    assert token_key_id(old_token) == SEALER.key_id
    ring.set_current(key_id_for(OTHER_KEY))
    new_token = ring.seal("P", context=CONTEXT)
    assert token_key_id(new_token) == key_id_for(OTHER_KEY)
    assert ring.unseal(old_token, context=CONTEXT) == "A"
    assert ring.unseal(new_token, context=CONTEXT) == "P"
    assert Sealer(OTHER_KEY).unseal(ring.reseal(old_token, context=CONTEXT), context=CONTEXT) == "A"
    assert ring.reseal(new_token, context=CONTEXT) == new_token  # already current: unchanged


def test_ring_refuses_a_token_of_a_key_it_does_not_hold_with_the_one_message():
    ring = KeyRing([OTHER_KEY])
    with pytest.raises(SealError) as refused:
        ring.unseal(SEALER.seal("A", context=CONTEXT), context=CONTEXT)
    assert str(refused.value) == SEAL_ERROR_MESSAGE
    with pytest.raises(KeyError):
        ring.set_current(SEALER.key_id)
    with pytest.raises(ValueError):
        KeyRing([])


def test_a_derived_ring_opens_what_any_key_of_the_ring_derived_and_seals_under_the_current():
    ring = KeyRing([KEY])
    label = "outbox temporary passwords"
    token = ring.derived(label=label).seal("secret", context=CONTEXT)
    ring.add(OTHER_KEY)
    ring.set_current(key_id_for(OTHER_KEY))
    derived = ring.derived(label=label)
    assert derived.unseal(token, context=CONTEXT) == "secret"
    assert derived.key_id == key_id_for(derive_key(OTHER_KEY, label=label))
    assert ring.derive_key(label=label) == derive_key(OTHER_KEY, label=label)
