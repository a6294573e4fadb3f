"""kit_count: the maintained summary of kits per place, blinded lot and state (issue 13)

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

# The same recount as iwrs.services.kit_counts.REBUILD_SQL (a migration stays frozen).
BACKFILL = (
    "INSERT INTO kit_count (place_kind, place_id, lot_id, state, n) "
    "SELECT place_kind, place_id, lot_id, CAST(state AS VARCHAR(24)), count(*) FROM kit "
    "GROUP BY place_kind, place_id, lot_id, CAST(state AS VARCHAR(24))"
)


def upgrade() -> None:
    op.create_table(
        "kit_count",
        sa.Column("place_kind", sa.String(length=16), nullable=False),
        sa.Column("place_id", sa.Integer(), nullable=False),
        sa.Column("lot_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["lot_id"], ["lot.id"], name=op.f("fk_kit_count_lot_id_lot")),
        sa.PrimaryKeyConstraint(
            "place_kind", "place_id", "lot_id", "state", name=op.f("pk_kit_count")
        ),
    )
    op.execute(BACKFILL)


def downgrade() -> None:
    op.drop_table("kit_count")
