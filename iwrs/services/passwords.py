"""Use cases for passwords and in-app notices: an admin's signed reset to a temporary password,
one's own change, the CLI operator's set-password, and reading one's notices.

README rule 11 (21 CFR 11.300): a password is usable only by its owner. Whatever an admin does
ends in a one-time password the system generates and sends only to the user's e-mail; it must be
changed at the next sign-in before anything else and never signs."""

from __future__ import annotations

import secrets

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from blinding.sealing import KeyRing, SealError
from iwrs import audit, clock, signatures
from iwrs.audit import Actor
from iwrs.auth import Permission, hash_password
from iwrs.db import transaction
from iwrs.errors import Conflict, Forbidden, InvalidInput, NotFound
from iwrs.models.unblinding import Notification
from iwrs.models.users import Role, User, UserNotice
from iwrs.services import sessions, users

_WHY = {
    "account_created": "An account was created for you",
    "password_reset": "Your password was reset",
    "unblinded_access_approved": "An unblinded account was created for you after approval",
}


TEMPORARY_PASSWORD_LINE = "Temporary password: "  # noqa: S105 - a label, not a secret
SEALED = "sealed:"


def _outbox_sealer() -> KeyRing:
    """A ring of keys derived from the blinding keys (outside the database): it seals under the
    current key's derived key and opens what any key of the ring sealed, so a message queued
    before a rotation still carries its password until the old key is retired."""
    from iwrs.services.supply import sealer

    return sealer().derived(label="outbox temporary passwords")


def _context(recipient: str) -> str:
    return f"temporary-password:{recipient}"


def with_credentials(body: str, recipient: str) -> str:
    """An outbox message as mailed: its sealed temporary password opened for `recipient` (the
    only address it opens for). A line that does not open (moved to another message, or sealed
    before a blinding-key rotation) is left out, as `without_credentials` shows it."""
    lines = []
    for line in body.split("\n"):
        if line.startswith(TEMPORARY_PASSWORD_LINE + SEALED):
            token = line[len(TEMPORARY_PASSWORD_LINE + SEALED) :]
            try:
                line = TEMPORARY_PASSWORD_LINE + _outbox_sealer().unseal(
                    token, context=_context(recipient)
                )
            except SealError:
                line = without_credentials(line)
        lines.append(line)
    return "\n".join(lines)


def without_credentials(body: str) -> str:
    """An outbox message with its temporary password removed: what stays in the database once
    the message has been delivered by SMTP (the password's only copy is then the mailbox)."""
    return "\n".join(
        f"{TEMPORARY_PASSWORD_LINE}(delivered by e-mail; removed from the outbox)"
        if line.startswith(TEMPORARY_PASSWORD_LINE)
        else line
        for line in body.split("\n")
    )


def temporary_password() -> str:
    """A one-time password of 96 random bits, e.g. '3fa9c1-07be42-d1e0aa-5c2f19'."""
    return "-".join(secrets.token_hex(3) for _ in range(4))


def send_temporary_password(session: Session, *, user: User, password: str, why: str) -> None:
    """Queue the one-time password in the outbox to the user's own address, in the caller's
    transaction. It is never shown, logged or audited, and the outbox holds it only sealed
    (bound to the address): a database reader finds no usable password (issue 10); sending
    opens it for the mail alone (`with_credentials`)."""
    assert user.email is not None
    sealed = _outbox_sealer().seal(password, context=_context(user.email))
    study = current_app.extensions["iwrs.protocol"].study_id
    session.add(
        Notification(
            recipient=user.email,
            subject_line=f"[{study}] Your temporary IWRS password",
            body=(
                f"{_WHY[why]} ({user.username}).\n"
                f"{TEMPORARY_PASSWORD_LINE}{SEALED}{sealed}\n"
                "Sign in with it and choose a new password at once; until you do, you can do "
                "nothing else and cannot sign. If you did not expect this, tell your trial "
                "administrator and the sponsor's quality assurance.\n"
            ),
            created_at=clock.now(),
        )
    )


def reset_password(*, actor: Actor, user_id: int, signer_password: str) -> User:
    """An admin's signed reset of another person's password to a system-generated temporary one
    sent to that person's e-mail; ends their sessions, unlocks, and leaves an in-app notice.

    Refusals: not an admin (permission), oneself (not_self: change your own with the current
    password), no e-mail (email_required), inactive (active), wrong or temporary signature."""
    users.require(actor, Permission.MANAGE_USERS)
    if actor.user_id is None:
        raise Forbidden("a password reset is signed by a signed-in admin", rule="signer")
    if actor.user_id == user_id:
        raise InvalidInput(
            "user_id: change your own password with your current password, not by a reset",
            field="user_id",
            rule="not_self",
        )
    users.confirm_signature(signer_id=actor.user_id, password=signer_password)
    password = temporary_password()
    password_hash = hash_password(password)
    with transaction() as session:
        user = session.scalars(select(User).where(User.id == user_id).with_for_update()).first()
        if user is None:
            raise NotFound(f"user {user_id} does not exist", field="user_id", rule="exists")
        if user.email is None:
            raise InvalidInput(
                f"email: {user.username} has no e-mail to receive a temporary password",
                field="email",
                rule="email_required",
            )
        if not user.active:
            raise Conflict(f"user {user.username} is inactive", field="user_id", rule="active")
        _set(session, user, password_hash, temporary=True, actor=actor, why="password_reset")
        users.sign(
            session,
            actor=actor,
            meaning=signatures.reset_password(user.username),
            entity_type="user",
            entity_id=user.id,
        )
        send_temporary_password(session, user=user, password=password, why="password_reset")
        session.add(
            UserNotice(
                user_id=user.id,
                text=f"Your password was reset by {actor.username} on "
                f"{clock.utc_text(clock.now())}. If you did not ask for it, tell the "
                "sponsor's quality assurance.",
                created_at=clock.now(),
            )
        )
        audit.record(
            session,
            actor=actor,
            action="user.password_reset",
            entity_type="user",
            entity_id=user.id,
            after={"password_temporary": True, "sent_to": user.email},
        )
    return user


def change_own_password(*, actor: Actor, current_password: str, new_password: str) -> User:
    """The signed-in user's own change, with the current (possibly temporary) password; the new
    one is permanent. Ends every session of the user (they sign in again)."""
    if actor.user_id is None:
        raise Forbidden("only a signed-in user changes their own password", rule="signer")
    user_row = users.get_user(actor.user_id)
    users.check_password_rules(new_password, username=user_row.username)
    if new_password == current_password:
        raise InvalidInput(
            "new_password: must differ from the current password",
            field="new_password",
            rule="new_password_differs",
        )
    users.confirm_password(
        user_id=actor.user_id, password=current_password, action="user.password_change"
    )
    password_hash = hash_password(new_password)
    with transaction() as session:
        user = session.scalars(select(User).where(User.id == actor.user_id).with_for_update()).one()
        was_temporary = user.password_temporary
        _set(session, user, password_hash, temporary=False, actor=actor, why="password_changed")
        audit.record(
            session,
            actor=actor,
            action="user.password_changed",
            entity_type="user",
            entity_id=user.id,
            before={"password_temporary": was_temporary},
            after={"password_temporary": False},
        )
    return user


def set_password(*, actor: Actor, user_id: int, new_password: str) -> User:
    """The CLI operator's set-password (bootstrap, or a user without e-mail): the password is
    temporary, so the user must replace it at the next sign-in and cannot sign with it.

    Decision (README rule 11): the operator knows the password set, so it is refused for a user
    with an e-mail (rule email_on_file: the admin's signed reset mails them one) and for an
    unblinded statistician (rule two_person_approval: a forgotten one is deactivated and a new
    account requested and approved). Otherwise the operator could sign in as that person
    after the forced change, and the trail would name them."""
    if actor.role != "system":
        raise Forbidden("only the CLI operator sets a password", rule="system_only")
    user_row = users.get_user(user_id)
    if user_row.role == Role.UNBLINDED_STATISTICIAN:
        raise Forbidden(
            f"user_id: nobody sets the password of the unblinded account {user_row.username}; "
            "deactivate it and request a new one (two-person approval)",
            field="user_id",
            rule="two_person_approval",
        )
    if user_row.email is not None:
        raise Forbidden(
            f"user_id: {user_row.username} has an e-mail; an admin's signed reset sends them "
            "a temporary password",
            field="user_id",
            rule="email_on_file",
        )
    users.check_password_rules(new_password, username=user_row.username)
    password_hash = hash_password(new_password)
    with transaction() as session:
        user = session.scalars(select(User).where(User.id == user_id).with_for_update()).one()
        _set(session, user, password_hash, temporary=True, actor=actor, why="password_set")
        audit.record(
            session,
            actor=actor,
            action="user.password_set",
            entity_type="user",
            entity_id=user.id,
            after={"password_temporary": True},
        )
    return user


def _set(
    session: Session, user: User, password_hash: str, *, temporary: bool, actor: Actor, why: str
) -> None:
    """A new password ends every session and revokes every API token of the user, and lifts
    both locks (an admin's reset is the remedy for a locked account)."""
    user.password_hash = password_hash
    user.password_temporary = temporary
    user.failed_sign_ins = 0
    user.sign_in_locked_until = None
    user.failed_signatures = 0
    user.locked_until = None
    user.session_version += 1  # every session of the user ends
    sessions.end_all_sessions(session, user_id=user.id, reason=why)
    sessions.revoke_all_tokens(session, actor=actor, user_id=user.id, reason=why)


def mark_notice_read(*, actor: Actor, notice_id: int) -> None:
    """The user acknowledges one of their own in-app notices."""
    with transaction() as session:
        notice = session.get(UserNotice, notice_id, with_for_update=True)
        if notice is None or notice.user_id != actor.user_id:
            raise NotFound(f"notice {notice_id} does not exist", field="notice_id", rule="exists")
        if notice.read_at is None:
            notice.read_at = clock.now()
            audit.record(
                session,
                actor=actor,
                action="notice.read",
                entity_type="notice",
                entity_id=notice.id,
            )
