"""supply alerts acknowledged and resolved (who, when, why); each reader's read mark of a
notification in the in-app inbox (issue 15)

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

import iwrs.db

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("supply_alert", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("acknowledged_at", iwrs.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("acknowledged_by_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("resolved_by_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("resolution", sa.Text(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_supply_alert_acknowledged_by_id_app_user"),
            "app_user",
            ["acknowledged_by_id"],
            ["id"],
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_supply_alert_resolved_by_id_app_user"),
            "app_user",
            ["resolved_by_id"],
            ["id"],
        )
    op.create_table(
        "notification_read",
        sa.Column("notification_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("read_at", iwrs.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notification.id"],
            name=op.f("fk_notification_read_notification_id_notification"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_notification_read_user_id_app_user")
        ),
        sa.PrimaryKeyConstraint("notification_id", "user_id", name=op.f("pk_notification_read")),
    )


def downgrade() -> None:
    op.drop_table("notification_read")
    with op.batch_alter_table("supply_alert", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_supply_alert_resolved_by_id_app_user"), type_="foreignkey"
        )
        batch_op.drop_constraint(
            batch_op.f("fk_supply_alert_acknowledged_by_id_app_user"), type_="foreignkey"
        )
        batch_op.drop_column("resolution")
        batch_op.drop_column("resolved_by_id")
        batch_op.drop_column("acknowledged_by_id")
        batch_op.drop_column("acknowledged_at")
