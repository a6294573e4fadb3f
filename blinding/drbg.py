"""A documented deterministic random stream: ChaCha20 keystream keyed by a 256-bit seed.

Algorithm "chacha20-rejection-v1", so a statistician can regenerate any list from its seed:
  key    = the 32-byte seed
  nonce  = 4 zero bytes (the initial block counter, as `cryptography` lays out its 16-byte
           nonce) + the first 12 bytes of SHA-256(b"iwrs-drbg-v1/" + label): one stream per
           label (for example one per stratum), so streams never overlap
  stream = ChaCha20(key, nonce) applied to zero bytes (the RFC 8439 block function)
  randbelow(n): take 8 bytes big-endian as x; reject x >= 2**64 - (2**64 mod n) and take the
           next 8 bytes; return x mod n (unbiased for every n)
Without the seed the stream is unpredictable (ChaCha20 is a stream cipher); with it, every
value is reproducible byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableSequence, Sequence
from typing import TypeVar

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

ALGORITHM = "chacha20-rejection-v1"
SEED_BYTES = 32
T = TypeVar("T")


class Drbg:
    """A reproducible random stream for one (seed, label)."""

    def __init__(self, seed: bytes, label: str = "") -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"seed must be {SEED_BYTES} bytes (256 bits), got {len(seed)}")
        nonce = bytes(4) + hashlib.sha256(b"iwrs-drbg-v1/" + label.encode()).digest()[:12]
        self._encryptor = Cipher(algorithms.ChaCha20(seed, nonce), mode=None).encryptor()

    def read(self, count: int) -> bytes:
        """The next `count` bytes of the keystream."""
        return self._encryptor.update(bytes(count))

    def randbelow(self, n: int) -> int:
        """A uniform integer in [0, n) by rejection sampling (no modulo bias)."""
        if n <= 0:
            raise ValueError("n must be positive")
        limit = 2**64 - (2**64 % n)
        while True:
            x = int.from_bytes(self.read(8), "big")
            if x < limit:
                return x % n

    def choice(self, items: Sequence[T]) -> T:
        return items[self.randbelow(len(items))]

    def shuffle(self, items: MutableSequence[T]) -> None:
        """Fisher-Yates, in place."""
        for i in range(len(items) - 1, 0, -1):
            j = self.randbelow(i + 1)
            items[i], items[j] = items[j], items[i]
