"""randomization_list.sealed_mapping: the column mapping an imported list was read through
(issue 15), sealed like the seed

Revision ID: 0025
Revises: 0024
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("randomization_list") as batch:
        batch.add_column(sa.Column("sealed_mapping", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("randomization_list") as batch:
        batch.drop_column("sealed_mapping")
