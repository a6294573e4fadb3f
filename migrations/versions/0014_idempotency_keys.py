"""idempotency keys: the claim and the stored outcome of a signed POST (issue 13)

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29

`randomization.idempotency_key` stays (written by earlier versions, read by nobody now): keys
are scoped to their user in `idempotency_key`, so a global unique column no longer fits them.
"""

import sqlalchemy as sa
from alembic import op

import iwrs.db

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("operation", sa.String(length=40), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=True),
        sa.Column("request_digest", sa.String(length=64), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "in_progress",
                "succeeded",
                "refused",
                "released",
                name="idempotency_key_state",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("claim", sa.Integer(), nullable=False),
        sa.Column("claimed_at", iwrs.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("settled_at", iwrs.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_idempotency_key_user_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_key")),
        sa.UniqueConstraint("user_id", "key", name="uq_idempotency_key_user_key"),
    )


def downgrade() -> None:
    op.drop_table("idempotency_key")
