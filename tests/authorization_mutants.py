"""Delete one permission check at a time, run the matrix test for the use cases it guards
(SQLite), restore the file: every mutant must make tests/integration/test_authorization_matrix.py
fail (issue 14: "removing any one permission check makes it fail").

    PYTHONPATH=$PWD .venv/bin/python tests/authorization_mutants.py [index ...]

Not collected by pytest (a maintainer's proof, ~10 s a mutant). A mutant names the function
and a piece of one line of it; the line is neutralised by its kind: a check called for its
effect becomes `pass`, an assignment from a check (`scope = site_reader(...)`) gets None (no
wall, every site), an `if` (a refusal, or a site filter) becomes `if False:`; or the mutant
gives its own replacement text for the piece. A piece no longer found once in its function is
reported as skipped, so the list follows the code it names."""

import ast
import os
import pathlib
import re
import subprocess
import sys

S = "iwrs/services/"
# (file, function, piece of the checking line, replacement or None, use cases it guards)
MUTANTS: list[tuple[str, str, str, str | None, tuple[str, ...]]] = [
    (S + "sites.py", "change_site_status", "acting_user(session, actor,", None,
     ("sites.change_site_status",)),
    (S + "passwords.py", "reset_password", "users.require(actor,", None,
     ("passwords.reset_password",)),
    (S + "users.py", "assign_sites", "require(actor,", None, ("users.assign_sites",)),
    (S + "supply.py", "site_kit", "require_site(user, site_id)", None,
     ("accountability.report_kit",)),
    (S + "subjects.py", "_investigator", "require_site(user,", None,
     ("subjects.withdraw_subject",)),
    (S + "audit_views.py", "export", "require(actor,", None, ("audit_views.export",)),
    (S + "keys.py", "retire_blinding_key", "require_system(actor)", None,
     ("keys.retire_blinding_key",)),
    (S + "trial.py", "load_protocol", "require_system(actor)", None, ("trial.load_protocol",)),
    (S + "supply.py", "import_kits", "require(actor,", None, ("supply.import_kits",)),
    (S + "queries.py", "user_by_id", "_require(actor,", None, ("queries.user_by_id",)),
    (S + "supply_views.py", "quarantined", "_manager(actor)", None,
     ("supply_views.quarantined",)),
    (S + "audit_views.py", "integrity", "_auditor(actor)", None, ("audit_views.integrity",)),
    (S + "keys.py", "remaining", "require_system(actor)", None, ("keys.remaining",)),
    # the read models (issue 14 follow-up: each checks its caller itself)
    (S + "users.py", "site_reader", "require(actor, permission)", None,
     ("queries.visible_subjects", "supply_views.site_page", "unblinding.report")),
    (S + "accountability.py", "reconciliation", "_require(actor,", None,
     ("accountability.reconciliation",)),
    (S + "accountability.py", "reconciliation_summary", "_require(actor,", None,
     ("accountability.reconciliation_summary",)),
    (S + "accountability.py", "ledger_problems", "_require_system(actor)", None,
     ("accountability.ledger_problems",)),
    (S + "kit_counts.py", "mismatches", "require_system(actor)", None,
     ("kit_counts.mismatches",)),
    (S + "reconcile.py", "reconcile", "require_system(actor)", None, ("reconcile.reconcile",)),
    (S + "unblinded_access.py", "active_unblinded_users", "require_system(actor)", None,
     ("unblinded_access.active_unblinded_users",)),
    (S + "queries.py", "all_site_codes", "_require(actor,", None, ("queries.all_site_codes",)),
    (S + "queries.py", "notices_of", "require_person(actor)", "actor.user_id",
     ("queries.notices_of",)),
    (S + "unblinding.py", "report", "site_ids = site_reader(", None, ("unblinding.report",)),
    (S + "unblinding.py", "report", "if site_ids is not None:", None, ("unblinding.report",)),
    (S + "queries.py", "visible_sites", "scope = _reader(", None,
     ("queries.visible_sites", "queries.visible_site_by_code")),
    (S + "queries.py", "visible_sites", "if scope is not None:", None,
     ("queries.visible_sites", "queries.visible_site_by_code")),
    (S + "queries.py", "visible_site", "scope = _reader(", None, ("queries.visible_site",)),
    (S + "queries.py", "visible_site", "require_in_scope(", None, ("queries.visible_site",)),
    (S + "queries.py", "visible_subjects", "scope = _reader(", None,
     ("queries.visible_subjects",)),
    (S + "queries.py", "visible_subjects", "if scope is not None:", None,
     ("queries.visible_subjects",)),
    (S + "queries.py", "visible_subject", "scope = _reader(", None,
     ("queries.visible_subject", "randomization_views.result_of",
      "randomization_views.visible_randomized_subject")),
    (S + "queries.py", "visible_subject", "require_in_scope(", None,
     ("queries.visible_subject", "randomization_views.dispensations_of")),
    (S + "queries.py", "assessments_of", "visible_subject(", None, ("queries.assessments_of",)),
    (S + "queries.py", "rescreen_of", "visible_subject(", None, ("queries.rescreen_of",)),
    (S + "randomization_views.py", "result_of", "visible_subject(", None,
     ("randomization_views.result_of",)),
    (S + "randomization_views.py", "dispensations_of", "visible_subject(", None,
     ("randomization_views.dispensations_of",)),
    (S + "randomization_views.py", "visible_randomized_subject", "Permission.DISPENSE",
     "Permission.VIEW_SITES", ("randomization_views.visible_randomized_subject",)),
    (S + "randomization_views.py", "visits_board", "scope = site_reader(", None,
     ("randomization_views.visits_board",)),
    (S + "randomization_views.py", "visits_board", "if scope is not None:", None,
     ("randomization_views.visits_board",)),
    (S + "supply_views.py", "_reader", "Permission.VIEW_SUPPLY", "Permission.VIEW_SITES",
     ("supply_views.site_page",)),
    (S + "supply_views.py", "site_inventory", "require_in_scope(", None,
     ("supply_views.site_inventory",)),
    (S + "supply_views.py", "visible_shipments", "scope = _reader(", None,
     ("supply_views.visible_shipments",)),
    (S + "supply_views.py", "visible_shipments", "if scope is not None:", None,
     ("supply_views.visible_shipments",)),
    (S + "supply_views.py", "visible_shipment", "scope = _reader(", None,
     ("supply_views.visible_shipment",)),
    (S + "supply_views.py", "visible_shipment", "require_in_scope(", None,
     ("supply_views.visible_shipment",)),
    (S + "supply_views.py", "shipment_kits", "visible_shipment(", None,
     ("supply_views.shipment_kits",)),
    (S + "supply_views.py", "site_page", "scope = _reader(", None, ("supply_views.site_page",)),
    (S + "supply_views.py", "site_page", "if scope is not None:", None,
     ("supply_views.site_page",)),
    (S + "supply_views.py", "site_codes", "scope = _reader(", None, ("supply_views.site_codes",)),
    (S + "supply_views.py", "site_codes", "if scope is not None:", None,
     ("supply_views.site_codes",)),
]  # fmt: skip


def mutate(source: str, function: str, piece: str, replacement: str | None) -> str | None:
    """The source with the one line of `function` holding `piece` neutralised, or None."""
    lines = source.splitlines(keepends=True)
    node = next(
        (
            n
            for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.FunctionDef) and n.name == function
        ),
        None,
    )
    if node is None:
        return None
    body = range(node.lineno - 1, node.end_lineno or node.lineno)
    found = [i for i in body if piece in lines[i]]
    if len(found) != 1:
        return None
    (i,) = found
    line = lines[i]
    indent = line[: len(line) - len(line.lstrip())]
    if replacement is not None:
        lines[i] = line.replace(piece, replacement)
    elif line.lstrip().startswith("if "):
        lines[i] = f"{indent}if False:\n"
    elif re.match(r"\s*\w+ = ", line):
        lines[i] = re.sub(r"=.*", "= None", line.rstrip("\n")) + "\n"
    else:
        lines[i] = f"{indent}pass\n"
    if not lines[i].rstrip().endswith(":") and line.count("(") != line.count(")"):
        return None  # a statement over several lines: name a piece of a one-line check
    return "".join(lines)


def _selection(guarded: tuple[str, ...]) -> str:
    names = " or ".join(f"({name.replace('.', ' and ')})" for name in guarded)
    return f"test_each_use_case and sqlite and ({names})"


def main(selected: list[str]) -> int:
    survivors = 0
    for i, (path, function, piece, replacement, guarded) in enumerate(MUTANTS):
        if selected and str(i) not in selected:
            continue
        file = pathlib.Path(path)
        original = file.read_text()
        mutant = mutate(original, function, piece, replacement)
        if mutant is None:
            print(f"[{i}] {path} {function}: {piece!r} not found once; skipped")
            continue
        file.write_text(mutant)
        try:
            run = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                 "tests/integration/test_authorization_matrix.py", "-k", _selection(guarded)],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": os.getcwd()},
            )  # fmt: skip
        finally:
            file.write_text(original)
        killed = run.returncode == 1
        survivors += not killed
        print(f"[{i}] {'killed' if killed else 'SURVIVED'}: {path} {function} {piece!r}")
        for line in run.stdout.splitlines():
            if line.startswith("E   AssertionError") or " passed" in line or " failed" in line:
                print("     ", line[:220])
    return survivors


if __name__ == "__main__":
    sys.exit(1 if main(sys.argv[1:]) else 0)
