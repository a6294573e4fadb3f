"""Set-up shared by the randomization and dispensing tests (a trial with stock at its sites and
confirmed-eligible subjects, all through the real services), and the worker process of the
multi-process randomization test:

    python -m tests.integration.randomization_worker <job.json> <result.json>

The worker builds its own application against the job's database URL with the job's keys
(hex), says it is ready, waits for the go-file, randomizes its share of the subjects (its
tasks file) and writes what each call returned (or the refusal it raised) to the result file.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import select

from iwrs.audit import Actor
from tests.conftest import PASSWORD, initials_for, make_settings, next_initials

SHIPPED_PROTOCOL = Path(__file__).resolve().parents[2] / "iwrs" / "protocols" / "gensci048-204.toml"
SITES = ("CN01", "CN02", "CN03", "CN04")

# A protocol that lets hundreds of subjects in: caps lifted, a long list, big initial shipments.
BIG_TRIAL = {
    "enrolment_cap = 36": "enrolment_cap = 1000",
    "site_cap = 15 ": "site_cap = 1000 ",
    "stratum_cap = 24 ": "stratum_cap = 240 ",
    "slots_per_stratum = 120": "slots_per_stratum = 240",
    "quantity = 8": "quantity = 130",
}
_numbers = itertools.count(1)


def protocol_copy(folder: Path, replacements: Mapping[str, str]) -> Path:
    """The shipped protocol file with text substitutions, each of which must apply."""
    text = SHIPPED_PROTOCOL.read_text(encoding="utf-8")
    for old, new in replacements.items():
        assert old in text, f"{old!r} is not in the shipped protocol"
        text = text.replace(old, new)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"protocol-{next(_numbers)}.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class World:
    """An application on a fresh database with the protocol loaded, and its people."""

    app: Flask
    sites: dict[str, int]
    people: dict[str, Any] = field(default_factory=dict)

    def user(self, role: str, sites: Iterable[str] = (), name: str | None = None) -> Any:
        from iwrs.audit import Actor
        from iwrs.services import users

        with self.app.app_context():
            user = users.create_user(
                actor=Actor.system("test"),
                username=name or f"{role[:5]}{next(_numbers)}",
                full_name=f"Test {role}",
                role=role,
                password=PASSWORD,
                site_codes=list(sites),
            )
        if name:
            self.people[name] = user
        return user

    def actor(self, name: str) -> Any:
        from iwrs.audit import Actor

        return Actor.of(self.people[name])


def build_world(app: Flask) -> World:
    """Load the app's protocol; an admin, a supply manager, a statistician, and per site an
    investigator (inv-CN01…) and a pharmacist (ph-CN01…)."""
    from iwrs.audit import Actor
    from iwrs.db import read_session
    from iwrs.models.sites import Site
    from iwrs.services import trial

    app.config["IWRS_PROPAGATE_UNEXPECTED"] = True
    with app.app_context():
        trial.load_protocol(actor=Actor.system("test"), protocol=app.extensions["iwrs.protocol"])
        ids = {s.code: s.id for s in read_session().scalars(select(Site))}
    world = World(app, ids)
    world.user("admin", name="admin")
    world.user("supply_manager", name="manager")
    world.user("unblinded_statistician", name="stat")
    for code in SITES:
        world.user("investigator", [code], name=f"inv-{code}")
        world.user("pharmacist", [code], name=f"ph-{code}")
    return world


def make_world(
    folder: Path,
    database_url: str,
    clock: Any,
    *,
    replacements: Mapping[str, str] | None = None,
    sites: Iterable[str] = ("CN01", "CN02"),
    lots: Iterable[tuple[str, int, int]] = (("L-0001", 200, 730),),
    with_list: bool = True,
    **settings: Any,
) -> World:
    """A trial on the database: the protocol (the shipped one with `replacements`), its people,
    kit lots (code, count, days to expiry), the sites activated with their initial shipments
    received, and a generated list unless `with_list` is false."""
    from iwrs import create_app
    from iwrs.clock import set_clock

    if replacements:
        settings["protocol_path"] = protocol_copy(folder, replacements)
    app = create_app(make_settings(folder, database_url, **settings))
    set_clock(app, clock)
    world = build_world(app)
    for lot, count, days in lots:
        add_kits(world, lot=lot, count=count, expiry=clock.current.date() + timedelta(days=days))
    activate(world, sites)
    if with_list:
        with app.app_context():
            generate_list(world)
    return world


def add_kits(world: World, *, lot: str, count: int, expiry: date) -> None:
    from iwrs.audit import Actor
    from iwrs.services import supply

    with world.app.app_context():
        supply.generate_kits(
            actor=Actor.system("test"),
            kit_type=supply.protocol().kit_types[0].code,
            lot=lot,
            expiry_date=expiry,
            count=count,
            seed=os.urandom(32),
        )


def activate(world: World, codes: Iterable[str]) -> None:
    """Activate the sites; ship and receive every shipment that activation requested."""
    from iwrs.models.sites import SiteStatus
    from iwrs.services import sites

    with world.app.app_context():
        for code in codes:
            sites.change_site_status(
                actor=world.actor("admin"),
                site_id=world.sites[code],
                status=SiteStatus.ACTIVE,
                signer_password=PASSWORD,
                understood=True,
            )
        receive_requested(world)


def receive_requested(world: World) -> None:
    """Ship and receive (all good) every requested shipment (inside an app context)."""
    from iwrs.db import read_session
    from iwrs.models.supply import Shipment
    from iwrs.services import shipments, supply_views
    from supply.shipments import ShipmentState

    code_of = {v: k for k, v in world.sites.items()}
    while True:
        read_session().rollback()
        rows = (
            read_session()
            .scalars(
                select(Shipment)
                .where(Shipment.state == ShipmentState.REQUESTED)
                .order_by(Shipment.id)
            )
            .all()
        )
        if not rows:
            return
        for row in rows:
            shipments.ship_shipment(
                actor=world.actor("manager"),
                shipment_id=row.id,
                courier="Test Cold Chain",
                tracking_number=f"TCC{row.id:06d}",
            )
            shipments.receive_shipment(
                actor=world.actor(f"ph-{code_of[row.site_id]}"),
                shipment_id=row.id,
                lines={
                    k.number: "good"
                    for k in supply_views.shipment_kits(
                        actor=Actor.system("test"), shipment_id=row.id
                    )
                },
                excursion=False,
            )


def screen(world: World, code: str, *, sex: str = "female") -> Any:
    from iwrs.services import subjects

    return subjects.screen_subject(
        actor=world.actor(f"inv-{code}"),
        site_id=world.sites[code],
        date_of_birth="1966-05-14",
        sex=sex,
        # worker processes run side by side: the process id keeps their persons apart
        initials=initials_for(os.getpid()) + next_initials(),
    )


def assess(world: World, subject: Any, *, disease: str = "RA", **changes: Any) -> Any:
    from iwrs.demo import eligible_answers
    from iwrs.services import subjects

    answers = eligible_answers(subjects.engine(), subject.screening_date, disease=disease)
    answers.update(changes)
    code = next(c for c, i in world.sites.items() if i == subject.site_id)
    return subjects.record_assessment(
        actor=world.actor(f"inv-{code}"),
        subject_id=subject.id,
        answers={k: v for k, v in answers.items() if v is not None},
    )


def eligible_subject(world: World, code: str, disease: str = "RA") -> int:
    """Screen, assess and confirm eligible a subject at the site (inside an app context)."""
    from iwrs.services import subjects

    subject = screen(world, code)
    record = assess(world, subject, disease=disease)
    assert record.result.outcome == "eligible", record.result
    subjects.decide_eligibility(
        actor=world.actor(f"inv-{code}"),
        subject_id=subject.id,
        assessment_id=record.row.id,
        decision="eligible",
        signer_password=PASSWORD,
        understood=True,
    )
    return subject.id


def generate_list(world: World, **options: Any) -> Any:
    from iwrs.services import randomization

    return randomization.generate_list(actor=world.actor("stat"), name="List v1", **options)


def randomize(world: World, subject_id: int, *, by: str | None = None, **options: Any) -> Any:
    """Randomize as the investigator of the subject's site (inside an app context)."""
    from iwrs.db import read_session
    from iwrs.models.subjects import Subject
    from iwrs.services import randomization

    if by is None:
        site_id = read_session().get(Subject, subject_id).site_id  # type: ignore[union-attr]
        by = "inv-" + next(c for c, i in world.sites.items() if i == site_id)
    options.setdefault("signer_password", PASSWORD)
    options.setdefault("understood", True)
    return randomization.randomize(actor=world.actor(by), subject_id=subject_id, **options)


def usable_by_arm(session: Any, site_id: int, *, today: date) -> dict[str, list[tuple[Any, date]]]:
    """Unblinded, for tests' assertions only: the site's usable kits (services.supply
    .usable_shelf, the one definition the services read) per arm, with their expiry."""
    from iwrs.services.supply import protocol, treatment_of, usable_shelf

    by_arm: dict[str, list[tuple[Any, date]]] = {a.code: [] for a in protocol().arms}
    for kit, shelf_kit in usable_shelf(session, site_id, today=today):
        by_arm.setdefault(treatment_of(kit), []).append((kit, shelf_kit.expiry))
    return by_arm


def ledger_check() -> tuple[int, list[str]]:
    """The operator's ledger check, `iwrs supply check-ledger` (inside an app context): the kit
    events it replayed and the kits it names as disagreeing with their ledger."""
    from flask import current_app

    output = current_app.test_cli_runner().invoke(args=["iwrs", "supply", "check-ledger"]).output
    events = re.search(r"^ledger: (\d+) kit events replayed", output, re.MULTILINE)
    assert events is not None, output
    kits = re.findall(r"^MISMATCH kit (\S+):", output, re.MULTILINE)
    return int(events.group(1)), sorted(set(kits))


# --- the worker process ------------------------------------------------------------------------


def result_fields(result: Any) -> dict[str, Any]:
    """What a randomization call returned, as JSON-able values (to compare across processes)."""
    return {
        "subject_id": result.subject_id,
        "screening_number": result.screening_number,
        "randomization_number": result.randomization_number,
        "kit_number": result.kit_number,
        "stratum": result.stratum,
        "randomized_on": result.randomized_on.isoformat(),
    }


def main(job_path: str, result_path: str) -> int:
    from iwrs import create_app
    from iwrs.audit import Actor
    from iwrs.clock import set_clock
    from iwrs.config import Settings
    from iwrs.errors import IWRSError
    from iwrs.services import randomization

    job = json.loads(Path(job_path).read_text())
    settings = Settings(
        instance_path=Path(job["instance_path"]),
        database_url=job["database_url"],
        protocol_path=Path(job["protocol_path"]),
        secret_key=bytes.fromhex(job["keys"]["secret_key"]),
        audit_key=bytes.fromhex(job["keys"]["audit_key"]),
        blinding_key=bytes.fromhex(job["keys"]["blinding_key"]),
        testing=True,
        # A retry with the key of a running attempt waits for its outcome (generously: the
        # test asserts outcomes, never timing), rather than being answered in_progress.
        idempotency_wait=timedelta(seconds=120),
    )
    for name, value in job.get("settings", {}).items():  # e.g. short lock timeouts
        setattr(settings, name, value)
    app = create_app(settings)
    now = datetime.fromisoformat(job["now"]).astimezone(UTC)
    set_clock(app, lambda: now)
    outcomes: list[dict[str, Any]] = []
    with app.app_context():
        from sqlalchemy import text

        from iwrs.db import engine

        with engine().connect() as connection:  # warm the pool before the start signal
            connection.execute(text("SELECT 1"))
        Path(job["ready_path"]).touch()
        deadline = time.monotonic() + 180
        while not Path(job["go_path"]).exists():
            if time.monotonic() > deadline:
                raise SystemExit("no start signal within 180 s")
            time.sleep(0.005)
        for task in json.loads(Path(job["tasks_path"]).read_text()):
            actor = Actor(task["user_id"], task["username"], "investigator")
            task["began"] = time.monotonic()
            try:
                result = randomization.randomize(
                    actor=actor,
                    subject_id=task["subject_id"],
                    signer_password=job["password"],
                    understood=True,
                    idempotency_key=task["key"],
                )
                outcomes.append({"task": task, "result": result_fields(result)})
            except IWRSError as refusal:
                outcomes.append({"task": task, "refused": f"{type(refusal).__name__}: {refusal}"})
            except Exception as error:  # noqa: BLE001 - reported to the test, which fails
                outcomes.append({"task": task, "error": f"{type(error).__name__}: {error}"})
            task["ended"] = time.monotonic()
    app.extensions["iwrs.engine"].dispose()
    Path(result_path).write_text(json.dumps(outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
