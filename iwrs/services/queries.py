"""Read-side queries shared by pages and the API, always scoped to what the user may see."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import joinedload, selectinload

from iwrs.audit import Actor
from iwrs.auth import Permission, not_found, require_in_scope
from iwrs.db import read_session
from iwrs.errors import NotFound
from iwrs.models.sites import Site
from iwrs.models.subjects import EligibilityAssessment, Subject
from iwrs.models.users import ApiToken, User, UserNotice, UserSite


def _reader(actor: Actor, permission: Permission) -> frozenset[int] | None:
    from iwrs.services.users import site_reader

    return site_reader(actor, permission)


def visible_sites(*, actor: Actor) -> list[Site]:
    """The sites the actor may see, by code (everyone signed in, and the operator)."""
    scope = _reader(actor, Permission.VIEW_SITES)
    query = select(Site).order_by(Site.code)
    if scope is not None:
        query = query.where(Site.id.in_(scope))
    return list(read_session().scalars(query))


def visible_site(*, actor: Actor, site_id: int) -> Site:
    """One site, only if it is one of the actor's (NotFound `exists` otherwise, as for none)."""
    scope = _reader(actor, Permission.VIEW_SITES)
    require_in_scope(scope, site_id)  # the same refusal as a site that does not exist
    site = read_session().get(Site, site_id)
    if site is None:
        raise NotFound(f"site {site_id} does not exist", field="site_id", rule="exists")
    return site


def visible_site_by_code(*, actor: Actor, code: str) -> Site:
    """One site by code, only if it is one of the actor's (NotFound `exists` otherwise)."""
    site = next((s for s in visible_sites(actor=actor) if s.code == code), None)
    if site is None:
        raise not_found("site", code, field="site_code")
    return site


def _require(actor: Actor, permission: Permission) -> None:
    from iwrs.services.users import require

    require(actor, permission)


def all_users(*, actor: Actor) -> list[User]:
    """Every account (user managers and the operator; Forbidden `permission` otherwise)."""
    _require(actor, Permission.MANAGE_USERS)
    # The list shows each user's site codes: their sites in one more statement, not one per user.
    query = select(User).options(selectinload(User.site_links).joinedload(UserSite.site))
    return list(read_session().scalars(query.order_by(User.username)))


def user_by_id(user_id: int, *, actor: Actor) -> User:
    """One account, for a user manager (Forbidden `permission` otherwise)."""
    _require(actor, Permission.MANAGE_USERS)
    user = read_session().get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist", field="user_id", rule="exists")
    return user


def tokens_of(user_id: int, *, actor: Actor) -> list[ApiToken]:
    """A user's API tokens: the owner's own, or anyone's for a user manager (NotFound `exists`
    for another person's, as for a user that does not exist)."""
    if user_id != actor.user_id:
        from iwrs.services.users import may

        if not may(actor, Permission.MANAGE_USERS):
            raise not_found("user", user_id, field="user_id")
    return list(
        read_session().scalars(
            select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id.desc())
        )
    )


def all_site_codes(*, actor: Actor) -> list[tuple[str, str]]:
    """(code, label) of every site, for the user manager's site choices."""
    _require(actor, Permission.MANAGE_USERS)
    return [
        (s.code, f"{s.code} {s.name}")
        for s in read_session().scalars(select(Site).order_by(Site.code))
    ]


SUBJECT_PAGE = 100  # subjects per page of the subject list


def visible_subjects(
    *, actor: Actor, before: int | None = None, limit: int | None = None
) -> list[Subject]:
    """Subjects at the actor's sites, newest first (investigators); paged by keyset when asked
    (the `limit` subjects with an id below `before`), their sites loaded with them: two
    statements whatever the trial's size (issue 13)."""
    scope = _reader(actor, Permission.SCREEN_SUBJECTS)
    query = select(Subject).options(joinedload(Subject.site)).order_by(Subject.id.desc())
    if scope is not None:
        query = query.where(Subject.site_id.in_(scope))
    if before is not None:
        query = query.where(Subject.id < before)
    if limit is not None:
        query = query.limit(limit)
    return list(read_session().scalars(query))


def visible_subject(
    *, actor: Actor, subject_id: int, permission: Permission = Permission.SCREEN_SUBJECTS
) -> Subject:
    """One subject, if the actor's role holds `permission` (Forbidden otherwise) and the subject
    is at one of the actor's sites (NotFound `exists` otherwise, as for one that does not
    exist)."""
    scope = _reader(actor, permission)
    subject = read_session().get(Subject, subject_id)
    missing = not_found("subject", subject_id, field="subject_id")
    if subject is None:
        raise missing
    require_in_scope(scope, subject.site_id, missing)
    return subject


def assessments_of(*, actor: Actor, subject_id: int) -> list[EligibilityAssessment]:
    """The subject's eligibility assessments, newest first (a subject the actor may see)."""
    visible_subject(actor=actor, subject_id=subject_id)
    return list(
        read_session().scalars(
            select(EligibilityAssessment)
            .where(EligibilityAssessment.subject_id == subject_id)
            .order_by(EligibilityAssessment.id.desc())
        )
    )


def rescreen_of(*, actor: Actor, subject_id: int) -> Subject | None:
    """The screening that rescreened the subject, if any (a subject the actor may see)."""
    visible_subject(actor=actor, subject_id=subject_id)
    return (
        read_session().scalars(select(Subject).where(Subject.rescreen_of_id == subject_id)).first()
    )


def notices_of(*, actor: Actor, unread_only: bool = False) -> list[UserNotice]:
    """The actor's own in-app notices, newest first (a person's; the operator has none)."""
    from iwrs.services.users import require_person

    query = select(UserNotice).where(UserNotice.user_id == require_person(actor))
    if unread_only:
        query = query.where(UserNotice.read_at.is_(None))
    return list(read_session().scalars(query.order_by(UserNotice.id.desc())))
