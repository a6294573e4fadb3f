"""Role × use case and role × route: every entry of tests/authorization_table.py, called as
every role, as the system (CLI) actor and as a user of another site (issue 14).

The service pass calls each use case directly (no route in between), so a use case whose own
check is missing fails here whatever its route's decorator says. "Refused" is an authorization
rule (`AUTH_RULES`: permission, system_only, ...; or not-found `exists` for another site's
record and another person's own record); "allowed" is any other outcome — a conflict or a
validation refusal proves the caller got past the wall. Refused callers go first, so a check
that comes after a state change the allowed caller made cannot hide.

The route pass requests every route of app.url_map (pages by a signed-in session with its CSRF
token, /api/v1 by bearer token) with a minimal body: a refused role gets 403 (the decorator)
or 404 (site scope, another's record), an allowed one anything else but a 5xx.

Speed (decision): one world per module and backend (tests/web/blind_world.build_world, ~5 s
on SQLite), shared by both passes; the service pass runs on SQLite and PostgreSQL (checks run
inside the services' transactions), the route pass on SQLite only (the HTTP layer and the
decorators do not depend on the backend, and the services beneath are the ones already
checked on both).
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from iwrs.audit import Actor
from iwrs.errors import IWRSError, NotFound
from tests.authorization_table import (
    ADM,
    AUD,
    INV,
    NOT_USE_CASES,
    PHA,
    PUBLIC,
    ROLES,
    ROUTES,
    SERVICES,
    STAT,
    SUP,
    SYS,
    Access,
)
from tests.conftest import PASSWORD, csrf_from
from tests.web.blind_world import World, _site_kits, build_world, fresh_databases

AUTH_RULES = frozenset(
    {
        "permission",
        "system_only",
        "unblinded_approver",
        "own_tokens_only",
        "signer",
        "session_required",
    }
)
AS = {INV: "dr.li", PHA: "ph.wang", SUP: "supply.chen", STAT: "stat.liu", AUD: "audit.zhao"}
AS[ADM] = "admin"
OTHER_SITE = {INV: "dr.zhang", PHA: "ph.zhou"}  # CN02's; every record used is CN01's
SERVICES_DIR = Path(__file__).resolve().parents[2] / "iwrs" / "services"
_n = itertools.count()


@dataclass
class Matrix:
    world: World
    users: dict[str, Any]  # username -> User
    ids: dict[str, Any]
    backend: str

    def actor(self, username: str | None) -> Actor:
        if username is None:
            return Actor.system("test")
        user = self.users[username]
        return Actor(user.id, user.username, user.role, "session")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def matrix(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Matrix]:
    directory = tmp_path_factory.mktemp("authz-world")
    with fresh_databases(request, request.param, directory, 1) as (url,):
        world = build_world(directory / "w", url, mirror=False)
        with world.app.app_context():
            built = Matrix(world, *_extras(world), backend=request.param)
        yield built
        world.dispose()


def _extras(world: World) -> tuple[dict[str, Any], dict[str, Any]]:
    """Users, notices, tokens and an access request the factories name (CN01's records)."""
    from iwrs.db import read_session
    from iwrs.models.randomization import Dispensation
    from iwrs.models.subjects import Subject
    from iwrs.models.supply import Kit, Shipment, SupplyAlert
    from iwrs.models.unblinding import Notification
    from iwrs.models.users import User, UserNotice
    from iwrs.services import unblinded_access, users

    system = Actor.system("test")
    for username in ("target.a", "target.b"):
        users.create_user(
            actor=system,
            username=username,
            full_name=f"Target {username}",
            role="pharmacist",
            password=PASSWORD,
            email=f"{username}@example.org",
            site_codes=["CN01"],
        )
    session = read_session()
    people = {u.username: u for u in session.scalars(select(User))}
    engine = world.app.extensions["iwrs.engine"]
    notices: dict[str, int] = {}
    messages: dict[str, int] = {}
    tokens: dict[str, int] = {}
    with engine.begin() as connection:  # set-up rows only; the services write none of these
        for username, user in people.items():
            notices[username] = connection.execute(
                insert(UserNotice)
                .values(user_id=user.id, text="hello", created_at=world.clock())
                .returning(UserNotice.id)
            ).scalar_one()
            email = user.email or f"{username}@matrix.example.org"
            if user.email is None:
                connection.execute(update(User).where(User.id == user.id).values(email=email))
            messages[username] = connection.execute(
                insert(Notification)
                .values(
                    recipient=email, subject_line="hello", body="hello", created_at=world.clock()
                )
                .returning(Notification.id)
            ).scalar_one()
        alert = connection.execute(
            insert(SupplyAlert)
            .values(kind="depot_shortfall", site_id=None, message="m", created_at=world.clock())
            .returning(SupplyAlert.id)
        ).scalar_one()
    session.expire_all()
    for username, user in people.items():
        if username.startswith("target") or not user.active:
            continue
        _, row = users.create_api_token(
            actor=Actor.of(user), user_id=user.id, name="revocable", password=PASSWORD
        )
        tokens[username] = row.id
        bearer, _ = users.create_api_token(
            actor=Actor.of(user), user_id=user.id, name="matrix", password=PASSWORD
        )
        world.tokens[username] = bearer
    access_request = unblinded_access.request_unblinded_account(
        actor=Actor.of(people["admin"]),
        username="stat.new",
        full_name="New Statistician",
        email="stat.new@example.org",
    )
    cn01 = world.site_ids["CN01"]
    session.rollback()
    subjects = {s.id: s for s in session.scalars(select(Subject))}
    dispensation = session.scalars(
        select(Dispensation)
        .where(Dispensation.subject_id == world.subject_ids["S1"])
        .order_by(Dispensation.id.desc())
    ).first()
    shipment = session.scalars(
        select(Shipment).where(Shipment.site_id == cn01).order_by(Shipment.id)
    ).first()
    assert dispensation is not None and shipment is not None
    seen = {
        name: SimpleNamespace(id=u.id, username=u.username, role=str(u.role))
        for name, u in people.items()
    }
    ids = {
        "cn01": cn01,
        "subject": world.subject_ids,
        "screening": subjects[world.subject_ids["S5"]],
        "dispensation": dispensation.id,
        "dispensed_kit": session.get(Kit, dispensation.kit_id).number,
        "shipment": shipment.id,
        "available_kits": _site_kits(cn01, "available"),
        "kits": [
            *_site_kits(cn01, "available"),
            *_site_kits(cn01, "damaged"),
            *_site_kits(cn01, "dispensed"),
            *_site_kits(cn01, "returned"),
        ],
        "notices": notices,
        "messages": messages,
        "alert": alert,
        "tokens": tokens,
        "access_request": access_request.id,
        "target": people["target.a"].id,
        "target.b": people["target.b"].id,
    }
    return seen, ids


# --- the service pass ----------------------------------------------------------------------------


def _outcome(call: Callable[[], Any]) -> str:
    try:
        call()
    except IWRSError as refusal:
        if refusal.rule in AUTH_RULES:
            return "refused"
        if isinstance(refusal, NotFound) and refusal.rule == "exists":
            return "not_found"
        return f"allowed ({type(refusal).__name__} {refusal.rule})"
    except (ValueError, LookupError) as other:  # past the wall, refused on something else
        return f"allowed ({type(other).__name__})"
    return "allowed"


def _service(name: str) -> Callable[..., Any]:
    import importlib

    module, function = name.split(".")
    return getattr(importlib.import_module(f"iwrs.services.{module}"), function)


def _subject(m: Matrix, key: str) -> int:
    return m.world.subject_ids[key]


def _latest_assessment(m: Matrix, key: str) -> int:
    from iwrs.db import read_session
    from iwrs.models.subjects import EligibilityAssessment

    session = read_session()
    session.rollback()
    return session.scalars(
        select(EligibilityAssessment.id)
        .where(EligibilityAssessment.subject_id == _subject(m, key))
        .order_by(EligibilityAssessment.id.desc())
    ).first()


def _classifiable() -> str:
    from iwrs.services.subjects import engine

    dictionary = engine().dictionary
    assert dictionary is not None
    return dictionary.classifiable()[0].code


def _kit_csv() -> str:
    return "kit_number,kit_type,lot,expiry,treatment\n"


Kwargs = Callable[[Matrix, str | None], dict[str, Any]]

# One factory per use case: valid arguments naming CN01's records (the caller is `who`).
FACTORIES: dict[str, Kwargs] = {
    "accountability.report_kit": lambda m, who: {
        "kit_number": m.ids["available_kits"][0],
        "lost": False,
        "reason": "Cracked",
    },
    "accountability.record_return": lambda m, who: {
        "kit_number": m.ids["dispensed_kit"],
        "condition": "unused",
    },
    "accountability.destroy_kits": lambda m, who: {
        "kit_numbers": [m.ids["kits"][1]],
        "reference": "CERT-1",
        "signer_password": PASSWORD,
    },
    "accountability.verify_return": lambda m, who: {"kit_number": m.ids["dispensed_kit"]},
    "randomization_views.visit_row": lambda m, who: {"subject_id": _subject(m, "S1")},
    "randomization_views.returns_of": lambda m, who: {"subject_id": _subject(m, "S1")},
    "supply_views.site_kit_line": lambda m, who: {"kit_number": m.ids["available_kits"][0]},
    "supply_views.destroyable_kits": lambda m, who: {},
    "audit_views.verify_now": lambda m, who: {},
    "audit_views.export": lambda m, who: {"filters": _filters(), "kind": "jsonl"},
    "dispensing.dispense": lambda m, who: {"subject_id": _subject(m, "S2"), "visit_code": "V3"},
    "dispensing.request_extra_kit": lambda m, who: {
        "subject_id": _subject(m, "S2"),
        "visit_code": "V2",
        "kind": "replacement",
        "reason": "Dropped",
        "signer_password": PASSWORD,
    },
    "dispensing.confirm_kit": lambda m, who: {
        "dispensation_id": m.ids["dispensation"],
        "kit_number": m.ids["dispensed_kit"],
    },
    "dispensing.discontinue_treatment": lambda m, who: {
        "subject_id": _subject(m, "S2"),
        "reason": "Adverse event",
    },
    "drug_classes.classify_drug": lambda m, who: {
        "subject_id": _subject(m, "S5"),
        "drug": f"zorbanil{next(_n)}",
        "drug_class": _classifiable(),
        "signer_password": PASSWORD,
    },
    "keyed_dispensing.dispense_answer": lambda m, who: {
        "subject_id": _subject(m, "S2"),
        "idempotency_key": f"k{next(_n)}",
        "visit_code": "V3",
    },
    "keyed_randomization.randomize_answer": lambda m, who: {
        "subject_id": _subject(m, "S1"),
        "signer_password": PASSWORD,
        "understood": True,
        "idempotency_key": f"k{next(_n)}",
    },
    "keys.activate_blinding_key": lambda m, who: {"key_id": "no-such-key"},
    "keys.reseal_all": lambda m, who: {"batch_size": 0},
    "keys.rotate_blinding_key": lambda m, who: {"new_key": b"R" * 32, "batch_size": 0},
    "keys.retire_blinding_key": lambda m, who: {"key_id": "no-such-key"},
    "keys.remaining": lambda m, who: {},
    "passwords.reset_password": lambda m, who: {
        "user_id": m.ids["target"],
        "signer_password": PASSWORD,
    },
    "passwords.change_own_password": lambda m, who: {
        "current_password": PASSWORD,
        "new_password": PASSWORD,  # refused as unchanged, after the wall
    },
    "passwords.set_password": lambda m, who: {
        "user_id": m.ids["target"],
        "new_password": "another horse battery staple",
    },
    "passwords.mark_notice_read": lambda m, who: {"notice_id": m.ids["notices"][who or "admin"]},
    "inbox.mark_message_read": lambda m, who: {
        "notification_id": m.ids["messages"][who or "admin"]
    },
    "alerts.acknowledge_alert": lambda m, who: {"alert_id": m.ids["alert"]},
    "alerts.resolve_alert": lambda m, who: {"alert_id": m.ids["alert"], "reason": "Dealt with"},
    "inbox.inbox_of": lambda m, who: {},
    "inbox.unread_count": lambda m, who: {},
    "homes.investigator_home": lambda m, who: {},
    "homes.pharmacist_home": lambda m, who: {},
    "homes.supply_home": lambda m, who: {},
    "homes.statistician_home": lambda m, who: {},
    "homes.auditor_home": lambda m, who: {},
    "homes.admin_home": lambda m, who: {},
    "randomization.generate_list": lambda m, who: {"name": "Another list", "seed": b"s" * 32},
    "randomization.import_list": lambda m, who: {"name": "Imported", "csv_text": ""},
    "randomization.extend_list": lambda m, who: {
        "stratum": _stratum(),
        "blocks": 1,
        "reason": "More subjects",
    },
    "randomization.randomize": lambda m, who: {
        "subject_id": _subject(m, "S1"),
        "signer_password": PASSWORD,
        "understood": True,
    },
    "randomization_views.list_status": lambda m, who: {},
    "shipments.request_manual_shipment": lambda m, who: {"site_id": m.ids["cn01"], "quantity": 1},
    "shipments.ship_shipment": lambda m, who: {
        "shipment_id": m.ids["shipment"],
        "courier": "Cold Chain Co",
        "tracking_number": "CC1",
    },
    "shipments.cancel_shipment": lambda m, who: {
        "shipment_id": m.ids["shipment"],
        "reason": "Not needed",
    },
    "shipments.receive_shipment": lambda m, who: {
        "shipment_id": m.ids["shipment"],
        "lines": [],
        "excursion": False,
    },
    "shipments.decide_quarantine": lambda m, who: {
        "kit_numbers": [m.ids["kits"][2]],
        "release": True,
        "reason": "Checked",
    },
    "sites.change_site_status": lambda m, who: {
        "site_id": m.ids["cn01"],
        "status": _active(),
        "signer_password": PASSWORD,
        "understood": True,
    },
    "sites.change_site_time_zone": lambda m, who: {
        "site_id": m.ids["cn01"],
        "time_zone": "Asia/Shanghai",
        "reason": "Correction",
    },
    "statistics.allocations": lambda m, who: {},
    "statistics.allocations_csv": lambda m, who: {},
    "statistics.list_status_csv": lambda m, who: {},
    "subjects.screen_subject": lambda m, who: {
        "site_id": m.ids["cn01"],
        "date_of_birth": "1970-01-01",
        "sex": "female",
        "initials": f"A{chr(65 + next(_n) % 26)}",
    },
    "subjects.record_assessment": lambda m, who: {"subject_id": _subject(m, "S5"), "answers": {}},
    "subjects.decide_eligibility": lambda m, who: {
        "subject_id": _subject(m, "S5"),
        "assessment_id": _latest_assessment(m, "S5"),
        "decision": "eligible",
        "signer_password": PASSWORD,
        "understood": True,
    },
    "subjects.withdraw_subject": lambda m, who: {
        "subject_id": _subject(m, "S4"),
        "reason": "Consent withdrawn",
    },
    "subjects.rescreen_subject": lambda m, who: {
        "subject_id": _subject(m, "S4"),
        "reason": "FVC repeated after the infection",
    },
    "supply.generate_kits": lambda m, who: {
        "kit_type": _kit_type(),
        "lot": f"AUTHZ-{next(_n):03d}",
        "expiry_date": _far_future(m),
        "count": 2,
        "seed": bytes(32),
    },
    "supply.import_kits": lambda m, who: {"csv_text": _kit_csv()},
    "supply.change_lot_expiry": lambda m, who: {
        "lot_code": "PKG-0001",
        "new_expiry": _far_future(m),
        "reason": "Stability data",
    },
    "trial.load_protocol": lambda m, who: {"protocol": m.world.app.extensions["iwrs.protocol"]},
    "unblinded_access.request_unblinded_account": lambda m, who: {
        "username": f"stat.x{next(_n)}",
        "full_name": "Another Statistician",
        "email": f"stat.x{next(_n)}@example.org",
    },
    "unblinded_access.decide_unblinded_request": lambda m, who: {
        "request_id": m.ids["access_request"],
        "approve": False,
        "signer_password": PASSWORD,
        "reason": "Not needed",
    },
    "unblinding.unblind": lambda m, who: {
        "subject_id": _subject(m, "S1"),
        "category": "sae",
        "reason": "Anaphylaxis; the physician must know",
        "understood": True,
        "signer_password": PASSWORD,
        "sae_led_to_unblinding": True,
    },
    "unblinding.view_arm": lambda m, who: {"subject_id": _subject(m, "S3")},
    "users.create_user": lambda m, who: {
        "username": f"new.user{next(_n)}",
        "full_name": "New User",
        "role": "auditor",
        "email": f"new{next(_n)}@example.org",
    },
    "users.assign_sites": lambda m, who: {"user_id": m.ids["target.b"], "site_codes": ["CN02"]},
    "users.deactivate_user": lambda m, who: {
        "user_id": m.ids["target.b"],
        "reason": "Left the study",
        "signer_password": PASSWORD,
        "understood": True,
    },
    "users.create_api_token": lambda m, who: {
        "user_id": m.users[who or "admin"].id if who else None,
        "name": "",  # refused as empty, after the wall
        "password": PASSWORD,
    },
    "users.revoke_api_token": lambda m, who: {"token_id": m.ids["tokens"][who or "admin"]},
    "audit_views.page": lambda m, who: {"filters": _filters()},
    "audit_views.event": lambda m, who: {"seq": 1},
    "audit_views.integrity": lambda m, who: {},
    "queries.all_users": lambda m, who: {},
    "queries.user_by_id": lambda m, who: {"user_id": m.ids["target"]},
    "queries.tokens_of": lambda m, who: {"user_id": m.users[who or "admin"].id},
    "unblinded_access.access_requests": lambda m, who: {},
    "supply_views.depot_stock": lambda m, who: {},
    "supply_views.stock_by_site": lambda m, who: {},
    "supply_views.open_alerts": lambda m, who: {},
    "supply_views.quarantined": lambda m, who: {},
    "supply_views.available_history": lambda m, who: {},
    "accountability.reconciliation": lambda m, who: {},
    "accountability.reconciliation_summary": lambda m, who: {},
    "accountability.ledger_problems": lambda m, who: {},
    "kit_counts.mismatches": lambda m, who: {},
    "reconcile.reconcile": lambda m, who: {},
    "unblinded_access.active_unblinded_users": lambda m, who: {},
    "queries.all_site_codes": lambda m, who: {},
    "queries.notices_of": lambda m, who: {},
    "unblinding.report": lambda m, who: {},
    "queries.visible_sites": lambda m, who: {},
    "queries.visible_site": lambda m, who: {"site_id": m.ids["cn01"]},
    "queries.visible_site_by_code": lambda m, who: {"code": "CN01"},
    "queries.visible_subjects": lambda m, who: {},
    "subject_views.subject_list": lambda m, who: {},
    "eligibility_drafts.save_draft": lambda m, who: {
        "subject_id": _subject(m, "S5"),
        "answers": {"fvc_pct": "55"},
    },
    "eligibility_drafts.draft_of": lambda m, who: {"subject_id": _subject(m, "S5")},
    "queries.visible_subject": lambda m, who: {"subject_id": _subject(m, "S1")},
    "queries.assessments_of": lambda m, who: {"subject_id": _subject(m, "S5")},
    "queries.rescreen_of": lambda m, who: {"subject_id": _subject(m, "S4")},
    "audit_views.names_of": lambda m, who: {"events": []},
    "randomization_views.result_of": lambda m, who: {"subject_id": _subject(m, "S1")},
    "receipts.randomization_receipt": lambda m, who: {"subject_id": _subject(m, "S1")},
    "receipts.dispensation_receipt": lambda m, who: {"dispensation_id": m.ids["dispensation"]},
    "receipts.shipment_receipt": lambda m, who: {"shipment_id": m.ids["shipment"]},
    "receipts.unblinding_receipt": lambda m, who: {"subject_id": _subject(m, "S3")},
    "randomization_views.dispensations_of": lambda m, who: {"subject_id": _subject(m, "S2")},
    "randomization_views.visits_board": lambda m, who: {},
    "randomization_views.visible_randomized_subject": lambda m, who: {
        "subject_id": _subject(m, "S1")
    },
    "supply_views.site_page": lambda m, who: {},
    "supply_views.site_codes": lambda m, who: {"site_ids": [m.ids["cn01"]]},
    "supply_views.site_inventory": lambda m, who: {"site_id": m.ids["cn01"]},
    "supply_views.visible_shipments": lambda m, who: {},
    "supply_views.visible_shipment": lambda m, who: {"shipment_id": m.ids["shipment"]},
    "supply_views.shipment_kits": lambda m, who: {"shipment_id": m.ids["shipment"]},
}


def _at_cn01(m: Matrix, site_ids: Iterable[int]) -> bool:
    return m.ids["cn01"] in set(site_ids)


# Scoped reads that list records: whether the answer holds one of CN01's. Every allowed caller
# of CN01 (and every sponsor role) must get one; a user of another site must get none.
LISTS: dict[str, Callable[[Matrix, Any], bool]] = {
    "queries.visible_sites": lambda m, found: _at_cn01(m, (s.id for s in found)),
    "queries.visible_subjects": lambda m, found: _at_cn01(m, (s.site_id for s in found)),
    "subject_views.subject_list": lambda m, found: _at_cn01(
        m, (line.subject.site_id for line in found.lines)
    ),
    "randomization_views.visits_board": lambda m, found: _at_cn01(
        m, (row.subject.site_id for row in found)
    ),
    "supply_views.site_page": lambda m, found: _at_cn01(m, (s.id for s in found)),
    "supply_views.site_codes": lambda m, found: _at_cn01(m, found),
    "supply_views.visible_shipments": lambda m, found: _at_cn01(m, (s.site_id for s in found)),
    "unblinding.report": lambda m, found: any(line.site == "CN01" for line in found),
}

# Owned records: the same use case on another person's record (that of `OTHER_OWNER`).
OTHER_OWNER = "audit.zhao"
OTHERS: dict[str, Kwargs] = {
    "passwords.mark_notice_read": lambda m, who: {"notice_id": m.ids["notices"][_other(who)]},
    "inbox.mark_message_read": lambda m, who: {"notification_id": m.ids["messages"][_other(who)]},
    "users.create_api_token": lambda m, who: {
        "user_id": m.users[_other(who)].id,
        "name": "x",
        "password": PASSWORD,
    },
    "users.revoke_api_token": lambda m, who: {"token_id": m.ids["tokens"][_other(who)]},
    "queries.tokens_of": lambda m, who: {"user_id": m.users[_other(who)].id},
}


def _other(who: str | None) -> str:
    return "stat.liu" if who == OTHER_OWNER else OTHER_OWNER


def _stratum() -> str:
    from iwrs.services.randomization import _strata

    return _strata()[0]


def _filters() -> Any:
    from iwrs.services.audit_views import Filters

    return Filters()


def _active() -> Any:
    from iwrs.models.sites import SiteStatus

    return SiteStatus.ACTIVE


def _kit_type() -> str:
    from iwrs.services.supply import protocol

    return protocol().kit_types[0].code


def _far_future(m: Matrix) -> Any:
    return m.world.clock().date() + timedelta(days=900)


def _callers(access: Access, *, listing: bool = False) -> list[tuple[str, str | None, str]]:
    """(label, username or None for the system, expected outcome), refused callers first.
    A user of another site is refused as not found, or for a `listing` read shown none of
    CN01's records ("hidden")."""
    calls = []
    for role in (*ROLES, SYS):
        username = AS.get(role)
        expected = "allowed" if role in access.roles else "refused"
        calls.append((role, username, expected))
        if access.scoped and role in OTHER_SITE and role in access.roles:
            elsewhere = "hidden" if listing else "not_found"
            calls.append((f"{role} of another site", OTHER_SITE[role], elsewhere))
    return sorted(calls, key=lambda c: c[2] == "allowed")


def _matches(expected: str, got: str) -> bool:
    if expected == "allowed":
        return got.startswith("allowed")
    if expected == "refused":
        return got in ("refused", "not_found")
    return got == expected


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_use_case_refuses_exactly_the_roles_the_table_refuses(matrix, name):
    access = SERVICES[name]
    service = _service(name)
    wrong = []
    with matrix.world.app.test_request_context():
        for label, username, expected in _callers(access, listing=name in LISTS):
            kwargs = FACTORIES[name](matrix, username)
            found: list[Any] = []
            call = lambda: found.append(service(actor=matrix.actor(username), **kwargs))  # noqa: B023, E731
            got = _outcome(call)
            if name in LISTS and got == "allowed" and not LISTS[name](matrix, found[0]):
                got = "hidden"
            if not _matches(expected, got):
                wrong.append(f"{label}: expected {expected}, got {got}")
            if access.owned and name in OTHERS and username is not None:
                theirs = OTHERS[name](matrix, username)
                got = _outcome(lambda: service(actor=matrix.actor(username), **theirs))  # noqa: B023
                want = "allowed" if label in access.others else "refused"
                if not _matches(want, got):
                    wrong.append(f"{label} on another's record: expected {want}, got {got}")
    assert not wrong, f"{name}: " + "; ".join(wrong)


# --- the route pass ------------------------------------------------------------------------------


def _url_values(m: Matrix, endpoint: str, arguments: set[str], who: str) -> dict[str, Any]:
    subject = "S3" if endpoint in ("subjects.unblinded", "receipts.unblinding") else "S1"
    values = {
        "subject_id": _subject(m, subject),
        "site_id": m.ids["cn01"],
        "shipment_id": m.ids["shipment"],
        "dispensation_id": m.ids["dispensation"],
        "user_id": m.ids["target"],
        "action": "sites",
        "token_id": m.ids["tokens"].get(who, 0),
        "notice_id": m.ids["notices"].get(who, 0),
        "notification_id": m.ids["messages"].get(who, 0),
        "alert_id": m.ids["alert"],
        "request_id": m.ids["access_request"],
        "number": m.ids["kits"][3],
        "code": "PKG-0001",
        "kind": "jsonl",
        "seq": 1,
        "filename": "app.css",
    }
    return {name: values[name] for name in arguments}


# Fields every minimal body carries: the signer's right password (a wrong or missing one would
# count towards the e-signature lock and stop the pass) and CN01 for routes scoped by the body.
def _body(m: Matrix) -> dict[str, Any]:
    return {
        "signer_password": PASSWORD,
        "signature_password": PASSWORD,
        "site_id": m.ids["cn01"],
        "site_code": "CN01",
    }


NOT_REQUESTED = {
    "auth.sign_out POST": "ends the session the pass signs in with (tests/web/test_sessions.py)",
    "auth.sign_in POST": "the sign-in itself (every client here signs in through it)",
}


def _clients(m: Matrix) -> dict[str, Any]:
    from tests.conftest import sign_in

    clients = {}
    for username in {*AS.values(), *OTHER_SITE.values()}:
        client = m.world.app.test_client()
        assert sign_in(client, username).status_code == 302
        page = client.get("/account/")
        clients[username] = (client, csrf_from(page.get_data(as_text=True)))
    return clients


def _request(m: Matrix, clients: dict[str, Any], key: str, rule: Any, who: str) -> int:
    from flask import url_for

    endpoint, method = key.rsplit(" ", 1)
    with m.world.app.test_request_context():
        url = url_for(endpoint, **_url_values(m, endpoint, set(rule.arguments), who))
    client, csrf = clients[who]
    if url.startswith("/api/"):
        headers = {"Authorization": f"Bearer {m.world.tokens[who]}"}
        if method == "GET":  # a read scoped by its query names CN01 there
            response = client.get(url, headers=headers, query_string={"site_code": "CN01"})
        else:
            response = client.open(url, method=method, headers=headers, json=_body(m))
    elif method == "GET":
        response = client.get(url)
    else:
        response = client.open(url, method=method, data={**_body(m), "csrf_token": csrf})
    return response.status_code


def test_every_route_refuses_exactly_the_roles_the_table_refuses(matrix):
    if matrix.backend != "sqlite":
        pytest.skip("the route pass runs on SQLite (see the module docstring)")
    app = matrix.world.app
    clients = _clients(matrix)
    wrong = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            key = f"{rule.endpoint} {method}"
            access = ROUTES[key]
            if key in NOT_REQUESTED or PUBLIC in access.roles:
                continue
            for role, username in AS.items():
                status = _request(matrix, clients, key, rule, username)
                refused = status in (403, 404)
                if status >= 500 or refused == (role in access.roles):
                    wrong.append(f"{key} as {role}: {status}")
                if (
                    access.scoped
                    and method == "GET"
                    and role in OTHER_SITE
                    and role in access.roles
                ):
                    status = _request(matrix, clients, key, rule, OTHER_SITE[role])
                    if status != 404:
                        wrong.append(f"{key} as {role} of another site: {status} (not 404)")
    assert not wrong, "\n".join(wrong)


# --- completeness ----------------------------------------------------------------------------


def _public_functions() -> set[str]:
    names = set()
    for path in SERVICES_DIR.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                names.add(f"{path.stem}.{node.name}")
    return names


def test_every_public_service_function_is_in_the_table():
    functions = _public_functions()
    assert not functions - set(SERVICES) - set(NOT_USE_CASES), "add these to the table"
    assert not (set(SERVICES) | set(NOT_USE_CASES)) - functions, "the table names ghosts"
    assert not set(SERVICES) & set(NOT_USE_CASES)
    assert set(FACTORIES) == set(SERVICES)


def test_every_route_is_in_the_table(app):
    routes = {
        f"{rule.endpoint} {method}"
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert not routes - set(ROUTES), "add these routes to tests/authorization_table.py"
    assert not set(ROUTES) - routes, "the table names routes that do not exist"
