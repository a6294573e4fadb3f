"""Sealing of treatment codes: AES-256-GCM, a fresh nonce per value, bound to its row.

Format "v1" (a statistician or auditor can reimplement it):
  key_id = first 8 hex digits of HMAC-SHA256(key, b"iwrs-key-id"): a public fingerprint
  padded = UTF-8 plaintext + NUL bytes up to a multiple of 16 bytes (at least 16), so every
           plaintext of up to 16 bytes (every arm or treatment code of up to 16 ASCII
           characters) gives a token of the same length: the length says nothing about the arm
  aad    = b"iwrs-seal" NUL b"v1" NUL key_id NUL context (the row binding, e.g. "kit:1234567")
  token  = "v1." + key_id + "." + base64url(nonce(12) + AESGCM(key).encrypt(nonce, padded, aad)),
           unpadded and canonical (any other spelling of the same bytes is refused)
A value copied onto another row, a changed character, or the wrong key all fail the same way,
with one message that names neither plaintext nor key.

Derived keys (`derive_key`): HKDF-SHA256 (RFC 5869) of the blinding key, no salt, info = the
label (e.g. "iwrs/list-fingerprint/v1"), 32 bytes. A derived key is independent of the sealing
key and of every other label's key, lives only in memory, and changes when the key is rotated.

Key ring (`KeyRing`, for online rotation): a server holds the current key and the previous (or
next) ones. `seal` always uses the current key; `unseal` picks the key the token names by its
key id, so values sealed under any key of the ring keep opening while a rotation re-seals them in
batches. A token naming a key the ring does not hold fails like any other (SealError, the one
message). Which key is current, and where keys come from, is the application's business
(iwrs.keyring); this module stays pure.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable, Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
PAD_BLOCK = 16
KEY_ID_HEX = 8
SEAL_ERROR_MESSAGE = "sealed value cannot be opened: wrong key, wrong record, or altered"

NonceSource = Callable[[int], bytes]


class SealError(Exception):
    """A token that does not open: wrong key, altered, malformed, or sealed for another row."""

    def __init__(self, *_: object) -> None:
        # Always the one fixed message, whatever a caller passes: it can never carry a plaintext.
        super().__init__(SEAL_ERROR_MESSAGE)


def key_id_for(key: bytes) -> str:
    """The public fingerprint of a key; it reveals nothing about the key itself."""
    return hmac.new(key, b"iwrs-key-id", hashlib.sha256).hexdigest()[:KEY_ID_HEX]


def token_key_id(token: str) -> str:
    """The key id a token names (for key rotation: which key opens it); SealError if malformed."""
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3 or parts[0] != VERSION or not _is_key_id(parts[1]):
        raise SealError()
    return parts[1]


def derive_key(key: bytes, *, label: str) -> bytes:
    """A 32-byte key for one purpose (`label`), derived from `key` by HKDF-SHA256 (see above)."""
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        raise ValueError(f"the key must be {KEY_BYTES} bytes")
    if not label:
        raise ValueError("a derived key needs a label naming its purpose")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=label.encode())
    return hkdf.derive(bytes(key))


class Sealer:
    """Seals and unseals short values with one 32-byte key, each bound to a context (its row)."""

    def __init__(self, key: bytes, *, nonce_source: NonceSource = os.urandom) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
            raise ValueError(f"the sealing key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(bytes(key))
        self._key = bytes(key)
        self._nonce_source = nonce_source
        self.key_id: str = key_id_for(bytes(key))

    def __repr__(self) -> str:
        return f"Sealer(key_id={self.key_id!r})"

    def derive_key(self, *, label: str) -> bytes:
        """This key's derived key for `label` (HKDF, see the module): for keyed digests."""
        return derive_key(self._key, label=label)

    def seal(self, plaintext: str, *, context: str) -> str:
        """A fresh, randomized token for `plaintext` that opens only under this key and context."""
        if not context:
            raise ValueError("context must name the record the value belongs to")
        encoded = plaintext.encode("utf-8")
        if b"\x00" in encoded:
            raise ValueError("a sealed value may not contain NUL characters")
        nonce = self._nonce_source(NONCE_BYTES)
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"the nonce source must return {NONCE_BYTES} bytes")
        sealed = self._aead.encrypt(nonce, _pad(encoded), self._aad(context))
        body = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")
        return f"{VERSION}.{self.key_id}.{body}"

    def unseal(self, token: str, *, context: str) -> str:
        """The plaintext of a token sealed by this key for this context; SealError otherwise."""
        if token_key_id(token) != self.key_id or not isinstance(context, str):
            raise SealError()
        raw = _decode_body(token.split(".")[2])
        try:
            padded = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._aad(context))
        except InvalidTag:
            raise SealError() from None
        try:
            return padded.rstrip(b"\x00").decode("utf-8")
        except UnicodeDecodeError:
            raise SealError() from None

    def _aad(self, context: str) -> bytes:
        return b"\x00".join(
            (b"iwrs-seal", VERSION.encode(), self.key_id.encode(), context.encode("utf-8"))
        )


class KeyRing:
    """Several sealers by key id; the current one seals, the one a token names unseals it.

    Duck-compatible with `Sealer` (seal, unseal, key_id, derive_key): code that holds "the
    sealer" works unchanged when handed a ring."""

    def __init__(
        self,
        keys: Iterable[bytes],
        *,
        current: str | None = None,
        nonce_source: NonceSource = os.urandom,
    ) -> None:
        self._nonce_source = nonce_source
        self._sealers: dict[str, Sealer] = {}
        first = None
        for key in keys:
            key_id = self.add(key)
            first = first or key_id
        if first is None:
            raise ValueError("a key ring needs at least one key")
        self._current = first
        if current is not None:
            self.set_current(current)

    def __repr__(self) -> str:
        return f"KeyRing(current={self._current!r}, keys={sorted(self._sealers)!r})"

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._sealers

    @property
    def key_id(self) -> str:
        """The current key's id (what `seal` writes into each token)."""
        return self._current

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._sealers)

    def add(self, key: bytes) -> str:
        """Hold `key` too (idempotent); returns its key id. The current key does not change."""
        sealer = Sealer(key, nonce_source=self._nonce_source)
        if sealer.key_id not in self._sealers:
            # Copy on write: a thread reading the ring meanwhile sees the old or the new dict,
            # never one that changes under it.
            self._sealers = {**self._sealers, sealer.key_id: sealer}
        return sealer.key_id

    def set_current(self, key_id: str) -> None:
        """Seal under `key_id` from now on; KeyError if the ring does not hold it."""
        if key_id not in self._sealers:
            raise KeyError(key_id)
        self._current = key_id

    def sealer_for(self, key_id: str) -> Sealer:
        """The sealer of one key of the ring; KeyError if the ring does not hold it."""
        return self._sealers[key_id]

    def seal(self, plaintext: str, *, context: str) -> str:
        return self._sealers[self._current].seal(plaintext, context=context)

    def unseal(self, token: str, *, context: str) -> str:
        sealer = self._sealers.get(token_key_id(token))
        if sealer is None:
            raise SealError()
        return sealer.unseal(token, context=context)

    def derive_key(self, *, label: str) -> bytes:
        """The current key's derived key for `label` (see the module)."""
        return self._sealers[self._current].derive_key(label=label)

    def derived(self, *, label: str) -> KeyRing:
        """A ring of every key's derived key for `label`, current = the current key's. Values
        sealed under a derived key carry the derived key's own id, and keep opening for as long
        as the key they derive from is in the ring."""
        keys = [self._sealers[self._current].derive_key(label=label)]
        keys += [s.derive_key(label=label) for i, s in self._sealers.items() if i != self._current]
        return KeyRing(keys, nonce_source=self._nonce_source)

    def reseal(self, token: str, *, context: str) -> str:
        """`token` sealed afresh under the current key (unchanged if it already is)."""
        if token_key_id(token) == self._current:
            return token
        return self.seal(self.unseal(token, context=context), context=context)


def reseal(token: str, *, context: str, old: Sealer, new: Sealer) -> str:
    """Key rotation of one value: open under `old`, seal afresh under `new`, same context."""
    return new.seal(old.unseal(token, context=context), context=context)


def _pad(encoded: bytes) -> bytes:
    # Round up to whole blocks, never below one block, so short codes all encrypt to equal length.
    size = max(PAD_BLOCK, -(-len(encoded) // PAD_BLOCK) * PAD_BLOCK)
    return encoded.ljust(size, b"\x00")


def _is_key_id(text: str) -> bool:
    return len(text) == KEY_ID_HEX and all(c in "0123456789abcdef" for c in text)


def _decode_body(body: str) -> bytes:
    # Refuse every non-canonical spelling, so a changed character can never decode to the same
    # bytes (base64's unused low bits in the last character would otherwise be ignored).
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise SealError() from None
    canonical = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    if canonical != body or len(raw) < NONCE_BYTES + PAD_BLOCK + 16:
        raise SealError()
    return raw
