"""The "v1" token format as blinding/sealing.py documents it, reimplemented here from the
cryptography primitives: a statistician can open a token with the key alone; padding hides a
code's length within its 16-byte block; a malformed key id or a non-string token never opens
(found by `make mutation`; tests/MUTATION.md)."""

from __future__ import annotations

import base64
import itertools

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from blinding.sealing import Sealer, SealError, token_key_id

KEY = bytes(range(32))


def open_by_the_documented_format(token: str, key: bytes, context: str) -> str:
    version, key_id, body = token.split(".")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    aad = b"\x00".join((b"iwrs-seal", version.encode(), key_id.encode(), context.encode()))
    padded = AESGCM(key).decrypt(raw[:12], raw[12:], aad)
    assert len(padded) % 16 == 0
    return padded.rstrip(b"\x00").decode()


@pytest.mark.parametrize("plaintext", ["A", "PLACEBO", "x" * 16, "x" * 17, "é" * 20])
def test_a_token_opens_by_the_documented_format_with_the_key_alone(plaintext):
    token = Sealer(KEY).seal(plaintext, context="kit:1000001")
    assert open_by_the_documented_format(token, KEY, "kit:1000001") == plaintext


def test_every_plaintext_of_one_16_byte_block_gives_a_token_of_one_length():
    sealer = Sealer(KEY)
    lengths = {n: len(sealer.seal("x" * n, context="kit:1")) for n in range(1, 49)}
    assert len({lengths[n] for n in range(1, 17)}) == 1
    assert len({lengths[n] for n in range(17, 33)}) == 1
    assert lengths[1] < lengths[17] < lengths[33]


@pytest.mark.parametrize("token", ["v1.XXXXXXXX.AAAA", "v1.abc.AAAA", "v1.0123456g.AAAA", None, 7])
def test_a_token_with_a_malformed_key_id_or_not_a_string_names_no_key(token):
    with pytest.raises(SealError):
        token_key_id(token)


def test_a_token_whose_body_ends_in_any_base64_character_opens():
    # 17 bytes pad to 32: the body is 60 bytes, 80 characters, so its last one may be any of 64.
    counter = itertools.count()
    sealer = Sealer(KEY, nonce_source=lambda n: next(counter).to_bytes(n, "big"))
    ends = set()
    while len(ends) < 64:
        token = sealer.seal("x" * 17, context="kit:1")
        ends.add(token[-1])
        assert sealer.unseal(token, context="kit:1") == "x" * 17
