"""Use cases for kit accountability at sites: damage and loss reports, returns, destruction,
and the reconciliation that proves every kit is where the ledger says.

Decisions (issue 15, where the issue was silent):
- A return has two steps. `record_return`: at a visit, the kit the subject brings back, its
  condition and (if counted) the units left; the kit is then RETURNED (not yet verified).
  `verify_return`: a pharmacist checks the kit in hand and counts it again; it is then PENDING
  DESTRUCTION. The verifier may be the pharmacist who recorded the return (many sites have one
  pharmacist); each step is its own audit event naming its person, so a reviewer sees whether
  two people looked. A kit the subject reports lost (condition lost) is recorded once, MISSING
  at the site, with nothing to verify.
- Destruction is the one step that ends a kit's accountability: it takes the supply manager's
  e-signature (meaning: `iwrs.signatures.destroy_kits`) after a confirmation page listing the
  kits. Reporting a kit damaged or lost takes a reason and a confirmation page stating what will
  happen, not a signature: neither is final (a damaged kit stays in the inventory until its
  signed destruction; a lost kit that is found is quarantined), as a quarantined kit's
  rejection (to damaged) takes a reason only.
- The blind: none of these reads a kit's treatment, and every refusal depends on the kit's
  state, place and the input only (`tests/web/test_noninterference.py` swaps the arms in a world
  that records, verifies and destroys returns and crawls their pages).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import String, and_, case, cast, func, or_, select
from sqlalchemy.orm import Session

from iwrs import audit, clock, signatures, validation
from iwrs.audit import Actor
from iwrs.auth import Permission
from iwrs.db import read_session, transaction
from iwrs.errors import InvalidInput, NotFound
from iwrs.models.randomization import Dispensation
from iwrs.models.subjects import Subject
from iwrs.models.supply import Destruction, Kit, KitEvent, KitReturn, ReturnCondition
from iwrs.protocol import Protocol
from iwrs.services.coded_reasons import coded_reason
from iwrs.services.supply import (
    _apply,
    _depot,
    acting_user,
    kits_by_number,
    position,
    site_kit,
    site_of,
)
from supply.ledger import ACCOUNTED, Reconciliation, reconcile
from supply.states import (
    DESTINATION,
    IllegalTransition,
    KitAction,
    KitPosition,
    KitState,
    Place,
    PlaceKind,
    transition,
)

RETURN_CONDITIONS = tuple(c.value for c in ReturnCondition)
UNSCHEDULED_VISIT = "unscheduled"  # a return outside the protocol's visits
UNITS_MAX = 999  # units a kit can hold back, an upper bound for a count typed by hand


def report_kit(*, actor: Actor, kit_number: str, lost: bool, reason: str) -> Kit:
    """A pharmacist reports a kit at the site damaged or lost. A kit once dispensed to a
    subject since unblinded (a return reported lost) takes a coded reason (rule
    coded_reason_after_unblinding, iwrs/services/coded_reasons.py)."""
    reason = validation.reason(reason)
    with transaction() as session:
        kit = site_kit(session, actor, kit_number, Permission.DISPENSE)
        holder = session.scalars(
            select(Subject)
            .join(Dispensation, Dispensation.subject_id == Subject.id)
            .where(Dispensation.kit_id == kit.id)
        ).first()
        if holder is not None:
            reason = coded_reason(holder, reason) or ""
        action = KitAction.REPORT_LOST if lost else KitAction.REPORT_DAMAGED
        before = {"state": str(kit.state)}
        _apply(session, kit, action, actor=actor, detail=reason.strip())
        site_id = site_of(session, kit)
        audit.record(
            session,
            actor=actor,
            action=f"kit.{'lost' if lost else 'damaged'}",
            entity_type="kit",
            entity_id=kit.number,
            site_id=site_id,
            before=before,
            after={"state": str(kit.state)},
            reason=reason.strip(),
        )
        return kit


def return_visits(trial: Protocol) -> tuple[str, ...]:
    """The visits a return may be recorded at: the protocol's, then an unscheduled one."""
    return (*(v.code for v in trial.visits), UNSCHEDULED_VISIT)


def _units(value: int | str | None, field: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return validation.integer(value, field=field, minimum=0, maximum=UNITS_MAX)


def record_return(
    *,
    actor: Actor,
    kit_number: str,
    condition: str,
    visit_code: str = UNSCHEDULED_VISIT,
    units_returned: int | str | None = None,
    returned_on: date | str | None = None,
    subject_id: int | None = None,
) -> Kit:
    """A pharmacist records a dispensed kit brought back at a visit (its condition, the units
    left if counted, the visit and its date at the site: today unless stated): RETURNED, to be
    verified; a kit the subject reports lost (condition lost) is MISSING at the site.
    `subject_id`: the subject bringing it back (the subject's page), when known.
    Refusals: condition/visit_code `choice`, units_returned `integer`/`range`, returned_on
    `date`/`future_date`/`before_previous_step` (before the kit was dispensed), kit_number
    `exists` (not at the actor's sites, or not last dispensed to `subject_id`) or
    `kit_transition` (not dispensed)."""
    units = _return_input(condition, visit_code, units_returned)
    lost = condition == ReturnCondition.LOST
    with transaction() as session:
        kit = site_kit(session, actor, kit_number, Permission.DISPENSE)
        site_id = site_of(session, kit)
        holder_id = kit.place_id if kit.place_kind == "subject" else None
        subject = session.get(Subject, holder_id) if holder_id is not None else None
        given = session.scalars(
            select(Dispensation)
            .where(Dispensation.kit_id == kit.id)
            .order_by(Dispensation.id.desc())
        ).first()
        if subject_id is not None and (given is None or given.subject_id != subject_id):
            raise NotFound(
                f"kit_number: kit {kit.number} was not dispensed to this subject",
                field="kit_number",
                rule="exists",
            )
        before = {"state": str(kit.state)}
        _apply(  # refuses a kit not dispensed (rule kit_transition) before its date is judged
            session,
            kit,
            KitAction.RETURN_LOST if lost else KitAction.RETURN,
            actor=actor,
            to=Place.site(site_id) if site_id else None,
            detail=condition,
        )
        assert subject is not None  # a dispensed kit is at its subject
        on = _returned_on(returned_on, subject, given)
        row = KitReturn(
            kit_id=kit.id,
            subject_id=subject.id,
            visit_code=visit_code,
            condition=ReturnCondition(condition),
            units_returned=units,
            returned_on=on,
            recorded_at=clock.now(),
            recorded_by_id=actor.user_id,
        )
        session.add(row)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="kit.return_lost" if lost else "kit.returned",
            entity_type="kit",
            entity_id=kit.number,
            site_id=site_id,
            before=before,
            after={
                "state": str(kit.state),
                "condition": condition,
                "units_returned": units,
                "visit_code": visit_code,
                "returned_on": on.isoformat(),
                "subject": subject.screening_number,
            },
        )
        return kit


def _return_input(condition: str, visit_code: str, units_returned: int | str | None) -> int | None:
    """The return's inputs checked before any row is read; the units returned, if counted."""
    from iwrs.services.supply import protocol

    if condition not in RETURN_CONDITIONS:
        raise InvalidInput(
            f"condition: must be one of {', '.join(c.label for c in ReturnCondition)}",
            field="condition",
            rule="choice",
        )
    if visit_code not in return_visits(protocol()):
        raise InvalidInput(
            f"visit_code: {visit_code!r} is not a visit of the protocol",
            field="visit_code",
            rule="choice",
        )
    return _units(units_returned, "units_returned")


def _returned_on(value: date | str | None, subject: Subject, given: Dispensation | None) -> date:
    """The return's date at the subject's site: today if not stated; never in the future, never
    before the kit was dispensed."""
    from iwrs.services.stated_dates import parse_stated_date_text

    today = clock.today(subject.site)
    if value is None or (isinstance(value, str) and not value.strip()):
        return today
    on = parse_stated_date_text(value, "returned_on")
    if on > today:
        raise InvalidInput(
            f"returned_on: {on} is in the future (today at the site is {today})",
            field="returned_on",
            rule="future_date",
        )
    dispensed = None
    if given is not None:
        dispensed = given.visit_date or clock.local_date(given.dispensed_at, subject.site)
    if dispensed is not None and on < dispensed:
        raise InvalidInput(
            f"returned_on: {on} is before the kit was dispensed ({dispensed})",
            field="returned_on",
            rule="before_previous_step",
        )
    return on


def verify_return(*, actor: Actor, kit_number: str, units_verified: int | str | None = None) -> Kit:
    """A pharmacist (the one who recorded the return or another) checks a returned kit in
    hand and counts what is left: the kit is then pending destruction. Refusals: kit_number
    `exists` or `kit_transition` (not a returned kit awaiting verification), units_verified
    `integer`/`range`."""
    units = _units(units_verified, "units_verified")
    with transaction() as session:
        kit = site_kit(session, actor, kit_number, Permission.DISPENSE)
        site_id = site_of(session, kit)
        before = {"state": str(kit.state)}
        _apply(session, kit, KitAction.VERIFY_RETURN, actor=actor)
        # A kit returned before migration 0024 has no kit_return row (its return is only in the
        # ledger and the trail): it is verified all the same, so that it can be destroyed.
        row = session.scalars(select(KitReturn).where(KitReturn.kit_id == kit.id)).first()
        if row is not None:
            row.verified_at, row.verified_by_id, row.units_verified = (
                clock.now(),
                actor.user_id,
                units,
            )
        audit.record(
            session,
            actor=actor,
            action="kit.return_verified",
            entity_type="kit",
            entity_id=kit.number,
            site_id=site_id,
            before=before,
            after={
                "state": str(kit.state),
                "units_returned": row.units_returned if row is not None else None,
                "units_verified": units,
                "same_person": row.recorded_by_id == actor.user_id if row is not None else None,
            },
        )
        return kit


def destruction_meaning(kit_numbers: Sequence[str], reference: str) -> str:
    """What the destruction signature means, for the kits and reference given (the page shows
    it before the password is entered)."""
    return signatures.destroy_kits(kit_numbers=sorted(set(kit_numbers)), reference=reference)


def destroy_kits(
    *, actor: Actor, kit_numbers: Sequence[str], reference: str, signer_password: str
) -> Destruction:
    """The supply manager records, with an e-signature, the destruction of kits pending
    destruction (verified returns), damaged or expired, under the reference of the destruction
    certificate. Refusals: reference `required`, kit_numbers `required`/`exists`,
    `kit_transition` (a kit in another state: nothing is destroyed), signature_password."""
    from iwrs.services.sessions import confirm_signature
    from iwrs.services.users import sign

    reference = validation.text(reference, field="reference", kind="reference")
    if not kit_numbers:
        raise InvalidInput(
            "kit_numbers: name at least one kit", field="kit_numbers", rule="required"
        )
    acting_user(read_session(), actor, Permission.MANAGE_SUPPLY)
    confirm_signature(signer_id=actor.user_id, password=signer_password)
    with transaction() as session:
        acting_user(session, actor, Permission.MANAGE_SUPPLY)
        record = Destruction(
            reference=reference.strip(), destroyed_at=clock.now(), destroyed_by_id=actor.user_id
        )
        session.add(record)
        session.flush()
        kits = kits_by_number(session, kit_numbers)
        for number in sorted(kits):
            _apply(
                session,
                kits[number],
                KitAction.DESTROY,
                actor=actor,
                to=Place.destroyed(record.id),
                detail=record.reference,
            )
        sign(
            session,
            actor=actor,
            meaning=destruction_meaning(sorted(kits), record.reference),
            entity_type="destruction",
            entity_id=record.id,
        )
        audit.record(
            session,
            actor=actor,
            action="kits.destroyed",
            entity_type="destruction",
            entity_id=record.id,
            reason=record.reference,
            after={"kits": sorted(kits), "reference": record.reference},
        )
        return record


def _positions_and_receipts() -> tuple[dict[str, KitPosition], dict[str, int]]:
    session = read_session()
    kits = {k.id: k for k in session.scalars(select(Kit))}
    positions = {}
    for kit in kits.values():
        try:
            positions[kit.number] = position(kit)
        except ValueError:
            continue  # an unreadable row: `ledger_problems` reports it
    receipts: dict[str, int] = {}
    for event in session.scalars(
        select(KitEvent)
        .where(
            KitEvent.action.in_(
                [
                    str(KitAction.RECEIVE),
                    str(KitAction.RECEIVE_DAMAGED),
                    str(KitAction.RECEIVE_MISSING),
                ]
            )
        )
        .order_by(KitEvent.id)
    ):
        if event.kit_id in kits:
            receipts[kits[event.kit_id].number] = event.to_place_id
    return positions, receipts


def reconciliation(*, actor: Actor) -> Reconciliation:
    """received = available + dispensed + damaged + missing + expired + quarantined + returned
    + destroyed, per site and overall, with the kits that break it (supply managers, the
    operator)."""
    _require(actor, Permission.MANAGE_SUPPLY)
    positions, receipts = _positions_and_receipts()
    return reconcile(positions, received_at_site=receipts)


RECEIPTS = (str(KitAction.RECEIVE), str(KitAction.RECEIVE_DAMAGED), str(KitAction.RECEIVE_MISSING))


@dataclass(frozen=True)
class SiteCounts:
    """One site's (or, site None, the overall) reconciliation in counts: kits received, the
    received kits by accounted state, those in a position that breaks the identity, and kits
    held at the site that no receipt there accounts for. Totals of every treatment together."""

    site: int | None
    received: int
    by_state: dict[KitState, int]
    unaccounted: int = 0
    strays: int = 0

    @property
    def balanced(self) -> bool:
        return self.received == sum(self.by_state.values()) and not self.strays

    @property
    def differences(self) -> tuple[str, ...]:
        """What breaks the identity, in counts (`iwrs supply check-ledger` names the kits)."""
        return tuple(
            text
            for n, text in (
                (self.unaccounted, f"{self.unaccounted} received kit(s) unaccounted"),
                (self.strays, f"{self.strays} kit(s) held without a receipt here"),
            )
            if n
        )


@dataclass(frozen=True)
class ReconciliationCounts:
    sites: dict[int, SiteCounts]
    overall: SiteCounts

    @property
    def balanced(self) -> bool:
        return self.overall.balanced and all(t.balanced for t in self.sites.values())

    @property
    def differences(self) -> tuple[str, ...]:
        return self.overall.differences


def _require(actor: Actor, permission: Permission) -> None:
    from iwrs.services.users import require

    require(actor, permission)


def _require_system(actor: Actor) -> None:
    from iwrs.services.users import require_system

    require_system(actor)


def reconciliation_summary(*, actor: Actor) -> ReconciliationCounts:
    """The identity of `reconciliation` per site and overall, from two GROUP BY statements
    (issue 13: the supply page reads summaries, never every kit nor the ledger replayed). The
    kit numbers behind a difference are for `iwrs supply check-ledger`, the auditor's command.
    A kit's receipt is its last receipt event, as in `reconciliation`. Supply managers and the
    operator only."""
    _require(actor, Permission.MANAGE_SUPPLY)
    session = read_session()
    last = (
        select(func.max(KitEvent.id).label("id"))
        .where(KitEvent.action.in_(RECEIPTS))
        .group_by(KitEvent.kit_id)
        .subquery()
    )
    receipt = (
        select(KitEvent.kit_id, KitEvent.to_place_id.label("site"))
        .join(last, KitEvent.id == last.c.id)
        .subquery()
    )
    accounted = and_(
        Kit.state.in_([str(s) for s in ACCOUNTED]),
        or_(
            and_(Kit.place_kind == "site", Kit.place_id == receipt.c.site),
            Kit.place_kind.in_(["subject", "destroyed"]),
        ),
    )
    flag = case((accounted, 1), else_=0)
    tallies: dict[int, dict[str, Any]] = {}

    def tally(site: int) -> dict[str, Any]:
        return tallies.setdefault(
            site, {"received": 0, "by_state": dict.fromkeys(ACCOUNTED, 0), "unaccounted": 0}
        )

    for site, state, ok, n in session.execute(
        select(receipt.c.site, cast(Kit.state, String), flag, func.count())
        .join(Kit, Kit.id == receipt.c.kit_id)
        .group_by(receipt.c.site, cast(Kit.state, String), flag)
    ):
        row = tally(site)
        row["received"] += n
        if ok:
            row["by_state"][KitState(state)] += n
        else:
            row["unaccounted"] += n
    strays: dict[int, int] = dict(
        session.execute(  # type: ignore[arg-type]
            select(Kit.place_id, func.count())
            .outerjoin(receipt, receipt.c.kit_id == Kit.id)
            .where(
                Kit.place_kind == "site",
                or_(receipt.c.site.is_(None), receipt.c.site != Kit.place_id),
            )
            .group_by(Kit.place_id)
        ).all()
    )
    for site in strays:
        tally(site)
    sites = {
        site: SiteCounts(site, strays=strays.get(site, 0), **row)
        for site, row in sorted(tallies.items())
    }
    overall = SiteCounts(
        None,
        received=sum(t.received for t in sites.values()),
        by_state={s: sum(t.by_state[s] for t in sites.values()) for s in ACCOUNTED},
        unaccounted=sum(t.unaccounted for t in sites.values()),
        strays=sum(t.strays for t in sites.values()),
    )
    return ReconciliationCounts(sites, overall)


def ledger_problems(*, actor: Actor) -> tuple[int, list[tuple[str, str]]]:
    """`replay_ledger` for the operator (`iwrs supply check-ledger`): Forbidden `system_only`
    for a person."""
    _require_system(actor)
    return replay_ledger(read_session())


def replay_ledger(session: Session) -> tuple[int, list[tuple[str, str]]]:
    """Replay the kit ledger from where every kit starts (at the protocol's depot, where kits
    are generated or imported) and return (events replayed, [(kit number, problem)]), inside
    the caller's checked use case (`ledger_problems`, `reconcile.reconcile`).

    Reads plain column values, so a tampered row (an unknown state, place or action, an event
    of no kit, an illegal transition) is reported as a problem of its kit, never raised."""
    kits = {
        row.id: row
        for row in session.execute(
            select(
                Kit.id,
                Kit.number,
                cast(Kit.state, String).label("state"),
                Kit.place_kind,
                Kit.place_id,
            )
        )
    }
    depot = Place.depot(_depot(session).id)
    replayed: dict[int, KitPosition | None] = {
        k: KitPosition(KitState.AT_DEPOT, depot) for k in kits
    }
    problems: list[tuple[str, str]] = []
    events = session.execute(
        select(
            KitEvent.id,
            KitEvent.kit_id,
            KitEvent.action,
            KitEvent.to_place_kind,
            KitEvent.to_place_id,
        ).order_by(KitEvent.id)
    ).all()
    for event in events:
        kit = kits.get(event.kit_id)
        if kit is None:
            problems.append((f"#{event.kit_id}", f"kit event {event.id} names no kit"))
            continue
        here = replayed[event.kit_id]
        if here is None:
            continue  # already reported
        try:
            action = KitAction(event.action)
            to = (
                Place(PlaceKind(event.to_place_kind), event.to_place_id)
                if DESTINATION[action] is not None
                else None
            )
            replayed[event.kit_id] = transition(here, action, to=to, kit=kit.number)
        except (ValueError, IllegalTransition) as error:
            problems.append((kit.number, f"kit event {event.id}: {error}"))
            replayed[event.kit_id] = None
    for kit_id, kit in kits.items():
        expected = replayed[kit_id]
        if expected is None:
            continue
        try:
            current = KitPosition(
                KitState(kit.state), Place(PlaceKind(kit.place_kind), kit.place_id)
            )
        except ValueError as error:
            problems.append((kit.number, f"the kit row is unreadable: {error}"))
            continue
        if current != expected:
            problems.append(
                (
                    kit.number,
                    f"the row says {current.state} at {current.place.kind} "
                    f"{current.place.id}, the ledger says {expected.state} at "
                    f"{expected.place.kind} {expected.place.id}",
                )
            )
    return len(events), problems
