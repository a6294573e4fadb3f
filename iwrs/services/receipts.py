"""Printable receipts of the acts a site keeps on paper: a randomization, a dispensation, a
shipment's receipt at the site, an emergency unblinding (issue 15, problem 10).

A receipt is a read model of the act's own audit event: who did it (name and role), when (UTC,
shown with the site's local time), at which site, what was done (the event's recorded values in
words: subject and kit numbers, never an arm), and the trail's proof of it (the event's number
and chain hash, and the latest signed checkpoint of the chain when one covers the event,
iwrs/audit_anchor.py). Built from the event, a receipt says exactly what the blinded auditor
reads in the trail, so it holds no arm by construction; the one exception is the unblinding
receipt read by the investigator who unblinded the subject, who sees the arm again through
`unblinding.view_arm` (recorded as a view, as on the page).

Each act is one `ReceiptKind` in `KINDS` and one public function below, checking access as the
act's own page does (site scope: another site's record is "not found", as one that does not
exist). How to add a receipt (e.g. a kit return, once its service writes `kit.returned`):
1. a `ReceiptKind` in `KINDS` whose `find` checks the reader's access to the record and returns
   its event's `EventKey` (action, entity id, subject), and a function in `LINES` for that
   action turning the event's `after` values into (label, value) pairs in words;
2. a public function `<act>_receipt(*, actor, <record>_id)` calling `_receipt`, with its entry
   in tests/authorization_table.py (and its factory in the matrix test);
3. one route in iwrs/web/receipts.py (three lines) and a link on the act's page.
The template (receipts/receipt.html) and the PDF are shared by every kind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from sqlalchemy import select

from iwrs import clock
from iwrs.audit import Actor
from iwrs.audit_anchor import latest_checkpoint
from iwrs.auth import ROLE_PERMISSIONS, Permission, not_found, require_in_scope
from iwrs.db import read_session
from iwrs.errors import Forbidden, NotFound
from iwrs.models.audit import AuditAnchor, AuditEvent
from iwrs.models.randomization import Dispensation
from iwrs.models.sites import Site
from iwrs.models.subjects import Subject
from iwrs.models.unblinding import Unblinding
from iwrs.models.users import Role, User
from iwrs.services import queries, supply_views
from iwrs.services.supply import protocol
from iwrs.signatures import UNBLINDING_CATEGORIES


@dataclass(frozen=True)
class SignedHead:
    """The trail's proof of the act: its event (number and chain hash) and the latest signed
    checkpoint of the chain if it covers the event (None: not yet signed past it)."""

    event_seq: int
    event_hash: str
    checkpoint: AuditAnchor | None


@dataclass(frozen=True)
class Receipt:
    """One act on paper: study, site, person, time, what was done, and its proof."""

    kind: str
    title: str
    study_id: str
    registry_id: str
    protocol_version: str
    site: Site | None
    person_name: str
    person_role: str
    occurred_at: datetime
    lines: tuple[tuple[str, str], ...]
    proof: SignedHead
    arm_name: str | None = None  # only for the investigator who unblinded the subject


@dataclass(frozen=True)
class EventKey:
    """Which audit event records the act: its action, entity id and subject."""

    action: str
    entity_id: str | None
    subject_id: int | None = None


@dataclass(frozen=True)
class ReceiptKind:
    """What one act's receipt is made of (see the module docstring for adding one)."""

    title: str
    # (actor, record id) -> the act's event, after checking the actor's access to the record.
    find: Callable[[Actor, int], EventKey]
    missing: str  # the rule when the record exists but the act has not happened


_ROLES = {role.value for role in Role}


def _role_label(role: str) -> str:
    return Role(role).label if role in _ROLES else role


def _yes_no(value: object) -> str:
    return "yes" if value else "no"


def _holding(actor: Actor, *permissions: Permission) -> Permission:
    """The first of `permissions` the actor's role holds (the system actor: the first)."""
    if actor.role == "system":
        return permissions[0]
    held = ROLE_PERMISSIONS.get(Role(actor.role), frozenset()) if actor.role in _ROLES else ()
    for permission in permissions:
        if permission in held:
            return permission
    raise Forbidden(f"your role ({actor.role}) may not read this receipt", rule="permission")


# --- the acts -------------------------------------------------------------------------------------


def _find_randomization(actor: Actor, subject_id: int) -> EventKey:
    subject = queries.visible_subject(actor=actor, subject_id=subject_id)
    return EventKey("subject.randomized", str(subject.id), subject.id)


def _randomization_lines(after: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("Subject", str(after.get("screening_number", ""))),
        ("Randomization number", str(after.get("randomization_number", ""))),
        ("Kit for day 1", str(after.get("kit", ""))),
    ]


def _find_dispensation(actor: Actor, dispensation_id: int) -> EventKey:
    """A dispensation's event; the day-1 kit's, dispensed by the randomization, is the
    randomization's event."""
    permission = _holding(actor, Permission.DISPENSE, Permission.SCREEN_SUBJECTS)
    row = read_session().get(Dispensation, dispensation_id)
    if row is None:
        raise not_found("dispensation", dispensation_id, field="dispensation_id")
    try:
        queries.visible_subject(actor=actor, subject_id=row.subject_id, permission=permission)
    except NotFound:  # another site's dispensation: as one that does not exist
        raise not_found("dispensation", dispensation_id, field="dispensation_id") from None
    own = read_session().scalar(
        select(AuditEvent.seq).where(
            AuditEvent.action == "kit.dispensed", AuditEvent.entity_id == str(row.id)
        )
    )
    if own is None and row.visit_code == protocol().visits[0].code:
        return EventKey("subject.randomized", str(row.subject_id), row.subject_id)
    return EventKey("kit.dispensed", str(row.id), row.subject_id)


def _dispensation_lines(after: dict[str, Any]) -> list[tuple[str, str]]:
    found = [
        ("Subject", str(after.get("subject", ""))),
        ("Visit", str(after.get("visit", ""))),
        ("Kind of dispensation", str(after.get("kind", "")).replace("_", " ")),
        ("Kit", str(after.get("kit", ""))),
    ]
    if after.get("visit_date"):
        found.append(("Visit date (site's local date)", _day(after["visit_date"])))
    found.append(("Outside the visit window", _yes_no(after.get("out_of_window"))))
    return found


def _day(text: str) -> str:
    """A recorded ISO date as DD-MMM-YYYY (the pages' `day` filter)."""
    try:
        return clock.day_text(date.fromisoformat(text))
    except ValueError:
        return text


def _find_shipment(actor: Actor, shipment_id: int) -> EventKey:
    row = supply_views.visible_shipment(actor=actor, shipment_id=shipment_id)
    return EventKey("shipment.received", str(row.id))


def _shipment_lines(after: dict[str, Any]) -> list[tuple[str, str]]:
    conditions: dict[str, str] = after.get("conditions") or {}
    found = [
        ("Shipment", str(after.get("number", ""))),
        ("Kits received in good condition", str(after.get("good", 0))),
        ("Kits damaged", str(after.get("damaged", 0))),
        ("Kits missing", str(after.get("missing", 0))),
        ("Temperature excursion reported", _yes_no(after.get("temperature_excursion"))),
    ]
    for condition in ("good", "damaged", "missing"):
        kits = sorted(k for k, c in conditions.items() if c == condition)
        if kits:
            found.append((f"Kit numbers, {condition}", ", ".join(kits)))
    return found


def _find_unblinding(actor: Actor, subject_id: int) -> EventKey:
    from iwrs.services.users import site_reader

    scope = site_reader(actor, Permission.VIEW_UNBLINDING_REPORT)
    subject = read_session().get(Subject, subject_id)
    missing = not_found("subject", subject_id, field="subject_id")
    if subject is None:
        raise missing
    require_in_scope(scope, subject.site_id, missing)
    row = (
        read_session()
        .scalars(
            select(Unblinding).where(Unblinding.subject_id == subject.id).order_by(Unblinding.id)
        )
        .first()
    )
    return EventKey("subject.unblinded", str(row.id) if row else None, subject.id)


def _unblinding_lines(after: dict[str, Any]) -> list[tuple[str, str]]:
    category = str(after.get("category", ""))
    return [
        ("Subject", str(after.get("subject", ""))),
        ("Randomization number", str(after.get("randomization_number", ""))),
        ("Reason category", UNBLINDING_CATEGORIES.get(category, category)),
        ("A serious adverse event led to it", _yes_no(after.get("sae_led_to_unblinding"))),
        ("Study treatment discontinued", _yes_no(after.get("treatment_discontinued"))),
        ("Sponsor contacts notified", ", ".join(after.get("notified") or []) or "none named"),
    ]


# What was done, in words, from the recorded values of each act's event.
LINES: dict[str, Callable[[dict[str, Any]], list[tuple[str, str]]]] = {
    "subject.randomized": _randomization_lines,
    "kit.dispensed": _dispensation_lines,
    "shipment.received": _shipment_lines,
    "subject.unblinded": _unblinding_lines,
}
KINDS: dict[str, ReceiptKind] = {
    "randomization": ReceiptKind("Randomization receipt", _find_randomization, "randomized"),
    "dispensation": ReceiptKind("Dispensation receipt", _find_dispensation, "dispensed"),
    "shipment": ReceiptKind("Shipment receipt at the site", _find_shipment, "received"),
    "unblinding": ReceiptKind("Emergency unblinding receipt", _find_unblinding, "unblinded"),
}


# --- the one builder -----------------------------------------------------------------------------


def _receipt(actor: Actor, kind: str, record_id: int) -> Receipt:
    """The receipt of act `kind` for record `record_id`, access checked first (NotFound with the
    kind's `missing` rule when the record exists but the act has not happened)."""
    spec = KINDS[kind]
    key = spec.find(actor, record_id)
    session = read_session()
    query = select(AuditEvent).where(
        AuditEvent.action == key.action, AuditEvent.entity_id == key.entity_id
    )
    if key.subject_id is not None:
        query = query.where(AuditEvent.subject_id == key.subject_id)
    found = key.entity_id is not None
    event = session.scalars(query.order_by(AuditEvent.seq).limit(1)).first() if found else None
    if event is None:
        raise NotFound(
            f"{kind} {record_id} has no receipt: the act was not recorded",
            field="record_id",
            rule=spec.missing,
        )
    user = session.get(User, event.user_id) if event.user_id is not None else None
    site = session.get(Site, event.site_id) if event.site_id is not None else None
    latest = latest_checkpoint(session)
    p = protocol()
    return Receipt(
        kind=kind,
        title=spec.title,
        study_id=p.study_id,
        registry_id=p.registry_id,
        protocol_version=str(p.version),
        site=site,
        person_name=user.full_name if user else event.username,
        person_role=_role_label(event.role),
        occurred_at=event.occurred_at,
        lines=tuple(LINES[key.action](json.loads(event.after or "{}"))),
        proof=SignedHead(
            event.seq, event.hash, latest if latest and latest.seq >= event.seq else None
        ),
    )


def randomization_receipt(*, actor: Actor, subject_id: int) -> Receipt:
    """The receipt of the subject's randomization (investigators of its site; never the arm)."""
    return _receipt(actor, "randomization", subject_id)


def dispensation_receipt(*, actor: Actor, dispensation_id: int) -> Receipt:
    """The receipt of one dispensation (the site's pharmacists and investigators)."""
    return _receipt(actor, "dispensation", dispensation_id)


def shipment_receipt(*, actor: Actor, shipment_id: int) -> Receipt:
    """The receipt of a shipment's arrival at its site (the site's pharmacists, supply)."""
    return _receipt(actor, "shipment", shipment_id)


def unblinding_receipt(*, actor: Actor, subject_id: int, with_arm: bool = False) -> Receipt:
    """The receipt of the subject's emergency unblinding: readers of the unblinding report (site
    scoped); the treatment only for the investigator who unblinded the subject and only when
    `with_arm` (the receipt page, which shows it; never the PDF, which leaves it out), and that
    reading is recorded as a view of the arm (`unblinding.view_arm`). Without `with_arm` the arm
    is neither read nor recorded as viewed."""
    receipt = _receipt(actor, "unblinding", subject_id)
    if not with_arm or actor.user_id is None or actor.role != Role.INVESTIGATOR:
        return receipt
    mine = (
        read_session()
        .scalars(
            select(Unblinding.id).where(
                Unblinding.subject_id == subject_id, Unblinding.unblinded_by_id == actor.user_id
            )
        )
        .first()
    )
    if mine is None:
        return receipt
    from iwrs.services import unblinding

    arm = unblinding.view_arm(actor=actor, subject_id=subject_id)
    return replace(receipt, arm_name=arm.arm_name)
