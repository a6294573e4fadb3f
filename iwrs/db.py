"""Engine and session set-up, the declarative Base, and the transaction every use case runs in."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from flask import Flask, current_app, g, has_app_context
from sqlalchemy import DateTime, Engine, Enum, MetaData, create_engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from iwrs.clock import as_utc
from iwrs.config import Settings
from iwrs.errors import Busy
from iwrs.locking import RETRY_AFTER_SECONDS, is_busy

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def enum_column(cls: type[enum.Enum], name: str, *, length: int = 24) -> Enum:
    """A state column stored as its value in VARCHAR with a CHECK constraint (the same on
    SQLite and PostgreSQL), so the database also refuses a state the code does not know."""
    return Enum(
        cls,
        native_enum=False,
        create_constraint=True,
        length=length,
        name=name,
        values_callable=lambda members: [m.value for m in members],
    )


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return as_utc(value) if value is not None else None


def make_engine(
    url: str,
    *,
    lock_timeout_ms: int = 5000,
    idle_in_transaction_timeout_ms: int = 30000,
    sqlite_busy_timeout_ms: int = 5000,
) -> Engine:
    """An engine with the pragmas, locking and bounded waits this application relies on (the
    lock order and the timeouts: iwrs/locking.py; the settings: iwrs.config.Settings).

    PostgreSQL: every connection starts with `lock_timeout` (a wait for a row lock ends with
    SQLSTATE 55P03, the request gets 503 `busy`) and `idle_in_transaction_session_timeout` (a
    transaction whose process froze is ended by the server, its locks released). SQLite: the
    busy timeout bounds the wait for the single write lock ("database is locked")."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": sqlite_busy_timeout_ms / 1000})
        _configure_sqlite(engine, sqlite_busy_timeout_ms)
        return engine
    options = (
        f"-c lock_timeout={lock_timeout_ms} "
        f"-c idle_in_transaction_session_timeout={idle_in_transaction_timeout_ms}"
    )
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        connect_args={"options": options},
    )


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    # pysqlite's own transaction handling is switched off so that we emit BEGIN ourselves:
    # a write unit starts with BEGIN IMMEDIATE, taking SQLite's write lock before it reads
    # anything it will decide on; reads use a deferred BEGIN and never block writers (WAL).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        write = connection.get_execution_options().get("iwrs_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def init_app(app: Flask, settings: Settings) -> None:
    engine = make_engine(
        settings.database_url,
        lock_timeout_ms=settings.db_lock_timeout_ms,
        idle_in_transaction_timeout_ms=settings.db_idle_in_transaction_timeout_ms,
        sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
    )
    app.extensions["iwrs.engine"] = engine
    app.extensions["iwrs.sessionmaker"] = sessionmaker(engine, expire_on_commit=False)
    app.teardown_appcontext(_close_read_session)


def long_report(session: Session) -> None:
    """Lift `idle_in_transaction_session_timeout` for `session`'s current transaction only
    (PostgreSQL `SET LOCAL`; nothing on SQLite): for the operator's whole-trial reports (`supply
    check-ledger`, `audit reconcile`), which read in one transaction and then replay in Python
    for minutes at 100,000 subjects between two statements.

    Decision: the timeout exists to free the locks of a request whose process froze; a report
    takes no row locks and is run by an operator who sees it, so its transaction may stay idle
    while Python works. Call it first in the transaction (it opens one); it ends with it."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL idle_in_transaction_session_timeout = 0"))


def engine() -> Engine:
    return current_app.extensions["iwrs.engine"]


def read_session() -> Session:
    """The read-only session of the current request or command (closed at teardown)."""
    if "iwrs_read_session" not in g:
        g.iwrs_read_session = current_app.extensions["iwrs.sessionmaker"]()
    return g.iwrs_read_session


def _close_read_session(_exc: BaseException | None) -> None:
    session = g.pop("iwrs_read_session", None)
    if session is not None:
        session.close()


@contextmanager
def transaction() -> Iterator[Session]:
    """One use case's unit of work: a fresh session, committed together or not at all.

    On SQLite the transaction takes the write lock at BEGIN; on PostgreSQL rows are locked
    where the decision is made (`with_for_update`), in the one order iwrs/locking.py writes
    down. The audit chain is appended in the session's before_commit hook, so the chain head is
    locked last and held only through commit. A wait that runs out (lock or busy timeout,
    deadlock) rolls the whole unit back and raises `Busy` (503, rule `busy`, retry later).
    """
    session: Session = current_app.extensions["iwrs.sessionmaker"]()
    try:
        session.connection(execution_options={"iwrs_write": True})
        yield session
        session.commit()
        # The request's read session would otherwise keep its older snapshot (SQLite).
        if "iwrs_read_session" in g:
            g.iwrs_read_session.rollback()
    except DBAPIError as error:
        session.rollback()
        if is_busy(error):
            raise busy_error() from error
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def busy_error() -> Busy:
    """The refusal for a wait that ran out: nothing was saved; retry after a moment. Noted on
    the request (`g`), so its answer carries Retry-After whichever handler renders the refusal
    (a page that shows it in place, or the error handler: iwrs.web)."""
    if has_app_context():
        g.iwrs_retry_after = RETRY_AFTER_SECONDS
    return Busy(
        "the database is busy with another request on the same records; nothing was saved. "
        f"Try again in {RETRY_AFTER_SECONDS} seconds.",
        retry_after=RETRY_AFTER_SECONDS,
    )


def migrations_config(url: str, connection: Any = None) -> Any:
    """An Alembic config pointing at the top-level migrations/ folder."""
    from pathlib import Path

    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option(
        "script_location", str(Path(__file__).resolve().parent.parent / "migrations")
    )
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade_schema(target_engine: Engine, *, blinding_key: bytes | None = None) -> None:
    """Bring the schema to the newest migration (only ever called when asked: init, tests).
    Migrations that re-seal or re-key stored values (0010) need `blinding_key` when the
    database holds such values; without it they read IWRS_BLINDING_KEY or the key file."""
    migrate(target_engine, "head", blinding_key=blinding_key)


def migrate(
    target_engine: Engine,
    revision: str,
    *,
    down: bool = False,
    blinding_key: bytes | None = None,
) -> None:
    """Upgrade (or, with `down`, downgrade) the schema to `revision`, in one transaction.

    On SQLite, foreign keys are off while the migrations run and checked before the commit:
    SQLite changes a table by copying it (Alembic's batch mode), and dropping the old copy of a
    table other rows refer to would otherwise fail (its documented ALTER TABLE procedure)."""
    from alembic import command

    sqlite = target_engine.dialect.name == "sqlite"
    with target_engine.connect() as connection:
        raw: Any = connection.connection.dbapi_connection
        if sqlite:  # a pragma, before the transaction begins (inside one it is ignored)
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                config = migrations_config(str(target_engine.url), connection)
                config.attributes["blinding_key"] = blinding_key
                (command.downgrade if down else command.upgrade)(config, revision)
                if sqlite:
                    _refuse_broken_references(connection)
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")


def _refuse_broken_references(connection: Any) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"the migration left rows referring to nothing: {broken[:10]}")
