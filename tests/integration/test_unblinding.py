"""Emergency unblinding (README rule 3): one subject, to an investigator of its site who gave
a reason, confirmed it cannot be undone and signed; recorded once, notified once,
never hidden, and the arm is never written to the audit trail, the outbox or a log.

The trial here runs on a copy of the shipped protocol whose arm codes are distinctive
(ACTIVEQX, PLACEBOZK), so a leaked arm is found by searching for a string. `build_trial` is
also used by the audit-workspace and unblinding-page tests.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

import iwrs
from iwrs import create_app
from iwrs.audit import Actor
from iwrs.clock import set_clock
from iwrs.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound
from iwrs.worker import run_once
from tests.conftest import PASSWORD, WORKER, ManualClock, make_settings, sign_in

ACTIVE, PLACEBO = "ACTIVEQX", "PLACEBOZK"
ARM_CODES = (ACTIVE, PLACEBO)
ARM_NAMES = {ACTIVE: "Genakumab", PLACEBO: "Placebo"}
SHIPPED_PROTOCOL = Path(iwrs.__file__).resolve().parent / "protocols" / "gensci048-204.toml"
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RECIPIENTS = ("medical.monitor@sponsor.example", "pv@sponsor.example")
REASON = "Anaphylaxis after the day-1 injection; the treating team needs to know"

USERS = [
    ("admin", "admin", []),
    ("stat.liu", "unblinded_statistician", []),
    ("supply.chen", "supply_manager", []),
    ("audit.zhao", "auditor", []),
    ("dr.li", "investigator", ["CN01"]),
    ("dr.lin", "investigator", ["CN01"]),
    ("dr.zhang", "investigator", ["CN02"]),
    ("ph.wang", "pharmacist", ["CN01"]),
    ("ph.zhou", "pharmacist", ["CN02"]),
]
PHARMACIST = {"CN01": "ph.wang", "CN02": "ph.zhou"}
# (key, site, investigator, date of birth, sex, disease, randomize?)
SUBJECTS = [
    ("R1", "CN01", "dr.li", "1961-05-14", "female", "RA", True),
    ("R2", "CN01", "dr.li", "1958-11-02", "male", "SSc", True),
    ("E1", "CN01", "dr.li", "1966-08-30", "male", "RA", False),
    ("Z1", "CN02", "dr.zhang", "1964-03-09", "male", "RA", True),
]


def protocol_copy(directory: Path, *, discontinues: bool = False) -> Path:
    """The shipped protocol with distinctive arm codes (and optionally unblinding stops
    treatment)."""
    text = SHIPPED_PROTOCOL.read_text(encoding="utf-8")
    changes = [('code = "A"\n', f'code = "{ACTIVE}"\n'), ('code = "P"\n', f'code = "{PLACEBO}"\n')]
    if discontinues:
        changes.append(("discontinues_treatment = false", "discontinues_treatment = true"))
    for old, new in changes:
        assert text.count(old) == 1, f"the shipped protocol no longer has exactly one {old!r}"
        text = text.replace(old, new)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "protocol.toml"
    path.write_text(text, encoding="utf-8")
    return path


class IsolatedClient(FlaskClient):
    """A test client whose requests never share the test's application context: the test holds
    one open to call services, and a request would otherwise reuse its `g` (the signed-in user,
    the read session)."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        from flask import has_app_context
        from flask.globals import app_ctx

        if not has_app_context():
            return super().open(*args, **kwargs)
        outer = app_ctx._get_current_object()
        outer.pop(None)
        try:
            return super().open(*args, **kwargs)
        finally:
            outer.push()


@dataclass
class Trial:
    """A small trial with randomized subjects, built through the services like iwrs.demo."""

    app: Flask
    clock: ManualClock
    people: dict[str, Any]
    subjects: dict[str, int]
    sites: dict[str, int]

    def actor(self, username: str) -> Actor:
        return Actor.of(self.people[username])

    def client(self, username: str) -> FlaskClient:
        client = self.app.test_client()
        response = sign_in(client, username)
        assert response.status_code == 302, (username, response.status_code)
        return client

    def token(self, username: str) -> dict[str, str]:
        from iwrs.services import users

        with self.app.app_context():
            token, _ = users.create_api_token(
                actor=self.actor(username),
                user_id=self.people[username].id,
                name="test",
                password=PASSWORD,
            )
        return {"Authorization": f"Bearer {token}"}

    def dispose(self) -> None:
        self.app.extensions["iwrs.engine"].dispose()


def build_trial(directory: Path, database_url: str, *, discontinues: bool = False) -> Trial:
    """Kits generated; CN01 and CN02 activated, their initial shipments shipped and received;
    R1, R2 (CN01) and Z1 (CN02) randomized, E1 (CN01) confirmed eligible but not randomized."""
    from iwrs.db import read_session
    from iwrs.demo import eligible_answers
    from iwrs.models.sites import Site, SiteStatus
    from iwrs.models.supply import Shipment
    from iwrs.services import (
        randomization,
        shipments,
        sites,
        subjects,
        supply,
        supply_views,
        trial,
        users,
    )

    app, clock = _open_app(directory, database_url, discontinues=discontinues, at=START)
    with app.app_context():
        trial.load_protocol(actor=Actor.system("test"), protocol=app.extensions["iwrs.protocol"])
        people = {
            username: users.create_user(
                actor=Actor.system("test"),
                username=username,
                full_name=f"Test {username}",
                role=role,
                password=PASSWORD,
                site_codes=codes,
            )
            for username, role, codes in USERS
        }
        clock.advance(minutes=5)
        supply.generate_kits(
            actor=Actor.of(people["supply.chen"]),
            kit_type=supply.protocol().kit_types[0].code,
            lot="PKG-0001",
            expiry_date=START.date() + timedelta(days=730),
            count=96,
            seed=bytes(range(32)),
        )
        session = read_session()
        site_ids = {s.code: s.id for s in session.scalars(select(Site))}
        for code in ("CN01", "CN02"):
            sites.change_site_status(
                actor=Actor.of(people["admin"]),
                site_id=site_ids[code],
                status=SiteStatus.ACTIVE,
                signer_password=PASSWORD,
                understood=True,
            )
        clock.advance(hours=2)
        session.rollback()
        for row in session.scalars(select(Shipment).order_by(Shipment.id)).all():
            code = next(c for c, i in site_ids.items() if i == row.site_id)
            shipments.ship_shipment(
                actor=Actor.of(people["supply.chen"]),
                shipment_id=row.id,
                courier="Cold Chain Co",
                tracking_number=f"CC{row.id:06d}",
            )
            kits = supply_views.shipment_kits(actor=Actor.system("test"), shipment_id=row.id)
            shipments.receive_shipment(
                actor=Actor.of(people[PHARMACIST[code]]),
                shipment_id=row.id,
                lines={k.number: "good" for k in kits},
                excursion=False,
            )
        clock.advance(days=1)
        subject_ids = {}
        for key, code, investigator, born, sex, disease, _ in SUBJECTS:
            actor = Actor.of(people[investigator])
            subject = subjects.screen_subject(
                actor=actor, site_id=site_ids[code], date_of_birth=born, sex=sex
            )
            subject_ids[key] = subject.id
            record = subjects.record_assessment(
                actor=actor,
                subject_id=subject.id,
                answers=eligible_answers(
                    subjects.engine(), subject.screening_date, disease=disease
                ),
            )
            subjects.decide_eligibility(
                actor=actor,
                subject_id=subject.id,
                assessment_id=record.row.id,
                decision="eligible",
                signer_password=PASSWORD,
                understood=True,
            )
            clock.advance(minutes=7)
        randomization.generate_list(
            actor=Actor.of(people["stat.liu"]), name="GenSci048-204 v1", seed=bytes(range(1, 33))
        )
        clock.advance(days=6)
        for key, _, investigator, *_, randomize in SUBJECTS:
            if randomize:
                randomization.randomize(
                    actor=Actor.of(people[investigator]),
                    subject_id=subject_ids[key],
                    signer_password=PASSWORD,
                    understood=True,
                )
                clock.advance(minutes=11)
        clock.advance(hours=1)
    return Trial(app, clock, people, subject_ids, site_ids)


# Fixed keys, so a trial built once can be copied: its sealed arms and audit MACs stay valid.
KEYS = {
    "secret_key": b"S" * 32,
    "audit_key": b"A" * 32,
    "blinding_key": b"B" * 32,
    "audit_signing_key": b"E" * 32,
}
# (backend, discontinues) -> (the built database: SQLite bytes or a PostgreSQL template name,
# the clock at the end of the build)
_BUILT: dict[tuple[str, bool], tuple[Any, datetime]] = {}


def _open_app(
    directory: Path, database_url: str, *, discontinues: bool, at: datetime
) -> tuple[Flask, ManualClock]:
    path = protocol_copy(directory / "protocol", discontinues=discontinues)
    app = create_app(make_settings(directory, database_url, protocol_path=path, **KEYS))
    app.config["IWRS_PROPAGATE_UNEXPECTED"] = True
    app.test_client_class = IsolatedClient
    clock = ManualClock(at)
    set_clock(app, clock)
    return app, clock


def _pg_admin() -> Any:
    from tests.conftest import _pg_admin_engine

    return _pg_admin_engine()


def _copy_database(database_url: str, key: tuple[str, bool]) -> Any:
    """Keep the built database of this test for the next tests of the session."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if key[0] == "sqlite":
        engine = create_engine(database_url)
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()
        return Path(url.database).read_bytes()
    name = f"iwrs_trial_{WORKER}_{os.getpid()}_{int(key[1])}"
    admin = _pg_admin()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{url.database}"'))
    admin.dispose()
    return name


def _restore_database(database_url: str, key: tuple[str, bool], built: Any) -> None:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if key[0] == "sqlite":
        path = Path(url.database)
        for extra in ("-wal", "-shm"):
            Path(f"{path}{extra}").unlink(missing_ok=True)
        path.write_bytes(built)
        return
    admin = _pg_admin()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{url.database}" TEMPLATE "{built}"'))
    admin.dispose()


def drop_built_trials() -> None:
    from sqlalchemy import text

    for (backend, _), (built, _) in list(_BUILT.items()):
        if backend == "postgresql":
            admin = _pg_admin()
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{built}" WITH (FORCE)'))
            admin.dispose()
    _BUILT.clear()


def open_trial(directory: Path, database_url: str, *, discontinues: bool = False) -> Trial:
    """The trial of `build_trial` in this test's fresh database: built by the first test of the
    session on each backend, copied for the next ones (each test gets its own copy)."""
    from iwrs.db import read_session
    from iwrs.models.sites import Site
    from iwrs.models.subjects import Subject
    from iwrs.models.users import User

    key = ("postgresql" if database_url.startswith("postgresql") else "sqlite", discontinues)
    if key not in _BUILT:
        world = build_trial(directory, database_url, discontinues=discontinues)
        world.dispose()
        _BUILT[key] = (_copy_database(database_url, key), world.clock.current)
    else:
        _restore_database(database_url, key, _BUILT[key][0])
    app, clock = _open_app(directory, database_url, discontinues=discontinues, at=_BUILT[key][1])
    with app.app_context():
        session = read_session()
        people = {u.username: u for u in session.scalars(select(User))}
        sites = {s.code: s.id for s in session.scalars(select(Site))}
        numbers = {s.id: s for s in session.scalars(select(Subject).order_by(Subject.id))}
        subjects = dict(zip([s[0] for s in SUBJECTS], sorted(numbers), strict=True))
        session.expunge_all()
    return Trial(app, clock, people, subjects, sites)


@pytest.fixture(scope="session")
def built_trials():  # type: ignore[no-untyped-def]
    """Drops the kept PostgreSQL copies at the end of the session."""
    yield _BUILT
    drop_built_trials()


@pytest.fixture
def world(tmp_path: Path, database_url: str, built_trials):  # type: ignore[no-untyped-def]
    built = open_trial(tmp_path, database_url)
    with built.app.app_context():
        yield built
    built.dispose()


# --- helpers ------------------------------------------------------------------------------------


def fresh() -> Any:
    from iwrs.db import read_session

    session = read_session()
    session.rollback()
    session.expire_all()
    return session


def head_seq() -> int:
    from iwrs.models.audit import AuditEvent

    return fresh().scalar(select(func.coalesce(func.max(AuditEvent.seq), 0)))


def events_since(seq: int) -> list[Any]:
    from iwrs.models.audit import AuditEvent

    return list(fresh().scalars(select(AuditEvent).where(AuditEvent.seq > seq).order_by("seq")))


def actions_since(seq: int) -> list[str]:
    return [e.action for e in events_since(seq)]


def event_text(event: Any) -> str:
    """Every column of an audit event, as one string to search."""
    return " ".join(str(getattr(event, c.key)) for c in event.__table__.columns)


def sealed_arm(subject_id: int) -> str:
    """The arm sealed in the list slot the subject took, unsealed the way services do."""
    from iwrs.models.randomization import Randomization, RandomizationSlot
    from iwrs.services.randomization import slot_arm

    session = fresh()
    row = session.scalars(select(Randomization).where(Randomization.subject_id == subject_id)).one()
    return slot_arm(session.get(RandomizationSlot, row.slot_id))


@dataclass(frozen=True)
class State:
    unblindings: int
    notifications: int
    unblinded_at: dict[int, Any]
    discontinued_at: dict[int, Any]
    signatures: int


def state() -> State:
    from iwrs.models.subjects import Subject
    from iwrs.models.unblinding import Notification, Unblinding
    from iwrs.models.users import Signature

    session = fresh()
    count = lambda model: session.scalar(select(func.count()).select_from(model))  # noqa: E731
    subjects = session.scalars(select(Subject)).all()
    return State(
        count(Unblinding),
        count(Notification),
        {s.id: s.unblinded_at for s in subjects},
        {s.id: s.treatment_discontinued_at for s in subjects},
        count(Signature),
    )


def unblind(world: Trial, username: str, key: str, **changes: Any) -> Any:
    from iwrs.services import unblinding

    arguments = {
        "actor": world.actor(username),
        "subject_id": world.subjects[key],
        "category": "sae",
        "reason": REASON,
        "understood": True,
        "signer_password": PASSWORD,
        "sae_led_to_unblinding": True,
        **changes,
    }
    return unblinding.unblind(**arguments)


def assert_no_arm(text: str, *, names: bool = True) -> None:
    for code in ARM_CODES:
        assert code not in text, f"arm code {code} leaked: {text[:500]}"
    if names:
        for name in ARM_NAMES.values():
            assert name.lower() not in text.lower(), f"arm name {name} leaked: {text[:500]}"


# --- refusals -----------------------------------------------------------------------------------


REFUSALS = [
    # (case, username, subject, changes, error, field, rule, words in the message); the wrong
    # password first: the refusals after it must not clear its failure count either.
    (
        "wrong password",
        "dr.li",
        "R1",
        {"signer_password": "not my password"},
        AuthenticationFailed,
        "password",
        None,
        "password",
    ),
    (
        "another site's subject",
        "dr.zhang",
        "R1",
        {},
        NotFound,
        "subject_id",
        "exists",
        "does not exist",
    ),
    ("not randomized", "dr.li", "E1", {}, Conflict, "subject_id", "randomized", "not randomized"),
    ("pharmacist", "ph.wang", "R1", {}, NotFound, None, "permission", "investigators"),
    ("supply manager", "supply.chen", "R1", {}, NotFound, None, "permission", "investigators"),
    ("auditor", "audit.zhao", "R1", {}, NotFound, None, "permission", "investigators"),
    (
        "pharmacist, wrong password",
        "ph.wang",
        "R1",
        {"signer_password": "not my password"},
        NotFound,
        None,
        "permission",
        "investigators",
    ),
    (
        "another site, wrong password",
        "dr.zhang",
        "R1",
        {"signer_password": "not my password"},
        NotFound,
        "subject_id",
        "exists",
        "does not exist",
    ),
    (
        "empty reason",
        "dr.li",
        "R1",
        {"reason": "   "},
        InvalidInput,
        "reason",
        "required",
        "reason",
    ),
    (
        "not understood",
        "dr.li",
        "R1",
        {"understood": False},
        InvalidInput,
        "understood",
        "required",
        "cannot be undone",
    ),
    (
        "understood given as 1, not true",
        "dr.li",
        "R1",
        {"understood": 1},
        InvalidInput,
        "understood",
        "required",
        "cannot be undone",
    ),
    (
        "unknown category",
        "dr.li",
        "R1",
        {"category": "curiosity"},
        InvalidInput,
        "category",
        "choice",
        "category: must be one of sae, overdose, pregnancy, other",
    ),
]


def test_each_refusal_changes_nothing_and_names_the_rule(world):
    from iwrs.models.users import User

    for case, username, key, changes, error, field, rule, words in REFUSALS:
        before, seq = state(), head_seq()
        with pytest.raises(error) as refused:
            unblind(world, username, key, **changes)
        assert words in refused.value.message, case
        assert refused.value.field == field, case
        if rule is not None:
            assert refused.value.rule == rule, case
        assert state() == before, case
        # A refusal of who (401/403/404) is audited as unblinding.refused with its rule
        # (iwrs/services/refusals.py); input errors and already_unblinded record nothing.
        expected = {
            AuthenticationFailed: ["esign.signature_failed", "unblinding.refused"],
            NotFound: ["unblinding.refused"],
        }.get(error, [])
        assert actions_since(seq) == expected, case
        for event in events_since(seq):
            if event.action == "unblinding.refused":
                assert json.loads(event.after)["rule"] == refused.value.rule, case
                assert (event.username, event.auth) == (username, world.actor(username).auth), case
                assert_no_arm(event_text(event))
        assert_no_arm(refused.value.message)
    # Only the wrong password counted, against its signer; nobody else's count changed.
    failures = {u.username: u.failed_signatures for u in fresh().scalars(select(User))}
    assert {u: n for u, n in failures.items() if n} == {"dr.li": 1}
    # After every refusal the subject can still be unblinded (nothing was half-written).
    assert unblind(world, "dr.li", "R1").first_view


# --- the unblinding -----------------------------------------------------------------------------


def test_unblinding_reveals_the_sealed_arm_records_one_event_and_notifies_each_recipient(world):
    from iwrs.models.subjects import Subject
    from iwrs.models.unblinding import Notification, Unblinding

    subject_id = world.subjects["R1"]
    before, seq = state(), head_seq()
    arm = unblind(world, "dr.li", "R1")

    assert arm.arm_code == sealed_arm(subject_id)
    assert arm.arm_code in ARM_CODES and arm.arm_name == ARM_NAMES[arm.arm_code]
    assert arm.first_view and arm.unblinded_at == world.clock.current
    # The signature, then exactly one "subject.unblinded" event (no other change is recorded).
    events = events_since(seq)
    assert [e.action for e in events] == ["esign.signed", "subject.unblinded"]
    event = events[1]
    assert event.username == "dr.li" and event.role == "investigator"
    assert event.subject_id == subject_id and event.reason == REASON
    for e in events:
        assert_no_arm(event_text(e))

    session = fresh()
    rows = session.scalars(select(Unblinding)).all()
    assert len(rows) == before.unblindings + 1
    row = rows[-1]
    assert (row.subject_id, row.unblinded_by_id) == (subject_id, world.people["dr.li"].id)
    assert (row.category, row.reason, row.sae_led_to_unblinding) == ("sae", REASON, True)
    assert row.treatment_discontinued is False
    assert event.entity_id == str(row.id)
    subject = session.get(Subject, subject_id)
    assert subject.unblinded_at == world.clock.current
    assert subject.treatment_discontinued_at is None
    # Exactly one outbox message, to both addresses the protocol names, without the arm.
    notes = session.scalars(select(Notification).order_by(Notification.id)).all()
    assert len(notes) == before.notifications + 1 == 1
    assert notes[0].recipient.split(", ") == list(RECIPIENTS)
    assert world.app.extensions["iwrs.protocol"].unblinding_notify == RECIPIENTS
    for note in notes:
        assert note.sent_at is None
        assert subject.screening_number in note.subject_line + note.body
        assert REASON in note.body
        assert_no_arm(note.subject_line + "\n" + note.body)
    # Nothing else about the other subjects changed.
    after = state()
    assert {k: v for k, v in after.unblinded_at.items() if k != subject_id} == {
        k: v for k, v in before.unblinded_at.items() if k != subject_id
    }


def test_once_unblinded_a_new_request_is_refused_and_views_take_no_free_text(world):
    """Free text a blinded reader sees is written before its writer could know the arm: a
    second request (a reason that could name the arm) is refused and records nothing, even
    with a wrong password; the unblinding investigator sees the arm again by a view that is
    audited without any text of theirs."""
    from iwrs.models.users import User
    from iwrs.services import unblinding

    first = unblind(world, "dr.li", "R1")
    world.clock.advance(hours=3)
    before, seq = state(), head_seq()
    for password in (PASSWORD, "not my password at all"):
        with pytest.raises(Conflict) as refused:
            unblind(
                world,
                "dr.li",
                "R1",
                category="other",
                reason="It was Genakumab",
                signer_password=password,
            )
        assert (refused.value.field, refused.value.rule) == ("subject_id", "already_unblinded")
        assert_no_arm(refused.value.message)
    assert actions_since(seq) == [] and state() == before
    user = fresh().scalars(select(User).where(User.username == "dr.li")).one()
    assert user.failed_sign_ins == 0  # refused before the signature step

    seen = unblinding.view_arm(actor=world.actor("dr.li"), subject_id=world.subjects["R1"])
    assert (seen.arm_code, seen.arm_name) == (first.arm_code, first.arm_name)
    assert not seen.first_view and seen.unblinded_at == first.unblinded_at
    events = events_since(seq)
    assert [e.action for e in events] == ["unblinding.viewed"]
    assert events[0].subject_id == world.subjects["R1"] and events[0].username == "dr.li"
    assert events[0].reason is None
    assert_no_arm(event_text(events[0]))
    assert state() == before


def test_view_arm_is_only_for_the_investigator_who_unblinded(world):
    from iwrs.services import unblinding

    unblind(world, "dr.li", "R1")
    before, seq = state(), head_seq()
    for username, rule in [
        ("dr.lin", "unblinded_by_you"),  # same site, has not unblinded it
        ("dr.zhang", "exists"),
        ("ph.wang", "permission"),
        ("audit.zhao", "permission"),
        ("stat.liu", "permission"),
    ]:
        with pytest.raises(NotFound) as refused:
            unblinding.view_arm(actor=world.actor(username), subject_id=world.subjects["R1"])
        assert refused.value.rule == rule
        assert_no_arm(refused.value.message)
    # Each refused view is audited once, with its rule and never the arm.
    assert state() == before and actions_since(seq) == ["unblinding.refused"] * 5
    assert [json.loads(e.after)["rule"] for e in events_since(seq)] == [
        "unblinded_by_you",
        "exists",
        "permission",
        "permission",
        "permission",
    ]
    for event in events_since(seq):
        assert_no_arm(event_text(event))


def test_another_investigator_of_the_site_cannot_unblind_the_subject_again(world):
    """Decision: once a subject is unblinded its site may know the arm, so a colleague's
    request (and its reason) is refused like the unblinder's own; the treatment is in the
    unblinding investigator's record. The first unblinding keeps its moment."""
    from iwrs.models.subjects import Subject
    from iwrs.models.unblinding import Unblinding

    unblind(world, "dr.li", "R1")
    first_moment = world.clock.current
    world.clock.advance(hours=1)
    before, seq = state(), head_seq()
    with pytest.raises(Conflict) as refused:
        unblind(world, "dr.lin", "R1", category="overdose", sae_led_to_unblinding=False)
    assert refused.value.rule == "already_unblinded"
    assert actions_since(seq) == [] and state() == before
    session = fresh()
    rows = session.scalars(
        select(Unblinding).where(Unblinding.subject_id == world.subjects["R1"])
    ).all()
    assert [r.unblinded_by_id for r in rows] == [world.people["dr.li"].id]
    assert session.get(Subject, world.subjects["R1"]).unblinded_at == first_moment


# --- treatment after an unblinding --------------------------------------------------------------


def _to_v2_window(world: Trial, key: str) -> None:
    from iwrs.services import randomization_views

    result = randomization_views.result_of(
        actor=Actor.system("test"), subject_id=world.subjects[key]
    )
    v2 = next(v for v in result.visits if v.code == "V2")
    world.clock.current = datetime.combine(v2.target, datetime.min.time(), tzinfo=UTC).replace(
        hour=10
    )


def test_by_default_dispensing_continues_with_kits_of_the_same_treatment(world):
    from iwrs.models.supply import Kit
    from iwrs.services import dispensing
    from iwrs.services.supply import treatment_of

    arm = unblind(world, "dr.li", "R1")
    assert world.app.extensions["iwrs.protocol"].unblinding_discontinues_treatment is False
    assert state().discontinued_at[world.subjects["R1"]] is None
    _to_v2_window(world, "R1")
    result = dispensing.dispense(
        actor=world.actor("ph.wang"), subject_id=world.subjects["R1"], visit_code="V2"
    )
    assert not result.out_of_window
    kit = fresh().scalars(select(Kit).where(Kit.number == result.kit_number)).one()
    assert treatment_of(kit) == arm.arm_code == sealed_arm(world.subjects["R1"])


def test_a_protocol_that_stops_treatment_on_unblinding_refuses_further_dispensing(
    tmp_path, database_url, built_trials
):
    from iwrs.models.randomization import Dispensation
    from iwrs.models.subjects import Subject
    from iwrs.models.unblinding import Unblinding
    from iwrs.services import dispensing

    world = open_trial(tmp_path, database_url, discontinues=True)
    try:
        with world.app.app_context():
            assert world.app.extensions["iwrs.protocol"].unblinding_discontinues_treatment
            seq = head_seq()
            unblind(world, "dr.li", "R1")
            session = fresh()
            subject = session.get(Subject, world.subjects["R1"])
            assert subject.treatment_discontinued_at == world.clock.current
            assert session.scalars(select(Unblinding)).one().treatment_discontinued is True
            event = next(e for e in events_since(seq) if e.action == "subject.unblinded")
            assert '"treatment_discontinued":true' in event.after
            dispensed = session.scalar(select(func.count()).select_from(Dispensation))
            _to_v2_window(world, "R1")
            seq = head_seq()
            with pytest.raises(Conflict) as refused:
                dispensing.dispense(
                    actor=world.actor("ph.wang"), subject_id=world.subjects["R1"], visit_code="V2"
                )
            assert refused.value.rule == "discontinued"
            assert "discontinued study treatment" in refused.value.message
            assert fresh().scalar(select(func.count()).select_from(Dispensation)) == dispensed
            assert actions_since(seq) == []
            # Another subject, not unblinded, is still dispensed to.
            result = dispensing.dispense(
                actor=world.actor("ph.wang"), subject_id=world.subjects["R2"], visit_code="V2"
            )
            assert result.kit_number
    finally:
        world.dispose()


# --- the outbox ---------------------------------------------------------------------------------


def test_without_smtp_the_outbox_is_logged_and_marked_sent_audited_once(world, monkeypatch, caplog):
    from iwrs.models.unblinding import Notification

    monkeypatch.delenv("IWRS_SMTP_HOST", raising=False)
    unblind(world, "dr.li", "R1")
    unblind(world, "dr.zhang", "Z1")
    world.clock.advance(minutes=2)
    seq = head_seq()
    with caplog.at_level(logging.INFO, logger="iwrs.notifications"):
        sent = run_once("notify", None, Actor.system("test-outbox")).summary.get("sent", 0)
    assert sent == 2
    events = events_since(seq)
    # The job's claim commits with its job.ran event; the delivery is recorded after sending.
    assert [e.action for e in events] == ["job.ran", "notifications.sent"]
    assert events[1].after == '{"sent":2}'
    notes = fresh().scalars(select(Notification)).all()
    assert all(n.sent_at == world.clock.current and n.channel == "log" for n in notes)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "iwrs.notifications")
    for recipient in RECIPIENTS:
        assert logged.count(recipient) == 2
    assert_no_arm(logged)
    # Nothing left to send: nothing happens, nothing is recorded.
    seq = head_seq()
    assert run_once("notify", None, Actor.system("test-outbox")).summary.get("sent", 0) == 0
    assert actions_since(seq) == []


# --- the report ---------------------------------------------------------------------------------


def test_the_report_lists_every_unblinding_without_the_arm_scoped_to_sites(world):
    from iwrs.models.subjects import Subject
    from iwrs.services import unblinding

    unblind(world, "dr.li", "R1")
    first = world.clock.current
    world.clock.advance(days=1)
    unblind(
        world,
        "dr.zhang",
        "Z1",
        category="pregnancy",
        reason="Pregnancy reported at week 2",
        sae_led_to_unblinding=False,
    )
    second = world.clock.current
    session = fresh()
    number = {k: session.get(Subject, i).screening_number for k, i in world.subjects.items()}

    lines = unblinding.report(actor=Actor.system("test"))  # every site
    assert [(x.subject, x.site, x.by, x.at, x.category, x.reason) for x in lines] == [
        (number["Z1"], "CN02", "dr.zhang", second, "pregnancy", "Pregnancy reported at week 2"),
        (number["R1"], "CN01", "dr.li", first, "serious adverse event", REASON),
    ]
    assert [(x.sae, x.discontinued) for x in lines] == [
        (False, False),
        (True, False),
    ]
    for line in lines:
        assert_no_arm(repr(line))
    mine = unblinding.report(actor=Actor.of(world.people["dr.li"]))
    assert [x.subject for x in mine] == [number["R1"]]
    theirs = unblinding.report(actor=Actor.of(world.people["dr.zhang"]))
    assert [x.subject for x in theirs] == [number["Z1"]]


def test_a_view_names_its_unblinding_and_site_and_each_refused_view_its_subject(world):
    """What a view records and returns, field by field (issue 14, mutation testing)."""
    from iwrs.models.subjects import Subject
    from iwrs.models.unblinding import Unblinding
    from iwrs.services import unblinding

    first = unblind(world, "dr.li", "R1")
    subject_id = world.subjects["R1"]
    seq = head_seq()
    seen = unblinding.view_arm(actor=world.actor("dr.li"), subject_id=subject_id)
    session = fresh()
    subject = session.get(Subject, subject_id)
    earlier = session.scalars(select(Unblinding).where(Unblinding.subject_id == subject_id)).one()
    assert seen == unblinding.UnblindedArm(
        subject.screening_number,
        first.randomization_number,
        first.arm_code,
        first.arm_name,
        first.unblinded_at,
        False,
    )
    (event,) = events_since(seq)
    assert (event.entity_type, event.entity_id, event.site_id, event.subject_id) == (
        "unblinding",
        str(earlier.id),
        subject.site_id,
        subject_id,
    )
    seq = head_seq()
    missing = max(world.subjects.values()) + 100
    with pytest.raises(NotFound) as refused:
        unblind(world, "dr.li", "R1", subject_id=max(world.subjects.values()) + 100)
    assert (refused.value.field, refused.value.rule) == ("subject_id", "exists")
    seq = head_seq()
    other = world.subjects["R2"]  # of the same site, not unblinded
    for username, asked, rule in (
        ("dr.li", missing, "exists"),
        ("dr.lin", subject_id, "unblinded_by_you"),
        ("dr.zhang", subject_id, "exists"),
        ("dr.li", other, "unblinded_by_you"),
    ):
        with pytest.raises(NotFound) as refused:
            unblinding.view_arm(actor=world.actor(username), subject_id=asked)
        assert (refused.value.field, refused.value.rule) == ("subject_id", rule)
    assert [
        (e.action, e.entity_type, e.entity_id, json.loads(e.after)["requested_subject_id"])
        for e in events_since(seq)
    ] == [
        ("unblinding.refused", "subject", str(missing), missing),
        ("unblinding.refused", "subject", str(subject_id), subject_id),
        ("unblinding.refused", "subject", str(subject_id), subject_id),
        ("unblinding.refused", "subject", str(other), other),
    ]
