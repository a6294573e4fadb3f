"""Use cases for sites: activation, closure and time zone (the admin's part of site start-up)."""

from __future__ import annotations

from sqlalchemy import select

from iwrs import audit, clock, signatures, validation
from iwrs.audit import Actor
from iwrs.auth import Permission
from iwrs.db import transaction
from iwrs.errors import Conflict, InvalidInput, NotFound
from iwrs.models.sites import Site, SiteStatus
from iwrs.services.users import confirm_signature, sign

# Sites move only forward: inactive → active → closed.
_NEXT = {SiteStatus.INACTIVE: SiteStatus.ACTIVE, SiteStatus.ACTIVE: SiteStatus.CLOSED}


def change_site_status(
    *, actor: Actor, site_id: int, status: SiteStatus, signer_password: str, understood: bool
) -> Site:
    """Activate (allows screening and randomization) or close a site, with an e-signature.
    A status only moves forward, so the caller confirms it cannot be undone (field understood,
    rule required), checked before the signature so a missing tick never counts as a failure."""
    from iwrs.services.supply import acting_user

    validation.require_understood(understood, step="a site's status change")
    confirm_signature(signer_id=actor.user_id, password=signer_password)
    with transaction() as session:
        acting_user(session, actor, Permission.MANAGE_SITES)
        site = session.scalars(select(Site).where(Site.id == site_id).with_for_update()).first()
        if site is None:
            raise NotFound(f"site {site_id} does not exist", field="site_id", rule="exists")
        if _NEXT.get(site.status) != status:
            raise Conflict(
                f"status: site {site.code} is {site.status}; it cannot become {status}",
                field="status",
                rule="site_lifecycle",
            )
        before = {"status": str(site.status)}
        site.status = status
        if status == SiteStatus.ACTIVE:
            site.activated_at = clock.now()
        sign(
            session,
            actor=actor,
            meaning=signatures.change_site_status(
                activate=status == SiteStatus.ACTIVE, code=site.code, name=site.name
            ),
            entity_type="site",
            entity_id=site.id,
        )
        if status == SiteStatus.ACTIVE:
            from iwrs.services.shipments import request_initial_shipment

            request_initial_shipment(session, site, actor=actor)
        audit.record(
            session,
            actor=actor,
            action=f"site.{'activated' if status == SiteStatus.ACTIVE else 'closed'}",
            entity_type="site",
            entity_id=site.id,
            site_id=site.id,
            before=before,
            after={"status": str(status)},
        )
    return site


def change_site_time_zone(*, actor: Actor, site_id: int, time_zone: str, reason: str) -> Site:
    """Set a site's IANA time zone (the admin's correction of the protocol's default), with a
    reason. Dates already recorded keep the day they were recorded on; only later clinical
    dates at the site follow the new zone."""
    from iwrs.services.supply import acting_user

    name = time_zone.strip()
    if not clock.is_time_zone(name):
        raise InvalidInput(
            f"time_zone: {time_zone!r} is not an IANA time zone (e.g. Asia/Shanghai)",
            field="time_zone",
            rule="iana_time_zone",
        )
    if not reason.strip():
        raise InvalidInput("reason: a reason is required", field="reason", rule="required")
    with transaction() as session:
        acting_user(session, actor, Permission.MANAGE_SITES)
        site = session.scalars(select(Site).where(Site.id == site_id).with_for_update()).first()
        if site is None:
            raise NotFound(f"site {site_id} does not exist", field="site_id", rule="exists")
        if site.time_zone == name:
            raise Conflict(
                f"time_zone: site {site.code} is already in {name}",
                field="time_zone",
                rule="changed",
            )
        before = {"time_zone": site.time_zone}
        site.time_zone = name
        audit.record(
            session,
            actor=actor,
            action="site.time_zone_changed",
            entity_type="site",
            entity_id=site.id,
            site_id=site.id,
            before=before,
            after={"time_zone": name},
            reason=reason.strip(),
        )
    return site
