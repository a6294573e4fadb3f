"""the site's calendar: a time zone per site; stated assessment and visit dates

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL until the protocol is loaded, which sets each site's zone from its [[sites]] entry.
    with op.batch_alter_table("site") as batch:
        batch.add_column(sa.Column("time_zone", sa.String(length=64), nullable=True))
    with op.batch_alter_table("eligibility_assessment") as batch:
        batch.add_column(sa.Column("assessment_date", sa.Date(), nullable=True))
    with op.batch_alter_table("dispensation") as batch:
        batch.add_column(sa.Column("visit_date", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dispensation") as batch:
        batch.drop_column("visit_date")
    with op.batch_alter_table("eligibility_assessment") as batch:
        batch.drop_column("assessment_date")
    with op.batch_alter_table("site") as batch:
        batch.drop_column("time_zone")
