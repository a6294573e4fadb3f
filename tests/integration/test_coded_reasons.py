"""Reasons about an unblinded subject are coded (README rule 2; iwrs/services/coded_reasons.py).

Table-driven over every use case that takes a reason about a randomized subject: free text about
an unblinded subject is refused (field + rule coded_reason_after_unblinding, nothing written),
whoever writes it - the investigator who unblinded, a colleague of the site who never saw the
arm, the pharmacist; a coded value is accepted and recorded; a still-blinded subject keeps free
text. On SQLite and PostgreSQL (the `world` of test_unblinding)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from iwrs.audit import Actor
from iwrs.errors import InvalidInput
from tests.conftest import PASSWORD
from tests.integration.test_unblinding import (  # noqa: F401 - built_trials is a fixture
    ARM_CODES,
    ARM_NAMES,
    Trial,
    _to_v2_window,
    built_trials,
    events_since,
    head_seq,
    open_trial,
    unblind,
)

RULE = "coded_reason_after_unblinding"
# A code with free text after it, and a code in other letters, are free text too.
FREE_TEXTS = ("adverse event: on placebo", "Adverse Event")
BLINDED_TEXT = "The subject moved to another city for work"


@pytest.fixture
def world(request, tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    request.getfixturevalue("built_trials")
    built = open_trial(tmp_path, database_url)
    with built.app.app_context():
        yield built
    built.dispose()


def _v2_target(world: Trial, key: str) -> Any:
    from iwrs.services import randomization_views

    result = randomization_views.result_of(
        actor=Actor.system("test"), subject_id=world.subjects[key]
    )
    return next(v for v in result.visits if v.code == "V2").target


def _withdraw(world: Trial, who: str, key: str, text: str) -> None:
    from iwrs.services import subjects

    subjects.withdraw_subject(actor=world.actor(who), subject_id=world.subjects[key], reason=text)


def _discontinue(world: Trial, who: str, key: str, text: str) -> None:
    from iwrs.services import dispensing

    dispensing.discontinue_treatment(
        actor=world.actor(who), subject_id=world.subjects[key], reason=text
    )


def _request_kit(world: Trial, who: str, key: str, text: str) -> None:
    from iwrs.services import dispensing

    dispensing.request_extra_kit(
        actor=world.actor(who),
        subject_id=world.subjects[key],
        visit_code="V2",
        kind="replacement",
        reason=text,
        signer_password=PASSWORD,
    )


def _dispense_reason(world: Trial, who: str, key: str, text: str) -> None:
    from iwrs.services import dispensing

    dispensing.dispense(
        actor=world.actor(who), subject_id=world.subjects[key], visit_code="V2", reason=text
    )


def _dispense_backdated(world: Trial, who: str, key: str, text: str) -> None:
    from iwrs.services import dispensing

    dispensing.dispense(
        actor=world.actor(who),
        subject_id=world.subjects[key],
        visit_code="V2",
        visit_date=(_v2_target(world, key) - timedelta(days=1)).isoformat(),
        backdate_reason=text,
    )


def _v1_kit(world: Trial, key: str) -> str:
    from sqlalchemy import select

    from iwrs.db import read_session
    from iwrs.models.randomization import Dispensation
    from iwrs.models.supply import Kit

    return read_session().scalar(
        select(Kit.number)
        .join(Dispensation, Dispensation.kit_id == Kit.id)
        .where(Dispensation.subject_id == world.subjects[key], Dispensation.visit_code == "V1")
    )


def _return_v1_kits(world: Trial) -> None:
    from iwrs.services import accountability

    for key in ("R1", "R2"):
        accountability.record_return(
            actor=world.actor("ph.wang"), kit_number=_v1_kit(world, key), condition="unused"
        )


def _report_returned_kit_lost(world: Trial, who: str, key: str, text: str) -> None:
    from iwrs.services import accountability

    accountability.report_kit(
        actor=world.actor(who), kit_number=_v1_kit(world, key), lost=True, reason=text
    )


@dataclass(frozen=True)
class Case:
    name: str
    call: Any
    field: str
    writers: tuple[str, ...]  # who may write this reason at CN01
    action: str  # the audit event that carries the reason
    recorded: Any  # where that event keeps it
    prepare: Any = None  # what must happen before (not part of the refused write)

    def __str__(self) -> str:
        return self.name


def _reason(event: Any) -> Any:
    return event.reason


def _backdate_reason(event: Any) -> Any:
    import json

    return json.loads(event.after)["backdate_reason"]


# dr.li unblinds R1; dr.lin (the same site) never saw its arm; ph.wang is the site's pharmacist.
CASES = [
    Case("withdrawal", _withdraw, "reason", ("dr.li", "dr.lin"), "subject.withdrawn", _reason),
    Case(
        "discontinuation",
        _discontinue,
        "reason",
        ("dr.li", "dr.lin"),
        "subject.treatment_discontinued",
        _reason,
    ),
    Case(
        "extra-kit request", _request_kit, "reason", ("dr.li", "dr.lin"), "kit.requested", _reason
    ),
    Case("dispensing reason", _dispense_reason, "reason", ("ph.wang",), "kit.dispensed", _reason),
    Case(
        "back-dated dispensing",
        _dispense_backdated,
        "backdate_reason",
        ("ph.wang",),
        "kit.dispensed",
        _backdate_reason,
    ),
    Case(
        "returned kit reported lost",
        _report_returned_kit_lost,
        "reason",
        ("ph.wang",),
        "kit.lost",
        _reason,
        _return_v1_kits,
    ),
]
WRITES = [(case, who) for case in CASES for who in case.writers]


def _ready(world: Trial, case: Case) -> None:
    """R1 unblinded by dr.li, the clock at V2's target day of R1 and R2, the case prepared."""
    unblind(world, "dr.li", "R1")
    _to_v2_window(world, "R1")
    if case.prepare is not None:
        case.prepare(world)


def _event(seq: int, action: str) -> Any:
    events = [e for e in events_since(seq) if e.action == action]
    assert len(events) == 1, [e.action for e in events_since(seq)]
    return events[0]


@pytest.mark.parametrize("text", FREE_TEXTS)
@pytest.mark.parametrize(("case", "who"), WRITES, ids=[f"{c}-{w}" for c, w in WRITES])
def test_free_text_about_an_unblinded_subject_is_refused_for_every_writer(world, case, who, text):
    _ready(world, case)
    seq = head_seq()
    with pytest.raises(InvalidInput) as refused:
        case.call(world, who, "R1", text)
    assert (refused.value.field, refused.value.rule) == (case.field, RULE)
    assert events_since(seq) == []
    for arm in (*ARM_CODES, *ARM_NAMES.values()):
        assert arm.lower() not in refused.value.message.lower()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_coded_reason_about_an_unblinded_subject_is_accepted_and_recorded(world, case):
    codes = world.app.extensions["iwrs.protocol"].unblinding_coded_reasons
    _ready(world, case)
    seq = head_seq()
    case.call(world, case.writers[-1], "R1", f"  {codes[-1]} ")
    assert case.recorded(_event(seq, case.action)) == codes[-1]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_still_blinded_subject_keeps_free_text(world, case):
    _ready(world, case)  # R1 unblinded: R2, at the same site, is not affected
    seq = head_seq()
    case.call(world, case.writers[0], "R2", BLINDED_TEXT)
    assert case.recorded(_event(seq, case.action)) == BLINDED_TEXT


def test_the_shipped_codes_are_the_issue_list_and_name_no_arm(world):
    codes = world.app.extensions["iwrs.protocol"].unblinding_coded_reasons
    assert codes[:5] == (
        "adverse event",
        "subject decision",
        "investigator decision",
        "kit lost or damaged",
        "visit logistics",
    )
    assert codes[5].startswith("other")
    for code in codes:
        assert not any(arm.lower() in code for arm in ARM_NAMES.values())
