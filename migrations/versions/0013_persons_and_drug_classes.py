"""duplicate persons (keyed person hash) and signed drug classifications

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

import iwrs.db

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subject", schema=None) as batch_op:
        batch_op.add_column(sa.Column("person_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("distinct_person_signature_id", sa.Integer(), nullable=True))
        batch_op.create_index("ix_subject_person_key", ["person_key"], unique=False)
        batch_op.create_foreign_key(
            "fk_subject_distinct_person_signature_id_signature",
            "signature",
            ["distinct_person_signature_id"],
            ["id"],
        )
    op.create_table(
        "drug_classification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("drug", sa.String(length=120), nullable=False),
        sa.Column("drug_class", sa.String(length=64), nullable=False),
        sa.Column("classified_at", iwrs.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("classified_by_id", sa.Integer(), nullable=False),
        sa.Column("signature_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subject.id"], name=op.f("fk_drug_classification_subject_id_subject")
        ),
        sa.ForeignKeyConstraint(
            ["classified_by_id"],
            ["app_user.id"],
            name=op.f("fk_drug_classification_classified_by_id_app_user"),
        ),
        sa.ForeignKeyConstraint(
            ["signature_id"],
            ["signature.id"],
            name=op.f("fk_drug_classification_signature_id_signature"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drug_classification")),
        sa.UniqueConstraint("subject_id", "drug", name=op.f("uq_drug_classification_subject_id")),
    )
    op.create_index(
        "ix_drug_classification_subject_id", "drug_classification", ["subject_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_drug_classification_subject_id", table_name="drug_classification")
    op.drop_table("drug_classification")
    with op.batch_alter_table("subject", schema=None) as batch_op:
        batch_op.drop_constraint(
            "fk_subject_distinct_person_signature_id_signature", type_="foreignkey"
        )
        batch_op.drop_index("ix_subject_person_key")
        batch_op.drop_column("distinct_person_signature_id")
        batch_op.drop_column("person_key")
