"""randomization counters: the study, site and stratum counts that enforce the caps and number
randomizations (issue 13), backfilled from the randomizations already made

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "randomization_counter",
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("value", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_randomization_counter")),
    )
    # The numbers so far were count(*) + 1: the study counter continues from the count. The
    # names are those of iwrs.locking.counter_name ("study", "site:<id>", "stratum:<key>").
    op.execute(
        "INSERT INTO randomization_counter (name, value) "
        "SELECT 'study', count(*) FROM randomization"
    )
    op.execute(
        "INSERT INTO randomization_counter (name, value) "
        "SELECT 'site:' || CAST(site_id AS VARCHAR), count(*) FROM randomization GROUP BY site_id"
    )
    op.execute(
        "INSERT INTO randomization_counter (name, value) "
        "SELECT 'stratum:' || stratum, count(*) FROM randomization GROUP BY stratum"
    )


def downgrade() -> None:
    op.drop_table("randomization_counter")
