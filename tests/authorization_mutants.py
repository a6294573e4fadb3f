"""Delete one permission check at a time, run the matrix test for that use case (SQLite),
restore the file: every mutant must make tests/integration/test_authorization_matrix.py fail.

    PYTHONPATH=$PWD .venv/bin/python tests/authorization_mutants.py [index ...]

Not collected by pytest (a maintainer's proof, ~5 s a mutant); a pattern no longer found is
reported as skipped, so the list follows the code it names."""
# ruff: noqa: E501 - each mutant is the exact source text it deletes

import os
import pathlib
import subprocess
import sys

MUTANTS = [
    (
        "iwrs/services/sites.py",
        '        acting_user(session, actor, Permission.MANAGE_SITES)\n        site = session.scalars(select(Site).where(Site.id == site_id).with_for_update()).first()\n        if site is None:\n            raise NotFound(f"site {site_id} does not exist", field="site_id", rule="exists")\n        if _NEXT',
        "sites.change_site_status",
    ),
    (
        "iwrs/services/passwords.py",
        '    users.require(actor, Permission.MANAGE_USERS)\n    if actor.user_id is None:\n        raise Forbidden("a password reset',
        "passwords.reset_password",
    ),
    (
        "iwrs/services/users.py",
        "    require(actor, Permission.MANAGE_USERS)\n    with transaction() as session:\n        user = _get_user(session, user_id, lock=True)",
        "users.assign_sites",
    ),
    (
        "iwrs/services/supply.py",
        "    try:\n        require_site(user, site_id)\n    except NotFound:\n        raise refused from None\n",
        "accountability.report_kit",
    ),
    (
        "iwrs/services/subjects.py",
        "    require_site(user, site_id, missing)\n",
        "subjects.withdraw_subject",
    ),
    (
        "iwrs/services/audit_views.py",
        "    require(actor, Permission.VIEW_AUDIT)\n    anchor = audit_anchor",
        "audit_views.export",
    ),
    (
        "iwrs/services/keys.py",
        "    require_system(actor)\n    ring = sealer()\n    ring.refresh(force=True)",
        "keys.retire_blinding_key",
    ),
    ("iwrs/services/trial.py", "    require_system(actor)\n", "trial.load_protocol"),
    (
        "iwrs/services/supply.py",
        "    require(actor, Permission.MANAGE_SUPPLY)\n    with transaction() as session:\n        specs",
        "supply.import_kits",
    ),
    (
        "iwrs/services/queries.py",
        "    _require(actor, Permission.MANAGE_USERS)\n    user = read_session()",
        "queries.user_by_id",
    ),
    (
        "iwrs/services/supply_views.py",
        "    _manager(actor)\n    return _lines",
        "supply_views.quarantined",
    ),
]
sel = sys.argv[1:]
for i, (path, old, k) in enumerate(MUTANTS):
    if sel and str(i) not in sel:
        continue
    p = pathlib.Path(path)
    original = p.read_text()
    if original.count(old) != 1:
        print(f"[{i}] {k}: pattern found {original.count(old)} times; skipped")
        continue
    # delete the check (the pattern's first line; the whole site-scope block for report_kit)
    first_line_end = old.index("\n") + 1
    new = "" if k == "accountability.report_kit" else old[first_line_end:]
    p.write_text(original.replace(old, new))
    try:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-n",
                "0",
                "-p",
                "no:cacheprovider",
                "tests/integration/test_authorization_matrix.py",
                "-k",
                f"sqlite and ({k.replace('.', ' and ')})",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        lines = [
            line
            for line in r.stdout.splitlines()
            if line.startswith(("FAILED", "E   ")) or " passed" in line or " failed" in line
        ]
        print(f"[{i}] removed check in {path} for {k}: exit {r.returncode}")
        for line in lines[:4]:
            print("    ", line[:260])
    finally:
        p.write_text(original)
