"""returns in two steps and the received date (issue 15): kit states pending_destruction, actions
return_lost and verify_return; the kit_return table; shipment.received_on

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

import iwrs.db

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

# Frozen copies of the Python sources (a migration never changes with the code).
KIT_STATES = (
    "at_depot",
    "reserved",
    "in_transit",
    "awaiting_receipt",
    "available",
    "dispensed",
    "returned",
    "damaged",
    "missing",
    "quarantined",
    "expired",
    "destroyed",
)
NEW_STATES = ("pending_destruction",)
KIT_ACTIONS = (
    "reserve",
    "unreserve",
    "ship",
    "deliver",
    "receive",
    "receive_damaged",
    "receive_missing",
    "quarantine",
    "release",
    "reject",
    "dispense",
    "report_damaged",
    "report_lost",
    "return",
    "expire",
    "destroy",
)
NEW_ACTIONS = ("return_lost", "verify_return")
CONDITIONS = ("unused", "partly_used", "empty", "damaged", "lost")


def _checks(states: tuple[str, ...], actions: tuple[str, ...]) -> dict[str, dict[str, tuple]]:
    """{table: {constraint name: (column, allowed values)}} of the kit state and action checks."""
    return {
        "kit": {"ck_kit_kit_state": ("state", states)},
        "kit_event": {
            "ck_kit_event_action": ("action", actions),
            "ck_kit_event_from_state": ("from_state", states),
            "ck_kit_event_to_state": ("to_state", states),
        },
        "kit_count": {"ck_kit_count_state": ("state", states)},
    }


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _recheck(states: tuple[str, ...], actions: tuple[str, ...]) -> None:
    for table, checks in _checks(states, actions).items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, (column, values) in checks.items():
                batch_op.drop_constraint(batch_op.f(name), type_="check")
                batch_op.create_check_constraint(batch_op.f(name), _one_of(column, values))
    _keep_the_ledger_insert_only()


def _keep_the_ledger_insert_only() -> None:
    """SQLite's batch copy of kit_event drops its triggers with the old table: put them back."""
    if op.get_bind().dialect.name != "sqlite":
        return
    for operation in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER IF NOT EXISTS kit_event_no_{operation.lower()} BEFORE {operation} ON "
            f"kit_event BEGIN SELECT RAISE(ABORT, 'kit_event is insert-only: {operation} "
            "refused'); END"
        )


def upgrade() -> None:
    _recheck(KIT_STATES + NEW_STATES, KIT_ACTIONS + NEW_ACTIONS)
    with op.batch_alter_table("shipment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("received_on", sa.Date(), nullable=True))
    op.create_table(
        "kit_return",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kit_id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("visit_code", sa.String(length=32), nullable=False),
        sa.Column(
            "condition",
            sa.Enum(
                *CONDITIONS,
                name="condition",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("units_returned", sa.Integer(), nullable=True),
        sa.Column("returned_on", sa.Date(), nullable=False),
        sa.Column("recorded_at", iwrs.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("recorded_by_id", sa.Integer(), nullable=True),
        sa.Column("verified_at", iwrs.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("verified_by_id", sa.Integer(), nullable=True),
        sa.Column("units_verified", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["kit_id"], ["kit.id"], name=op.f("fk_kit_return_kit_id_kit")),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subject.id"], name=op.f("fk_kit_return_subject_id_subject")
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by_id"],
            ["app_user.id"],
            name=op.f("fk_kit_return_recorded_by_id_app_user"),
        ),
        sa.ForeignKeyConstraint(
            ["verified_by_id"],
            ["app_user.id"],
            name=op.f("fk_kit_return_verified_by_id_app_user"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kit_return")),
        sa.UniqueConstraint("kit_id", name=op.f("uq_kit_return_kit_id")),
    )
    op.create_index(op.f("ix_kit_return_subject_id"), "kit_return", ["subject_id"])


def downgrade() -> None:
    bind = op.get_bind()
    found = bind.execute(
        sa.text(
            "SELECT count(*) FROM kit WHERE state IN ('pending_destruction') "
            "UNION ALL SELECT count(*) FROM kit_event "
            "WHERE action IN ('return_lost', 'verify_return')"
        )
    ).scalars()
    if any(found):
        raise RuntimeError(
            "kits are pending destruction or their ledger holds verified or lost returns; "
            "the schema before 0024 cannot hold them: downgrade refused, nothing changed"
        )
    op.drop_index(op.f("ix_kit_return_subject_id"), table_name="kit_return")
    op.drop_table("kit_return")
    with op.batch_alter_table("shipment", schema=None) as batch_op:
        batch_op.drop_column("received_on")
    _recheck(KIT_STATES, KIT_ACTIONS)
