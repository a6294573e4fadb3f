"""The running server's blinding key ring, and how it learns of a new key without a restart.

Where keys live (never in the database):
  - the configured key: IWRS_BLINDING_KEY (hex) or instance/blinding_key.key;
  - more keys: IWRS_BLINDING_KEYS_OTHER (hex, comma-separated) and instance/blinding_keys/
    <key id>.key (one per file, mode 0600; `iwrs keys rotate-blinding` writes them).
Which key is current (seals new values) is one row in the database, `blinding_key_state`,
holding only the current key's public id; no row means the configured key.

How a server follows a rotation (decisions):
  - Unseal needs no coordination: a token names its key, and every key of the ring opens what it
    sealed. A token naming a key the ring lacks makes the server reload its key sources (files,
    at most once a second) and try again; still unknown, it fails as any bad token does.
  - Seal must use the current key: before sealing (or deriving a keyed digest), a server re-reads
    the current id at most every `key_refresh_seconds` (IWRS_KEY_REFRESH_SECONDS, default 2),
    on a connection of its own, by one thread at a time (the others go on with the id they have:
    never a wait). A new id it does not hold makes it reload its sources; if the key is still
    not there (distributed too late) it keeps sealing under the key it has and logs a warning:
    nothing fails, and the re-seal and `iwrs keys check` catch those values.
  - The ring only grows in a running process: a retired key is dropped at the next restart.
    That is harmless (nothing is sealed under it any more) and means a reload never races with
    a request that is opening an old token.
So a rotation needs no restart when the instance folder is shared by the servers; with keys in
the environment it needs two rolling restarts (README, "Rotating the blinding key").
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask, current_app
from sqlalchemy import select

from blinding.sealing import KeyRing, SealError, token_key_id
from iwrs.config import Settings, blinding_key_files
from iwrs.models.keys import BlindingKeyState

log = logging.getLogger(__name__)
RELOAD_AT_MOST_EVERY = 1.0  # seconds between reloads caused by tokens naming unknown keys


def ring_keys(settings: Settings) -> list[bytes]:
    """Every blinding key this server can find, the configured one first."""
    assert settings.blinding_key is not None, "the blinding key is not configured"
    keys = [settings.blinding_key, *settings.blinding_keys_other]
    return keys + blinding_key_files(settings.instance_path)


class LiveRing:
    """The application's ring (`iwrs.services.supply.sealer()`): a KeyRing that follows the
    current key id in the database and reloads its key sources when it meets an unknown key.
    Seal/unseal/key_id/derive_key as `blinding.sealing.Sealer`; thread-safe."""

    def __init__(self, app: Flask) -> None:
        self._app = app
        self._settings: Settings = app.extensions["iwrs.settings"]
        self.ring = KeyRing(ring_keys(self._settings))
        self._checked = float("-inf")
        self._reloaded = float("-inf")
        self._refreshing = threading.Lock()

    def __repr__(self) -> str:
        return f"LiveRing({self.ring!r})"

    # --- what callers use -------------------------------------------------------------------

    @property
    def key_id(self) -> str:
        """The current key's id (re-read from the database when stale)."""
        self.refresh()
        return self.ring.key_id

    def seal(self, plaintext: str, *, context: str) -> str:
        self.refresh()
        return self.ring.seal(plaintext, context=context)

    def seal_held(self, plaintext: str, *, context: str) -> str:
        """Seal under the key this server holds now, without re-reading the current id: for a
        seal inside a write transaction, whose caller refreshed just before it began. Reading
        the id takes a second pooled connection; on SQLite, with every other pooled connection
        waiting for the write lock this transaction holds, that waited out the busy timeout
        (16 concurrent randomizations: one held the lock 5 s, the rest answered `busy`)."""
        return self.ring.seal(plaintext, context=context)

    def unseal(self, token: str, *, context: str) -> str:
        try:
            return self.ring.unseal(token, context=context)
        except SealError:
            if token_key_id(token) in self.ring or not self.reload():
                raise
        return self.ring.unseal(token, context=context)

    def derive_key(self, *, label: str) -> bytes:
        self.refresh()
        return self.ring.derive_key(label=label)

    def derived(self, *, label: str) -> KeyRing:
        self.refresh()
        return self.ring.derived(label=label)

    def reseal(self, token: str, *, context: str) -> str:
        """`token` under the current key as this server holds it (unchanged if it already is)."""
        if token_key_id(token) not in self.ring:
            self.reload()
        return self.ring.reseal(token, context=context)

    # --- following a rotation ---------------------------------------------------------------

    def add(self, key: bytes) -> str:
        return self.ring.add(key)

    def use(self, key_id: str) -> None:
        """Seal under `key_id` now (after this process changed the current id itself)."""
        if key_id not in self.ring:
            self.reload()
        self.ring.set_current(key_id)
        self._checked = time.monotonic()

    def reload(self) -> bool:
        """Read the key sources again (at most once a second); True if a key was added."""
        now = time.monotonic()
        if now - self._reloaded < RELOAD_AT_MOST_EVERY:
            return False
        self._reloaded = now
        before = self.ring.key_ids
        for key in ring_keys(self._settings):
            self.ring.add(key)
        return self.ring.key_ids != before

    def refresh(self, *, force: bool = False) -> None:
        """Re-read the current key id if the last read is older than key_refresh_seconds."""
        if not force and time.monotonic() - self._checked < self._settings.key_refresh_seconds:
            return
        if not self._refreshing.acquire(blocking=force):
            return  # another thread is reading it: go on with the id we have
        try:
            self._follow(current_key_id(self._app))
            self._checked = time.monotonic()
        finally:
            self._refreshing.release()

    def _follow(self, key_id: str | None) -> None:
        if key_id is None or key_id == self.ring.key_id:
            return
        if key_id not in self.ring:
            self._reloaded = float("-inf")
            self.reload()
        if key_id in self.ring:
            self.ring.set_current(key_id)
        else:
            log.warning(
                "blinding key %s is current but this server does not hold it; sealing under "
                "%s until it is distributed (see README, Rotating the blinding key)",
                key_id,
                self.ring.key_id,
            )


def current_key_id(app: Flask) -> str | None:
    """The current key id the database names (None: no rotation yet, the configured key)."""
    with app.extensions["iwrs.engine"].connect() as connection:
        return connection.execute(
            select(BlindingKeyState.current_key_id).where(BlindingKeyState.id == 1)
        ).scalar_one_or_none()


def live_ring() -> LiveRing:
    """This application's ring, made at first use."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    ring = app.extensions.get("iwrs.sealer")
    if ring is None:
        ring = app.extensions.setdefault("iwrs.sealer", LiveRing(app))
    return ring
