"""Use cases for the trial set-up: loading the protocol's trial record, depot and sites."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from iwrs import audit, clock
from iwrs.audit import Actor
from iwrs.db import transaction
from iwrs.errors import Conflict
from iwrs.models.sites import Depot, Site, SiteStatus, Trial
from iwrs.protocol import Place, Protocol


def load_protocol(*, actor: Actor, protocol: Protocol) -> list[str]:
    """Record the protocol in the database and create its depot and sites if missing.

    Returns what changed, one line each. A database holds one trial: a protocol with another
    study id is refused (rule one_trial). The operator's use case (Forbidden `system_only`
    for a person).
    """
    from iwrs.services.users import require_system

    require_system(actor)
    with transaction() as session:
        changes = _record_trial(session, actor, protocol)
        depot, made = _ensure_depot(session, actor, protocol)
        return changes + made + _ensure_sites(session, actor, protocol, depot)


def _record_trial(session: Session, actor: Actor, protocol: Protocol) -> list[str]:
    trial = session.scalars(select(Trial).with_for_update()).one_or_none()
    if trial is not None and trial.study_id != protocol.study_id:
        raise Conflict(
            f"this database holds trial {trial.study_id}, not {protocol.study_id}",
            field="IWRS_PROTOCOL",
            rule="one_trial",
        )
    if trial is None:
        trial = Trial(
            study_id=protocol.study_id,
            title=protocol.title,
            protocol_version=protocol.version,
            protocol_sha256=protocol.sha256,
            loaded_at=clock.now(),
        )
        session.add(trial)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="protocol.loaded",
            entity_type="trial",
            entity_id=trial.id,
            after={
                "study_id": protocol.study_id,
                "version": protocol.version,
                "sha256": protocol.sha256,
            },
        )
        return [f"trial {protocol.study_id} (protocol {protocol.version})"]
    if trial.protocol_sha256 == protocol.sha256:
        return []
    before = {"version": trial.protocol_version, "sha256": trial.protocol_sha256}
    trial.protocol_version, trial.protocol_sha256 = protocol.version, protocol.sha256
    trial.loaded_at = clock.now()
    audit.record(
        session,
        actor=actor,
        action="protocol.updated",
        entity_type="trial",
        entity_id=trial.id,
        before=before,
        after={"version": protocol.version, "sha256": protocol.sha256},
    )
    return [f"protocol file changed: now version {protocol.version}"]


def _ensure_depot(session: Session, actor: Actor, protocol: Protocol) -> tuple[Depot, list[str]]:
    depot = session.scalars(select(Depot).where(Depot.code == protocol.depot.code)).first()
    if depot is not None:
        return depot, []
    place = protocol.depot
    depot = Depot(code=place.code, name=place.name, country=place.country)
    session.add(depot)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="depot.created",
        entity_type="depot",
        entity_id=depot.id,
        after={"code": depot.code, "name": depot.name},
    )
    return depot, [f"depot {depot.code}"]


def _ensure_sites(session: Session, actor: Actor, protocol: Protocol, depot: Depot) -> list[str]:
    changes: list[str] = []
    existing = {s.code: s for s in session.scalars(select(Site).with_for_update())}
    for place in protocol.sites:
        if place.code in existing:
            changes += _default_time_zone(session, actor, existing[place.code], place)
            continue
        site = Site(
            code=place.code,
            name=place.name,
            city=place.city,
            country=place.country,
            status=SiteStatus.INACTIVE,
            depot_id=depot.id,
            time_zone=place.time_zone,
        )
        session.add(site)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="site.created",
            entity_type="site",
            entity_id=site.id,
            site_id=site.id,
            after={
                "code": site.code,
                "name": site.name,
                "status": "inactive",
                "time_zone": site.time_zone,
            },
        )
        changes.append(f"site {site.code} {site.name}")
    return changes


def _default_time_zone(session: Session, actor: Actor, site: Site, place: Place) -> list[str]:
    """A site created before sites had zones takes the protocol's; one set (by the protocol or
    the admin) is kept: the admin's later correction wins over the file."""
    if site.time_zone:
        return []
    site.time_zone = place.time_zone
    audit.record(
        session,
        actor=actor,
        action="site.time_zone_changed",
        entity_type="site",
        entity_id=site.id,
        site_id=site.id,
        before={"time_zone": None},
        after={"time_zone": place.time_zone, "source": "protocol"},
    )
    return [f"site {site.code} time zone {place.time_zone}"]
