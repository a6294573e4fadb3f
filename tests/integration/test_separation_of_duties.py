"""Separation of duties in the services (README rule 11): an admin can never mint, see or set a
usable credential or signature of another person, nor give unblinded access alone; every audit
event says how its actor authenticated."""

from __future__ import annotations

import json
import re
import socketserver
import threading

import pytest
from sqlalchemy import select

from iwrs import audit
from iwrs.audit import Actor
from iwrs.db import read_session, transaction
from iwrs.errors import AuthenticationFailed, Conflict, Forbidden, InvalidInput, IWRSError
from iwrs.models import (
    AccessRequestStatus,
    ApiToken,
    AuditEvent,
    Notification,
    Signature,
    UnblindedAccessRequest,
    User,
    UserNotice,
    UserSession,
)
from iwrs.services import passwords, unblinded_access, users
from iwrs.worker import run_once
from tests.conftest import PASSWORD
from tests.integration.smtp_catcher import SmtpCatcher as _SmtpCatcher

TEMPORARY = re.compile(r"Temporary password: (\S+)")


def outbox_password(address: str) -> str:
    """The newest temporary password the outbox holds for an address (the user's e-mail)."""
    notes = read_session().scalars(
        select(Notification).where(Notification.recipient == address).order_by(Notification.id)
    )
    bodies = [TEMPORARY.search(passwords.with_credentials(n.body, n.recipient)) for n in notes]
    found = [m.group(1) for m in bodies if m]
    assert found, f"no temporary password sent to {address}"
    return found[-1]


def fresh(user_id: int) -> User:
    read_session().rollback()  # users made by fixtures in another app context: a new snapshot
    return read_session().get(User, user_id)


def events(action: str) -> list[AuditEvent]:
    return list(
        read_session().scalars(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
        )
    )


def refused(call, error=IWRSError) -> IWRSError:  # type: ignore[no-untyped-def]
    with pytest.raises(error) as caught:
        call()
    return caught.value


@pytest.fixture
def people(ctx, make_user):  # type: ignore[no-untyped-def]
    admin = make_user("admin")
    investigator = make_user("investigator", sites=["CN01"])
    with transaction() as session:  # the investigator has an address for resets
        session.get(User, investigator.id).email = "inv@example.org"
        audit.record(session, actor=Actor.system("test"), action="test.email", entity_type="user")
    return {
        "admin": admin,
        "investigator": fresh(investigator.id),
        "statistician": make_user("unblinded_statistician"),
    }


# --- API tokens --------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["admin", "system", "statistician"])
def test_nobody_mints_a_token_for_another_person(people, who):
    actor = Actor.system("cli:root") if who == "system" else Actor.of(people[who])
    target = people["investigator"]
    error = refused(
        lambda: users.create_api_token(actor=actor, user_id=target.id, name="x", password=PASSWORD),
        Forbidden,
    )
    assert (error.rule, error.field) == ("own_tokens_only", "user_id")
    assert read_session().scalars(select(ApiToken)).first() is None


def test_admin_lists_and_revokes_another_persons_token_but_a_peer_cannot(people, make_user):
    owner = people["investigator"]
    _, row = users.create_api_token(
        actor=Actor.of(owner), user_id=owner.id, name="EDC", password=PASSWORD
    )
    peer = make_user("investigator", sites=["CN01"])
    refused(lambda: users.revoke_api_token(actor=Actor.of(peer), token_id=row.id))
    revoked = users.revoke_api_token(actor=Actor.of(people["admin"]), token_id=row.id)
    assert revoked.revoked_at is not None and revoked.created_by_id == owner.id


# --- passwords ---------------------------------------------------------------------------------


def test_an_admin_can_not_choose_a_password_for_a_new_account(people):
    admin = Actor.of(people["admin"])
    error = refused(
        lambda: users.create_user(
            actor=admin,
            username="chosen.pw",
            full_name="C P",
            role="auditor",
            email="c@example.org",
            password=PASSWORD,
        ),
        Forbidden,
    )
    assert (error.rule, error.field) == ("system_only", "password")
    error = refused(
        lambda: users.create_user(actor=admin, username="no.mail", full_name="N", role="auditor"),
        InvalidInput,
    )
    assert (error.rule, error.field) == ("email_required", "email")
    assert (
        read_session()
        .scalars(select(User).where(User.username.in_(["chosen.pw", "no.mail"])))
        .first()
        is None
    )


def test_a_new_account_gets_a_temporary_password_only_in_its_own_mail(people):
    user = users.create_user(
        actor=Actor.of(people["admin"]),
        username="new.auditor",
        full_name="N A",
        role="auditor",
        email="new.auditor@example.org",
    )
    assert fresh(user.id).password_temporary
    temporary = outbox_password("new.auditor@example.org")
    trail = " ".join(
        f"{e.before} {e.after} {e.reason}" for e in read_session().scalars(select(AuditEvent))
    )
    assert temporary not in trail
    assert users.sign_in(username="new.auditor", password=temporary).user.id == user.id
    error = refused(
        lambda: users.confirm_signature(signer_id=user.id, password=temporary), Forbidden
    )
    assert error.rule == "temporary_password"


def test_admin_reset_is_signed_temporary_mailed_noticed_and_ends_sessions(people):
    admin, investigator = people["admin"], people["investigator"]
    version = investigator.session_version
    error = refused(
        lambda: passwords.reset_password(
            actor=Actor.of(admin), user_id=investigator.id, signer_password="not my password!"
        ),
        AuthenticationFailed,
    )
    assert error.rule == "credentials"
    assert not fresh(investigator.id).password_temporary
    passwords.reset_password(
        actor=Actor.of(admin), user_id=investigator.id, signer_password=PASSWORD
    )
    stored = fresh(investigator.id)
    assert stored.password_temporary and stored.session_version == version + 1
    refused(lambda: users.sign_in(username=investigator.username, password=PASSWORD))
    temporary = outbox_password("inv@example.org")
    assert (
        users.sign_in(username=investigator.username, password=temporary).user.id == investigator.id
    )
    (signature,) = read_session().scalars(select(Signature).where(Signature.user_id == admin.id))
    assert signature.entity_id == str(investigator.id)
    (notice,) = read_session().scalars(
        select(UserNotice).where(UserNotice.user_id == investigator.id)
    )
    assert admin.username in notice.text and notice.read_at is None
    (event,) = events("user.password_reset")
    assert event.username == admin.username and temporary not in (event.after or "")
    # Signed in with the temporary password, the investigator still cannot sign anything.
    error = refused(
        lambda: users.confirm_signature(signer_id=investigator.id, password=temporary), Forbidden
    )
    assert error.rule == "temporary_password"
    passwords.change_own_password(
        actor=Actor.of(investigator), current_password=temporary, new_password=PASSWORD + "!"
    )
    assert not fresh(investigator.id).password_temporary
    users.confirm_signature(signer_id=investigator.id, password=PASSWORD + "!")


@pytest.mark.parametrize(
    ("who", "target", "rule"),
    [
        ("admin", "admin", "not_self"),
        ("investigator", "admin", "permission"),
        ("statistician", "investigator", "permission"),
        ("admin", "statistician", "email_required"),
    ],
)
def test_password_reset_refusals(people, who, target, rule):
    actor, user = Actor.of(people[who]), people[target]
    before = fresh(user.id).password_hash
    error = refused(
        lambda: passwords.reset_password(actor=actor, user_id=user.id, signer_password=PASSWORD)
    )
    assert error.rule == rule
    assert fresh(user.id).password_hash == before
    assert read_session().scalars(select(Notification)).first() is None


def test_a_temporary_admin_password_cannot_sign_a_reset(people, make_user):
    second = make_user("admin")
    read_session().rollback()
    passwords.set_password(actor=Actor.system("cli:root"), user_id=second.id, new_password=PASSWORD)
    error = refused(
        lambda: passwords.reset_password(
            actor=Actor.of(second), user_id=people["investigator"].id, signer_password=PASSWORD
        ),
        Forbidden,
    )
    assert error.rule == "temporary_password"


def test_own_change_needs_the_current_password_and_a_new_one(people):
    user = people["investigator"]
    actor = Actor.of(user)
    wrong = refused(
        lambda: passwords.change_own_password(
            actor=actor, current_password="not the password", new_password=PASSWORD + "!"
        ),
        AuthenticationFailed,
    )
    same = refused(
        lambda: passwords.change_own_password(
            actor=actor, current_password=PASSWORD, new_password=PASSWORD
        ),
        InvalidInput,
    )
    assert (wrong.rule, same.rule) == ("credentials", "new_password_differs")
    # a wrong current password counts to the (in-session) signature lockout
    assert fresh(user.id).failed_signatures == 1


def test_only_the_cli_operator_sets_a_password_and_it_is_temporary(people, make_user):
    user = make_user("pharmacist", sites=["CN01"])  # no e-mail: the CLI is its only way
    read_session().rollback()
    error = refused(
        lambda: passwords.set_password(
            actor=Actor.of(people["admin"]), user_id=user.id, new_password=PASSWORD + "!"
        ),
        Forbidden,
    )
    assert error.rule == "system_only"
    passwords.set_password(
        actor=Actor.system("cli:root"), user_id=user.id, new_password=PASSWORD + "!"
    )
    assert fresh(user.id).password_temporary


# --- unblinded access: two persons -------------------------------------------------------------


def test_an_admin_cannot_create_an_unblinded_account_directly(people):
    error = refused(
        lambda: users.create_user(
            actor=Actor.of(people["admin"]),
            username="stat.two",
            full_name="S T",
            role="unblinded_statistician",
            email="s@example.org",
        ),
        Forbidden,
    )
    assert (error.rule, error.field) == ("two_person_approval", "role")


def _request(people, username: str = "stat.two"):  # type: ignore[no-untyped-def]
    return unblinded_access.request_unblinded_account(
        actor=Actor.of(people["admin"]),
        username=username,
        full_name="Stat Two",
        email=f"{username}@example.org",
    )


def test_unblinded_access_takes_a_request_and_a_signed_approval(people):
    row = _request(people)
    assert row.status is AccessRequestStatus.PENDING
    assert read_session().scalars(select(User).where(User.username == "stat.two")).first() is None
    stat = people["statistician"]
    refused(
        lambda: unblinded_access.decide_unblinded_request(
            actor=Actor.of(stat), request_id=row.id, approve=True, signer_password="wrong one!!"
        ),
        AuthenticationFailed,
    )
    assert read_session().get(UnblindedAccessRequest, row.id).status is AccessRequestStatus.PENDING
    decided = unblinded_access.decide_unblinded_request(
        actor=Actor.of(stat), request_id=row.id, approve=True, signer_password=PASSWORD
    )
    assert decided.status is AccessRequestStatus.APPROVED and decided.decided_by_id == stat.id
    created = fresh(decided.user_id)
    assert str(created.role) == "unblinded_statistician" and created.password_temporary
    assert outbox_password("stat.two@example.org")
    (signature,) = read_session().scalars(select(Signature).where(Signature.user_id == stat.id))
    assert "stat.two@example.org" in signature.meaning  # the approver vouches for the address
    assert [e.action for e in events("unblinded_access.approved")] == ["unblinded_access.approved"]
    again = refused(
        lambda: unblinded_access.decide_unblinded_request(
            actor=Actor.of(stat),
            request_id=row.id,
            approve=False,
            signer_password=PASSWORD,
            reason="changed my mind",
        ),
        Conflict,
    )
    assert again.rule == "pending"


@pytest.mark.parametrize("who", ["admin", "investigator"])
def test_only_an_unblinded_statistician_decides(people, who):
    row = _request(people)
    error = refused(
        lambda: unblinded_access.decide_unblinded_request(
            actor=Actor.of(people[who]), request_id=row.id, approve=True, signer_password=PASSWORD
        ),
        Forbidden,
    )
    assert error.rule == "unblinded_approver"
    assert read_session().get(UnblindedAccessRequest, row.id).status is AccessRequestStatus.PENDING


def test_the_requester_cannot_approve_and_a_rejection_needs_a_reason(people):
    stat = people["statistician"]
    # A forged actor (the statistician's id with an admin's role) files the request: the
    # decision still refuses the same person approving it.
    row = unblinded_access.request_unblinded_account(
        actor=Actor(stat.id, stat.username, "admin", "session"),
        username="stat.three",
        full_name="S 3",
        email="s3@example.org",
    )
    error = refused(
        lambda: unblinded_access.decide_unblinded_request(
            actor=Actor.of(stat), request_id=row.id, approve=True, signer_password=PASSWORD
        ),
        Forbidden,
    )
    assert error.rule == "not_requester"
    no_reason = refused(
        lambda: unblinded_access.decide_unblinded_request(
            actor=Actor.of(stat), request_id=row.id, approve=False, signer_password=PASSWORD
        ),
        InvalidInput,
    )
    assert no_reason.rule == "required"
    other = _request(people)
    rejected = unblinded_access.decide_unblinded_request(
        actor=Actor.of(stat),
        request_id=other.id,
        approve=False,
        signer_password=PASSWORD,
        reason="not on the delegation log",
    )
    assert rejected.status is AccessRequestStatus.REJECTED and rejected.user_id is None
    (event,) = events("unblinded_access.rejected")
    assert event.reason == "not on the delegation log"


def test_a_request_needs_an_email_and_a_free_username(people):
    error = refused(
        lambda: unblinded_access.request_unblinded_account(
            actor=Actor.of(people["admin"]), username="stat.x", full_name="S", email=""
        ),
        InvalidInput,
    )
    assert error.rule == "email_required"
    _request(people)
    assert refused(lambda: _request(people), Conflict).rule == "unique"


# --- how the actor authenticated ---------------------------------------------------------------


def test_events_say_how_the_actor_authenticated(people):
    user = people["investigator"]
    signed_in = users.sign_in(username=user.username, password=PASSWORD)
    session_id = read_session().scalars(select(UserSession.id)).one()
    assert signed_in.user.id == user.id
    users.sign_out(actor=Actor.of(user), session_id=session_id)  # outside a request: the CLI
    (signed_in,) = events("auth.signed_in")
    (signed_out,) = events("auth.signed_out")
    (created,) = [e for e in events("user.created") if e.entity_id == str(user.id)]
    assert (signed_in.auth, signed_out.auth, created.auth) == ("password", "cli", "system")


def test_trails_with_and_without_auth_verify_and_auth_is_hashed(people):
    with transaction() as session:  # an event as written before auth was recorded
        audit.record(
            session, actor=Actor(None, "old", "system"), action="test.old", entity_type="site"
        )
    (old,) = events("test.old")
    assert old.auth is None
    fields = audit.event_fields(old)
    assert "auth" not in json.loads(audit.event_message(fields))
    assert audit.verify_chain(read_session()).ok
    (signed,) = [e for e in events("user.created") if e.auth == "system"][:1]
    fields = audit.event_fields(signed)
    assert audit.event_hash({**fields, "auth": "session"}) != signed.hash
    assert audit.event_hash({**fields, "auth": None}) != signed.hash


# --- delivery: the outbox keeps no usable credential once the mail is sent -----------------------


@pytest.fixture
def smtp_server(monkeypatch):  # type: ignore[no-untyped-def]
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpCatcher)
    _SmtpCatcher.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("IWRS_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("IWRS_SMTP_PORT", str(server.server_address[1]))
    yield _SmtpCatcher.received
    server.shutdown()
    server.server_close()


def test_a_mailed_temporary_password_is_removed_from_the_outbox(people, smtp_server):

    admin, investigator = people["admin"], people["investigator"]
    passwords.reset_password(
        actor=Actor.of(admin), user_id=investigator.id, signer_password=PASSWORD
    )
    temporary = outbox_password("inv@example.org")
    assert run_once("notify", None, Actor.system("test")).summary.get("sent", 0) >= 1
    (mail,) = [m for m in smtp_server if "inv@example.org" in m]
    assert TEMPORARY.search(mail.replace("=\r\n", "")).group(1) == temporary
    read_session().rollback()
    bodies = [n.body for n in read_session().scalars(select(Notification))]
    assert not any(temporary in body for body in bodies)
    assert (
        users.sign_in(username=investigator.username, password=temporary).user.id == investigator.id
    )


# --- the services' own walls -------------------------------------------------------------------


@pytest.mark.parametrize("who", ["investigator", "statistician"])
def test_only_a_user_manager_assigns_sites_or_deactivates(people, who):
    """The service checks its own permission, not only the route's decorator: an investigator
    must not widen their own sites, nor anyone deactivate a colleague (rule permission)."""
    actor = Actor.of(people[who])
    investigator, statistician = people["investigator"], people["statistician"]
    error = refused(
        lambda: users.assign_sites(actor=actor, user_id=investigator.id, site_codes=["CN02"]),
        Forbidden,
    )
    assert error.rule == "permission"
    target = statistician if who == "investigator" else investigator
    error = refused(
        lambda: users.deactivate_user(
            actor=actor, user_id=target.id, reason="gone", signer_password=PASSWORD, understood=True
        ),
        Forbidden,
    )
    assert error.rule == "permission"
    assert fresh(target.id).active
    assert sorted(fresh(investigator.id).site_ids) == sorted(investigator.site_ids)
    assert events("user.sites_assigned") == events("user.deactivated") == []


def test_the_cli_operator_never_sets_the_password_of_a_mailable_or_unblinded_person(people):
    """An operator who set a known password for the statistician (or anyone with an e-mail,
    who gets a signed reset instead) could sign in as them after the forced change, and the
    trail would name the statistician (issue 10: 'by any page, API call or CLI')."""
    cli = Actor.system("cli:root", auth="cli")
    for who, rule in (("investigator", "email_on_file"), ("statistician", "two_person_approval")):
        user = people[who]
        before = fresh(user.id).password_hash
        error = refused(
            lambda user=user: passwords.set_password(
                actor=cli, user_id=user.id, new_password=PASSWORD + "!"
            ),
            Forbidden,
        )
        assert (error.field, error.rule) == ("user_id", rule)
        assert fresh(user.id).password_hash == before
    assert events("user.password_set") == []


def test_an_address_already_on_an_account_gets_no_new_account(people):
    """An admin who put their own mailbox (or a colleague's) on a new account would receive its
    temporary password: an address serves one account (rule email_in_use), case-insensitive;
    the approver's signature names the address for what a machine cannot know."""
    admin = people["admin"]
    with transaction() as session:
        session.get(User, admin.id).email = "Admin@Example.org"
        audit.record(session, actor=Actor.system("test"), action="test.email", entity_type="user")
    actor = Actor.of(fresh(admin.id))
    for address in ("admin@example.org", "INV@example.org"):
        error = refused(
            lambda address=address: unblinded_access.request_unblinded_account(
                actor=actor, username="stat.two", full_name="Stat Two", email=address
            ),
            Conflict,
        )
        assert (error.field, error.rule) == ("email", "email_in_use")
        error = refused(
            lambda address=address: users.create_user(
                actor=actor,
                username="inv.two",
                full_name="Inv Two",
                role="investigator",
                email=address,
                site_codes=["CN01"],
            ),
            Conflict,
        )
        assert (error.field, error.rule) == ("email", "email_in_use")
    unblinded_access.request_unblinded_account(
        actor=actor, username="stat.two", full_name="Stat Two", email="stat.two@example.org"
    )
    error = refused(
        lambda: users.create_user(
            actor=actor,
            username="inv.two",
            full_name="Inv Two",
            role="investigator",
            email="Stat.Two@example.org",
            site_codes=["CN01"],
        ),
        Conflict,
    )
    assert error.rule == "email_in_use"  # a pending request holds its address too
    read_session().rollback()
    assert read_session().scalars(select(User).where(User.username == "inv.two")).all() == []


# --- a database reader ------------------------------------------------------------------------


def test_a_database_reader_finds_no_usable_temporary_password_in_the_outbox(people):
    """Before the outbox is sent (and forever when it goes to the log), a reader of the
    notification table must not find a password to sign in with: the line is sealed under a key
    outside the database, bound to its recipient, and opened only to send the mail."""
    from sqlalchemy import text

    investigator = people["investigator"]
    passwords.reset_password(
        actor=Actor.of(people["admin"]), user_id=investigator.id, signer_password=PASSWORD
    )
    read_session().rollback()
    raw = [
        row.body
        for row in read_session().execute(
            text("SELECT body FROM notification WHERE recipient = 'inv@example.org'")
        )
    ]
    (line,) = [m.group(1) for m in (TEMPORARY.search(body) for body in raw) if m]
    with pytest.raises(AuthenticationFailed):
        users.sign_in(username=investigator.username, password=line)
    temporary = outbox_password("inv@example.org")  # opened with the key, as sending does
    assert temporary != line and temporary not in "".join(raw)
    assert (
        users.sign_in(username=investigator.username, password=temporary).user.id == investigator.id
    )
    # Moved to another recipient's message, the sealed line opens for nobody.
    other = "someone.else@example.org"
    assert passwords.with_credentials(raw[0], other) == passwords.without_credentials(raw[0])
