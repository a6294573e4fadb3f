"""Demo data: answers that make a subject eligible (or not), relative to a screening date.

Used by `iwrs demo` to give every role real data from the first sign-in, and by the tests.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from iwrs.eligibility import Engine

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from iwrs.models.users import User


def eligible_answers(
    engine: Engine, screening: date, *, disease: str = "RA", childbearing_potential: bool = False
) -> dict[str, Any]:
    """A complete, eligible answer set for a subject screened on `screening`."""
    answers: dict[str, Any] = {
        "planned_day1": (screening + timedelta(days=7)).isoformat(),
        "childbearing_potential": "yes" if childbearing_potential else "no",
        "diagnosis_ra": "yes" if disease == "RA" else "no",
        "diagnosis_ssc": "yes" if disease == "SSc" else "no",
        "hrct_date": (screening - timedelta(days=60)).isoformat(),
        "fvc_pct": "68",
        "dlco_pct": "52",
        "fev1_fvc": "0.81",
        "medications": [
            {
                "drug": "methotrexate",
                "ongoing": True,
                "dose_stable_since": (screening - timedelta(days=200)).isoformat(),
            },
            {"drug": "prednisone", "ongoing": True, "max_daily_dose_mg": "7.5"},
        ],
        "cardiac_index": "not_done",
        "lvef_pct": "62",
        "qt_ms": "410",
        "rr_ms": "880",
        "mi_acs_pe_date": "never",
        "revascularisation_date": "never",
        "wbc": "6.1",
        "neutrophils": "3.9",
        "platelets": "240",
        "bilirubin": "11",
        "bilirubin_uln": "21",
        "alt": "24",
        "alt_uln": "40",
        "ast": "21",
        "ast_uln": "40",
        "egfr": "88",
        "hbsag": "negative",
        "hbcab": "negative",
        "hcv_ab": "negative",
        "hiv_ab": "negative",
        "treponemal_ab": "negative",
        "infection_treatment_end": "never",
        "live_vaccine_date": "never",
        "covid_vaccine_date": "never",
        "malignancy_date": "never",
        "investigational_product_date": "never",
    }
    if childbearing_potential:
        answers["pregnancy_test"] = "negative"
    for spec in engine.fields():
        if spec.name.startswith("attest_"):
            # Inclusion statements must hold (yes); exclusion statements must not (no).
            answers[spec.name] = (
                "yes" if spec.name.removeprefix("attest_").startswith("I") else "no"
            )
    return answers


def _generate_demo_kits(done: list[str]) -> None:
    """The kit list at the depot: one blinded lot of the first kit type."""
    import secrets

    from iwrs import clock
    from iwrs.audit import Actor
    from iwrs.services import supply

    kit_type = supply.protocol().kit_types[0].code
    made = supply.generate_kits(
        actor=Actor.system("demo"),
        kit_type=kit_type,
        lot="DEMO-L001",
        expiry_date=clock.today(supply.protocol().depot) + timedelta(days=730),
        count=240,
        seed=secrets.token_bytes(32),
    )
    done.append(f"generated {made.kits} blinded kits in lot DEMO-L001 at the depot")


def _activate_sites(
    session: Session, people: dict[str, User], passwords: dict[str, str], done: list[str]
) -> None:
    """The admin activates every inactive site (which requests its initial shipment)."""
    from sqlalchemy import select

    from iwrs.audit import Actor
    from iwrs.models.sites import Site, SiteStatus
    from iwrs.services import sites

    admin = people["admin"]
    for site in session.scalars(select(Site).order_by(Site.code)).all():
        if site.status == SiteStatus.INACTIVE:
            sites.change_site_status(
                actor=Actor.of(admin),
                site_id=site.id,
                status=SiteStatus.ACTIVE,
                signer_password=passwords["admin"],
                understood=True,
            )
            done.append(f"activated site {site.code}")


def _ship_and_receive(session: Session, people: dict[str, User], done: list[str]) -> None:
    """The supply manager ships every shipment; each site's pharmacist receives it whole."""
    from sqlalchemy import select

    from iwrs.audit import Actor
    from iwrs.models.sites import Site
    from iwrs.models.supply import Shipment
    from iwrs.services import shipments, supply_views

    manager = Actor.of(people["supply.chen"])
    pharmacist_of = PHARMACIST_OF
    for row in session.scalars(select(Shipment).order_by(Shipment.id)).all():
        site = session.get(Site, row.site_id)
        assert site is not None
        shipments.ship_shipment(
            actor=manager,
            shipment_id=row.id,
            courier="Demo Cold Chain",
            tracking_number=f"DCC{row.id:06d}",
        )
        kits = supply_views.shipment_kits(
            actor=Actor.of(people[pharmacist_of[site.code]]), shipment_id=row.id
        )
        shipments.receive_shipment(
            actor=Actor.of(people[pharmacist_of[site.code]]),
            shipment_id=row.id,
            lines={k.number: "good" for k in kits},
            excursion=False,
        )
        done.append(f"shipped and received {row.number} ({len(kits)} kits) at {site.code}")


# (investigator, site, born, sex, disease, answer changes, decision, day 1 in days before today)
# Decision (issue 15): the demo's clock spreads the subjects over past weeks, so that visits are
# due today and this week: day 1 is 28 days ago (V2 due today), 27 days ago (V2's window open),
# 56 days ago (V2 given, V3 due today), 23 days ago (V2's window opens this week), 40 days ago
# (V2 given, V3 later), 2 days ago (nothing due yet). Screening is 7 days before day 1.
_SCREENING_PLAN: list[
    tuple[str, str, str, str, str, dict[str, str | None], str | None, int | None]
] = [
    ("dr.li", "CN01", "1961-05-14", "female", "RA", {}, "eligible", 56),
    ("dr.li", "CN01", "1958-11-02", "male", "SSc", {}, "eligible", 27),
    ("dr.li", "CN01", "1972-02-29", "female", "RA", {"fvc_pct": "35"}, "screen_failure", None),
    ("dr.li", "CN01", "1980-07-21", "female", "SSc", {"wbc": None, "qt_ms": None}, None, None),
    ("dr.zhang", "CN02", "1964-03-09", "male", "RA", {}, "eligible", 28),
    ("dr.zhang", "CN02", "1969-08-17", "female", "SSc", {}, "eligible", 23),
    ("dr.wu", "CN03", "1957-12-01", "female", "RA", {}, "eligible", 40),
    ("dr.he", "CN04", "1975-06-30", "male", "SSc", {}, "eligible", 2),
]
START_DAYS_AGO = 70  # sites activated and stocked ten weeks ago
PHARMACIST_OF = {"CN01": "ph.wang", "CN02": "ph.zhou", "CN03": "ph.sun", "CN04": "ph.ma"}


class DemoClock:
    """The demo's clock while it seeds: `days_ago` before the real start, each reading a
    microsecond later than the last (so the trail stays in order within a day)."""

    def __init__(self, base: datetime) -> None:
        self.base, self.days_ago, self.ticks = base, 0, 0

    def at(self, days_ago: int) -> None:
        self.days_ago = days_ago

    def __call__(self) -> datetime:
        self.ticks += 1
        return self.base - timedelta(days=self.days_ago) + timedelta(microseconds=self.ticks)


def _screen(
    plan: tuple[str, str, str, str, str, dict[str, str | None], str | None, int | None],
    codes: dict[str, int],
    people: dict[str, User],
    passwords: dict[str, str],
    done: list[str],
) -> int:
    """Screen one subject of the plan, record their answers and sign the decision."""
    from iwrs.audit import Actor
    from iwrs.services import subjects

    username, site, born, sex, disease, changes, decision, _ = plan
    investigator = Actor.of(people[username])
    subject = subjects.screen_subject(
        actor=investigator, site_id=codes[site], date_of_birth=born, sex=sex
    )
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
            signer_password=passwords[username],
            understood=True,
        )
    done.append(f"screened {subject.screening_number}: {decision or record.result.outcome}")
    return subject.id


def _timeline() -> list[tuple[int, int, int, str]]:
    """The plan's steps in the order they happened: (days ago, plan index, step order, what):
    screening 7 days before day 1 (3 days before today for a subject not randomized), the
    randomization on day 1, each dosing visit whose day has come on its target day (a visit due
    today is left to give)."""
    from iwrs.services.supply import protocol

    dosing = [v for v in protocol().visits if v.kits][1:]  # after day 1
    steps = []
    for index, plan in enumerate(_SCREENING_PLAN):
        day1 = plan[7]
        steps.append(((day1 if day1 is not None else 3) + 7, index, 0, "screen"))
        if day1 is None:
            continue
        steps.append((day1, index, 1, "randomize"))
        steps += [(day1 - (v.day - 1), index, 2, v.code) for v in dosing if v.day - 1 < day1]
    return sorted(steps, key=lambda step: (-step[0], step[2], step[1]))


def _trial_activity(
    session: Session,
    people: dict[str, User],
    passwords: dict[str, str],
    done: list[str],
    demo_clock: DemoClock,
) -> list[tuple[str, int]]:
    """The statistician generates the list; then, day by day over the past weeks, subjects are
    screened, randomized and given their visits (`_timeline`). Returns the (investigator,
    subject) pairs randomized, in order."""
    from sqlalchemy import select

    from iwrs.audit import Actor
    from iwrs.models.sites import Site
    from iwrs.services import dispensing, randomization

    rlist = randomization.generate_list(actor=Actor.of(people["stat.liu"]), name="GenSci048-204 v1")
    done.append(f"generated randomization list {rlist.name} (fingerprint {rlist.fingerprint[:12]})")
    codes = {s.code: s.id for s in session.scalars(select(Site))}
    subject_of: dict[int, int] = {}
    randomized: list[tuple[str, int]] = []
    for days_ago, index, _, what in _timeline():
        demo_clock.at(days_ago)
        username, site = _SCREENING_PLAN[index][:2]
        if what == "screen":
            subject_of[index] = _screen(_SCREENING_PLAN[index], codes, people, passwords, done)
        elif what == "randomize":
            result = randomization.randomize(
                actor=Actor.of(people[username]),
                subject_id=subject_of[index],
                signer_password=passwords[username],
                understood=True,
            )
            randomized.append((username, subject_of[index]))
            done.append(
                f"randomized {result.screening_number} as {result.randomization_number}, "
                f"kit {result.kit_number} ({days_ago} days ago)"
            )
        else:
            pharmacist = Actor.of(people[PHARMACIST_OF[site]])
            given = dispensing.dispense(
                actor=pharmacist, subject_id=subject_of[index], visit_code=what
            )
            dispensing.confirm_kit(
                actor=pharmacist,
                dispensation_id=given.dispensation_id,
                kit_number=given.kit_number,
            )
            done.append(f"dispensed kit {given.kit_number} to {given.subject} at {what}")
    return randomized


def _unblind_first(
    people: dict[str, User],
    passwords: dict[str, str],
    randomized: list[tuple[str, int]],
    done: list[str],
) -> None:
    """One emergency unblinding of the first randomized subject."""
    from iwrs.audit import Actor
    from iwrs.services import unblinding

    first_username, first_subject = randomized[0]
    unblinding.unblind(
        actor=Actor.of(people[first_username]),
        subject_id=first_subject,
        category="sae",
        reason="Demo: anaphylaxis after the day-1 injection; the treating team needs the treatment",
        understood=True,
        signer_password=passwords[first_username],
        sae_led_to_unblinding=True,
    )
    done.append("recorded one emergency unblinding (see the unblinding report)")


def seed_demo_trial(passwords: dict[str, str]) -> list[str]:
    """The demo trial's activity, spread over the past ten weeks by the demo's clock (restored
    afterwards; each event is recorded at the past time it stands for, in time order, after the
    demo users created at the real time):
    a kit list at the depot; the four sites activated, their initial shipments shipped and
    received; subjects screened in every state an investigator meets (confirmed
    eligible RA and SSc, a signed screen failure, one still in screening with answers
    missing), randomized on past days and given their visits, so that visits are due today and
    this week; one emergency unblinding; today's resupply run, its shipments shipped. Returns
    what was done, one line each."""
    from flask import current_app
    from sqlalchemy import select

    from iwrs import clock
    from iwrs.db import read_session
    from iwrs.models.users import User

    session = read_session()
    people = {u.username: u for u in session.scalars(select(User))}
    done: list[str] = []
    before = current_app.extensions.get("iwrs.clock")
    demo_clock = DemoClock(clock.now())
    clock.set_clock(current_app, demo_clock)
    try:
        demo_clock.at(START_DAYS_AGO)
        _generate_demo_kits(done)
        _activate_sites(session, people, passwords, done)
        _ship_and_receive(session, people, done)
        randomized = _trial_activity(session, people, passwords, done, demo_clock)
        demo_clock.at(0)
        _unblind_first(people, passwords, randomized, done)
        _resupply_today(people, done)
    finally:
        if before is None:
            current_app.extensions.pop("iwrs.clock", None)
        else:
            clock.set_clock(current_app, before)
    return done


def _resupply_today(people: dict[str, User], done: list[str]) -> None:
    """Today's resupply run; the supply manager ships what it requested (the sites' pharmacists
    then have a shipment to receive)."""
    from sqlalchemy import select

    from iwrs.audit import Actor
    from iwrs.db import read_session
    from iwrs.models.supply import Shipment
    from iwrs.services import resupply, shipments
    from supply.shipments import ShipmentState

    for line in resupply.run_resupply(slot="daily"):
        done.append(f"resupply run requested {line}")
    read_session().rollback()
    requested = select(Shipment).where(Shipment.state == ShipmentState.REQUESTED)
    for row in read_session().scalars(requested.order_by(Shipment.id)).all():
        shipments.ship_shipment(
            actor=Actor.of(people["supply.chen"]),
            shipment_id=row.id,
            courier="Demo Cold Chain",
            tracking_number=f"DCC{row.id:06d}",
        )
        done.append(f"shipped {row.number}; its site has it to receive")
