"""Benchmark: the auditor's workspace on a large trail. Fills N chained audit events quickly, then
times the filtered page queries (by username, role, action prefix, site, subject, date range),
the first page and deep pages (keyset `before`), a filtered export and "verify now".

    .venv/bin/python bench/bench_audit_trail.py --events 1000000 [--database-url URL]

The events are real chain members: each one's hash (iwrs.audit.event_hash) and MAC
(iwrs.audit.event_mac) are computed in Python and inserted in batches with SQLAlchemy core,
updating the chain head in the same transaction, so `iwrs audit verify` passes on the result.
Not run by the test suite; prints what it measured and the command that produced it.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from iwrs import create_app
from iwrs.audit import Actor, canonical_json, event_hash, event_mac
from iwrs.config import Settings
from iwrs.db import engine, make_engine, read_session, upgrade_schema
from iwrs.models.audit import AuditChainHead, AuditEvent

ROLES = ("investigator", "pharmacist", "supply_manager", "unblinded_statistician", "auditor")
ACTIONS = (
    "subject.screened",
    "subject.assessed",
    "subject.eligibility_decided",
    "subject.randomized",
    "kit.dispensed",
    "kit.confirmed",
    "kit.received",
    "kit.returned",
    "shipment.requested",
    "shipment.shipped",
    "shipment.received",
    "auth.signed_in",
    "auth.signed_out",
    "esign.signed",
    "list.status_viewed",
    "allocations.viewed",
)
START = datetime(2024, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=730)


def _setup(url: str, folder: Path):  # type: ignore[no-untyped-def]
    """A migrated database with the shipped protocol, an admin, an investigator at CN01, the
    site active and one screened subject (the subject filter looks its number up)."""
    from iwrs.clock import set_clock
    from iwrs.models.sites import SiteStatus
    from iwrs.services import sites, subjects, trial, users

    upgrade_schema(make_engine(url))
    settings = Settings(
        instance_path=folder,
        database_url=url,
        secret_key=secrets.token_bytes(32),
        audit_key=secrets.token_bytes(32),
        blinding_key=secrets.token_bytes(32),
        audit_signing_key=secrets.token_bytes(32),
        testing=True,
    )
    app = create_app(settings)
    set_clock(app, lambda: START)
    password = "a long bench password"  # noqa: S105 - a throwaway database
    with app.app_context():
        trial.load_protocol(actor=Actor.system("bench"), protocol=app.extensions["iwrs.protocol"])
        admin = users.create_user(
            actor=Actor.system("bench"),
            username="bench.admin",
            full_name="Bench admin",
            role="admin",
            password=password,
        )
        doctor = users.create_user(
            actor=Actor.system("bench"),
            username="bench.doctor",
            full_name="Bench doctor",
            role="investigator",
            password=password,
            site_codes=["CN01"],
        )
        sites.change_site_status(
            actor=Actor.of(admin), site_id=1, status=SiteStatus.ACTIVE, signer_password=password
        )
        subject = subjects.screen_subject(
            actor=Actor.of(doctor), site_id=1, date_of_birth="1960-01-01", sex="female"
        )
    return app, settings.audit_key, subject


def _fill(count: int, key: bytes, subject_id: int, batch: int) -> float:
    """Append `count` computed events to the chain, `batch` per transaction."""
    table = AuditEvent.__table__
    head_table = AuditChainHead.__table__
    started = time.perf_counter()
    step = SPAN / count
    with engine().connect() as connection:
        head = connection.execute(select(head_table.c.seq, head_table.c.hash)).one()
        seq, prev = head.seq, head.hash
        connection.commit()
        done = 0
        while done < count:
            rows = []
            for _ in range(min(batch, count - done)):
                seq += 1
                done += 1
                n = seq
                role = ROLES[n % len(ROLES)]
                fields = {
                    "seq": seq,
                    "occurred_at": START + step * done,
                    "user_id": 1000 + n % 50,
                    "username": f"user{n % 50:02d}",
                    "role": role,
                    "action": ACTIONS[(n // 7) % len(ACTIONS)],
                    "entity_type": "bench",
                    "entity_id": str(n),
                    "site_id": (n % 4) + 1 if n % 9 else None,
                    # the real subject every 997th event, others spread over 5,000 ids
                    "subject_id": subject_id if n % 997 == 0 else 10_000 + n % 5_000,
                    "before": None if n % 3 else canonical_json({"state": "before", "n": n}),
                    "after": canonical_json({"state": "after", "n": n}),
                    "reason": None if n % 11 else "bench reason",
                    "prev_hash": prev,
                }
                digest = event_hash(fields)
                rows.append({**fields, "hash": digest, "mac": event_mac(key, digest)})
                prev = digest
            with connection.begin():
                connection.execute(table.insert(), rows)
                connection.execute(
                    update(head_table).where(head_table.c.id == 1).values(seq=seq, hash=prev)
                )
            print(f"\r  {done:>10,} / {count:,} events", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return time.perf_counter() - started


def _timed(run, repeat: int = 5) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    """Median wall time in ms over `repeat` runs (each on a fresh read session)."""
    times, result = [], None
    for _ in range(repeat):
        read_session().rollback()
        started = time.perf_counter()
        result = run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def main() -> None:
    """Long because: one benchmark script read top to bottom (build, time, print); not
    application code."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    url = args.database_url or f"sqlite:///{folder / 'bench.sqlite'}"
    app, key, subject = _setup(url, folder)
    from iwrs.services import audit_views
    from iwrs.services.audit_views import Filters

    with app.app_context():
        filled = _fill(args.events, key, subject.id, args.batch)
        head = read_session().get(AuditChainHead, 1)
        total = head.seq if head else 0
        print(
            f"backend {url.split(':')[0]}: filled {args.events:,} events in {filled:.1f} s "
            f"({args.events / filled:,.0f}/s); the trail holds {total:,}"
        )
        middle = START + SPAN / 2
        number = subject.screening_number
        cases = [
            ("first page, no filter", Filters(), None),
            ("page at depth 50%", Filters(), total // 2),
            ("page at depth 99.99%", Filters(), 100),
            ("username=user07", Filters(username="user07"), None),
            ("username=user07, deep", Filters(username="user07"), total // 100),
            ("role=auditor", Filters(role="auditor"), None),
            ("action prefix 'kit.'", Filters(action="kit."), None),
            ("action prefix 'kit.', deep", Filters(action="kit."), total // 100),
            ("action=subject.randomized", Filters(action="subject.randomized"), None),
            ("site=CN02", Filters(site="CN02"), None),
            ("site=CN02, deep", Filters(site="CN02"), total // 100),
            (
                f"subject={subject.screening_number}",
                Filters(subject=subject.screening_number),
                None,
            ),
            (
                f"subject={number}, deep",
                Filters(subject=number),
                total // 10,
            ),
            (
                "date range (one week)",
                Filters(date_from=middle.date(), date_to=middle.date() + timedelta(days=6)),
                None,
            ),
            (
                "date range (one day, early)",
                Filters(date_from=date(2024, 1, 15), date_to=date(2024, 1, 15)),
                None,
            ),
            (
                "user07 + site CN02 + 'kit.'",
                Filters(username="user07", site="CN02", action="kit."),
                None,
            ),
            ("no match (site XX99)", Filters(site="XX99"), None),
        ]
        auditor = Actor(None, "bench.auditor", "auditor")
        print(f"{'query':<40} {'ms (median of 5)':>17} {'rows':>6}")
        for label, filters, before in cases:
            ms, result = _timed(
                lambda f=filters, b=before: audit_views.page(f, before=b, actor=auditor)
            )
            rows = len(result[0])  # type: ignore[index]
            print(f"{label:<40} {ms:>17.2f} {rows:>6}")

        started = time.perf_counter()
        content, _ = audit_views.export(
            Filters(subject=subject.screening_number), kind="jsonl", actor=auditor
        )
        exported = time.perf_counter() - started
        lines = content.count("\n") - 1
        print(f"export (JSON Lines) of one subject's {lines:,} events: {exported * 1000:.0f} ms")
        started = time.perf_counter()
        checkpoint = audit_views.verify_now(actor=auditor)
        verified = time.perf_counter() - started
        print(
            f"verify now (first, whole trail): {verified:.1f} s, ok={checkpoint.ok}, "
            f"up to event {checkpoint.seq:,}"
        )
        started = time.perf_counter()
        checkpoint = audit_views.verify_now(actor=auditor)
        print(
            f"verify now (again, from the checkpoint): {(time.perf_counter() - started) * 1000:.0f}"
            f" ms, ok={checkpoint.ok}, up to event {checkpoint.seq:,}"
        )
    print("command: " + " ".join(["bench/bench_audit_trail.py", *sys.argv[1:]]))
    print(json.dumps({"events": args.events, "database": url.split(":")[0]}))


if __name__ == "__main__":
    main()
