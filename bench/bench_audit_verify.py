"""Benchmark: append N audit events (in transactions of 500) and verify the whole chain.

    .venv/bin/python bench/bench_audit_verify.py --events 100000 [--database-url URL]

Prints events/s for appending and for `verify_chain`; not run by the test suite.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from pathlib import Path

from iwrs import create_app
from iwrs.audit import Actor, record, verify_chain
from iwrs.config import Settings
from iwrs.db import make_engine, read_session, transaction, upgrade_schema


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    url = args.database_url or f"sqlite:///{folder / 'bench.sqlite'}"
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
    actor = Actor(None, "bench", "system")
    with app.app_context():
        start = time.perf_counter()
        for first in range(0, args.events, 500):
            with transaction() as session:
                for n in range(first, min(first + 500, args.events)):
                    record(
                        session,
                        actor=actor,
                        action="bench.event",
                        entity_type="bench",
                        entity_id=n,
                        after={"n": n},
                    )
        appended = time.perf_counter() - start
        start = time.perf_counter()
        result = verify_chain(read_session())
        verified = time.perf_counter() - start
    print(
        f"backend {url.split(':')[0]}: appended {args.events} events in {appended:.1f} s "
        f"({args.events / appended:,.0f}/s); verified in {verified:.1f} s "
        f"({args.events / verified:,.0f}/s): {result}"
    )


if __name__ == "__main__":
    main()
