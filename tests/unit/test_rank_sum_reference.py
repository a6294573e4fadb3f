"""The Mann-Whitney p-value against SciPy 1.17 (`scipy.stats.mannwhitneyu`, two-sided; exact, or
asymptotic with continuity and tie correction), and the DRBG's randbelow against its documented
algorithm read off the keystream (found by `make mutation`; tests/MUTATION.md)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from blinding.drbg import Drbg
from blinding.ranks import rank_sum_p_value

SEED = bytes(range(32))


@pytest.mark.parametrize(
    ("first", "second", "scipy"),
    [
        # ties: asymptotic with the tie term
        ([1, 2, 2, 3, 5, 5, 5, 8], [2, 3, 4, 5, 6, 7, 7, 9, 10], 0.13198267564135233),
        # 30 x 30 > EXACT_MAX, no ties: asymptotic without it
        (list(range(0, 120, 4)), list(range(1, 121, 4)), 0.8302552839111963),
        # 20 x 20 = EXACT_MAX, no ties: still exact (asymptotic would give 0.7972)
        (list(range(0, 80, 4)), list(range(3, 83, 4)), 0.799407187161697),
        # a tie at the top of the ranks
        ([1, 3, 9, 9], [2, 4, 9, 9, 9], 0.6873218011739946),
        # a variance of exactly 1
        ([1, 1], [1, 2], 0.6170750774519738),
    ],
)
def test_rank_sum_p_value_matches_scipy(first, second, scipy):
    assert rank_sum_p_value(first, second) == pytest.approx(scipy, rel=1e-12)


def test_rank_sum_p_value_is_one_for_an_empty_sample_or_one_value_throughout():
    assert rank_sum_p_value([], [1, 2]) == 1.0
    assert rank_sum_p_value([5, 5], [5, 5, 5]) == 1.0


def test_randbelow_is_the_documented_rejection_sampling_of_the_keystream():
    n = 2**63 + 1  # rejects almost half of all 8-byte words: every rejection shows
    stream, expected = Drbg(SEED, "r"), []
    while len(expected) < 64:
        x = int.from_bytes(stream.read(8), "big")
        if x < 2**64 - (2**64 % n):
            expected.append(x % n)
    drbg = Drbg(SEED, "r")
    assert [drbg.randbelow(n) for _ in range(64)] == expected
    with pytest.raises(ValueError):
        drbg.randbelow(0)


def test_the_unlabelled_stream_is_chacha20_under_the_documented_nonce():
    nonce = bytes(4) + hashlib.sha256(b"iwrs-drbg-v1/").digest()[:12]
    keystream = Cipher(algorithms.ChaCha20(SEED, nonce), mode=None).encryptor()
    assert Drbg(SEED).read(64) == keystream.update(bytes(64))
