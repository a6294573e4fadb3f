"""scheduled jobs' lease rows; outbox claims (state, claimed_at, attempts)

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

import iwrs.db

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

JOBS = ("notify", "resupply_daily", "resupply_intraday", "expiry", "checkpoint")


def upgrade() -> None:
    lease = op.create_table(
        "job_lease",
        sa.Column("job", sa.String(length=32), nullable=False),
        sa.Column("last_tick", iwrs.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", iwrs.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_worker", sa.String(length=120), nullable=True),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("job", name=op.f("pk_job_lease")),
    )
    op.bulk_insert(lease, [{"job": job, "runs": 0} for job in JOBS])
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "state",
                sa.Enum(
                    "queued",
                    "sending",
                    "sent",
                    name="outbox_state",
                    native_enum=False,
                    create_constraint=True,
                    length=8,
                ),
                server_default="queued",
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column("claimed_at", iwrs.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("last_error", sa.String(length=200), nullable=True))
        batch_op.create_index("ix_notification_state", ["state"], unique=False)
    op.execute("UPDATE notification SET state = 'sent' WHERE sent_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.drop_index("ix_notification_state")
        batch_op.drop_column("last_error")
        batch_op.drop_column("attempts")
        batch_op.drop_column("claimed_by")
        batch_op.drop_column("claimed_at")
        # The CHECK on `state` first: SQLite's batch copy would otherwise keep it, naming a
        # column that no longer exists.
        batch_op.drop_constraint(batch_op.f("ck_notification_outbox_state"), type_="check")
        batch_op.drop_column("state")
    op.drop_table("job_lease")
