"""kit requests: an investigator's signed request for an unscheduled or replacement kit

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

import iwrs.db

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kit_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("visit_code", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("requested_at", iwrs.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("requested_by_id", sa.Integer(), nullable=False),
        sa.Column("signature_id", sa.Integer(), nullable=True),
        sa.Column("dispensation_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["dispensation_id"],
            ["dispensation.id"],
            name=op.f("fk_kit_request_dispensation_id_dispensation"),
        ),
        sa.ForeignKeyConstraint(
            ["requested_by_id"],
            ["app_user.id"],
            name=op.f("fk_kit_request_requested_by_id_app_user"),
        ),
        sa.ForeignKeyConstraint(
            ["signature_id"], ["signature.id"], name=op.f("fk_kit_request_signature_id_signature")
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subject.id"], name=op.f("fk_kit_request_subject_id_subject")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kit_request")),
        sa.UniqueConstraint("dispensation_id", name=op.f("uq_kit_request_dispensation_id")),
    )
    with op.batch_alter_table("kit_request", schema=None) as batch_op:
        batch_op.create_index("ix_kit_request_subject", ["subject_id", "visit_code"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("kit_request", schema=None) as batch_op:
        batch_op.drop_index("ix_kit_request_subject")
    op.drop_table("kit_request")
