"""A clinicedc list (sid numbering the whole file, active/placebo, a site column) imports through
the mapping step (`randomization.import_list(..., mapping=...)`, the service the statistician's
page calls) into a trial whose protocol stratifies by site: the stored list verifies with the
native checks and its mapping is stored sealed. Into the shipped disease-stratified protocol the
same file is refused whole, naming the factor the mapping leaves out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from blinding.list_mapping import FactorSource, ListMapping
from blinding.schedule_import import verify_schedule
from iwrs.db import read_session
from iwrs.errors import InvalidInput
from iwrs.models import AuditEvent
from iwrs.models.randomization import RandomizationList, RandomizationSlot
from iwrs.services import randomization
from iwrs.services.randomization import list_mapping_of, stored_slot
from tests.integration.randomization_worker import World, make_world

CLINICEDC = (Path(__file__).parents[1] / "fixtures" / "lists" / "clinicedc_list.csv").read_text(
    encoding="utf-8"
)
SITE_CODES = {"peking_third": "CN01", "tongji_union": "CN02"}
MAPPING = ListMapping(
    arm_column="assignment",
    arm_values={"active": "A", "placebo": "P"},
    factors={"site": FactorSource("site_name", SITE_CODES)},
    sequence_column="sid",
    sequence_scope="list",
)
# The shipped protocol with its one factor by site instead of disease: its level is an answer
# to a choice question (the protocol's rule for a factor not derived from the diagnosis).
BY_SITE = {
    'factor = "disease"\nlabel = "Underlying disease"\nderived_from = "diagnosis"\nlevels = [\n'
    '  { code = "RA", label = "Rheumatoid arthritis (2010 ACR/EULAR)" },\n'
    '  { code = "SSc", label = "Systemic sclerosis (2013 ACR/EULAR)" },\n]': (
        'factor = "site"\nlabel = "Site"\nderived_from = "site_stratum"\nlevels = [\n'
        '  { code = "CN01", label = "Peking third" },\n'
        '  { code = "CN02", label = "Tongji union" },\n]'
    ),
    "hbsag = {": (
        'site_stratum = { label = "Site", section = "Diagnosis", kind = "choice", '
        'choices = ["CN01", "CN02"] }\nhbsag = {'
    ),
}


@pytest.fixture
def trial(tmp_path, database_url, clock) -> Iterator[World]:
    """make_world(replacements=...) -> the protocol copy; no list loaded; an app context."""
    made: list[World] = []

    def _new(**replacements: str) -> World:
        made.append(
            make_world(tmp_path, database_url, clock, replacements=replacements, with_list=False)
        )
        return made[-1]

    yield _new  # type: ignore[misc]
    for world in made:
        world.app.extensions["iwrs.engine"].dispose()


def test_a_clinicedc_list_imports_through_the_mapping_into_a_site_stratified_trial(trial):
    world = trial(**BY_SITE)
    with world.app.app_context():
        row = randomization.import_list(
            actor=world.actor("stat"), name="clinicedc", csv_text=CLINICEDC, mapping=MAPPING
        )
        session = read_session()
        slots = [
            stored_slot(s)
            for s in session.scalars(
                select(RandomizationSlot).where(RandomizationSlot.list_id == row.id)
            )
        ]
        assert len(slots) == 10
        assert (
            verify_schedule(
                slots,
                arms=[("A", 1), ("P", 1)],
                strata=["site=CN01", "site=CN02"],
                block_sizes=[4, 6],
            )
            == []
        )
        cn02 = sorted((s.sequence, s.arm) for s in slots if s.stratum == "site=CN02")
        assert cn02 == [(1, "P"), (2, "A"), (3, "P"), (4, "A")]  # sid ranked within the site
        cn01 = sorted((s.sequence, s.arm) for s in slots if s.stratum == "site=CN01")
        assert [arm for _, arm in cn01] == ["A", "P", "P", "A", "A", "P"]
        stored = session.get(RandomizationList, row.id)
        assert stored is not None and stored.sealed_mapping
        assert "site_name" not in stored.sealed_mapping  # sealed, not readable
        assert list_mapping_of(stored) == MAPPING
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "list.imported")
        ).one()
        after = json.loads(event.after) if isinstance(event.after, str) else event.after
        assert after["mapping"]["columns"]["factor_site_column"] == "site_name"
        assert after["mapping"]["sequence_scope"] == "list"
        assert "active" not in json.dumps(after["mapping"])  # the arm map is not audited


def test_the_same_clinicedc_list_into_the_disease_stratified_trial_is_refused_naming_disease(
    trial,
):
    world = trial()
    with world.app.app_context():
        with pytest.raises(InvalidInput) as refused:
            randomization.import_list(
                actor=world.actor("stat"), name="clinicedc", csv_text=CLINICEDC, mapping=MAPPING
            )
        found = {(e["field"], e["rule"]) for e in refused.value.errors or []}
        assert ("factor_disease_column", "required") in found
        assert ("factor_site_column", "factor_known") in found
        assert read_session().scalar(select(func.count()).select_from(RandomizationList)) == 0
