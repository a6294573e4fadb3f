"""`iwrs keys …`: online rotation of the blinding key (iwrs.services.keys, iwrs.keyring).

With key files (one instance folder shared by the servers):
    iwrs keys rotate-blinding        steps 1 and 2: a new key, current at once, then re-sealing
    iwrs keys reseal                 step 2 again (after a crash: resumes, skips what is done)
    iwrs keys check                  what is still under another key (exit 1 if anything)
    iwrs keys retire KEY_ID          step 3: refused while anything is under it; deletes its file
With keys in the environment: IWRS_BLINDING_KEYS_OTHER first (every server), then
    iwrs keys activate-blinding KEY_ID, check, retire (README, "Rotating the blinding key").
"""

from __future__ import annotations

import os
import secrets

import click
from flask import current_app

from blinding.sealing import key_id_for
from iwrs import config
from iwrs.cli import _require_keys, cli_actor, friendly_errors, keys_cli
from iwrs.config import BLINDING_KEYS_DIR, key_path, write_key_file
from iwrs.keyring import live_ring

BATCH = click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="rows re-sealed per transaction",
)


def _progress(column: str, done: int) -> None:
    click.echo(f"re-sealed {done} value(s) of {column}")


def _reseal(batch_size: int, sweep_after: float = 0.0) -> int:
    from iwrs.services import keys

    count = keys.reseal_all(
        actor=cli_actor(), batch_size=batch_size, progress=_progress, sweep_after=sweep_after
    )
    click.echo(f"re-sealed {count} value(s)")
    return count


@keys_cli.command("rotate-blinding")
@BATCH
@friendly_errors
def keys_rotate_blinding(batch_size: int) -> None:
    """A new blinding key, current at once for every server, then every value re-sealed in
    batches while the servers run (`services.keys.rotate_blinding_key`). The old key stays until
    `iwrs keys retire`."""
    from iwrs.services import keys

    _require_keys()
    settings = current_app.extensions["iwrs.settings"]
    if config.blinding_key_from_environment():
        raise click.ClickException(
            "the blinding key comes from IWRS_BLINDING_KEY: add the new key to "
            "IWRS_BLINDING_KEYS_OTHER on every server, then run `iwrs keys activate-blinding "
            "KEY_ID` (README, Rotating the blinding key)"
        )
    folder = settings.instance_path / BLINDING_KEYS_DIR
    main_file = key_path("blinding_key", settings.instance_path)
    if main_file.exists():  # the configured key joins the folder, so it outlives the swap below
        old = bytes.fromhex(main_file.read_text().strip())
        old_file = folder / f"{key_id_for(old)}.key"
        if not old_file.exists():
            write_key_file(old_file, old)
    new_key = secrets.token_bytes(32)
    write_key_file(folder / f"{key_id_for(new_key)}.key", new_key)  # before any value uses it
    retired_next: list[str] = []

    def configure(new_id: str, previous: str) -> None:
        """The new key becomes the configured key file once it is current."""
        staged = main_file.with_suffix(".key.new")
        write_key_file(staged, new_key)
        os.replace(staged, main_file)
        click.echo(f"blinding key {new_id} is current (was {previous}); new key in {main_file}")
        retired_next.append(previous)

    count = keys.rotate_blinding_key(
        actor=cli_actor(),
        new_key=new_key,
        batch_size=batch_size,
        progress=_progress,
        activated=configure,
    )
    click.echo(f"re-sealed {count} value(s)")
    click.echo(f"when `iwrs keys check` is clean: iwrs keys retire {retired_next[0]}")


@keys_cli.command("activate-blinding")
@click.argument("key_id")
@BATCH
@click.option("--no-reseal", is_flag=True, help="only make the key current (step 1)")
@friendly_errors
def keys_activate_blinding(key_id: str, batch_size: int, no_reseal: bool) -> None:
    """Make KEY_ID (a key every server already holds) current, then re-seal in batches."""
    import time

    from iwrs.services import keys

    _require_keys()
    try:
        previous = keys.activate_blinding_key(actor=cli_actor(), key_id=key_id)
    except ValueError as error:  # already current
        raise click.ClickException(f"KEY_ID: {error}") from None
    click.echo(f"blinding key {key_id} is current (was {previous})")
    if not no_reseal:
        refresh = current_app.extensions["iwrs.settings"].key_refresh_seconds
        _reseal(batch_size, time.monotonic() + refresh + 0.5)


@keys_cli.command("reseal")
@BATCH
@friendly_errors
def keys_reseal(batch_size: int) -> None:
    """Re-seal, in batches, every value not under the current key (resumes after a crash)."""
    _require_keys()
    _reseal(batch_size)


@keys_cli.command("check")
@friendly_errors
def keys_check() -> None:
    """What is sealed under each key; exit 1 while anything is under a key not current."""
    from iwrs.services import keys

    _require_keys()
    ring = live_ring()
    ring.refresh(force=True)
    current = ring.ring.key_id
    left = keys.remaining(actor=cli_actor())
    for key_id in sorted(set(left.values) | {k for k in left.lists if k}):
        mark = " (current)" if key_id == current else ""
        click.echo(
            f"{key_id}{mark}: {left.values.get(key_id, 0)} sealed value(s), "
            f"{left.lists.get(key_id, 0)} list fingerprint(s)"
        )
    if left.lists.get(None):
        click.echo(f"MISMATCH: {left.lists[None]} list(s) match their fingerprint under no key")
    others = sum(n for k, n in left.values.items() if k != current)
    others += sum(n for k, n in left.lists.items() if k != current)
    click.echo("clean: everything is under the current key" if not others else "not clean")
    if others:
        raise SystemExit(1)


@keys_cli.command("retire")
@click.argument("key_id")
@friendly_errors
def keys_retire(key_id: str) -> None:
    """Step 3: retire KEY_ID once nothing is under it; deletes instance/blinding_keys/KEY_ID.key."""
    from iwrs.services import keys

    _require_keys()
    settings = current_app.extensions["iwrs.settings"]
    keys.retire_blinding_key(actor=cli_actor(), key_id=key_id)
    path = settings.instance_path / BLINDING_KEYS_DIR / f"{key_id}.key"
    path.unlink(missing_ok=True)
    click.echo(f"blinding key {key_id} retired; {path} deleted")
    if any(key_id_for(k) == key_id for k in settings.blinding_keys_other):
        click.echo("remove it from IWRS_BLINDING_KEYS_OTHER on every server (next restart)")
