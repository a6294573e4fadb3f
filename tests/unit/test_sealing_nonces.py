"""Every seal draws a fresh nonce, so no two sealed values share a nonce or a ciphertext body
(issue 14: a sealer with a fixed nonce passed every test, because the tests compared whole
tokens, which differ by their context-bound tag alone). With one nonce reused, AES-GCM gives the
same keystream: kits of the same treatment would carry the same ciphertext body, and a dump
would show which kits share an arm.

`assert_fresh_nonces` decodes the "v1" token (blinding/sealing.py: "v1.<key_id>.<base64url(
nonce(12) + ciphertext + tag(16))>") and compares nonces and ciphertext bodies; the database
test (tests/integration/test_blinding_at_rest.py) applies it to stored kits and slots."""

from __future__ import annotations

import base64
from collections.abc import Iterable

import pytest

from blinding.sealing import NONCE_BYTES, KeyRing, Sealer

KEY = bytes(range(32))
TAG_BYTES = 16


def token_parts(token: str) -> tuple[bytes, bytes]:
    """(nonce, ciphertext body without the tag) of a "v1" token."""
    version, _key_id, body = token.split(".")
    assert version == "v1"
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    return raw[:NONCE_BYTES], raw[NONCE_BYTES:-TAG_BYTES]


def assert_fresh_nonces(tokens: Iterable[str]) -> None:
    """No two tokens share a nonce, and no two share a ciphertext body."""
    parts = [token_parts(t) for t in tokens]
    assert len(parts) > 1
    nonces = [nonce for nonce, _ in parts]
    bodies = [body for _, body in parts]
    assert len(set(nonces)) == len(nonces), "a nonce was used twice"
    assert len(set(bodies)) == len(bodies), "two sealed values share a ciphertext body"


def seal_many(sealer: Sealer | KeyRing) -> list[str]:
    """The same plaintexts, many times, under one context and under many."""
    tokens = [sealer.seal("ACTIVE", context="kit:1000001") for _ in range(50)]
    tokens += [sealer.seal("ACTIVE", context=f"kit:{1000002 + n}") for n in range(50)]
    tokens += [sealer.seal("PLACEBO", context=f"kit:{1000002 + n}") for n in range(50)]
    return tokens


@pytest.mark.parametrize("make", [Sealer, lambda key: KeyRing([key])], ids=["sealer", "ring"])
def test_no_two_seals_share_a_nonce_or_a_ciphertext_body(make):
    assert_fresh_nonces(seal_many(make(KEY)))


def test_a_fixed_nonce_sealer_is_caught_although_its_whole_tokens_differ():
    """The check itself is tested: the mutant of issue 14 (one nonce for every seal) fails it,
    while a comparison of whole tokens (different contexts, hence different tags) lets it by."""
    fixed = Sealer(KEY, nonce_source=lambda n: b"\0" * n)
    tokens = [fixed.seal("ACTIVE", context=f"kit:{1000000 + n}") for n in range(10)]
    assert len(set(tokens)) == len(tokens), "whole tokens differ: the old test passed"
    assert len({token_parts(t)[1] for t in tokens}) == 1, "same treatment, same body"
    with pytest.raises(AssertionError, match="nonce"):
        assert_fresh_nonces(tokens)
