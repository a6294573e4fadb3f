"""sealed block sizes and keyed list fingerprints

Each slot's block number and size move from two clear columns into `sealed_block` (AES-256-GCM
under the blinding key, bound to the slot, like its arm), and each list's fingerprint becomes
HMAC-SHA256 of its canonical CSV under a key derived from the blinding key (HKDF, label
"iwrs/list-fingerprint/v1") instead of a SHA-256 a database reader could brute-force.

Decision: the data conversion needs the blinding key, which is never in the database. It is
taken from the Alembic config (`iwrs init` passes the application's key) or else from
IWRS_BLINDING_KEY / the instance key file; a database holding slots without a key available
stops with a message saying so and nothing changes (the migration is one transaction). A fresh
database needs no key. Formats are frozen here (not imported from blinding.schedules), so a later
change of the application cannot change what this migration wrote.

On SQLite the columns are dropped with ALTER TABLE ... DROP COLUMN (SQLite 3.35+), never by
copying the table, which foreign keys from `randomization` would refuse; `sealed_block` keeps
a server default of '' there (PostgreSQL drops it), which the application never relies on.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

import csv
import hashlib
import hmac
import io

import sqlalchemy as sa
from alembic import context, op

from blinding.sealing import Sealer

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SLOT = "slot:{list_id}:{stratum}:{sequence}"
BLOCK = "slot-block:{list_id}:{stratum}:{sequence}"
FINGERPRINT_LABEL = "iwrs/list-fingerprint/v1"

slots_table = sa.table(
    "randomization_slot",
    sa.column("id", sa.Integer),
    sa.column("list_id", sa.Integer),
    sa.column("stratum", sa.String),
    sa.column("sequence", sa.Integer),
    sa.column("block", sa.Integer),
    sa.column("block_size", sa.Integer),
    sa.column("sealed_arm", sa.Text),
    sa.column("sealed_block", sa.Text),
)
lists_table = sa.table(
    "randomization_list", sa.column("id", sa.Integer), sa.column("fingerprint", sa.String)
)


class MissingKey(RuntimeError):
    """The database holds randomization slots and no blinding key was given."""


def _sealer() -> Sealer:
    key = context.config.attributes.get("blinding_key")
    if not key:
        from iwrs.config import Settings

        key = Settings.from_env().blinding_key
    if not key:
        raise MissingKey(
            "migration 0010 seals block sizes and re-keys list fingerprints: it needs the "
            "blinding key. Run `flask --app wsgi iwrs init` with IWRS_BLINDING_KEY set or the "
            "key file in the instance folder; nothing was changed"
        )
    return Sealer(key)


def _context(template: str, row) -> str:  # type: ignore[no-untyped-def]
    return template.format(list_id=row.list_id, stratum=row.stratum, sequence=row.sequence)


def _canonical_csv(rows: list[tuple[str, int, int, int, str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("stratum", "sequence", "block", "block_size", "arm"))
    for row in sorted(rows, key=lambda r: (r[0], r[1])):
        writer.writerow(row)
    return buffer.getvalue().encode("utf-8")


def _fingerprint(rows: list[tuple[str, int, int, int, str]], sealer: Sealer | None) -> str:
    if sealer is None:  # the unkeyed form of revisions before this one
        return hashlib.sha256(_canonical_csv(rows)).hexdigest()
    key = sealer.derive_key(label=FINGERPRINT_LABEL)
    return hmac.new(key, _canonical_csv(rows), hashlib.sha256).hexdigest()


def _set_fingerprints(
    bind, by_list: dict[int, list[tuple[str, int, int, int, str]]], sealer: Sealer | None
) -> None:  # type: ignore[no-untyped-def]
    for list_id, rows in by_list.items():
        bind.execute(
            lists_table.update()
            .where(lists_table.c.id == list_id)
            .values(fingerprint=_fingerprint(rows, sealer))
        )


def upgrade() -> None:
    bind = op.get_bind()
    # The key is found before anything changes: without it the migration stops untouched.
    has_slots = bind.execute(sa.text("SELECT count(*) FROM randomization_slot")).scalar()
    sealer = _sealer() if has_slots else None
    op.add_column(
        "randomization_slot",
        sa.Column("sealed_block", sa.Text(), nullable=False, server_default=""),
    )
    rows = bind.execute(sa.select(slots_table).order_by(slots_table.c.id)).all()
    if rows:
        assert sealer is not None
        by_list: dict[int, list[tuple[str, int, int, int, str]]] = {}
        for row in rows:
            sealed = sealer.seal(f"{row.block}/{row.block_size}", context=_context(BLOCK, row))
            bind.execute(
                slots_table.update().where(slots_table.c.id == row.id).values(sealed_block=sealed)
            )
            arm = sealer.unseal(row.sealed_arm, context=_context(SLOT, row))
            by_list.setdefault(row.list_id, []).append(
                (row.stratum, row.sequence, row.block, row.block_size, arm)
            )
        _set_fingerprints(bind, by_list, sealer)
    if bind.dialect.name != "sqlite":
        op.alter_column("randomization_slot", "sealed_block", server_default=None)
    op.drop_column("randomization_slot", "block")
    op.drop_column("randomization_slot", "block_size")


def downgrade() -> None:
    bind = op.get_bind()
    for name in ("block", "block_size"):
        op.add_column(
            "randomization_slot",
            sa.Column(name, sa.Integer(), nullable=False, server_default="0"),
        )
    rows = bind.execute(sa.select(slots_table).order_by(slots_table.c.id)).all()
    if rows:
        sealer = _sealer()
        by_list: dict[int, list[tuple[str, int, int, int, str]]] = {}
        for row in rows:
            block, _, size = sealer.unseal(
                row.sealed_block, context=_context(BLOCK, row)
            ).partition("/")
            bind.execute(
                slots_table.update()
                .where(slots_table.c.id == row.id)
                .values(block=int(block), block_size=int(size))
            )
            arm = sealer.unseal(row.sealed_arm, context=_context(SLOT, row))
            by_list.setdefault(row.list_id, []).append(
                (row.stratum, row.sequence, int(block), int(size), arm)
            )
        _set_fingerprints(bind, by_list, None)
    if bind.dialect.name != "sqlite":
        for name in ("block", "block_size"):
            op.alter_column("randomization_slot", name, server_default=None)
    op.drop_column("randomization_slot", "sealed_block")
