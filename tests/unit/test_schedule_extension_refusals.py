"""Extending a stratum is refused by field and rule: mixed strata, no blocks, an incomplete last
block — also block 1, also one holding a single slot (found by `make mutation`)."""

from __future__ import annotations

import hashlib

import pytest

from blinding.schedules import ScheduleError, Slot, extend_stratum, permuted_blocks

OPTIONS = {"seed": hashlib.sha256(b"extend").digest(), "arms": [("A", 1), ("P", 1)]}


def refusal(existing: list[Slot], blocks: int = 1) -> tuple[str, str]:
    with pytest.raises(ScheduleError) as refused:
        extend_stratum(existing, block_sizes=[4], blocks=blocks, **OPTIONS)  # type: ignore[arg-type]
    return refused.value.field, refused.value.rule


def slots(stratum: str, *arms: str, block: int = 1) -> list[Slot]:
    return [Slot(stratum, n, block, 4, arm) for n, arm in enumerate(arms, start=1)]


def test_slots_of_two_strata_are_refused_by_existing():
    mixed = slots("disease=RA", "A", "P", "P", "A") + slots("disease=SSc", "A", "P", "P", "A")
    assert refusal(mixed) == ("existing", "one_stratum")


def test_no_blocks_to_add_is_refused_by_blocks():
    assert refusal(slots("all", "A", "P", "P", "A"), blocks=0) == ("blocks", "minimum")


@pytest.mark.parametrize("arms", [("A", "P", "P"), ("A",)])
def test_an_incomplete_first_block_is_refused_by_existing(arms):
    assert refusal(slots("all", *arms)) == ("existing", "block_complete")


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        ({"stratum": ""}, ("stratum", "required")),
        ({"slots": -1}, ("slots", "minimum")),
        ({"first_block": 0}, ("first_block", "minimum")),
        ({"first_sequence": 0}, ("first_sequence", "minimum")),
    ],
)
def test_permuted_blocks_refuse_each_parameter_by_name_and_rule(overrides, refused):
    arguments = {"stratum": "all", "block_sizes": [4], "slots": 4, **OPTIONS, **overrides}
    with pytest.raises(ScheduleError) as refusal:
        permuted_blocks(**arguments)  # type: ignore[arg-type]
    assert (refusal.value.field, refusal.value.rule) == refused
