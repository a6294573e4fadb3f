"""eligibility drafts: the eligibility form as typed, one per subject, kept across a session
that ends mid-entry (issue 15)

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

import iwrs.db

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eligibility_draft",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("answers", sa.Text(), nullable=False),
        sa.Column("saved_at", iwrs.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("saved_by_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subject.id"], name=op.f("fk_eligibility_draft_subject_id_subject")
        ),
        sa.ForeignKeyConstraint(
            ["saved_by_id"], ["app_user.id"], name=op.f("fk_eligibility_draft_saved_by_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eligibility_draft")),
        sa.UniqueConstraint("subject_id", name=op.f("uq_eligibility_draft_subject_id")),
    )


def downgrade() -> None:
    op.drop_table("eligibility_draft")
