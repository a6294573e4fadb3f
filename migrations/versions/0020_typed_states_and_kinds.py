"""check constraints for every state and kind; randomized_on a date; the unused idempotency_key
column of randomization dropped; the slot-subject link and the stratum stored once: the link in
randomization.slot_id, a randomization's stratum in randomization_slot.stratum, a subject's
factors in its confirmed eligibility assessment (issue 14)

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-29
"""

import re
from collections.abc import Sequence
from datetime import date

import sqlalchemy as sa
from alembic import op

import iwrs.db

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

# Frozen copies of the Python sources (a migration never changes with the code): the models'
# enums build the same constraints, and tests/integration/test_schema_constraints.py holds the
# database's constraints against those enums.
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
PLACE_KINDS = ("depot", "shipment", "site", "subject", "destroyed")
CHECKS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "randomization_list": (("source", ("generated", "imported")),),
    "dispensation": (("kind", ("scheduled", "unscheduled", "replacement")),),
    "kit_request": (("kind", ("unscheduled", "replacement")),),
    "kit": (("place_kind", PLACE_KINDS),),
    "kit_event": (
        ("action", KIT_ACTIONS),
        ("from_state", KIT_STATES),
        ("to_state", KIT_STATES),
        ("to_place_kind", PLACE_KINDS),
    ),
    "kit_count": (("place_kind", PLACE_KINDS), ("state", KIT_STATES)),
    "shipment": (("kind", ("initial", "resupply", "manual", "emergency")),),
    "supply_alert": (
        (
            "kind",
            (
                "depot_shortfall",
                "emergency_resupply",
                "kit_mismatch",
                "kit_requested",
                "site_stock_dispensing",
                "site_stock_randomization",
                "stratum_exhausted",
            ),
        ),
    ),
    "unblinding": (("category", ("sae", "overdose", "pregnancy", "other")),),
    "notification": (("channel", ("smtp", "log")),),
    "user_session": (
        (
            "end_reason",
            (
                "signed_out",
                "idle",
                "deactivated",
                "signature_lockout",
                "password_reset",
                "password_changed",
                "password_set",
            ),
        ),
    ),
    "subject": (("sex", ("female", "male")),),
}
ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class StoredValueRefused(RuntimeError):
    """A stored value the new schema cannot hold: the upgrade stops and changes nothing."""


def _one_of(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _refuse_unknown_values() -> None:
    """Every stored state and kind must be one the constraint allows, named if not."""
    bind = op.get_bind()
    for table, checks in CHECKS.items():
        for column, values in checks:
            found = bind.execute(
                sa.text(
                    f"SELECT DISTINCT {column} FROM {table} "  # noqa: S608 (names from CHECKS)
                    f"WHERE {column} IS NOT NULL AND NOT ({_one_of(column, values)})"
                )
            ).scalars()
            unknown = sorted(str(v) for v in found)
            if unknown:
                raise StoredValueRefused(
                    f"{table}.{column} holds {', '.join(unknown)}, not one of "
                    f"{', '.join(values)}; correct the rows, then upgrade again"
                )


def _refuse_unparseable_days() -> None:
    """randomization.randomized_on must hold ISO dates (YYYY-MM-DD) only, named if not."""
    bad = []
    for row_id, value in op.get_bind().execute(
        sa.text("SELECT id, randomized_on FROM randomization")
    ):
        try:
            if not ISO_DAY.fullmatch(value or ""):
                raise ValueError(value)
            date.fromisoformat(value)
        except ValueError:
            bad.append(f"randomization {row_id}: {value!r}")
    if bad:
        raise StoredValueRefused(
            "randomization.randomized_on is not an ISO date (YYYY-MM-DD) in "
            f"{'; '.join(bad[:10])}{' …' if len(bad) > 10 else ''}; correct the rows, then "
            "upgrade again"
        )


def _retype_day_one(to: sa.types.TypeEngine, convert: str) -> None:
    """randomization.randomized_on retyped `to`, by a new column: SQLite's batch copy
    would CAST the text to DATE (numeric affinity: '2026-03-02' becomes 2026). On SQLite the ISO
    text is copied as it is (what SQLAlchemy's Date stores there); PostgreSQL runs `convert`."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table("randomization", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_randomization_site_day"))
        batch_op.add_column(sa.Column("day_one", to, nullable=True))
    op.execute(f"UPDATE randomization SET day_one = {'randomized_on' if sqlite else convert}")  # noqa: S608 (no input)
    with op.batch_alter_table("randomization", schema=None) as batch_op:
        batch_op.drop_column("randomized_on")
        batch_op.alter_column(
            "day_one", new_column_name="randomized_on", existing_type=to, nullable=False
        )
    op.create_index(
        op.f("ix_randomization_site_day"), "randomization", ["site_id", "randomized_on"]
    )


def _keep_the_ledger_insert_only() -> None:
    """SQLite's batch copy of kit_event drops its triggers with the old table: put back those of
    0003 (PostgreSQL alters the table in place and keeps them)."""
    if op.get_bind().dialect.name != "sqlite":
        return
    for operation in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER IF NOT EXISTS kit_event_no_{operation.lower()} BEFORE {operation} ON "
            f"kit_event BEGIN SELECT RAISE(ABORT, 'kit_event is insert-only: {operation} "
            "refused'); END"
        )


# Where the stored copies disagree with the one kept: a slot naming a subject no randomization
# puts there, a randomization whose slot names another subject, or another stratum (every
# randomization has its slot: slot_id is a non-null foreign key).
DISAGREEING_LINKS = """
SELECT s.id, s.subject_id, r.subject_id, s.used_at, r.randomized_at, s.stratum, r.stratum
FROM randomization_slot s LEFT JOIN randomization r ON r.slot_id = s.id
WHERE (s.subject_id IS NOT NULL OR r.id IS NOT NULL)
  AND (r.id IS NULL OR s.subject_id IS NULL
       OR s.subject_id <> r.subject_id OR s.stratum <> r.stratum
       OR s.used_at IS NULL OR s.used_at <> r.randomized_at)
"""


# A subject's stratum as the models derive it (iwrs.models.subjects.Subject.stratum).
DERIVED_STRATUM = (
    "(SELECT CASE WHEN a.decision = 'eligible' THEN a.stratum END FROM eligibility_assessment a "
    "WHERE a.subject_id = subject.id ORDER BY a.id DESC LIMIT 1)"
)


def _refuse_disagreeing_strata() -> None:
    """subject.stratum must be its confirmed assessment's, as derived from now on, named if not."""
    pairs = f"SELECT subject.id AS id, subject.stratum AS stored, {DERIVED_STRATUM} AS derived"
    query = (
        f"SELECT id, stored, derived FROM ({pairs} FROM subject) t "  # noqa: S608 (no input)
        "WHERE COALESCE(stored, '') <> COALESCE(derived, '')"
    )
    found = op.get_bind().execute(sa.text(query)).all()
    if found:
        shown = "; ".join(f"subject {i}: {s!r}, assessed {d!r}" for i, s, d in found[:10])
        raise StoredValueRefused(
            f"subject.stratum disagrees with the confirmed assessment in {len(found)} row(s): "
            f"{shown}; correct the rows, then upgrade again"
        )


def _refuse_disagreeing_links() -> None:
    """The copies dropped must say what the kept columns say, row by row, named if not."""
    found = op.get_bind().execute(sa.text(DISAGREEING_LINKS)).all()
    if found:
        shown = "; ".join(
            f"slot {s} names subject {sub}, its randomization subject {r} "
            f"(used {used} / {at}; stratum {ss} / {rs})"
            for s, sub, r, used, at, ss, rs in found[:10]
        )
        raise StoredValueRefused(
            f"the slot-subject link or the stratum disagrees in {len(found)} row(s): {shown}; "
            "correct the rows, then upgrade again"
        )


def _store_once() -> None:
    with op.batch_alter_table("randomization_slot", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_randomization_slot_subject_id"), type_="unique")
        batch_op.drop_constraint(
            batch_op.f("fk_randomization_slot_subject_id_subject"), type_="foreignkey"
        )
        batch_op.drop_column("subject_id")
        batch_op.drop_column("used_at")
    with op.batch_alter_table("randomization", schema=None) as batch_op:
        batch_op.drop_column("stratum")
    with op.batch_alter_table("subject", schema=None) as batch_op:
        batch_op.drop_column("stratum")


def _store_twice_again() -> None:
    with op.batch_alter_table("subject", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stratum", sa.String(length=200), nullable=True))
    op.execute(f"UPDATE subject SET stratum = {DERIVED_STRATUM}")  # noqa: S608 (no input)
    with op.batch_alter_table("randomization", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stratum", sa.String(length=100), nullable=True))
    op.execute(
        "UPDATE randomization SET stratum = (SELECT s.stratum FROM randomization_slot s "
        "WHERE s.id = randomization.slot_id)"
    )
    with op.batch_alter_table("randomization", schema=None) as batch_op:
        batch_op.alter_column("stratum", existing_type=sa.String(length=100), nullable=False)
    with op.batch_alter_table("randomization_slot", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("used_at", iwrs.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_randomization_slot_subject_id_subject"),
            "subject",
            ["subject_id"],
            ["id"],
        )
        batch_op.create_unique_constraint(
            batch_op.f("uq_randomization_slot_subject_id"), ["subject_id"]
        )
    op.execute(
        "UPDATE randomization_slot SET "
        "subject_id = (SELECT r.subject_id FROM randomization r WHERE r.slot_id = randomization_slot.id), "
        "used_at = (SELECT r.randomized_at FROM randomization r WHERE r.slot_id = randomization_slot.id)"
    )


def upgrade() -> None:
    _refuse_unknown_values()
    _refuse_unparseable_days()
    _refuse_disagreeing_links()
    _refuse_disagreeing_strata()
    _store_once()
    with op.batch_alter_table("randomization", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_randomization_idempotency_key"), type_="unique")
        batch_op.drop_column("idempotency_key")
    _retype_day_one(sa.Date(), "to_date(randomized_on, 'YYYY-MM-DD')")
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column, values in checks:
                batch_op.create_check_constraint(
                    batch_op.f(f"ck_{table}_{column}"), _one_of(column, values)
                )
    _keep_the_ledger_insert_only()


def downgrade() -> None:
    _store_twice_again()
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column, _ in checks:
                batch_op.drop_constraint(batch_op.f(f"ck_{table}_{column}"), type_="check")
    _keep_the_ledger_insert_only()
    _retype_day_one(sa.String(length=10), "to_char(randomized_on, 'YYYY-MM-DD')")
    with op.batch_alter_table("randomization", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=100), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_randomization_idempotency_key"), ["idempotency_key"]
        )
