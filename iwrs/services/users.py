"""Use cases for people: accounts, roles, sites, API tokens, e-signatures (sign-in, sessions and
the two lockouts live in iwrs.services.sessions and are re-exported here)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from zxcvbn import zxcvbn

from iwrs import audit, clock, signatures, validation
from iwrs.audit import Actor
from iwrs.auth import (
    ROLE_PERMISSIONS,
    TOKEN_PREFIX,
    Permission,
    hash_password,
    site_scope,
    token_digest,
)
from iwrs.db import read_session, transaction
from iwrs.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
)
from iwrs.models.sites import Site
from iwrs.models.users import (
    AccessRequestStatus,
    ApiToken,
    Role,
    Signature,
    UnblindedAccessRequest,
    User,
    UserSite,
)
from iwrs.services import passwords
from iwrs.services.sessions import (  # noqa: F401 - re-exported: the callers' usual names
    WRONG_CREDENTIALS,
    confirm_password,
    confirm_signature,
    end_all_sessions,
    sign_in,
    sign_out,
)

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")
EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")


def _settings():  # type: ignore[no-untyped-def]
    return current_app.extensions["iwrs.settings"]


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(
            f"role: {value!r} is not a role; choose one of {', '.join(r.value for r in Role)}",
            field="role",
            rule="known_role",
        ) from None


def check_password_rules(password: str, *, username: str = "") -> None:
    """Refuse a weak password with a message naming the rule it breaks."""
    minimum = _settings().password_min_length
    if len(password) < minimum:
        raise InvalidInput(
            f"password: must be at least {minimum} characters (got {len(password)})",
            field="password",
            rule="min_length",
        )
    if len(password) > 256:
        raise InvalidInput(
            "password: must be at most 256 characters", field="password", rule="max_length"
        )
    if username and username.lower() in password.lower():
        raise InvalidInput(
            "password: must not contain the username", field="password", rule="not_username"
        )
    if len(set(password)) < 4:
        raise InvalidInput(
            "password: must use at least 4 different characters", field="password", rule="variety"
        )
    _refuse_guessable(password, username=username)


# zxcvbn's score: 3 means "safely unguessable: moderate protection from an offline slow-hash
# scenario" (about 10^8 guesses and more), which Argon2id and the sign-in throttle make ample.
# Below it, common and breached-list passwords, keyboard runs, sequences, repeats and dates.
WEAK_BELOW = 3


def _refuse_guessable(password: str, *, username: str) -> None:
    """Refuse a password zxcvbn scores below WEAK_BELOW (rule weak_password), quoting its
    feedback. Only the first 100 characters are scored: zxcvbn slows down on long input, and a
    guessable prefix of that length is already followed by plenty of entropy."""
    result = zxcvbn(password[:100], user_inputs=[username] if username else [])
    if result["score"] >= WEAK_BELOW:
        return
    feedback = result["feedback"]
    hints = " ".join([feedback.get("warning") or "", *feedback.get("suggestions", [])]).strip()
    raise InvalidInput(
        "password: too easy to guess (common, breached, a keyboard run or a sequence)"
        + (f": {hints}" if hints else ""),
        field="password",
        rule="weak_password",
    )


def _user_snapshot(user: User) -> dict[str, object]:
    return {
        "username": user.username,
        "full_name": user.full_name,
        "email": user.email,
        "role": str(user.role),
        "active": user.active,
        "sites": sorted(link.site_id for link in user.site_links),
    }


def _resolve_sites(session: Session, role: Role, site_codes: Iterable[str]) -> list[Site]:
    codes = sorted(set(site_codes))
    if role.site_scoped and not codes:
        # A site role without a site could do nothing, and would look like a working account.
        raise InvalidInput(
            f"sites: a {role.label} works at sites; tick at least one",
            field="sites",
            rule="site_required",
        )
    if codes and not role.site_scoped:
        raise InvalidInput(
            f"sites: only investigators and pharmacists are assigned to sites, not a {role.label}",
            field="sites",
            rule="site_roles_only",
        )
    sites = list(session.scalars(select(Site).where(Site.code.in_(codes)))) if codes else []
    unknown = sorted(set(codes) - {s.code for s in sites})
    if unknown:
        raise InvalidInput(
            f"sites: unknown site code(s) {', '.join(unknown)}", field="sites", rule="known_site"
        )
    return sites


def may(actor: Actor, permission: Permission) -> bool:
    """Whether the actor's role holds the permission; the system (CLI, jobs) holds every one."""
    if actor.role == "system":
        return True
    try:
        return permission in ROLE_PERMISSIONS[Role(actor.role)]
    except ValueError:
        return False


def require(actor: Actor, permission: Permission) -> None:
    """The service's own wall (a route decorator is only the second)."""
    if not may(actor, permission):
        raise Forbidden(
            f"your role ({actor.role}) may not {permission.value.replace('_', ' ')}",
            rule="permission",
        )


def site_reader(actor: Actor, permission: Permission) -> frozenset[int] | None:
    """The wall of a read of protected data: Forbidden `permission` unless the actor's role holds
    `permission`; then the sites whose records the actor may read: a site role's assigned sites,
    None (every site) for a sponsor role and for the system actor (CLI, jobs)."""
    require(actor, permission)
    if actor.role == "system":
        return None
    user = read_session().get(User, actor.user_id) if actor.user_id is not None else None
    if user is None or str(user.role) != actor.role:
        raise Forbidden(f"your role ({actor.role}) may not read this", rule="permission")
    return site_scope(user)


def require_person(actor: Actor) -> int:
    """The wall of a read of one's own records (notices): a signed-in person's user id;
    Forbidden `permission` for the system actor, who has none."""
    if actor.user_id is None:
        raise Forbidden("only a signed-in person has these", rule="permission")
    return actor.user_id


def require_system(actor: Actor) -> None:
    """The wall of the operator's use cases (CLI, jobs): the system actor only, never a person,
    whatever their role (rule system_only, as `passwords.set_password`)."""
    if actor.role != "system":
        raise Forbidden("only the CLI operator does this", rule="system_only")


def clean_email(email: str | None) -> str | None:
    """One plain address or None; refuses lists and spaces (the outbox sends to it alone)."""
    email = (email or "").strip()
    if not email:
        return None
    validation.check_characters(email, field="email")
    if len(email) > 200 or not EMAIL.match(email):
        raise InvalidInput(
            f"email: {email[:200]!r} is not one e-mail address", field="email", rule="email_format"
        )
    return email


def require_unused_email(session: Session, address: str, *, but: int | None = None) -> None:
    """Refuse an address already on an account or a pending unblinded-access request (rule
    email_in_use, case-insensitive). Decision (README rule 11): a temporary password goes to the
    account's address, so an address serves one person's account; otherwise an admin could put
    their own mailbox (or a colleague's) on a new account and receive its password."""
    wanted = address.lower()
    on_account = session.scalars(
        select(User.id).where(func.lower(User.email) == wanted, User.id != (but or 0))
    ).first()
    requested = session.scalars(
        select(UnblindedAccessRequest.id).where(
            func.lower(UnblindedAccessRequest.email) == wanted,
            UnblindedAccessRequest.status == AccessRequestStatus.PENDING,
        )
    ).first()
    if on_account is not None or requested is not None:
        raise Conflict(
            "email: this address already belongs to an account or a pending request; "
            "each person's account has its own address",
            field="email",
            rule="email_in_use",
        )


def check_identity(username: str, full_name: str) -> str:
    username = username.strip().lower()
    if not USERNAME.match(username):
        raise InvalidInput(
            "username: 3-64 characters, lower-case letters, digits, '.', '_' "
            "or '-', starting with a letter or digit",
            field="username",
            rule="format",
        )
    if not full_name.strip():
        raise InvalidInput("full_name: must not be empty", field="full_name", rule="required")
    validation.text(full_name, field="full_name", kind="name")
    return username


def create_user(
    *,
    actor: Actor,
    username: str,
    full_name: str,
    role: str,
    email: str | None = None,
    site_codes: Iterable[str] = (),
    password: str | None = None,
    temporary: bool = False,
) -> User:
    """Create an account with one role (and sites for site roles).

    No person chooses another person's usable password (README rule 11): without `password`
    the system generates a one-time password and sends it only to the user's e-mail (rule
    email_required without one); the creator never sees it. Only the system (the CLI operator's
    bootstrap, the demo, test fixtures) may pass a password (rule system_only), kept as given
    or, with `temporary`, to be changed at the first sign-in. An unblinded account is never
    created directly by a person: the admin files `request_unblinded_account` (rule
    two_person_approval)."""
    require(actor, Permission.MANAGE_USERS)
    by_system = actor.role == "system"
    if password is not None and not by_system:
        raise Forbidden(
            "password: the system generates the first password and sends it to the user",
            field="password",
            rule="system_only",
        )
    username = check_identity(username, full_name)
    parsed_role = parse_role(role)
    if parsed_role is Role.UNBLINDED_STATISTICIAN and not by_system:
        raise Forbidden(
            "role: an unblinded account needs a request approved by an unblinded statistician",
            field="role",
            rule="two_person_approval",
        )
    email = clean_email(email)
    if password is None:
        if email is None:
            raise InvalidInput(
                "email: the temporary password is sent to the user's e-mail; give one",
                field="email",
                rule="email_required",
            )
        password, temporary, send_to = passwords.temporary_password(), True, email
    else:
        check_password_rules(password, username=username)
        send_to = None
    password_hash = hash_password(password)  # slow by design: kept outside the write lock
    with transaction() as session:
        user = add_account(
            session,
            actor=actor,
            username=username,
            full_name=full_name,
            role=parsed_role,
            email=email,
            sites=_resolve_sites(session, parsed_role, site_codes),
            password_hash=password_hash,
            temporary=temporary,
        )
        if email is not None:  # after the username's own check (rule unique comes first)
            require_unused_email(session, email, but=user.id)
        if send_to is not None:
            passwords.send_temporary_password(
                session, user=user, password=password, why="account_created"
            )
    return user


def add_account(
    session: Session,
    *,
    actor: Actor,
    username: str,
    full_name: str,
    role: Role,
    email: str | None,
    sites: list[Site],
    password_hash: str,
    temporary: bool,
) -> User:
    """Insert the account and its audit event inside the caller's transaction."""
    if session.scalars(select(User.id).where(User.username == username)).first():
        raise Conflict(f"username: {username!r} is already taken", field="username", rule="unique")
    user = User(
        username=username,
        full_name=full_name.strip(),
        email=email,
        role=role,
        password_hash=password_hash,
        password_temporary=temporary,
        active=True,
        failed_sign_ins=0,
        created_at=clock.now(),
        session_version=1,
        site_links=[UserSite(site_id=s.id) for s in sites],
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="user.created",
        entity_type="user",
        entity_id=user.id,
        after={**_user_snapshot(user), "password_temporary": temporary},
    )
    return user


def assign_sites(*, actor: Actor, user_id: int, site_codes: Iterable[str]) -> User:
    """Replace a site-role user's site assignments (user managers only: rule permission)."""
    require(actor, Permission.MANAGE_USERS)
    with transaction() as session:
        user = _get_user(session, user_id, lock=True)
        sites = _resolve_sites(session, user.role, site_codes)
        before = _user_snapshot(user)
        user.site_links = [UserSite(site_id=s.id) for s in sites]
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="user.sites_assigned",
            entity_type="user",
            entity_id=user.id,
            before=before,
            after=_user_snapshot(user),
        )
    return user


def deactivate_user(
    *, actor: Actor, user_id: int, reason: str, signer_password: str, understood: bool
) -> User:
    """Deactivate an account (never deleted); its sessions and tokens stop working at once.
    User managers only (rule permission), never oneself (not_self), signed, and confirmed as
    irreversible (field understood, rule required)."""
    require(actor, Permission.MANAGE_USERS)
    reason = validation.reason(reason)
    validation.require_understood(understood, step="a deactivation")
    if actor.user_id == user_id:
        raise InvalidInput(
            "user_id: you cannot deactivate your own account", field="user_id", rule="not_self"
        )
    confirm_signature(signer_id=actor.user_id, password=signer_password)
    with transaction() as session:
        user = _get_user(session, user_id, lock=True)
        if not user.active:
            raise Conflict(
                f"user {user.username} is already inactive", field="user_id", rule="active"
            )
        before = _user_snapshot(user)
        user.active = False
        user.session_version += 1
        end_all_sessions(session, user_id=user.id, reason="deactivated")
        sign(
            session,
            actor=actor,
            meaning=signatures.deactivate_account(user.username),
            entity_type="user",
            entity_id=user.id,
        )
        audit.record(
            session,
            actor=actor,
            action="user.deactivated",
            entity_type="user",
            entity_id=user.id,
            before=before,
            after=_user_snapshot(user),
            reason=reason.strip(),
        )
    return user


def get_user(user_id: int) -> User:
    """A user by id, or NotFound naming the field."""
    user = read_session().get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist", field="user_id", rule="exists")
    return user


def _get_user(session: Session, user_id: int, *, lock: bool = False) -> User:
    query = select(User).where(User.id == user_id)
    user = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if user is None:
        raise NotFound(f"user {user_id} does not exist", field="user_id", rule="exists")
    return user


# --- e-signatures (sign-in and re-entered passwords live in iwrs.services.sessions) --------------


def sign(
    session: Session, *, actor: Actor, meaning: str, entity_type: str, entity_id: object
) -> Signature:
    """Record, inside the signed use case's transaction, that the actor signed and what it meant."""
    signature = Signature(
        user_id=actor.user_id,
        meaning=meaning,
        entity_type=entity_type,
        entity_id=str(entity_id),
        signed_at=clock.now(),
    )
    session.add(signature)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="esign.signed",
        entity_type="signature",
        entity_id=signature.id,
        after={"meaning": meaning, "entity_type": entity_type, "entity_id": str(entity_id)},
    )
    return signature


# --- API tokens ------------------------------------------------------------------------------


def create_api_token(
    *, actor: Actor, user_id: int, name: str, password: str
) -> tuple[str, ApiToken]:
    """Issue a personal API token to the actor themselves, valid `token_lifetime` (default 90
    days); the token is returned once and never stored. Minted only by its owner, signed in
    with a session (or at the CLI), with the password re-entered: a token cannot mint a token
    (rule session_required), nobody mints one for another person (rule own_tokens_only), and a
    wrong password counts towards the e-signature lockout."""
    if actor.user_id is None or actor.user_id != user_id:
        raise Forbidden(
            "user_id: an API token is issued only to its owner, signed in as themselves",
            field="user_id",
            rule="own_tokens_only",
        )
    if (actor.auth or "").startswith("token:"):
        raise Forbidden(
            "an API token is issued only in a signed-in session, never with another token",
            field="Authorization",
            rule="session_required",
        )
    name = validation.check_characters(name.strip(), field="name")
    if not name or len(name) > 100:
        raise InvalidInput(
            "name: give the token a name of 1-100 characters", field="name", rule="length"
        )
    confirm_password(user_id=user_id, password=password, action="api_token.create")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction() as session:
        user = _get_user(session, user_id)
        if not user.active:
            raise Conflict(f"user {user.username} is inactive", field="user_id", rule="active")
        row = ApiToken(
            user_id=user.id,
            name=name,
            prefix=token[:12],
            token_sha256=token_digest(token),
            created_at=clock.now(),
            created_by_id=user.id,
            expires_at=clock.now() + _settings().token_lifetime,
        )
        session.add(row)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="api_token.created",
            entity_type="api_token",
            entity_id=row.id,
            after={
                "user": user.username,
                "name": name,
                "prefix": row.prefix,
                "expires_at": row.expires_at.isoformat() if row.expires_at else None,
            },
        )
    return token, row


def revoke_api_token(*, actor: Actor, token_id: int, owner_id: int | None = None) -> ApiToken:
    """Revoke a token: the owner's own, or anyone's by a user manager (owner_id restricts it to
    that user's own tokens)."""
    with transaction() as session:
        row = session.scalars(
            select(ApiToken).where(ApiToken.id == token_id).with_for_update()
        ).one_or_none()
        if (
            row is None
            or (owner_id is not None and row.user_id != owner_id)
            or (row.user_id != actor.user_id and not may(actor, Permission.MANAGE_USERS))
        ):
            raise NotFound(f"API token {token_id} does not exist", field="token_id", rule="exists")
        if row.revoked_at is not None:
            raise Conflict(
                f"API token {token_id} is already revoked", field="token_id", rule="not_revoked"
            )
        row.revoked_at = clock.now()
        audit.record(
            session,
            actor=actor,
            action="api_token.revoked",
            entity_type="api_token",
            entity_id=row.id,
            after={"revoked_at": row.revoked_at.isoformat()},
        )
    return row
