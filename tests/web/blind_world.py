"""Mirror-image trial worlds for the blinding tests (README rule 2: noninterference).

`build_world` runs one scripted, fully deterministic trial: fixed keys, a fixed manual clock, a
seeded tie-break, fixed usernames and passwords, kits and a list from fixed seeds, sites
activated, shipments shipped and received, subjects screened, randomized and dosed, kits
damaged and returned, two sites emptied of one treatment and refused a randomization, two
emergency unblindings (one by the investigator the crawl signs in as). The
protocol is a copy of the shipped one whose arm codes are distinctive (ACTIVEQX, PLACEBOZK), so
a leaked code is easy to find in any text.

The MIRROR world is the same script with every arm swapped: right after the kits and the list
are generated, every sealed kit treatment and every sealed list slot is rewritten with the other
arm. Kit numbers depend only on the seed and lot, and shipping, resupply and kit choice are
symmetric in the arms, so both worlds ship, dispense and damage the same kit numbers; nothing a
blinded role can fetch may then differ between them.

`crawl` signs a user in and fetches (GET only) every GET route of the application (taken from
its URL map) for every row id that exists, in scope or not, and one that does not; every
same-site link found on the pages; the API by the user's bearer token. It returns (status,
headers, body) per URL, normalized for what legitimately varies (wall-clock CSRF tokens,
timestamps).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import shutil
import zipfile
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from iwrs import create_app
from iwrs.audit import Actor
from iwrs.clock import set_clock
from iwrs.errors import Conflict
from tests.conftest import PASSWORD, ManualClock, make_settings, sign_in

ACTIVE, PLACEBO = "ACTIVEQX", "PLACEBOZK"
ARM_CODES = (ACTIVE, PLACEBO)
SWAP = {ACTIVE: PLACEBO, PLACEBO: ACTIVE}
KIT_SEED = bytes(range(32))
LIST_SEED = bytes(range(100, 132))
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
KEYS = {
    "secret_key": b"S" * 32,
    "audit_key": b"A" * 32,
    "blinding_key": b"B" * 32,
    "audit_signing_key": b"E" * 32,
}
SHIPPED_PROTOCOL = Path(__file__).resolve().parents[2] / "iwrs" / "protocols" / "gensci048-204.toml"

USERS = [
    ("admin", "Trial administrator", "admin", []),
    ("stat.liu", "Liu Yang", "unblinded_statistician", []),
    ("supply.chen", "Chen Jie", "supply_manager", []),
    ("audit.zhao", "Zhao Lei", "auditor", []),
    ("dr.li", "Dr Li Wei", "investigator", ["CN01"]),
    ("dr.zhang", "Dr Zhang Min", "investigator", ["CN02"]),
    ("dr.sun", "Dr Sun Qi", "investigator", ["CN03"]),
    ("dr.ma", "Dr Ma Hong", "investigator", ["CN04"]),
    ("ph.wang", "Wang Fang", "pharmacist", ["CN01"]),
    ("ph.zhou", "Zhou Jing", "pharmacist", ["CN02"]),
    ("ph.sun", "Sun Hui", "pharmacist", ["CN03"]),
    ("ph.ma", "Ma Lin", "pharmacist", ["CN04"]),
]
PHARMACIST = {"CN01": "ph.wang", "CN02": "ph.zhou", "CN03": "ph.sun", "CN04": "ph.ma"}
INVESTIGATOR = {"CN01": "dr.li", "CN02": "dr.zhang", "CN03": "dr.sun", "CN04": "dr.ma"}
# The blinded roles and the user each is crawled as; the statistician is the unblinded one.
BLINDED = {
    "investigator": "dr.li",
    "pharmacist": "ph.wang",
    "supply_manager": "supply.chen",
    "auditor": "audit.zhao",
    "admin": "admin",
}
STATISTICIAN = "stat.liu"

# (key, site, date of birth, sex, disease, answer changes, decision)
SUBJECTS = [
    ("S1", "CN01", "1961-05-14", "female", "RA", {}, "eligible"),
    ("S2", "CN01", "1958-11-02", "male", "SSc", {}, "eligible"),
    ("S3", "CN01", "1966-08-30", "male", "RA", {}, "eligible"),
    ("S4", "CN01", "1972-02-29", "female", "RA", {"fvc_pct": "35"}, "screen_failure"),
    ("S5", "CN01", "1980-07-21", "female", "SSc", {"wbc": None, "qt_ms": None}, None),
    ("S6", "CN02", "1964-03-09", "male", "RA", {}, "eligible"),
    ("S7", "CN02", "1969-12-01", "female", "SSc", {}, "eligible"),
    ("S8", "CN03", "1970-04-04", "male", "RA", {}, "eligible"),
    ("S9", "CN04", "1971-06-06", "female", "RA", {}, "eligible"),
]
RANDOMIZED = ["S1", "S2", "S3", "S6", "S7"]
# Emergency unblindings (subject, by whom). dr.li is crawled as the investigator: the one page
# where that role may see an arm is the unblinded view of S3, and only after this unblinding.
UNBLINDED = [("S3", "dr.li"), ("S7", "dr.zhang")]
# Sites emptied of one treatment before a randomization attempt: CN03 of the arm that is
# ACTIVEQX in the plain world, CN04 of the arm that is PLACEBOZK there (the mirror world
# damages the same kit numbers, so there it is the other way round).
EMPTIED = {"CN03": ACTIVE, "CN04": PLACEBO}


def protocol_copy(directory: Path) -> Path:
    """The shipped protocol with distinctive arm codes."""
    text = SHIPPED_PROTOCOL.read_text(encoding="utf-8")
    for old, new in (
        ('code = "A"\n', f'code = "{ACTIVE}"\n'),
        ('code = "P"\n', f'code = "{PLACEBO}"\n'),
    ):
        assert text.count(old) == 1, f"the shipped protocol no longer has exactly one {old!r}"
        text = text.replace(old, new)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "protocol.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class World:
    app: Flask
    clock: ManualClock
    mirror: bool
    tokens: dict[str, str]
    subject_ids: dict[str, int]
    site_ids: dict[str, int]
    refusals: dict[str, str] = field(default_factory=dict)

    def client(self, username: str) -> FlaskClient:
        client = self.app.test_client()
        response = sign_in(client, username)
        assert response.status_code == 302, (username, response.status_code)
        return client

    def ids(self) -> dict[str, list[int]]:
        """Every row id a URL can name, from the database (the same in both worlds)."""
        from iwrs.db import read_session
        from iwrs.models.audit import AuditEvent
        from iwrs.models.randomization import Dispensation
        from iwrs.models.sites import Site
        from iwrs.models.subjects import Subject
        from iwrs.models.supply import Shipment
        from iwrs.models.users import ApiToken, User

        with self.app.app_context():
            session = read_session()
            ids = {
                name: sorted(session.scalars(select(model.id)))
                for name, model in (
                    ("site", Site),
                    ("subject", Subject),
                    ("shipment", Shipment),
                    ("user", User),
                    ("token", ApiToken),
                    ("dispensation", Dispensation),
                )
            }
            # Audit events: a sample by id (the auditor's crawl follows the trail's own links).
            seqs = sorted(session.scalars(select(AuditEvent.seq)))
            ids["audit"] = sorted({*seqs[::10], *seqs[-3:]})
            return ids

    def may_see_arms(self, username: str) -> set[str]:
        """The URLs where `username` may see an arm: subjects they emergency-unblinded (the
        unblinded page and the unblinding's receipt)."""
        return {
            url.format(id=self.subject_ids[key])
            for key, by in UNBLINDED
            if by == username
            for url in ("/subjects/{id}/unblinded", "/receipts/unblinding/{id}")
        }

    def dispose(self) -> None:
        self.app.extensions["iwrs.engine"].dispose()


# --- building a world ---------------------------------------------------------------------------


def _swap_sealed(table: Any, column: str, context_of: Any) -> int:
    """Rewrite every sealed arm of a table with the other arm (connection level: test set-up)."""
    from iwrs.db import engine, read_session
    from iwrs.services.supply import sealer

    swapped = 0
    with engine().begin() as connection:
        for row in connection.execute(select(table)).mappings().all():
            context = context_of(row)
            arm = sealer().unseal(row[column], context=context)
            connection.execute(
                update(table)
                .where(table.c.id == row["id"])
                .values({column: sealer().seal(SWAP[arm], context=context)})
            )
            swapped += 1
    read_session().rollback()
    return swapped


def _swap_kits() -> int:
    from iwrs.models.supply import Kit
    from iwrs.services.supply import KIT_CONTEXT

    return _swap_sealed(
        Kit.__table__, "sealed_treatment", lambda row: KIT_CONTEXT.format(number=row["number"])
    )


def _swap_slots() -> int:
    from iwrs.models.randomization import RandomizationSlot
    from iwrs.services.randomization import SLOT_CONTEXT

    return _swap_sealed(
        RandomizationSlot.__table__,
        "sealed_arm",
        lambda row: SLOT_CONTEXT.format(
            list_id=row["list_id"], stratum=row["stratum"], sequence=row["sequence"]
        ),
    )


def _ship_and_receive_open(people: dict[str, Any], damaged_at_receipt: set[str]) -> None:
    """Ship every requested shipment and have the site's pharmacist receive it."""
    from iwrs.db import read_session
    from iwrs.models.sites import Site
    from iwrs.models.supply import Shipment
    from iwrs.services import shipments, supply_views

    session = read_session()
    session.rollback()
    requested = session.scalars(
        select(Shipment).where(Shipment.state == "requested").order_by(Shipment.id)
    ).all()
    for row in requested:
        site = session.get(Site, row.site_id)
        assert site is not None
        shipments.ship_shipment(
            actor=Actor.of(people["supply.chen"]),
            shipment_id=row.id,
            courier="Cold Chain Co",
            tracking_number=f"CC{row.id:06d}",
        )
        kits = supply_views.shipment_kits(actor=Actor.system("test"), shipment_id=row.id)
        lines = {k.number: "good" for k in kits}
        if site.code in damaged_at_receipt:
            lines[kits[0].number] = "damaged"
            damaged_at_receipt.discard(site.code)
        shipments.receive_shipment(
            actor=Actor.of(people[PHARMACIST[site.code]]),
            shipment_id=row.id,
            lines=lines,
            excursion=False,
        )


def _site_kits(site_id: int, state: str) -> list[str]:
    from iwrs.db import read_session
    from iwrs.models.supply import Kit

    session = read_session()
    session.rollback()
    return list(
        session.scalars(
            select(Kit.number)
            .where(Kit.place_kind == "site", Kit.place_id == site_id, Kit.state == state)
            .order_by(Kit.number)
        )
    )


def _treatment(number: str) -> str:
    from iwrs.db import read_session
    from iwrs.models.supply import Kit
    from iwrs.services.supply import treatment_of

    kit = read_session().scalars(select(Kit).where(Kit.number == number)).one()
    return treatment_of(kit)


def build_world(directory: Path, database_url: str, *, mirror: bool) -> World:
    """One complete, deterministic trial (see the module docstring)."""
    from iwrs.services import trial

    settings = make_settings(
        directory, database_url, protocol_path=protocol_copy(directory), **KEYS
    )
    app = create_app(settings)
    app.config["IWRS_PROPAGATE_UNEXPECTED"] = False
    app.config["PROPAGATE_EXCEPTIONS"] = False
    clock = ManualClock(START)
    set_clock(app, clock)
    app.extensions["iwrs.tie_break"] = random.Random(7).randrange
    with app.app_context():
        trial.load_protocol(actor=Actor.system("test"), protocol=app.extensions["iwrs.protocol"])
        world = _scenario(app, clock, mirror=mirror)
    return world


def _scenario(app: Flask, clock: ManualClock, *, mirror: bool) -> World:
    from iwrs.db import read_session
    from iwrs.demo import eligible_answers
    from iwrs.models.sites import Site, SiteStatus
    from iwrs.services import (
        accountability,
        dispensing,
        randomization,
        randomization_views,
        shipments,
        sites,
        subjects,
        supply,
        unblinding,
        users,
    )

    people = {}
    for username, full_name, role, site_codes in USERS:
        people[username] = users.create_user(
            actor=Actor.system("test"),
            username=username,
            full_name=full_name,
            role=role,
            password=PASSWORD,
            site_codes=site_codes,
        )
    clock.advance(minutes=5)

    # Kits: numbers from the seed and lot only; treatments a seeded shuffle (then mirrored).
    supply.generate_kits(
        actor=Actor.of(people["supply.chen"]),
        kit_type=supply.protocol().kit_types[0].code,
        lot="PKG-0001",
        expiry_date=supply.depot_today() + timedelta(days=730),
        count=96,
        seed=KIT_SEED,
    )
    if mirror:
        assert _swap_kits() == 96

    session = read_session()
    site_ids = {s.code: s.id for s in session.scalars(select(Site).order_by(Site.code))}
    for code in sorted(site_ids):
        sites.change_site_status(
            actor=Actor.of(people["admin"]),
            site_id=site_ids[code],
            status=SiteStatus.ACTIVE,
            signer_password=PASSWORD,
            understood=True,
        )
    clock.advance(hours=2)
    _ship_and_receive_open(people, damaged_at_receipt={"CN02"})
    clock.advance(days=1)

    subject_ids: dict[str, int] = {}
    for key, code, born, sex, disease, changes, decision in SUBJECTS:
        investigator = Actor.of(people[INVESTIGATOR[code]])
        subject = subjects.screen_subject(
            actor=investigator, site_id=site_ids[code], date_of_birth=born, sex=sex
        )
        subject_ids[key] = subject.id
        answers = eligible_answers(subjects.engine(), subject.screening_date, disease=disease)
        answers.update(changes)
        record = subjects.record_assessment(
            actor=investigator,
            subject_id=subject.id,
            answers={k: v for k, v in answers.items() if v is not None},
        )
        if decision:
            subjects.decide_eligibility(
                actor=investigator,
                subject_id=subject.id,
                assessment_id=record.row.id,
                decision=decision,
                signer_password=PASSWORD,
                understood=True,
            )
        clock.advance(minutes=7)

    randomization.generate_list(
        actor=Actor.of(people["stat.liu"]), name="GenSci048-204 v1", seed=LIST_SEED
    )
    if mirror:
        assert _swap_slots() > 0

    clock.advance(days=6)
    for key in RANDOMIZED:
        code = next(s[1] for s in SUBJECTS if s[0] == key)
        randomization.randomize(
            actor=Actor.of(people[INVESTIGATOR[code]]),
            subject_id=subject_ids[key],
            signer_password=PASSWORD,
            understood=True,
            idempotency_key=f"edc-{key}",
        )
        clock.advance(minutes=11)
    clock.advance(days=2)
    _ship_and_receive_open(people, damaged_at_receipt=set())

    # Week 4 (V2): dispense and confirm for three subjects, inside the window.
    clock.advance(days=26)
    for key in ("S1", "S2", "S6"):
        code = next(s[1] for s in SUBJECTS if s[0] == key)
        result = dispensing.dispense(
            actor=Actor.of(people[PHARMACIST[code]]), subject_id=subject_ids[key], visit_code="V2"
        )
        dispensing.confirm_kit(
            actor=Actor.of(people[PHARMACIST[code]]),
            dispensation_id=result.dispensation_id,
            kit_number=result.kit_number,
        )
        clock.advance(minutes=3)

    # A kit at CN01 reported damaged, and S1's day-1 kit returned used.
    available = _site_kits(site_ids["CN01"], "available")
    accountability.report_kit(
        actor=Actor.of(people["ph.wang"]),
        kit_number=available[0],
        lost=False,
        reason="Syringe cracked in the fridge",
    )
    day1_kit = randomization_views.result_of(
        actor=Actor.of(people["dr.li"]), subject_id=subject_ids["S1"]
    )
    assert day1_kit is not None
    accountability.record_return(
        actor=Actor.of(people["ph.wang"]),
        kit_number=day1_kit.kit_number,
        condition="empty",
        units_returned=0,
    )
    # Issue 15: S2's day-1 kit returned, verified, then destroyed (signed); a destruction naming
    # a kit not destroyable is refused whole, in both worlds alike.
    s2_kit = randomization_views.result_of(
        actor=Actor.of(people["dr.li"]), subject_id=subject_ids["S2"]
    )
    assert s2_kit is not None
    accountability.record_return(
        actor=Actor.of(people["ph.wang"]),
        kit_number=s2_kit.kit_number,
        condition="partly_used",
        units_returned=1,
        visit_code="V2",
    )
    accountability.verify_return(
        actor=Actor.of(people["ph.wang"]), kit_number=s2_kit.kit_number, units_verified=1
    )
    with contextlib.suppress(Conflict):
        accountability.destroy_kits(
            actor=Actor.of(people["supply.chen"]),
            kit_numbers=[available[1], s2_kit.kit_number],
            reference="DC-REFUSED",
            signer_password=PASSWORD,
        )
    accountability.destroy_kits(
        actor=Actor.of(people["supply.chen"]),
        kit_numbers=[s2_kit.kit_number],
        reference="DC-2026-001",
        signer_password=PASSWORD,
    )

    # A manual shipment to CN02, shipped and still in transit.
    manual = shipments.request_manual_shipment(
        actor=Actor.of(people["supply.chen"]), site_id=site_ids["CN02"], quantity=2
    )
    shipments.ship_shipment(
        actor=Actor.of(people["supply.chen"]),
        shipment_id=manual.id,
        courier="Cold Chain Co",
        tracking_number=f"CC{manual.id:06d}",
    )

    # CN03 and CN04 lose every kit of one treatment (the plain world's arm named in EMPTIED;
    # the mirror world damages the same kit numbers), then a randomization is refused there.
    clock.advance(hours=1)
    for code, plain_arm in EMPTIED.items():
        arm = SWAP[plain_arm] if mirror else plain_arm
        for number in _site_kits(site_ids[code], "available"):
            if _treatment(number) == arm:
                accountability.report_kit(
                    actor=Actor.of(people[PHARMACIST[code]]),
                    kit_number=number,
                    lost=False,
                    reason="Dropped on receipt check",
                )
    refusals = {}
    for key, code in (("S8", "CN03"), ("S9", "CN04")):
        try:
            randomization.randomize(
                actor=Actor.of(people[INVESTIGATOR[code]]),
                subject_id=subject_ids[key],
                signer_password=PASSWORD,
                understood=True,
            )
        except Exception as refusal:  # noqa: BLE001 - recorded and compared by the tests
            refusals[key] = f"{type(refusal).__name__}: {refusal}"
        else:
            refusals[key] = "randomized"

    # Emergency unblindings: CN01's investigator (a crawled user) of S3, CN02's of S7.
    for key, investigator in UNBLINDED:
        unblinding.unblind(
            actor=Actor.of(people[investigator]),
            subject_id=subject_ids[key],
            category="sae",
            reason="Anaphylaxis; the treating physician must know the study drug",
            understood=True,
            signer_password=PASSWORD,
            sae_led_to_unblinding=True,
        )
        clock.advance(minutes=4)

    # Personal API tokens, made deterministic so both worlds hold the same ones.
    tokens = {}
    counter = iter(range(1000))
    fixed = SimpleNamespace(token_urlsafe=lambda n: f"fixed{next(counter):04d}".ljust(43, "x"))
    with mock.patch.object(users, "secrets", fixed):
        for username in [*BLINDED.values(), STATISTICIAN, "dr.sun", "dr.ma"]:
            token, _ = users.create_api_token(
                actor=Actor.of(people[username]),
                user_id=people[username].id,
                name="EDC link",
                password=PASSWORD,
            )
            tokens[username] = token
    clock.advance(minutes=30)
    return World(app, clock, mirror, tokens, subject_ids, site_ids, refusals)


# --- crawling -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: str


# Headers that legitimately vary with the wall clock (the signed session cookie).
VOLATILE_HEADERS = {"set-cookie", "date"}
_MASKS = [
    # CSRF tokens are signed with a wall-clock timestamp.
    (re.compile(r'(name="[\w-]*csrf_token"[^>]*?value=")[^"]*(")'), r"\1<csrf>\2"),
    (re.compile(r'(value=")[^"]*("[^>]*?name="[\w-]*csrf_token")'), r"\1<csrf>\2"),
    (re.compile(r'("csrf_token":\s*")[^"]*(")'), r"\1<csrf>\2"),
    # The page forms' idempotency keys: fresh random values on every render, by design.
    (re.compile(r'(name="idempotency_key"[^>]*?value=")[^"]*(")'), r"\1<idempotency-key>\2"),
    # Timestamps: ISO datetimes, then any remaining HH:MM[:SS].
    (
        re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"),
        "<datetime>",
    ),
    (re.compile(r"\b\d{2}:\d{2}(?::\d{2})?\b"), "<time>"),
]
_HREF = re.compile(r'href="([^"]*)"')


def normalize(text: str) -> str:
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


def _fetch(client: FlaskClient, url: str, headers: dict[str, str] | None = None) -> Fetched:
    response = client.get(url, headers=headers or {})
    kept = tuple(
        (name, normalize(value))
        for name, value in sorted(response.headers.items())
        if name.lower() not in VOLATILE_HEADERS
    )
    return Fetched(response.status_code, kept, normalize(_text_of(response)))


def _text_of(response: Any) -> str:
    """The body as text; a ZIP (the audit CSV package) as its files' texts, name by name."""
    if response.mimetype != "application/zip":
        return str(response.get_data(as_text=True))
    with zipfile.ZipFile(io.BytesIO(response.get_data())) as archive:
        return "".join(
            f"--- {name}\n{archive.read(name).decode('utf-8')}" for name in archive.namelist()
        )


def _same_site(href: str) -> str | None:
    href = href.replace("&amp;", "&").split("#", 1)[0]
    if not href.startswith("/") or href.startswith("//") or href.startswith("/static/"):
        return None
    if href.endswith("?format=pdf"):
        # A receipt's PDF is its page's receipt drawn by WeasyPrint from the same values
        # (iwrs/web/receipts.py); the crawl reads the page. tests/web/test_receipts.py holds
        # the PDF to the same blind.
        return None
    return href


MISSING = 2_000_000_000  # a row id that never exists
# How to fill each URL argument of the application's GET routes: a kind of row (every id that
# exists, and one that does not) or a list of values. A route with an argument not named here
# fails the crawl, so a new page or endpoint cannot escape it.
ROUTE_ROWS = {
    "site_id": "site",
    "subject_id": "subject",
    "shipment_id": "shipment",
    "user_id": "user",
    "token_id": "token",
    "dispensation_id": "dispensation",
    "seq": "audit",
}
# A kit number: one that exists nowhere; the kits' own pages (issue 15) are reached by the links
# of the inventory and the subjects' pages, so a world's kit numbers name no route here.
ROUTE_VALUES = {"kind": ["csv", "jsonl", "json"], "number": ["9999999"]}
# Query strings worth trying on top of the bare URL.
QUERIES = {
    "/api/v1/inventory": [*(f"site_code=CN0{i}" for i in range(1, 5)), "site_code=XX99"],
    "/api/v1/audit/events": ["before=40", "action=subject.randomized", "site=CN01"],
    "/api/v1/audit/export": ["format=csv", "site=CN02"],
    "/audit/": ["action=subject.randomized", "site=CN01", "subject=CN01-0001"],
}
_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")


def route_urls(app: Flask, ids: dict[str, list[int]]) -> list[str]:
    """Every GET route of the application, for every row id it can name (and a missing one),
    with the query strings above; sorted, so two worlds are crawled alike."""
    urls = set()
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or ()) or rule.endpoint == "static":
            continue
        choices: list[dict[str, object]] = [{}]
        for argument in sorted(rule.arguments):
            if argument in ROUTE_ROWS:
                values: list[object] = [*ids[ROUTE_ROWS[argument]], MISSING]
            elif argument in ROUTE_VALUES:
                values = list(ROUTE_VALUES[argument])
            else:
                raise AssertionError(
                    f"the blind crawl cannot fill <{argument}> of {rule.rule}: add it to "
                    "ROUTE_ROWS or ROUTE_VALUES in tests/web/blind_world.py"
                )
            choices = [{**c, argument: v} for c in choices for v in values]
        for values in choices:
            url = _ARGUMENT.sub(lambda m, v=values: str(v[m.group(1)]), rule.rule)
            urls.add(url)
            urls.update(f"{url}?{query}" for query in QUERIES.get(url, []))
    return sorted(urls)


def _pattern(url: str) -> str:
    return re.sub(r"\d+", "N", url.split("?", 1)[0])


def crawl(
    world: World, username: str, *, per_pattern: int = 200, limit: int = 3000
) -> dict[str, Fetched]:
    """Everything `username` can GET: every page route for every id, and every link found on
    the way (breadth-first); every API route for every id, by the user's token.

    Links are followed breadth-first; at most `per_pattern` URLs of one shape (digits masked,
    e.g. /audit/events/N) are fetched, so a long trail or list does not make the crawl slow.
    The crawl is deterministic, so two mirror worlds are crawled alike."""
    every = route_urls(world.app, world.ids())
    client = world.client(username)
    seen: dict[str, Fetched] = {}
    shapes: dict[str, int] = {}
    queue = deque(url for url in every if not url.startswith("/api/"))
    while queue:
        url = queue.popleft()
        if url in seen:
            continue
        shape = _pattern(url)
        if shapes.get(shape, 0) >= per_pattern:
            continue
        shapes[shape] = shapes.get(shape, 0) + 1
        fetched = seen[url] = _fetch(client, url)
        assert len(seen) < limit, f"the crawl of {username} did not end within {limit} URLs"
        links = _HREF.findall(fetched.body)
        location = dict(fetched.headers).get("Location")
        if location:
            links.append(location)
        for href in links:
            target = _same_site(href)
            if target is not None and target not in seen:
                queue.append(target)
    api = world.app.test_client()
    bearer = {"Authorization": f"Bearer {world.tokens[username]}"}
    for url in every:
        if url.startswith("/api/"):
            seen[f"API {url}"] = _fetch(api, url, bearer)
    return seen


# --- databases ----------------------------------------------------------------------------------


@contextmanager
def fresh_databases(request: Any, backend: str, directory: Path, count: int) -> Iterator[list[str]]:
    """`count` fresh, migrated databases of one backend (from conftest's templates)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from tests import conftest

    if backend == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        urls = []
        for i in range(count):
            path = directory / f"world{i}.sqlite"
            shutil.copy(template, path)
            urls.append(f"sqlite:///{path}")
        yield urls
        return
    template = request.getfixturevalue("pg_template")
    names = [
        f"iwrs_blind_{conftest.WORKER}_{os.getpid()}_{next(conftest._counter)}"
        for _ in range(count)
    ]
    admin = conftest._pg_admin_engine()
    try:
        with admin.connect() as connection:
            for name in names:
                connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        yield [
            make_url(conftest.PG_URL).set(database=name).render_as_string(hide_password=False)
            for name in names
        ]
    finally:
        with admin.connect() as connection:
            for name in names:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
