"""The operator's whole-trial reports (`supply check-ledger`, `audit reconcile`) are not ended
by `idle_in_transaction_session_timeout`: at 100,000 subjects they read in one transaction and
replay in Python for minutes between two statements (issue 13, found on the scale world: the
ledger check died with IdleInTransactionSessionTimeout). iwrs.db.long_report lifts the timeout
for the report's own transaction only."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from iwrs import create_app, db
from tests.conftest import make_settings

KEYS = ("secret_key", "audit_key", "blinding_key")


@pytest.fixture
def strict_app(app, tmp_path, database_url):
    """The `app` fixture's database (protocol loaded) served again, same keys, with a 300 ms
    idle-in-transaction timeout (the default is 30 s; 1 ms ends even the driver's own set-up)."""
    keys = {k: getattr(app.extensions["iwrs.settings"], k) for k in KEYS}
    settings = make_settings(tmp_path, database_url, db_idle_in_transaction_timeout_ms=300, **keys)
    strict = create_app(settings)
    yield strict
    strict.extensions["iwrs.engine"].dispose()


def test_long_report_lifts_the_timeout_for_its_transaction_only(strict_app):
    with strict_app.app_context():
        session = db.read_session()
        if session.get_bind().dialect.name != "postgresql":
            db.long_report(session)  # nothing to lift on SQLite; must not fail
            return
        db.long_report(session)
        show = "SHOW idle_in_transaction_session_timeout"
        assert session.execute(text(show)).scalar() == "0"
        session.commit()
        assert session.execute(text(show)).scalar() == "300ms"
        session.rollback()


@pytest.mark.parametrize("command", [["supply", "check-ledger"], ["audit", "reconcile"]])
def test_reports_outlast_the_idle_in_transaction_timeout(strict_app, command):
    """The reports run with the lift on both backends. (A pause long enough to be ended cannot
    be made here without a real trial's size: the lift itself is checked above; the scale
    world's ledger check, bench/README.md, is the case that failed before.)"""
    result = strict_app.test_cli_runner().invoke(args=["iwrs", *command])
    assert result.exit_code == 0, result.output
