"""Use cases for entering the unblinded side: an admin's request for an unblinded account and an
unblinded statistician's signed approval or rejection (the two-person rule).

README rule 11 / ICH E6(R3) "prevent inappropriate unblinding": no one person can give anyone
unblinded access. The admin (or the CLI operator once an unblinded user exists) files a request;
it takes effect only when an active unblinded statistician who is not the requester approves it
with their e-signature. The account then gets a system-generated temporary password sent only to
its own e-mail, so neither the requester nor the approver ever holds its credential; the approver
signs for that address too (it is in the signature's meaning), so an admin who put their own
mailbox in the request is stopped by the second person.

Decision: roles are fixed per account (a person needing another role gets another account), so
"moving a user into an unblinded role" is this same request for a new account; there is no
role change. The first unblinded user comes from the CLI while none is active (`iwrs user
create --role unblinded_statistician`, audited as the CLI actor)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from iwrs import audit, clock, signatures, validation
from iwrs.audit import Actor
from iwrs.auth import Permission, hash_password
from iwrs.db import read_session, transaction
from iwrs.errors import Conflict, Forbidden, InvalidInput, NotFound
from iwrs.models.users import AccessRequestStatus, Role, UnblindedAccessRequest, User
from iwrs.services import passwords, users


def active_unblinded_users(*, actor: Actor) -> int:
    """How many active unblinded accounts exist (the CLI's bootstrap is open only at 0; the
    operator's question: Forbidden `system_only` for a person)."""
    users.require_system(actor)
    return read_session().scalar(
        select(func.count())
        .select_from(User)
        .where(User.role == Role.UNBLINDED_STATISTICIAN, User.active.is_(True))
    )


def _snapshot(row: UnblindedAccessRequest) -> dict[str, object]:
    return {
        "username": row.username,
        "full_name": row.full_name,
        "email": row.email,
        "role": str(row.role),
        "status": str(row.status),
        "requested_by": row.requested_by,
    }


def request_unblinded_account(
    *, actor: Actor, username: str, full_name: str, email: str
) -> UnblindedAccessRequest:
    """File a pending request for a new unblinded statistician account (rule email_required:
    its temporary password goes to that address once approved)."""
    users.require(actor, Permission.MANAGE_USERS)
    username = users.check_identity(username, full_name)
    address = users.clean_email(email)
    if address is None:
        raise InvalidInput(
            "email: the temporary password is sent to the user's e-mail; give one",
            field="email",
            rule="email_required",
        )
    with transaction() as session:
        taken = session.scalars(select(User.id).where(User.username == username)).first()
        pending = session.scalars(
            select(UnblindedAccessRequest.id).where(
                UnblindedAccessRequest.username == username,
                UnblindedAccessRequest.status == AccessRequestStatus.PENDING,
            )
        ).first()
        if taken or pending:
            raise Conflict(
                f"username: {username!r} is already taken or requested",
                field="username",
                rule="unique",
            )
        users.require_unused_email(session, address)
        row = UnblindedAccessRequest(
            username=username,
            full_name=full_name.strip(),
            email=address,
            role=Role.UNBLINDED_STATISTICIAN,
            status=AccessRequestStatus.PENDING,
            requested_by_id=actor.user_id,
            requested_by=actor.username,
            requested_at=clock.now(),
        )
        session.add(row)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="unblinded_access.requested",
            entity_type="unblinded_access_request",
            entity_id=row.id,
            after=_snapshot(row),
        )
    return row


def _pending_request_for(session: Session, actor: Actor, request_id: int) -> UnblindedAccessRequest:
    """The pending request, locked, that `actor` (an active unblinded statistician who is not
    its requester) may decide. Refusals: exists, unblinded_approver, not_requester, pending."""
    row = session.get(UnblindedAccessRequest, request_id, with_for_update=True)
    if row is None:
        raise NotFound(f"request {request_id} does not exist", field="request_id", rule="exists")
    approver = session.get(User, actor.user_id)
    if approver is None or not approver.active or approver.role != Role.UNBLINDED_STATISTICIAN:
        raise Forbidden(
            "only an active unblinded statistician decides on unblinded access",
            rule="unblinded_approver",
        )
    if row.requested_by_id == actor.user_id:
        raise Forbidden(
            "request_id: the requester cannot approve their own request",
            field="request_id",
            rule="not_requester",
        )
    if row.status is not AccessRequestStatus.PENDING:
        raise Conflict(
            f"request {request_id} is already {row.status}", field="request_id", rule="pending"
        )
    return row


def decide_unblinded_request(
    *,
    actor: Actor,
    request_id: int,
    approve: bool,
    signer_password: str,
    reason: str = "",
) -> UnblindedAccessRequest:
    """An active unblinded statistician, not the requester, approves (the account is created
    with a temporary password sent to its e-mail) or rejects (with a reason) a pending request,
    signing either way. Refusals: unblinded_approver, not_requester, pending, required."""
    if actor.user_id is None or actor.role != Role.UNBLINDED_STATISTICIAN:
        raise Forbidden(
            "only an active unblinded statistician decides on unblinded access",
            rule="unblinded_approver",
        )
    reason = validation.reason(reason, required=not approve)
    users.confirm_signature(signer_id=actor.user_id, password=signer_password)
    password = passwords.temporary_password()
    password_hash = hash_password(password)
    with transaction() as session:
        row = _pending_request_for(session, actor, request_id)
        before = _snapshot(row)
        signature = users.sign(
            session,
            actor=actor,
            meaning=signatures.decide_unblinded_access(
                approve=approve, username=row.username, full_name=row.full_name, email=row.email
            ),
            entity_type="unblinded_access_request",
            entity_id=row.id,
        )
        row.status = AccessRequestStatus.APPROVED if approve else AccessRequestStatus.REJECTED
        row.decided_by_id, row.decided_at = actor.user_id, clock.now()
        row.signature_id, row.decision_reason = signature.id, reason.strip() or None
        if approve:
            user = users.add_account(
                session,
                actor=actor,
                username=row.username,
                full_name=row.full_name,
                role=row.role,
                email=row.email,
                sites=[],
                password_hash=password_hash,
                temporary=True,
            )
            row.user_id = user.id
            passwords.send_temporary_password(
                session, user=user, password=password, why="unblinded_access_approved"
            )
        audit.record(
            session,
            actor=actor,
            action=f"unblinded_access.{row.status}",
            entity_type="unblinded_access_request",
            entity_id=row.id,
            before=before,
            after=_snapshot(row),
            reason=row.decision_reason,
        )
    return row


def access_requests(*, actor: Actor, pending_only: bool = False) -> list[UnblindedAccessRequest]:
    """Requests, newest first (admins and unblinded statisticians read them; Forbidden
    `permission` for anyone else)."""
    if not (users.may(actor, Permission.MANAGE_USERS) or users.may(actor, Permission.SEE_ARM)):
        raise Forbidden("your role may not see access requests", rule="permission")
    query = select(UnblindedAccessRequest).order_by(UnblindedAccessRequest.id.desc())
    if pending_only:
        query = query.where(UnblindedAccessRequest.status == AccessRequestStatus.PENDING)
    return list(read_session().scalars(query))
