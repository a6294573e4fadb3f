"""sessions and sign-in: server-side sessions, a sign-in lock apart from the account lock,
an e-signature failure counter, token expiry

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 15:45:00
"""

import sqlalchemy as sa
from alembic import op

import iwrs.db

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_session",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", iwrs.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", iwrs.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", iwrs.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_user_session_user_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_session")),
        sa.UniqueConstraint("key_sha256", name=op.f("uq_user_session_key_sha256")),
    )
    with op.batch_alter_table("user_session", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_user_session_user_id"), ["user_id"], unique=False)
    with op.batch_alter_table("app_user", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("sign_in_locked_until", iwrs.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("failed_signatures", sa.Integer(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("expires_at", iwrs.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+): a batch copy of app_user would be refused
    # by the foreign keys that point at it.
    op.drop_column("app_user", "failed_signatures")
    op.drop_column("app_user", "sign_in_locked_until")
    with op.batch_alter_table("user_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_user_session_user_id"))
    op.drop_table("user_session")
