"""indexes for the queries of the main operations and pages (issue 13: no cost that grows)

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-29
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_kit_state_type_number", "kit", ["state", "kit_type", "number"]),
    ("ix_kit_lot_state", "kit", ["lot_id", "state"]),
    ("ix_kit_event_shipment", "kit_event", ["shipment_id", "id"]),
    ("ix_kit_event_action_kit", "kit_event", ["action", "kit_id"]),
    ("ix_supply_alert_open", "supply_alert", ["kind", "site_id", "resolved_at"]),
    ("ix_randomization_site_day", "randomization", ["site_id", "randomized_on"]),
    ("ix_subject_site_id", "subject", ["site_id", "id"]),
    ("ix_subject_site_screening", "subject", ["site_id", "screening_number"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
