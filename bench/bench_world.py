"""The benchmark's small synthetic trial, built through the project's own services (issue 13).

    python bench/bench_world.py build --url URL --subjects N [--sites S] [--visit-subjects V]
        --manifest out.json [--workdir DIR]

Writes the manifest that bench/bench_http.py reads; the same shape as bench/scale.py's (the
scale generator), so the harness takes either world:

    {"url", "protocol_file", "keys": {"IWRS_SECRET_KEY": hex, ...}, "instance_path",
     "users": {"investigators": [{"username","password","token","site_id"}...],
               "pharmacists": [...], "supply_manager": {...}, "auditor": {...}},
     "awaiting_randomization": {site_id: [subject ids confirmed eligible, not randomized]},
     "awaiting_visit": [[subject_id, "V2"], ...]}

Decisions:
- The shipped protocol with its caps lifted (enrolment, site, stratum), a list long enough for
  every subject, S sites (the shipped four plus copies BN05…), an initial shipment per site large
  enough for its subjects' day-1 and week-4 kits (so no resupply happens during the run).
- Everything happens in the past on a moved clock (iwrs.clock.set_clock): the trial is set up
  30 days ago and the "awaiting_visit" subjects are randomized 27 days ago, so that their week-4
  visit (V2, day 29, window -3/+3) is open today when the real server dispenses it.
- Every password is hashed at the test suite's cheap Argon2id cost (t = 1, m = 8 MiB) while the
  world is built; the harness re-hashes the investigators' passwords at the cost of the hasher
  mode it measures (bench_http.set_signing_cost) before it starts the server.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PASSWORD = "bench horse battery staple"  # noqa: S105 - the bench's own throw-away accounts
SHIPPED_PROTOCOL = ROOT / "iwrs" / "protocols" / "gensci048-204.toml"
KEY_ENV = {
    "secret_key": "IWRS_SECRET_KEY",
    "audit_key": "IWRS_AUDIT_KEY",
    "blinding_key": "IWRS_BLINDING_KEY",
    "audit_signing_key": "IWRS_AUDIT_SIGNING_KEY",
}
SHIPPED_SITES = ("CN01", "CN02", "CN03", "CN04")


class MovedClock:
    """The builder's clock: starts `days` ago, moves forward by hand and a millisecond a read
    (so that every event has its own moment)."""

    def __init__(self, days: float) -> None:
        self.current = datetime.now(UTC) - timedelta(days=days)

    def __call__(self) -> datetime:
        self.current += timedelta(milliseconds=1)
        return self.current

    def move_to(self, days_ago: float) -> None:
        self.current = max(self.current, datetime.now(UTC) - timedelta(days=days_ago))


def protocol_text(sites: int, subjects: int) -> str:
    """The shipped protocol, caps lifted, `sites` sites, a shipment of `per_site` kits."""
    text = SHIPPED_PROTOCOL.read_text(encoding="utf-8")
    per_site = 2 * (subjects // sites + 1) + 20  # day 1 and week 4 for everyone, and a margin
    slots = max(240, subjects + 60)  # both strata alike: never short whatever the mix
    replacements = {
        "enrolment_cap = 36": f"enrolment_cap = {2 * slots}",
        "site_cap = 15 ": f"site_cap = {2 * slots} ",
        "stratum_cap = 24 ": f"stratum_cap = {slots} ",
        "slots_per_stratum = 120": f"slots_per_stratum = {slots}",
        "quantity = 8": f"quantity = {per_site}",
    }
    for old, new in replacements.items():
        assert old in text, f"{old!r} is not in the shipped protocol"
        text = text.replace(old, new)
    for n in range(len(SHIPPED_SITES) + 1, sites + 1):
        text += (
            f'\n[[sites]]\ncode = "BN{n:02d}"\nname = "Bench site {n}"\ncity = "Beijing"\n'
            'country = "China"\ntime_zone = "Asia/Shanghai"\n'
        )
    return text


def _fast(url: str) -> str:
    """The builder's own connections skip waiting for the WAL flush at commit (PostgreSQL
    synchronous_commit = off): the world is set-up, and a crash while building it is simply a
    re-run. The manifest, and so the measured server, keep the plain URL (full durability)."""
    if not url.startswith("postgresql"):
        return url
    return url + ("&" if "?" in url else "?") + "options=-csynchronous_commit%3Doff"


def _settings(workdir: Path, url: str, protocol: Path, keys: dict[str, bytes]) -> Any:
    from iwrs.config import Settings

    return Settings(
        instance_path=workdir / "instance",
        database_url=url,
        protocol_path=protocol,
        ratelimit_enabled=False,
        argon2_memory_kib=8 * 1024,
        argon2_time_cost=1,
        argon2_parallelism=1,
        **keys,
    )


def _people(site_codes: dict[str, int]) -> dict[str, Any]:
    """Create the people: admin, supply manager, auditor, statistician, per site an
    investigator and a pharmacist. Returns username → User."""
    from iwrs.audit import Actor
    from iwrs.services import users

    plan = [("bench.admin", "admin", []), ("bench.supply", "supply_manager", [])]
    plan += [("bench.auditor", "auditor", []), ("bench.stat", "unblinded_statistician", [])]
    for code in site_codes:
        plan += [(f"inv.{code.lower()}", "investigator", [code])]
        plan += [(f"ph.{code.lower()}", "pharmacist", [code])]
    return {
        name: users.create_user(
            actor=Actor.system("bench"),
            username=name,
            full_name=f"Bench {name}",
            role=role,
            password=PASSWORD,
            site_codes=codes,
        )
        for name, role, codes in plan
    }


def _stock_sites(people: dict[str, Any], site_codes: dict[str, int], kits: int) -> None:
    """Kits at the depot; every site activated; its initial shipment shipped and received."""
    from sqlalchemy import select

    from iwrs import clock
    from iwrs.audit import Actor
    from iwrs.db import read_session
    from iwrs.models.sites import SiteStatus
    from iwrs.models.supply import Shipment
    from iwrs.services import shipments, sites, supply, supply_views

    supply.generate_kits(
        actor=Actor.system("bench"),
        kit_type=supply.protocol().kit_types[0].code,
        lot="BENCH-L001",
        expiry_date=clock.today(supply.protocol().depot) + timedelta(days=730),
        count=kits,
        seed=secrets.token_bytes(32),
    )
    admin = Actor.of(people["bench.admin"])
    for site_id in site_codes.values():
        sites.change_site_status(
            actor=admin, site_id=site_id, status=SiteStatus.ACTIVE, signer_password=PASSWORD
        )
    code_of = {v: k for k, v in site_codes.items()}
    read_session().rollback()
    for row in read_session().scalars(select(Shipment).order_by(Shipment.id)).all():
        shipments.ship_shipment(
            actor=Actor.of(people["bench.supply"]),
            shipment_id=row.id,
            courier="Bench Cold Chain",
            tracking=f"BCC{row.id:06d}",
        )
        shipments.receive_shipment(
            actor=Actor.of(people[f"ph.{code_of[row.site_id].lower()}"]),
            shipment_id=row.id,
            lines={
                k.number: "good"
                for k in supply_views.shipment_kits(actor=Actor.system("bench"), shipment_id=row.id)
            },
            excursion=False,
        )


def eligible_subject(people: dict[str, Any], code: str, site_id: int, n: int) -> int:
    """Screen, assess and confirm eligible the n-th subject (site `code`); its id."""
    from iwrs.audit import Actor
    from iwrs.demo import eligible_answers
    from iwrs.services import subjects

    investigator = Actor.of(people[f"inv.{code.lower()}"])
    born = f"19{58 + n % 30}-{1 + n % 12:02d}-{1 + n % 28:02d}"
    initials = "".join(chr(65 + d) for d in (n // 676 % 26, n // 26 % 26, n % 26))
    subject = subjects.screen_subject(
        actor=investigator, site_id=site_id, date_of_birth=born, sex="female", initials=initials
    )
    disease = "SSc" if n % 3 == 0 else "RA"
    answers = eligible_answers(subjects.engine(), subject.screening_date, disease=disease)
    record = subjects.record_assessment(actor=investigator, subject_id=subject.id, answers=answers)
    subjects.decide_eligibility(
        actor=investigator,
        subject_id=subject.id,
        assessment_id=record.row.id,
        decision="eligible",
        signer_password=PASSWORD,
        understood=True,
    )
    return subject.id


def _subjects(
    people: dict[str, Any],
    site_codes: dict[str, int],
    count: int,
    first: int,
    progress: Callable[[str], None],
) -> list[tuple[int, int]]:
    """`count` confirmed-eligible subjects, site by turn: [(subject_id, site_id)]."""
    codes = list(site_codes)
    made = []
    started = time.monotonic()
    for n in range(first, first + count):
        code = codes[n % len(codes)]
        made.append((eligible_subject(people, code, site_codes[code], n), site_codes[code]))
        if (n - first + 1) % 100 == 0:
            rate = (n - first + 1) / (time.monotonic() - started)
            progress(f"  {n - first + 1}/{count} subjects screened ({rate:.0f}/s)")
    return made


def _tokens(people: dict[str, Any]) -> dict[str, str]:
    from iwrs.audit import Actor
    from iwrs.services import users

    return {
        name: users.create_api_token(
            actor=Actor.of(user), user_id=user.id, name="bench", password=PASSWORD
        )[0]
        for name, user in people.items()
    }


def build(
    url: str,
    workdir: Path,
    *,
    subjects: int,
    sites: int,
    visit_subjects: int,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build the world on the (empty) database at `url`; return its manifest."""
    from sqlalchemy import select

    from iwrs import create_app
    from iwrs.audit import Actor
    from iwrs.clock import set_clock
    from iwrs.db import make_engine, read_session, upgrade_schema
    from iwrs.models.sites import Site
    from iwrs.services import randomization, trial

    workdir.mkdir(parents=True, exist_ok=True)
    protocol = workdir / "protocol.toml"
    protocol.write_text(protocol_text(sites, subjects + visit_subjects), encoding="utf-8")
    keys = {name: secrets.token_bytes(32) for name in KEY_ENV}
    engine = make_engine(url)
    upgrade_schema(engine)
    engine.dispose()
    app = create_app(_settings(workdir, _fast(url), protocol, keys))
    clock = MovedClock(days=30)
    set_clock(app, clock)
    with app.app_context():
        trial.load_protocol(actor=Actor.system("bench"), protocol=app.extensions["iwrs.protocol"])
        site_codes = {s.code: s.id for s in read_session().scalars(select(Site))}
        people = _people(site_codes)
        progress(f"  trial, {len(people)} people; stocking {len(site_codes)} sites")
        per_site = 2 * ((subjects + visit_subjects) // sites + 1) + 20
        _stock_sites(people, site_codes, kits=per_site * len(site_codes) + 40)
        randomization.generate_list(actor=Actor.of(people["bench.stat"]), name="Bench list")
        progress(f"  screening {visit_subjects} subjects to randomize 27 days ago")
        visit = _subjects(people, site_codes, visit_subjects, 0, progress)
        clock.move_to(days_ago=27)
        code_of = {v: k for k, v in site_codes.items()}
        for subject_id, site_id in visit:
            randomization.randomize(
                actor=Actor.of(people[f"inv.{code_of[site_id].lower()}"]),
                subject_id=subject_id,
                signer_password=PASSWORD,
                understood=True,
            )
        progress(f"  screening {subjects} subjects awaiting randomization")
        awaiting = _subjects(people, site_codes, subjects, visit_subjects, progress)
        tokens = _tokens(people)
    app.extensions["iwrs.engine"].dispose()
    return _manifest(url, workdir, protocol, keys, people, tokens, awaiting, visit, site_codes)


def _manifest(
    url: str,
    workdir: Path,
    protocol: Path,
    keys: dict[str, bytes],
    people: dict[str, Any],
    tokens: dict[str, str],
    awaiting: list[tuple[int, int]],
    visit: list[tuple[int, int]],
    site_codes: dict[str, int],
) -> dict[str, Any]:
    def entry(name: str) -> dict[str, Any]:
        code = name.split(".", 1)[1].upper()
        return {
            "username": name,
            "password": PASSWORD,
            "token": tokens[name],
            "site_id": site_codes.get(code),
        }

    by_site: dict[str, list[int]] = {}
    for subject_id, site_id in awaiting:
        by_site.setdefault(str(site_id), []).append(subject_id)
    return {
        "url": url,
        "protocol_file": str(protocol),
        "instance_path": str(workdir / "instance"),
        "keys": {KEY_ENV[name]: value.hex() for name, value in keys.items()},
        "users": {
            "investigators": [entry(n) for n in people if n.startswith("inv.")],
            "pharmacists": [entry(n) for n in people if n.startswith("ph.")],
            "supply_manager": entry("bench.supply"),
            "auditor": entry("bench.auditor"),
        },
        "awaiting_randomization": by_site,
        "awaiting_visit": [[subject_id, "V2"] for subject_id, _ in visit],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--url", required=True)
    b.add_argument("--subjects", type=int, default=400)
    b.add_argument("--sites", type=int, default=4)
    b.add_argument("--visit-subjects", type=int, default=100)
    b.add_argument("--manifest", type=Path, required=True)
    b.add_argument("--workdir", type=Path, default=None)
    b.add_argument("--audit-events", type=int, default=0, help="ignored (scale.py's option)")
    args = parser.parse_args(argv)
    manifest = build(
        args.url,
        args.workdir or args.manifest.parent / "world",
        subjects=args.subjects,
        sites=max(1, args.sites),
        visit_subjects=args.visit_subjects,
    )
    args.manifest.write_text(json.dumps(manifest, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
