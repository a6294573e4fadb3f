"""Partition worlds for the blinding tests (README rule 2: nobody learns who shares an arm).

`build_partition_world` runs one scripted, deterministic trial at one site, CN01, kept close to
its resupply trigger, with three blinded packaging lots (each holding both treatments, 1:1):

    PKG-0101   8 kits, expiry day 53   imported from a vendor file grouped by treatment
    PKG-0102  24 kits, expiry day 400  generated
    PKG-0103  24 kits, expiry day 500  generated

Day 0 (2 March 2026) the site is activated and its initial shipment (all of PKG-0101) received.
Day 7 R1-R3 are randomized (each gets its day-1 kit), day 14 R4-R5; day 25 the supply manager
sends a manual shipment; day 30 new stability data shorten PKG-0101 to that day (what is left of
it is quarantined, and the expiry job of day 33 expires it: a kit drawn early in the week-4
window could otherwise still come from it, when it may hold one treatment only); days 32-42 the
week-4 kits are dispensed (R1-R3 and R4 on the first day of the window, R5 on the target day),
with one replacement and one unscheduled kit. The daily jobs (`flask iwrs supply expire`, then
`flask iwrs supply resupply`) run at 01:00 UTC on days 1, 8, 15, 22, 26, 33, 43, 51 and 52; every
shipment the scenario finds requested is shipped two hours after its request is seen and
received the next day. At the end, the pharmacist tries unscheduled kits for R1 on free text
alone, at most five times (the issue's probe 4).

Every world of a family holds the same kits with the same treatments and the same list; the
arms of the first five slots are set explicitly (BASE_ARMS), and a VARIANT world changes the
arm of ONE slot: in the base world R1 and R3 share an arm, in variant "R1" R1 shares R2's arm
instead, in variant "R3" R3 does. A subject whose arm differs necessarily receives another
physical kit, so the views are compared after `Relabeller` replaces every kit number by a
neutral label: the kit's lot and the order in which it first appears in the audit trail.
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

from flask import Flask
from sqlalchemy import select, update

from iwrs import create_app
from iwrs.audit import Actor
from iwrs.clock import set_clock
from tests.conftest import PASSWORD, ManualClock, make_settings
from tests.web.blind_world import (
    ACTIVE,
    BLINDED,
    KEYS,
    LIST_SEED,
    PLACEBO,
    START,
    STATISTICIAN,
    USERS,
    World,
    protocol_copy,
)

SITE = "CN01"
LOTS = (("PKG-0101", 8, 53), ("PKG-0102", 24, 400), ("PKG-0103", 24, 500))
# (key, stratum) of the subjects randomized at CN01, in order; the slot each gets is the next of
# its stratum: R1 (RA,1), R2 (SSc,1), R3 (RA,2), R4 (SSc,2), R5 (RA,3).
SUBJECTS = [("R1", "RA"), ("R2", "SSc"), ("R3", "RA"), ("R4", "SSc"), ("R5", "RA")]
BASE_ARMS = {"R1": ACTIVE, "R2": PLACEBO, "R3": ACTIVE, "R4": PLACEBO, "R5": PLACEBO}
# The variant worlds: one subject's slot holds the other arm. Both keep the first three subjects
# split 2:1, so the site is near its trigger in every world without running out of an arm.
VARIANTS = ("R1", "R3")
JOB_DAYS = (1, 8, 15, 22, 26, 33, 43, 51, 52)
PROBE_DAY = 53
SWAP = {ACTIVE: PLACEBO, PLACEBO: ACTIVE}
INVESTIGATOR, PHARMACIST = "dr.li", "ph.wang"
# The roles compared: every blinded role, the investigator of still-blinded subjects included.
ROLES = dict(BLINDED)


@dataclass
class PartitionWorld(World):
    variant: str | None = None
    probe: list[str] = field(default_factory=list)

    def may_see_arms(self, username: str) -> set[str]:
        """Nobody is unblinded in a partition world."""
        return set()


def arms_of(variant: str | None) -> dict[str, str]:
    """The arm of each subject's slot in the base world (None) or a variant world."""
    arms = dict(BASE_ARMS)
    if variant is not None:
        arms[variant] = SWAP[arms[variant]]
    return arms


def _set_slot_arms(arms: dict[str, str]) -> None:
    """Rewrite the sealed arms of the slots the subjects will take (test set-up only)."""
    from iwrs.db import engine, read_session
    from iwrs.models.randomization import RandomizationSlot
    from iwrs.services.randomization import SLOT_CONTEXT
    from iwrs.services.supply import sealer

    table = RandomizationSlot.__table__
    sequence: dict[str, int] = defaultdict(int)
    with engine().begin() as connection:
        for key, stratum in SUBJECTS:
            sequence[stratum] += 1
            row = (
                connection.execute(
                    select(table).where(
                        table.c.stratum == f"disease={stratum}",
                        table.c.sequence == sequence[stratum],
                    )
                )
                .mappings()
                .one()
            )
            context = SLOT_CONTEXT.format(
                list_id=row["list_id"], stratum=row["stratum"], sequence=row["sequence"]
            )
            connection.execute(
                update(table)
                .where(table.c.id == row["id"])
                .values(sealed_arm=sealer().seal(arms[key], context=context))
            )
    read_session().rollback()


def _import_grouped_lot(actor: Actor, code: str, count: int, expiry: date) -> None:
    """A vendor file grouped by treatment (every ACTIVE row first): the import order a list
    printed in row order would betray."""
    from blinding.kits import format_kit_list_csv, generate_kit_list
    from iwrs.services import supply

    kit_type = supply.protocol().kit_types[0].code
    specs = generate_kit_list(
        seed=bytes(range(40, 72)),
        kit_type=kit_type,
        lot=code,
        expiry=expiry,
        per_treatment={ACTIVE: count // 2, PLACEBO: count // 2},
    )
    specs = sorted(specs, key=lambda spec: (spec.treatment, spec.number))
    supply.import_kits(actor=actor, csv_text=format_kit_list_csv(specs))


def build_partition_world(directory: Path, database_url: str, *, variant: str | None) -> World:
    """One complete, deterministic partition world (see the module docstring)."""
    from iwrs.services import trial

    settings = make_settings(
        directory, database_url, protocol_path=protocol_copy(directory), **KEYS
    )
    app = create_app(settings)
    app.config["IWRS_PROPAGATE_UNEXPECTED"] = False
    app.config["PROPAGATE_EXCEPTIONS"] = False
    clock = ManualClock(START)
    set_clock(app, clock)
    app.extensions["iwrs.tie_break"] = random.Random(11).randrange
    with app.app_context():
        trial.load_protocol(actor=Actor.system("test"), protocol=app.extensions["iwrs.protocol"])
        return _Scenario(app, clock, variant).run()


class _Scenario:
    """The script, step by step; `at(day, hour)` moves the manual clock forward only."""

    def __init__(self, app: Flask, clock: ManualClock, variant: str | None) -> None:
        self.app, self.clock, self.variant = app, clock, variant
        self.people: dict[str, Any] = {}
        self.subject_ids: dict[str, int] = {}
        self.site_id = 0
        self.seen_shipments: set[int] = set()
        self.jobs_done: set[int] = set()

    def at(self, day: int, hour: int, minute: int = 0) -> None:
        when = START.replace(hour=0, minute=0) + timedelta(days=day, hours=hour, minutes=minute)
        # Never backwards: a shipment moved on the way may have taken the clock past `when`.
        if when > self.clock.current:
            self.clock.advance(seconds=(when - self.clock.current).total_seconds())

    def actor(self, username: str) -> Actor:
        return Actor.of(self.people[username])

    def run(self) -> PartitionWorld:
        from iwrs.db import read_session
        from iwrs.models.sites import Site

        self.set_up()
        self.site_id = read_session().scalars(select(Site.id).where(Site.code == SITE)).one()
        self.activate()
        self.until(day=7)
        for key in ("R1", "R2", "R3"):
            self.randomize(key)
        self.until(day=14)
        for key in ("R4", "R5"):
            self.randomize(key)
        self.until(day=25, hour=3)
        self.manual_shipment(quantity=8)
        self.until(day=30, hour=3)
        self.shorten_first_lot()
        self.until(day=32, hour=2)
        for key in ("R1", "R2", "R3"):  # first day of the week-4 window: early, not out of it
            self.dispense(key, "V2")
        self.extra_kit("R2", "V2", "replacement", "Syringe dropped before injection")
        self.extra_kit("R3", "V2", "unscheduled", "Dose repeated: injection site leak")
        self.until(day=39, hour=2)
        self.dispense("R4", "V2")
        self.until(day=42, hour=2)
        self.dispense("R5", "V2")
        self.until(day=PROBE_DAY, hour=2)
        probe = self.probe_free_text_extra_kits("R1")
        self.clock.advance(minutes=30)
        tokens = self.tokens()
        self.clock.advance(minutes=30)
        return PartitionWorld(
            self.app,
            self.clock,
            False,
            tokens,
            self.subject_ids,
            {SITE: self.site_id},
            variant=self.variant,
            probe=probe,
        )

    # --- steps --------------------------------------------------------------------------------

    def set_up(self) -> None:
        from iwrs.services import supply, users

        for username, full_name, role, site_codes in USERS:
            self.people[username] = users.create_user(
                actor=Actor.system("test"),
                username=username,
                full_name=full_name,
                role=role,
                password=PASSWORD,
                site_codes=site_codes,
            )
        self.clock.advance(minutes=5)
        today = supply.depot_today()
        manager = self.actor("supply.chen")
        kit_type = supply.protocol().kit_types[0].code
        code, count, days = LOTS[0]
        _import_grouped_lot(manager, code, count, today + timedelta(days=days))
        for index, (code, count, days) in enumerate(LOTS[1:]):
            supply.generate_kits(
                actor=manager,
                kit_type=kit_type,
                lot=code,
                expiry_date=today + timedelta(days=days),
                count=count,
                seed=bytes([index + 1]) * 32,
            )
        self.clock.advance(minutes=5)

    def activate(self) -> None:
        from iwrs.demo import eligible_answers
        from iwrs.models.sites import SiteStatus
        from iwrs.services import randomization, sites, subjects

        sites.change_site_status(
            actor=self.actor("admin"),
            site_id=self.site_id,
            status=SiteStatus.ACTIVE,
            signer_password=PASSWORD,
            understood=True,
        )
        self.clock.advance(minutes=10)
        self.move_shipments()
        investigator = self.actor(INVESTIGATOR)
        births = ["1961-05-14", "1958-11-02", "1966-08-30", "1972-02-19", "1969-12-01"]
        for (key, stratum), born in zip(SUBJECTS, births, strict=True):
            subject = subjects.screen_subject(
                actor=investigator, site_id=self.site_id, date_of_birth=born, sex="female"
            )
            self.subject_ids[key] = subject.id
            answers = eligible_answers(subjects.engine(), subject.screening_date, disease=stratum)
            record = subjects.record_assessment(
                actor=investigator,
                subject_id=subject.id,
                answers={k: v for k, v in answers.items() if v is not None},
            )
            subjects.decide_eligibility(
                actor=investigator,
                subject_id=subject.id,
                assessment_id=record.row.id,
                decision="eligible",
                signer_password=PASSWORD,
                understood=True,
            )
            self.clock.advance(minutes=7)
        randomization.generate_list(
            actor=self.actor(STATISTICIAN), name="GenSci048-204 v1", seed=LIST_SEED
        )
        _set_slot_arms(arms_of(self.variant))
        self.clock.advance(minutes=5)

    def until(self, *, day: int, hour: int = 9) -> None:
        """Let time pass to `day` `hour`:00 UTC, running the daily jobs at 01:00 on JOB_DAYS
        and moving every requested shipment on the way."""
        for job_day in JOB_DAYS:
            if job_day in self.jobs_done or (job_day, 1) > (day, hour):
                continue
            self.at(job_day, 1)
            self.daily_jobs()
            self.jobs_done.add(job_day)
            self.move_shipments()
        self.at(day, hour)
        self.move_shipments()

    def daily_jobs(self) -> None:
        runner = self.app.test_cli_runner()
        for command in (["iwrs", "supply", "expire"], ["iwrs", "supply", "resupply"]):
            result = runner.invoke(args=command)
            assert result.exit_code == 0, (command, result.output)
            self.clock.advance(minutes=5)

    def move_shipments(self) -> None:
        """Ship every newly requested shipment two hours later; receive it the next day."""
        from iwrs.db import read_session
        from iwrs.models.supply import Shipment
        from iwrs.services import shipments, supply_views

        session = read_session()
        session.rollback()
        rows = session.scalars(
            select(Shipment).where(Shipment.state == "requested").order_by(Shipment.id)
        ).all()
        for shipment_id in [row.id for row in rows if row.id not in self.seen_shipments]:
            self.seen_shipments.add(shipment_id)
            self.clock.advance(hours=2)
            shipments.ship_shipment(
                actor=self.actor("supply.chen"),
                shipment_id=shipment_id,
                courier="Cold Chain Co",
                tracking_number=f"CC{shipment_id:06d}",
            )
            self.clock.advance(hours=22)
            kits = supply_views.shipment_kits(actor=self.actor(PHARMACIST), shipment_id=shipment_id)
            shipments.receive_shipment(
                actor=self.actor(PHARMACIST),
                shipment_id=shipment_id,
                lines={k.number: "good" for k in kits},
                excursion=False,
            )
            self.clock.advance(minutes=10)

    def randomize(self, key: str) -> None:
        from iwrs.services import randomization

        randomization.randomize(
            actor=self.actor(INVESTIGATOR),
            subject_id=self.subject_ids[key],
            signer_password=PASSWORD,
            understood=True,
            idempotency_key=f"edc-{key}",
        )
        self.clock.advance(minutes=11)

    def dispense(self, key: str, visit: str) -> None:
        from iwrs.services import dispensing

        result = dispensing.dispense(
            actor=self.actor(PHARMACIST), subject_id=self.subject_ids[key], visit_code=visit
        )
        self.clock.advance(minutes=2)
        dispensing.confirm_kit(
            actor=self.actor(PHARMACIST),
            dispensation_id=result.dispensation_id,
            kit_number=result.kit_number,
        )
        self.clock.advance(minutes=9)

    def extra_kit(self, key: str, visit: str, kind: str, reason: str) -> None:
        """A replacement or unscheduled kit: the investigator's signed request (issue 10), then
        the pharmacist dispenses it. Without `request_extra_kit` (before the kit-request fix)
        the pharmacist dispenses on free text, as that code allows."""
        from iwrs.services import dispensing

        request = getattr(dispensing, "request_extra_kit", None)
        if request is not None:
            request(
                actor=self.actor(INVESTIGATOR),
                subject_id=self.subject_ids[key],
                visit_code=visit,
                kind=kind,
                reason=reason,
                signer_password=PASSWORD,
            )
            self.clock.advance(minutes=4)
        result = dispensing.dispense(
            actor=self.actor(PHARMACIST),
            subject_id=self.subject_ids[key],
            visit_code=visit,
            kind=kind,
            reason="" if request is not None else reason,
        )
        self.clock.advance(minutes=2)
        dispensing.confirm_kit(
            actor=self.actor(PHARMACIST),
            dispensation_id=result.dispensation_id,
            kit_number=result.kit_number,
        )
        self.clock.advance(minutes=9)

    def manual_shipment(self, *, quantity: int) -> None:
        from iwrs.services import shipments

        shipments.request_manual_shipment(
            actor=self.actor("supply.chen"), site_id=self.site_id, quantity=quantity
        )
        self.clock.advance(minutes=5)
        self.move_shipments()

    def shorten_first_lot(self) -> None:
        """New stability data: PKG-0101 expires today; its kits still usable are quarantined
        (`lot.expiry_changed` lists them) and the next expiry job expires them."""
        from iwrs.services import supply

        supply.change_lot_expiry(
            actor=self.actor("supply.chen"),
            lot_code=LOTS[0][0],
            new_expiry=supply.depot_today(),
            reason="Stability data: shelf life shortened",
        )
        self.clock.advance(minutes=5)

    def probe_free_text_extra_kits(self, key: str, attempts: int = 5) -> list[str]:
        """The issue's probe 4: the pharmacist asks for unscheduled kits for one subject on
        free text alone until refused. Each outcome (kit lot, or refusal rule) is recorded."""
        from iwrs.errors import Conflict, Forbidden, InvalidInput
        from iwrs.services import dispensing

        outcomes = []
        for _ in range(attempts):
            try:
                dispensing.dispense(
                    actor=self.actor(PHARMACIST),
                    subject_id=self.subject_ids[key],
                    visit_code="V2",
                    kind="unscheduled",
                    reason="Patient asked for a spare",
                )
            except (Conflict, Forbidden, InvalidInput) as refusal:
                outcomes.append(f"refused {refusal.field}/{refusal.rule}")
                break
            else:
                outcomes.append("dispensed")
            self.clock.advance(minutes=3)
        return outcomes

    def tokens(self) -> dict[str, str]:
        """Personal API tokens, deterministic so every world holds the same ones."""
        from iwrs.services import users

        tokens = {}
        counter = iter(range(1000))
        fixed = SimpleNamespace(token_urlsafe=lambda n: f"fixed{next(counter):04d}".ljust(43, "x"))
        with mock.patch.object(users, "secrets", fixed):
            for username in [*ROLES.values(), STATISTICIAN]:
                token, _ = users.create_api_token(
                    actor=self.actor(username),
                    user_id=self.people[username].id,
                    name="EDC link",
                    password=PASSWORD,
                )
                tokens[username] = token
        return tokens


# --- relabelling kit numbers ----------------------------------------------------------------------

_NUMBER = re.compile(r"(?<![0-9A-Za-z])[1-9][0-9]{6}(?![0-9A-Za-z])")
# Hash-chain links and other digests: functions of every earlier event, kit numbers included.
_DIGEST = re.compile(r"\b[0-9a-f]{40,}\b")


class Relabeller:
    """Every kit number of a world replaced by a neutral label.

    A kit named alone in an audit event (dispensed, confirmed, damaged, returned...) is
    `<lot>/#<n>`, n the order in which kits of its lot are first named alone; a kit never named
    alone is `<lot>/*`. In a list of kits (two or more in a JSON list or object, an inline list,
    or consecutive lines, rows or items holding one kit each) every kit is `<lot>/*` and the
    list is sorted: a list compares as the multiset of its kits' lots and, beside them, their
    states. Why not one label per kit from its first appearance in a list: the kit drawn for a
    subject is random among the lot's kits of the slot's arm, so with a fixed seed two worlds
    may draw kits from different shipments of one lot even where the chances are equal. Pages
    that show the state of each kit of a shipment still tell which shipment a dispensed kit
    came from; the test module's docstring says why that is a channel, not only noise. The
    order of a list is checked by a test of its own (kit-number order)."""

    def __init__(self, lot_of: dict[str, str], events: list[tuple[str, str]]) -> None:
        self.lot_of = lot_of
        counters: dict[str, int] = defaultdict(int)
        self.label: dict[str, str] = {}
        for _, text in events:
            named = {n for n in _NUMBER.findall(text) if n in lot_of}
            if len(named) == 1:
                (number,) = named
                if number not in self.label:
                    counters[lot_of[number]] += 1
                    self.label[number] = f"{lot_of[number]}/#{counters[lot_of[number]]:02d}"
        for number, lot in lot_of.items():
            self.label.setdefault(number, f"{lot}/*")

    def text(self, text: str) -> str:
        """Text with digests masked, kit lists reduced to lots and kit numbers relabelled."""
        text = _DIGEST.sub("<digest>", text)
        if "<" in text and "</" in text:  # HTML: one line per row or list item
            text = re.sub(r"\s*\n\s*", " ", text)
            text = re.sub(r"(?=<(?:tr|li|p|div|/tbody|/table|/ul|/ol)\b)", "\n", text)
            text = "\n".join(line.strip() for line in text.split("\n") if line.strip())
        text = self._inline_lists(text)
        text = self._line_runs(text)
        return self._individual(text)

    def _individual(self, text: str) -> str:
        return _NUMBER.sub(lambda m: self.label.get(m.group(), m.group()), text)

    def _as_list(self, text: str) -> str:
        return _NUMBER.sub(
            lambda m: f"{self.lot_of[m.group()]}/*" if m.group() in self.lot_of else m.group(),
            text,
        )

    def value(self, value: Any) -> Any:
        """A parsed JSON value relabelled; a list of two or more elements that each name one
        kit is a list of lots (re-sorted when it was ordered by kit number)."""
        if isinstance(value, dict):
            if sum(1 for k in value if str(k) in self.lot_of) >= 2:  # keyed by kit: a list
                return self.value([[k, v] for k, v in value.items()])
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            kits = [self._kits(json.dumps(item)) for item in value]
            if len(kits) < 2 or any(len(k) != 1 for k in kits):
                return [self.value(item) for item in value]
            items = [json.loads(self._as_list(json.dumps(item))) for item in value]
            items = [self.value(item) for item in items]
            return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
        if isinstance(value, str):
            return self.text(value)
        return value

    def _kits(self, text: str) -> list[str]:
        return [n for n in _NUMBER.findall(text) if n in self.lot_of]

    def _inline_lists(self, text: str) -> str:
        # Whatever stands between two kits of one list: quotes (HTML-escaped, CSV-doubled), a
        # comma, a dict value ("1234567": "good", "2345678": ...); never a digit or a bracket.
        gap = r"(?:&#\d+;|[^\d\n<>{}\[\]]){0,30}?"
        separator = rf"{gap}[,;]{gap}"
        run = re.compile(rf"{_NUMBER.pattern}(?:{separator}{_NUMBER.pattern})+")

        def as_lots(match: re.Match[str]) -> str:
            numbers = _NUMBER.findall(match.group())
            if any(n not in self.lot_of for n in numbers):
                return match.group()
            parts = _NUMBER.split(match.group())
            lots = sorted(f"{self.lot_of[n]}/*" for n in numbers)
            return parts[0] + "".join(lot + part for lot, part in zip(lots, parts[1:], strict=True))

        return run.sub(as_lots, text)

    def _line_runs(self, text: str) -> str:
        out: list[str] = []
        run: list[str] = []

        def flush() -> None:
            if len(run) >= 2:
                run[:] = sorted(self._as_list(line) for line in run)
            out.extend(run)
            run.clear()

        for line in text.split("\n"):
            if len(set(self._kits(line))) == 1:
                run.append(line)
                continue
            flush()
            out.append(line)
        flush()
        return "\n".join(out)


def relabeller(world: World) -> Relabeller:
    """The world's relabelling, from its kits' lots and its audit trail in order."""
    from iwrs.db import read_session
    from iwrs.models.audit import AuditEvent
    from iwrs.models.supply import Kit, Lot

    with world.app.app_context():
        session = read_session()
        lot_of = {
            a: b
            for a, b in session.execute(
                select(Kit.number, Lot.code).join(Lot, Kit.lot_id == Lot.id)
            )
        }
        events = [
            (e.action, " ".join(filter(None, [e.entity_id, e.before, e.after, e.reason])))
            for e in session.scalars(select(AuditEvent).order_by(AuditEvent.seq))
        ]
    return Relabeller(lot_of, events)


# --- what the worlds record, with timing and attribution --------------------------------------


def _when(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


def ledgers(world: World, relabel: Relabeller) -> dict[str, list[Any]]:
    """The records behind every blinded view, relabelled, with their times and actors: the
    audit trail, shipments (kits by lot), kit events (by lot), alerts, each kit's lot and state
    at the site, and the dispensations (which lot each kit came from)."""
    from iwrs.db import read_session
    from iwrs.models.audit import AuditEvent
    from iwrs.models.randomization import Dispensation
    from iwrs.models.supply import Kit, KitEvent, Lot, Shipment, SupplyAlert

    def lot(kit: Kit) -> str:
        return relabel.lot_of[kit.number]

    with world.app.app_context():
        session = read_session()
        kits = {k.id: k for k in session.scalars(select(Kit))}
        trail = [
            (
                e.seq,
                _when(e.occurred_at),
                e.username,
                e.role,
                e.action,
                e.entity_type,
                relabel.text(e.entity_id or ""),
                e.site_id,
                e.subject_id,
                relabel.value(json.loads(e.before)) if e.before else None,
                relabel.value(json.loads(e.after)) if e.after else None,
                e.reason,
            )
            for e in session.scalars(select(AuditEvent).order_by(AuditEvent.seq))
        ]
        shipments = [
            (
                s.number,
                s.kind,
                str(s.state),
                _when(s.requested_at),
                s.requested_by_id,
                sorted(lot(k) for k in kits.values() if k.shipment_id == s.id),
            )
            for s in session.scalars(select(Shipment).order_by(Shipment.id))
        ]
        # By time, then content: the kits of one shipment or expiry run move in number order.
        kit_events = sorted(
            [
                (
                    _when(e.at) or "",
                    e.action,
                    e.from_state,
                    e.to_state,
                    e.to_place_kind,
                    e.to_place_id,
                    e.shipment_id,
                    e.user_id,
                    e.detail,
                    lot(kits[e.kit_id]),
                )
                for e in session.scalars(select(KitEvent).order_by(KitEvent.id))
            ],
            key=repr,
        )
        alerts = [
            (a.kind, a.site_id, a.message, _when(a.created_at), _when(a.resolved_at))
            for a in session.scalars(select(SupplyAlert).order_by(SupplyAlert.id))
        ]
        shelf = sorted(
            (lot(k), str(k.state), k.place_kind, k.place_id)
            for k in kits.values()
            if k.place_kind != "depot"
        )
        depot = sorted(
            (code, str(k.state))
            for k, code in session.execute(select(Kit, Lot.code).join(Lot, Kit.lot_id == Lot.id))
            if k.place_kind == "depot"
        )
        dispensed = [
            (
                d.subject_id,
                d.visit_code,
                d.kind,
                _when(d.dispensed_at),
                relabel.label[kits[d.kit_id].number],
            )
            for d in session.scalars(select(Dispensation).order_by(Dispensation.id))
        ]
    return {
        "audit trail": trail,
        "shipments": shipments,
        "kit events": kit_events,
        "alerts": alerts,
        "kits at sites and with subjects": shelf,
        "depot stock by lot": depot,
        "dispensations": dispensed,
    }
