"""Users, their one role, their site assignments, API tokens, electronic signatures, in-app
notices and requests for unblinded accounts."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from iwrs.db import Base, UTCDateTime, enum_column

if TYPE_CHECKING:
    from iwrs.models.sites import Site


class Role(enum.StrEnum):
    """One role per user: a person who needs two roles gets two accounts, so a blinded
    account can never hold an unblinded permission."""

    INVESTIGATOR = "investigator"
    PHARMACIST = "pharmacist"
    SUPPLY_MANAGER = "supply_manager"
    UNBLINDED_STATISTICIAN = "unblinded_statistician"
    AUDITOR = "auditor"
    ADMIN = "admin"

    @property
    def site_scoped(self) -> bool:
        return self in (Role.INVESTIGATOR, Role.PHARMACIST)

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


class SessionEndReason(enum.StrEnum):
    """Why a server-side session ended."""

    SIGNED_OUT = "signed_out"
    IDLE = "idle"
    DEACTIVATED = "deactivated"
    SIGNATURE_LOCKOUT = "signature_lockout"
    PASSWORD_RESET = "password_reset"  # noqa: S105 (a reason, not a password)
    PASSWORD_CHANGED = "password_changed"  # noqa: S105
    PASSWORD_SET = "password_set"  # noqa: S105


class User(Base):
    __tablename__ = "app_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(enum_column(Role, "role", length=32))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Consecutive failed password sign-ins (anyone may cause them): at the limit, password
    # sign-in alone is refused until sign_in_locked_until; open sessions and tokens go on.
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0)
    sign_in_locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Consecutive wrong e-signatures by the authenticated owner: at the limit the account is
    # locked until locked_until (sign-in, every session and token suspended, nothing signs).
    failed_signatures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_sign_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Bumped on password change or deactivation: every existing session of the user ends.
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    # A system-generated one-time password: it must be changed before anything else and can
    # never sign (README rule 11).
    password_temporary: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    site_links: Mapped[list[UserSite]] = relationship(
        back_populates="user", cascade="all, delete-orphan", lazy="selectin"
    )

    @property
    def site_ids(self) -> frozenset[int]:
        return frozenset(link.site_id for link in self.site_links)

    @property
    def site_codes(self) -> list[str]:
        """The codes of the sites the user is assigned to, sorted (none for sponsor roles)."""
        return sorted(link.site.code for link in self.site_links)

    # The user protocol flask-login expects (kept here so models need no Flask import).
    is_authenticated = True
    is_anonymous = False

    @property
    def is_active(self) -> bool:
        return self.active

    def get_id(self) -> str:
        """Session key: id and session version, so a bumped version ends every session."""
        return f"{self.id}:{self.session_version}"


class UserSite(Base):
    """An investigator's or pharmacist's assignment to a site."""

    __tablename__ = "user_site"

    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), primary_key=True)

    user: Mapped[User] = relationship(back_populates="site_links")
    site: Mapped[Site] = relationship(lazy="selectin")


class ApiToken(Base):
    """A personal API token; only its SHA-256 is stored (the token is 256 random bits)."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class UserSession(Base):
    """A signed-in browser session, held server-side so that it can be ended: the cookie carries
    a random key whose SHA-256 is stored here. Ended at sign-out; refused after `expires_at`
    (the absolute lifetime) whatever the idle rule says."""

    __tablename__ = "user_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    end_reason: Mapped[SessionEndReason | None] = mapped_column(
        enum_column(SessionEndReason, "end_reason", length=32)
    )


class Signature(Base):
    """An electronic signature: who signed, when, and what the signature meant."""

    __tablename__ = "signature"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    meaning: Mapped[str] = mapped_column(Text)
    entity_type: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UserNotice(Base):
    """A message to one user shown in the application after they sign in (e.g. "your password
    was reset by ..."); the outbox carries the e-mail copy."""

    __tablename__ = "user_notice"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AccessRequestStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class UnblindedAccessRequest(Base):
    """An admin's request for a new unblinded account: it exists only once an active unblinded
    user, not the requester, approves it with an e-signature (the two-person rule)."""

    __tablename__ = "unblinded_access_request"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    full_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(enum_column(Role, "role", length=32))
    status: Mapped[AccessRequestStatus] = mapped_column(
        enum_column(AccessRequestStatus, "status", length=16)
    )
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    requested_by: Mapped[str] = mapped_column(String(64))  # username, or the CLI actor's name
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decision_reason: Mapped[str | None] = mapped_column(Text)
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
