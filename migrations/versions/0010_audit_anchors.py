"""signed audit checkpoints (anchors) and signed verification records

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

import iwrs.db

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_anchor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("signed_at", iwrs.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("occasion", sa.String(length=16), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_anchor")),
    )
    op.create_index("ix_audit_anchor_seq", "audit_anchor", ["seq"])
    # Plain ADD COLUMNs (no table copy).
    op.add_column(
        "audit_checkpoint",
        sa.Column("full_walk", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("audit_checkpoint", sa.Column("signature", sa.String(length=128)))


def downgrade() -> None:
    with op.batch_alter_table("audit_checkpoint") as batch:
        batch.drop_column("signature")
        batch.drop_column("full_walk")
    op.drop_index("ix_audit_anchor_seq", table_name="audit_anchor")
    op.drop_table("audit_anchor")
