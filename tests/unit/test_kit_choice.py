"""Kit choice, first expiry first out by lot across every arm: the lot a kit is drawn from does
not depend on the slot's arm while every lot holds both arms; FEFO by lot; reproducible."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supply.kit_choice import (
    ShelfKit,
    arms_on_shelf,
    choose_kit,
    count_by_arm,
    lots_in_pick_order,
)

ARMS = ("A", "P")
DAY0 = date(2026, 6, 1)


@st.composite
def shelves(draw: st.DrawFn, *, both_arms: bool = True) -> tuple[list[ShelfKit], dict[str, str]]:
    """A site's shelf: 1..5 lots (expiries may tie), each holding 1..6 kits per arm (or, with
    both_arms=False, possibly of one arm only); distinct kit numbers; treatments aside."""
    lots = draw(st.integers(1, 5))
    low = 1 if both_arms else 0
    expiries = [DAY0 + timedelta(days=draw(st.integers(0, 3)) * 30) for _ in range(lots)]
    places = [
        (f"L{i}", expiries[i], arm)
        for i in range(lots)
        for arm in ARMS
        for _ in range(draw(st.integers(low, 6)))
    ]
    numbers = draw(st.permutations(range(len(places))))
    shelf, treatment = [], {}
    for (lot, expiry, arm), n in zip(places, numbers, strict=True):
        number = str(1_000_000 + 37 * n)
        shelf.append(ShelfKit(number, lot, expiry))
        treatment[number] = arm
    return shelf, treatment


def lot_of(shelf: list[ShelfKit], number: str) -> tuple[date, str]:
    kit = next(k for k in shelf if k.number == number)
    return kit.expiry, kit.lot


@given(shelves(), st.integers(0, 2**32))
def test_the_lot_chosen_is_the_same_whatever_the_arm(world, seed):
    shelf, treatment = world
    lots = {arm: lot_of(shelf, pick(shelf, treatment, arm, seed)) for arm in ARMS}
    assert lots["A"] == lots["P"]
    first = min((k.expiry, k.lot) for k in shelf)
    assert lots["A"] == first  # the shelf's first lot by (expiry, lot code)


@given(shelves(both_arms=False), st.sampled_from(ARMS), st.integers(0, 2**32))
def test_first_expiry_first_out_by_lot_and_no_usable_kit_skipped(world, arm, seed):
    shelf, treatment = world
    chosen = pick(shelf, treatment, arm, seed)
    of_arm = [k for k in shelf if treatment[k.number] == arm]
    if not of_arm:
        assert chosen is None
        return
    assert chosen is not None and treatment[chosen] == arm
    # No lot earlier in pick order holds a kit of the arm: nothing usable is passed over.
    assert lot_of(shelf, chosen) == min((k.expiry, k.lot) for k in of_arm)


@given(shelves(), st.sampled_from(ARMS), st.integers(0, 2**32))
def test_the_choice_is_reproducible_with_the_same_seed(world, arm, seed):
    shelf, treatment = world
    assert pick(shelf, treatment, arm, seed) == pick(list(reversed(shelf)), treatment, arm, seed)


@given(shelves(both_arms=False), st.sampled_from(ARMS))
def test_only_the_lots_up_to_the_chosen_one_are_unsealed(world, arm):
    shelf, treatment = world
    read: list[str] = []

    def treatment_of(number: str) -> str:
        read.append(number)
        return treatment[number]

    chosen = choose_kit(shelf, arm=arm, treatment_of=treatment_of, rng_index=lambda n: 0)
    order = [(k.expiry, k.lot) for k in shelf]
    last = lot_of(shelf, chosen) if chosen else max(order, default=(DAY0, ""))
    assert sorted(read) == sorted(k.number for k in shelf if (k.expiry, k.lot) <= last)


def test_within_the_lot_every_kit_of_the_arm_can_be_chosen_uniformly():
    shelf = [ShelfKit(n, "L1", DAY0) for n in ("1000007", "1000013", "1000021", "1000039")]
    shelf.append(ShelfKit("2000006", "L0", DAY0 + timedelta(days=30)))
    treatment = {"1000007": "A", "1000013": "P", "1000021": "A", "1000039": "A", "2000006": "A"}
    asked: list[int] = []

    def index(i: int):
        def rng_index(n: int) -> int:
            asked.append(n)
            return i

        return rng_index

    picks = [
        choose_kit(shelf, arm="A", treatment_of=treatment.__getitem__, rng_index=index(i))
        for i in range(3)
    ]
    assert picks == ["1000007", "1000021", "1000039"] and asked == [3, 3, 3]
    # The later lot L0 is reached only once L1 holds no kit of the arm.
    assert choose_kit(shelf, arm="P", treatment_of=treatment.get, rng_index=index(0)) == "1000013"
    rest = [k for k in shelf if treatment[k.number] == "P" or k.lot == "L0"]
    assert choose_kit(rest, arm="A", treatment_of=treatment.get, rng_index=index(0)) == "2000006"


def test_a_tie_of_expiry_goes_to_the_lot_code_and_a_bad_index_is_refused():
    shelf = [ShelfKit("1000007", "LB", DAY0), ShelfKit("1000013", "LA", DAY0)]
    assert [lot[0].lot for lot in lots_in_pick_order(shelf)] == ["LA", "LB"]
    one = {"1000007": "A", "1000013": "A"}
    assert choose_kit(shelf, arm="A", treatment_of=one.get, rng_index=lambda n: 9) == "1000013"
    two = [*shelf, ShelfKit("1000021", "LA", DAY0)]
    one["1000021"] = "A"
    with pytest.raises(ValueError, match="outside 0..1"):
        choose_kit(two, arm="A", treatment_of=one.get, rng_index=lambda n: n)
    assert choose_kit([], arm="A", treatment_of=one.get, rng_index=lambda n: 0) is None


def test_arms_on_shelf_stops_unsealing_once_every_arm_is_found():
    shelf = [ShelfKit(f"10000{i}0", "L1" if i < 2 else "L2", DAY0) for i in range(4)]
    treatment = dict(zip((k.number for k in shelf), "APAA", strict=True))
    read: list[str] = []

    def treatment_of(number: str) -> str:
        read.append(number)
        return treatment[number]

    assert arms_on_shelf(shelf, arms=ARMS, treatment_of=treatment_of) == set(ARMS)
    assert len(read) == 2
    only_a = [k for k in shelf if treatment[k.number] == "A"]
    assert arms_on_shelf(only_a, arms=ARMS, treatment_of=treatment.get) == {"A"}


def pick(shelf: list[ShelfKit], treatment: dict[str, str], arm: str, seed: int) -> str | None:
    rng = random.Random(seed)
    return choose_kit(shelf, arm=arm, treatment_of=treatment.__getitem__, rng_index=rng.randrange)


@given(shelves(both_arms=False), st.integers(0, 8))
def test_count_by_arm_answers_is_any_arm_below_enough_exactly_and_lazily(world, enough):
    """Stopping early never changes the answer to "is some arm below `enough`?", the counts are
    exact without `enough`, and no kit is read after every arm reached `enough`."""
    shelf, treatment = world
    read: list[str] = []

    def treatment_of(number: str) -> str:
        read.append(number)
        return treatment[number]

    exact = {arm: sum(1 for t in treatment.values() if t == arm) for arm in ARMS}
    assert count_by_arm(shelf, arms=ARMS, treatment_of=treatment.get) == exact
    lazy = count_by_arm(shelf, arms=ARMS, treatment_of=treatment_of, enough=enough)
    assert any(lazy[a] < enough for a in ARMS) == any(exact[a] < enough for a in ARMS)
    order = [k.number for lot in lots_in_pick_order(shelf) for k in lot]
    assert read == order[: len(read)]  # in pick order

    def reached(numbers: list[str]) -> bool:
        return all(sum(1 for n in numbers if treatment[n] == a) >= enough for a in ARMS)

    if reached(order):  # stopped at the first kit at which every arm had `enough`
        assert reached(read) and (not read or not reached(read[:-1]))
    else:
        assert read == order
