"""the current blinding key's id, for online key rotation

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

import iwrs.db

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blinding_key_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("current_key_id", sa.String(length=8), nullable=False),
        sa.Column("changed_at", iwrs.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blinding_key_state")),
    )


def downgrade() -> None:
    op.drop_table("blinding_key_state")
