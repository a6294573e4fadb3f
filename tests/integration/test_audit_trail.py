"""Every state change writes its audit event in the same transaction; the trail is
append-only in the database and any tampering makes `iwrs audit verify` fail and name it."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from iwrs import audit
from iwrs.audit import Actor, AuditMissing, verify_chain
from iwrs.db import engine, read_session, transaction
from iwrs.errors import AuthenticationFailed, InvalidInput
from iwrs.models import AuditEvent, Site
from iwrs.services import passwords, users
from tests.conftest import PASSWORD

ADMIN = Actor.system("test-admin")  # the bootstrap path: the system may give a password


def actions_since(seq: int) -> list[str]:
    read_session().rollback()  # a fresh snapshot
    return list(
        read_session().scalars(
            select(AuditEvent.action).where(AuditEvent.seq > seq).order_by(AuditEvent.seq)
        )
    )


def last_seq() -> int:
    read_session().rollback()
    return read_session().scalar(select(func.coalesce(func.max(AuditEvent.seq), 0)))


@pytest.fixture
def investigator(ctx, make_user):
    return make_user("investigator", sites=["CN01"])


def test_each_use_case_writes_exactly_its_audit_events(ctx, investigator):
    cases = [
        (
            lambda: users.create_user(
                actor=ADMIN, username="new.user", full_name="N U", role="auditor", password=PASSWORD
            ),
            ["user.created"],
        ),
        (
            lambda: users.assign_sites(
                actor=ADMIN, user_id=investigator.id, site_codes=["CN01", "CN02"]
            ),
            ["user.sites_assigned"],
        ),
        (
            lambda: passwords.set_password(
                actor=ADMIN, user_id=investigator.id, new_password=PASSWORD + "!"
            ),
            ["user.password_set"],
        ),
        (
            lambda: users.sign_in(username=investigator.username, password=PASSWORD + "!"),
            ["auth.signed_in"],
        ),
        (
            lambda: passwords.change_own_password(
                actor=Actor.of(investigator),
                current_password=PASSWORD + "!",
                new_password=PASSWORD + "?",
            ),
            ["user.password_changed"],
        ),
        (
            lambda: users.sign_out(actor=Actor.of(investigator), session_id=None),
            ["auth.signed_out"],
        ),
    ]
    for run, expected in cases:
        before = last_seq()
        run()
        assert actions_since(before) == expected


def test_token_lifecycle_is_audited_once_per_step(ctx, investigator):
    before = last_seq()
    _, token = users.create_api_token(
        actor=Actor.of(investigator), user_id=investigator.id, name="EDC", password=PASSWORD
    )
    assert actions_since(before) == ["api_token.created"]
    before = last_seq()
    users.revoke_api_token(actor=Actor.of(investigator), token_id=token.id)
    assert actions_since(before) == ["api_token.revoked"]


def test_signed_deactivation_records_the_signature_and_the_change(ctx, make_user, investigator):
    admin = make_user("admin")
    before = last_seq()
    users.deactivate_user(
        actor=Actor.of(admin),
        user_id=investigator.id,
        reason="left site",
        signer_password=PASSWORD,
        understood=True,
    )
    assert actions_since(before) == ["esign.signed", "user.deactivated"]
    event = (
        read_session()
        .scalars(select(AuditEvent).where(AuditEvent.action == "user.deactivated"))
        .one()
    )
    assert event.reason == "left site" and event.username == admin.username
    assert '"active":false' in event.after and '"active":true' in event.before


def test_refused_use_case_writes_nothing(ctx, investigator):
    before = last_seq()
    with pytest.raises(InvalidInput, match="at least 12 characters"):
        users.create_user(
            actor=ADMIN, username="weak", full_name="W", role="auditor", password="short"
        )
    with pytest.raises(InvalidInput, match="only investigators and pharmacists"):
        users.create_user(
            actor=ADMIN,
            username="aud.x",
            full_name="A",
            role="auditor",
            password=PASSWORD,
            site_codes=["CN01"],
        )
    with pytest.raises(InvalidInput, match="unknown site code"):
        users.assign_sites(actor=ADMIN, user_id=investigator.id, site_codes=["XX99"])
    assert actions_since(before) == []
    assert read_session().get(type(investigator), investigator.id).site_ids == {1}


def test_failed_signature_is_audited_and_the_action_does_not_happen(ctx, make_user, investigator):
    admin = make_user("admin")
    before = last_seq()
    with pytest.raises(AuthenticationFailed, match="password is wrong"):
        users.deactivate_user(
            actor=Actor.of(admin),
            user_id=investigator.id,
            reason="x",
            signer_password="not my password",
            understood=True,
        )
    assert actions_since(before) == ["esign.signature_failed"]
    read_session().expire_all()
    assert read_session().get(type(investigator), investigator.id).active


def test_row_change_without_audit_event_is_refused_and_rolled_back(ctx):
    with pytest.raises(AuditMissing), transaction() as session:
        session.get(Site, 1).name = "renamed without a trail"
    read_session().rollback()
    assert read_session().get(Site, 1).name != "renamed without a trail"


def test_audit_time_and_actor_are_recorded(ctx, clock):
    before = last_seq()
    with transaction() as session:
        audit.record(
            session,
            actor=ADMIN,
            action="test.event",
            entity_type="site",
            entity_id=1,
            reason="because",
        )
    event = read_session().get(AuditEvent, before + 1)
    assert event.occurred_at == clock.current
    assert (event.username, event.role, event.reason) == ("test-admin", "system", "because")
    assert event.auth == "system"


def test_concurrent_writers_keep_one_gapless_verified_chain(app, make_user):
    user = make_user("auditor")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with app.app_context():
                for i in range(6):
                    users.create_api_token(
                        actor=Actor.of(user), user_id=user.id, name=f"t{i}", password=PASSWORD
                    )
        except BaseException as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    with app.app_context():
        start = last_seq()
    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with app.app_context():
        seqs = list(read_session().scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)))
        assert seqs == list(range(1, start + 49))
        result = verify_chain(read_session())
        assert result.ok and result.count == start + 48


def _drop_append_only_guard(connection) -> None:
    """What an attacker with database access would do first."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("ALTER TABLE audit_event DISABLE TRIGGER USER")
    else:
        connection.exec_driver_sql("DROP TRIGGER audit_event_no_update")
        connection.exec_driver_sql("DROP TRIGGER audit_event_no_delete")


def _verify_cli(app):
    return app.test_cli_runner().invoke(args=["iwrs", "audit", "verify"])


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_event SET reason = 'nothing to see' WHERE seq = 3",
        "DELETE FROM audit_event WHERE seq = 3",
    ],
)
def test_audit_rows_cannot_be_updated_or_deleted(ctx, statement):
    with pytest.raises(DBAPIError, match="append-only"), engine().begin() as connection:
        connection.execute(text(statement))
    assert verify_chain(read_session()).ok


def test_truncate_is_refused_on_postgresql(ctx):
    if engine().dialect.name != "postgresql":
        pytest.skip("TRUNCATE exists only on PostgreSQL")
    with pytest.raises(DBAPIError, match="append-only"), engine().begin() as connection:
        connection.execute(text("TRUNCATE audit_event"))


def test_verify_reports_ok_with_count(app):
    result = _verify_cli(app)
    assert result.exit_code == 0
    assert "OK: 6 audit events verified" in result.output


@pytest.mark.parametrize(
    "tamper, seq, words",
    [
        ("UPDATE audit_event SET reason = 'edited' WHERE seq = 3", 3, "altered"),
        (
            "UPDATE audit_event SET occurred_at = occurred_at WHERE seq = 4; "
            "UPDATE audit_event SET username = 'someone-else' WHERE seq = 4",
            4,
            "altered",
        ),
        ("DELETE FROM audit_event WHERE seq = 2", 2, "missing"),
        ("DELETE FROM audit_event WHERE seq = 6", 6, "missing"),
    ],
)
def test_tampering_by_raw_sql_fails_verify_naming_the_event(app, tamper, seq, words):
    with app.app_context(), engine().begin() as connection:
        _drop_append_only_guard(connection)
        for statement in tamper.split("; "):
            connection.execute(text(statement))
    result = _verify_cli(app)
    assert result.exit_code == 1
    assert f"FAILED at event {seq}" in result.output and words in result.output


def test_inserted_event_fails_verify_naming_it(app):
    with app.app_context(), engine().begin() as connection:
        row = connection.execute(text("SELECT * FROM audit_event WHERE seq = 6")).mappings().one()
        forged = {
            **row,
            "seq": 7,
            "prev_hash": row["hash"],
            "hash": "f" * 64,
            "action": "user.created",
        }
        connection.execute(
            text(
                "INSERT INTO audit_event (seq, occurred_at, user_id, username, role, action, "
                "entity_type, entity_id, site_id, subject_id, before, after, reason, prev_hash, "
                "hash) VALUES (:seq, :occurred_at, :user_id, :username, :role, :action, "
                ":entity_type, :entity_id, :site_id, :subject_id, :before, :after, :reason, "
                ":prev_hash, :hash)"
            ),
            forged,
        )
    result = _verify_cli(app)
    assert result.exit_code == 1
    assert "FAILED at event 7" in result.output
