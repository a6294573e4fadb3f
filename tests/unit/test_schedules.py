"""Generating lists: reproducible from the seed, balanced block by block, extended only by
appending whole blocks, uniform in block sizes and orders, unpredictable without the seed.

The statistical tests run over a fixed set of seeds, so they are deterministic: they either
always pass or always fail for a given algorithm."""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blinding import drbg
from blinding.drbg import Drbg
from blinding.schedules import (
    ALGORITHM_VERSION,
    ALGORITHMS,
    ScheduleError,
    Slot,
    extend_stratum,
    fingerprint,
    generate_schedule,
    permuted_blocks,
    serialize,
    strata,
    stratum_key,
    stratum_levels,
    verify_schedule,
)

ONE_TO_ONE = [("A", 1), ("P", 1)]
TWO_TO_ONE = [("A", 2), ("P", 1)]
DISEASE = strata([("disease", ["RA", "SSc"])])
PROPERTY = settings(deadline=None, max_examples=150, derandomize=True, database=None)

# Chi-square critical values at alpha = 0.001 (upper tail: too uneven; lower tail: too even,
# e.g. orders dealt in rotation rather than drawn).
CHI2_UPPER = {1: 10.828, 2: 13.816, 3: 16.266, 5: 20.515}
CHI2_LOWER = {1: 0.0000016, 2: 0.0020, 3: 0.0243, 5: 0.2102}


KEY = hashlib.sha256(b"fingerprint key").digest()


def seed(i: int | str) -> bytes:
    return hashlib.sha256(f"seed{i}".encode()).digest()


SEEDS = [seed(i) for i in range(200)]


def chi_square(counts: Counter[object], categories: Sequence[object]) -> float:
    total = sum(counts.values())
    expected = total / len(categories)
    assert set(counts) <= set(categories)
    return sum((counts[c] - expected) ** 2 / expected for c in categories)


def assert_uniform(counts: Counter[object], categories: Sequence[object]) -> None:
    df = len(categories) - 1
    statistic = chi_square(counts, categories)
    assert CHI2_LOWER[df] < statistic < CHI2_UPPER[df], (statistic, counts)


def blocks_of(slots: Sequence[Slot]) -> dict[tuple[str, int], list[Slot]]:
    blocks: dict[tuple[str, int], list[Slot]] = {}
    for slot in slots:
        blocks.setdefault((slot.stratum, slot.block), []).append(slot)
    return blocks


def one_stratum(
    seed_bytes: bytes,
    slots: int,
    arms: Sequence[tuple[str, int]] = ONE_TO_ONE,
    sizes: Sequence[int] = (4, 6),
) -> list[Slot]:
    return permuted_blocks(
        seed=seed_bytes, stratum="all", arms=arms, block_sizes=sizes, slots=slots
    )


# --- strata -----------------------------------------------------------------------------------


def test_strata_are_the_cross_product_of_the_factors_in_order():
    assert DISEASE == ["disease=RA", "disease=SSc"]
    assert strata([("disease", ["RA", "SSc"]), ("region", ["EU", "CN", "US"])]) == [
        "disease=RA|region=EU",
        "disease=RA|region=CN",
        "disease=RA|region=US",
        "disease=SSc|region=EU",
        "disease=SSc|region=CN",
        "disease=SSc|region=US",
    ]
    assert strata([]) == ["all"]


def test_stratum_key_and_levels_are_inverse():
    factors = ["disease", "region"]
    key = stratum_key({"region": "CN", "disease": "SSc"}, factors)
    assert key == "disease=SSc|region=CN"
    assert stratum_levels(key) == {"disease": "SSc", "region": "CN"}
    assert stratum_key({}, []) == "all" and stratum_levels("all") == {}


@pytest.mark.parametrize(
    ("factors", "rule"),
    [
        ([("disease", ["RA", "RA"])], "levels_unique"),
        ([("disease", [])], "levels_unique"),
        ([("disease", ["R|A"])], "key_syntax"),
        ([("dis=ease", ["RA"])], "key_syntax"),
        ([("disease", ["RA"]), ("disease", ["SSc"])], "factor_unique"),
    ],
)
def test_strata_refuse_ambiguous_keys(factors, rule):
    with pytest.raises(ScheduleError) as refused:
        strata(factors)
    assert refused.value.rule == rule


def test_stratum_key_requires_every_factor():
    with pytest.raises(ScheduleError) as refused:
        stratum_key({"disease": "RA"}, ["disease", "region"])
    assert (refused.value.field, refused.value.rule) == ("region", "level_required")


# --- reproducibility --------------------------------------------------------------------------


def generate(seed_bytes: bytes, **overrides: Any) -> list[Slot]:
    parameters = {
        "seed": seed_bytes,
        "strata": DISEASE,
        "arms": ONE_TO_ONE,
        "block_sizes": [4, 6],
        "slots_per_stratum": 60,
    }
    return generate_schedule(**(parameters | overrides))


def test_the_same_seed_gives_the_same_list_byte_for_byte():
    assert serialize(generate(seed(1))) == serialize(generate(seed(1)))
    assert fingerprint(generate(seed(1)), key=KEY) == fingerprint(generate(seed(1)), key=KEY)


def test_a_different_seed_gives_a_different_list():
    assert serialize(generate(seed(1))) != serialize(generate(seed(2)))
    assert len({fingerprint(generate(s), key=KEY) for s in SEEDS[:50]}) == 50


def test_the_list_does_not_depend_on_the_order_parameters_are_written_in():
    reference = serialize(generate(seed(3)))
    assert serialize(generate(seed(3), arms=[("P", 1), ("A", 1)])) == reference
    assert serialize(generate(seed(3), block_sizes=[6, 4, 6])) == reference
    assert serialize(generate(seed(3), strata=list(reversed(DISEASE)))) == reference


def test_algorithm_follows_its_documented_definition():
    """An independent implementation of the module docstring, straight from the DRBG."""

    def documented(
        seed_bytes: bytes, stratum: str, arms: Sequence[tuple[str, int]], sizes: Any, slots: int
    ) -> list[str]:
        stream = Drbg(seed_bytes, label=f"schedule/{stratum}/1")
        sizes, arms, total = sorted(set(sizes)), sorted(arms), sum(r for _, r in arms)
        allocation: list[str] = []
        while len(allocation) < slots:
            size = sizes[stream.randbelow(len(sizes))]
            block = [code for code, ratio in arms for _ in range(ratio * size // total)]
            for i in range(len(block) - 1, 0, -1):
                j = stream.randbelow(i + 1)
                block[i], block[j] = block[j], block[i]
            allocation += block
        return allocation

    for s in SEEDS[:20]:
        for arms, sizes in ((ONE_TO_ONE, [4, 6]), (TWO_TO_ONE, [3, 6]), (ONE_TO_ONE, [2])):
            slots = permuted_blocks(
                seed=s, stratum="disease=RA", arms=arms, block_sizes=sizes, slots=30
            )
            assert [slot.arm for slot in slots] == documented(s, "disease=RA", arms, sizes, 30)


def test_golden_list_is_pinned_to_the_algorithm_version():
    """Changing what a seed produces needs a new ALGORITHM_VERSION (and this value)."""
    assert ALGORITHM_VERSION.removeprefix("permuted_blocks/") == drbg.ALGORITHM
    assert ALGORITHMS["permuted_blocks"] is permuted_blocks and len(ALGORITHMS) == 1
    golden = generate_schedule(
        seed=hashlib.sha256(b"golden").digest(),
        strata=DISEASE,
        arms=ONE_TO_ONE,
        block_sizes=[4, 6],
        slots_per_stratum=24,
    )
    ra = "".join(slot.arm for slot in golden if slot.stratum == "disease=RA")
    assert ra == "PAAPAPAAAPPPAPPAPAAPAPAAPPAP"
    assert hashlib.sha256(serialize(golden)).hexdigest() == (
        "bf26ec6572391d95b1bb5373979f96fc1cdb6dde538e05237de16f2aaebf6fb5"
    )


def test_the_fingerprint_is_an_hmac_that_cannot_be_recomputed_without_the_key():
    """A database reader who guesses the arms (a small list is few guesses) cannot check a
    guess: the fingerprint is HMAC-SHA256 under a key that is not in the database."""
    import hmac

    slots = generate(seed(5), slots_per_stratum=8)
    value = fingerprint(slots, key=KEY)
    assert value == hmac.new(KEY, serialize(slots), hashlib.sha256).hexdigest()
    assert value != hashlib.sha256(serialize(slots)).hexdigest()
    assert value != fingerprint(slots, key=hashlib.sha256(b"another key").digest())
    with pytest.raises(ValueError):
        fingerprint(slots, key=b"short")


def test_canonical_csv_is_sorted_with_newline_endings():
    slots = generate(seed(4), slots_per_stratum=4, block_sizes=[4])
    text = serialize(list(reversed(slots))).decode()
    assert text.splitlines()[0] == "stratum,sequence,block,block_size,arm"
    assert "\r" not in text and text.endswith("\n")
    assert text.splitlines()[1:3] == [
        f"disease=RA,1,1,4,{slots[0].arm}",
        f"disease=RA,2,1,4,{slots[1].arm}",
    ]
    assert text == serialize(slots).decode()


# --- shape and balance ------------------------------------------------------------------------


def test_slots_are_numbered_from_1_in_whole_blocks():
    slots = one_stratum(seed(5), 25)
    assert [slot.sequence for slot in slots] == list(range(1, len(slots) + 1))
    assert len(slots) >= 25 and len(slots) - 25 < 6
    for block in blocks_of(slots).values():
        assert len(block) == block[0].block_size and {s.block_size for s in block} <= {4, 6}
    assert [n for _, n in blocks_of(slots)] == list(range(1, len(blocks_of(slots)) + 1))


@pytest.mark.parametrize(
    ("arms", "sizes"), [(ONE_TO_ONE, [4, 6]), (ONE_TO_ONE, [2, 8]), (TWO_TO_ONE, [3, 6])]
)
def test_every_block_matches_the_ratio(arms, sizes):
    total = sum(ratio for _, ratio in arms)
    for s in SEEDS[:40]:
        slots = generate(s, arms=arms, block_sizes=sizes, slots_per_stratum=40)
        for block in blocks_of(slots).values():
            counts = Counter(slot.arm for slot in block)
            assert counts == {code: ratio * len(block) // total for code, ratio in arms}
        assert verify_schedule(slots, arms=arms, strata=DISEASE, block_sizes=sizes) == []


def test_a_short_list_is_still_whole_blocks():
    assert one_stratum(seed(6), 0) == []
    assert len(one_stratum(seed(6), 1, sizes=[6])) == 6


@pytest.mark.parametrize(
    ("overrides", "field", "rule"),
    [
        ({"block_sizes": [3]}, "block_sizes", "block_size_multiple"),
        ({"block_sizes": []}, "block_sizes", "block_size_multiple"),
        ({"block_sizes": [0]}, "block_sizes", "block_size_multiple"),
        ({"arms": [("A", 1)]}, "arms", "arms_distinct"),
        ({"arms": [("A", 1), ("A", 1)]}, "arms", "arms_distinct"),
        ({"arms": [("A", 0), ("P", 2)]}, "arms", "ratio"),
        ({"seed": b"short"}, "seed", "seed_length"),
        ({"algorithm": "minimisation"}, "algorithm", "algorithm_known"),
        ({"strata": []}, "strata", "strata_unique"),
        ({"strata": ["all", "all"]}, "strata", "strata_unique"),
    ],
)
def test_impossible_parameters_are_refused_by_name(overrides, field, rule):
    with pytest.raises(ScheduleError) as refused:
        generate(seed(7), **overrides)
    assert (refused.value.field, refused.value.rule) == (field, rule)


# --- extension --------------------------------------------------------------------------------


def test_a_longer_list_from_the_same_stream_starts_with_the_shorter_one():
    short, long = one_stratum(seed(8), 10), one_stratum(seed(8), 100)
    assert long[: len(short)] == short


def test_extension_appends_whole_blocks_and_leaves_existing_slots_unchanged():
    existing = one_stratum(seed(9), 20)
    before = list(existing)
    added = extend_stratum(existing, seed=seed(9), arms=ONE_TO_ONE, block_sizes=[4, 6], blocks=3)
    assert existing == before
    last = existing[-1]
    assert [slot.sequence for slot in added] == list(
        range(last.sequence + 1, last.sequence + 1 + len(added))
    )
    assert sorted({slot.block for slot in added}) == [
        last.block + 1,
        last.block + 2,
        last.block + 3,
    ]
    for block in blocks_of(added).values():
        assert len(block) == block[0].block_size
    whole = existing + added
    assert verify_schedule(whole, arms=ONE_TO_ONE, strata=["all"], block_sizes=[4, 6]) == []
    # Reproducible, and drawn from the documented stream of its first block.
    again = extend_stratum(existing, seed=seed(9), arms=ONE_TO_ONE, block_sizes=[4, 6], blocks=3)
    assert again == added
    fresh = permuted_blocks(
        seed=seed(9),
        stratum="all",
        arms=ONE_TO_ONE,
        block_sizes=[4, 6],
        slots=len(added),
        first_block=last.block + 1,
        first_sequence=last.sequence + 1,
    )
    assert fresh == added


def test_extension_of_an_empty_stratum_needs_its_name():
    added = extend_stratum(
        [], seed=seed(10), arms=ONE_TO_ONE, block_sizes=[4], blocks=1, stratum="disease=RA"
    )
    assert [(s.stratum, s.sequence, s.block) for s in added] == [
        ("disease=RA", n, 1) for n in range(1, 5)
    ]
    with pytest.raises(ScheduleError) as refused:
        extend_stratum([], seed=seed(10), arms=ONE_TO_ONE, block_sizes=[4], blocks=1)
    assert refused.value.rule == "one_stratum"


def test_extension_refuses_mixed_strata_an_incomplete_block_and_no_blocks():
    slots = generate(seed(11), slots_per_stratum=8)
    arguments = {"seed": seed(11), "arms": ONE_TO_ONE, "block_sizes": [4, 6]}
    with pytest.raises(ScheduleError) as refused:
        extend_stratum(slots, blocks=1, **arguments)
    assert refused.value.rule == "one_stratum"
    ra = [slot for slot in slots if slot.stratum == "disease=RA"]
    with pytest.raises(ScheduleError) as refused:
        extend_stratum(ra[:-1], blocks=1, **arguments)
    assert refused.value.rule == "block_complete"
    with pytest.raises(ScheduleError) as refused:
        extend_stratum(ra, blocks=0, **arguments)
    assert refused.value.rule == "minimum"


def test_extension_after_an_imported_table_without_blocks_numbers_blocks_from_1():
    imported = [Slot("all", n, 0, 0, arm) for n, arm in enumerate("APPA", start=1)]
    added = extend_stratum(imported, seed=seed(12), arms=ONE_TO_ONE, block_sizes=[4], blocks=2)
    assert [(s.sequence, s.block) for s in added] == [(n, 1 + (n - 5) // 4) for n in range(5, 13)]
    assert verify_schedule(imported + added, arms=ONE_TO_ONE, strata=["all"], block_sizes=[4]) == []


# --- uniformity over a fixed set of seeds -----------------------------------------------------


@pytest.mark.parametrize(("arms", "sizes"), [(ONE_TO_ONE, [4, 6]), (TWO_TO_ONE, [3, 6, 9])])
def test_block_sizes_are_drawn_uniformly(arms, sizes):
    counts: Counter[object] = Counter()
    for s in SEEDS:
        slots = one_stratum(s, 100, arms=arms, sizes=sizes)
        counts.update(block[0].block_size for block in blocks_of(slots).values())
    assert sum(counts.values()) > 2000
    assert_uniform(counts, sizes)


@pytest.mark.parametrize(("arms", "size"), [(ONE_TO_ONE, 4), (TWO_TO_ONE, 3), (TWO_TO_ONE, 6)])
def test_arm_orders_within_a_block_are_drawn_uniformly(arms, size):
    total = sum(ratio for _, ratio in arms)
    content = [code for code, ratio in arms for _ in range(ratio * size // total)]
    orders = sorted(set(itertools.permutations(content)))
    assert len(orders) in (6, 3, 15)
    counts: Counter[object] = Counter()
    for s in SEEDS:
        slots = one_stratum(s, 10 * size, arms=arms, sizes=[size])
        counts.update(tuple(x.arm for x in block) for block in blocks_of(slots).values())
    if len(orders) == 15:  # 15 orders, df 14: alpha 0.001 critical values
        statistic = chi_square(counts, orders)
        assert 4.075 < statistic < 36.123, statistic
    else:
        assert_uniform(counts, orders)


def test_each_position_of_a_block_is_equally_likely_to_be_either_arm():
    counts: dict[int, Counter[object]] = {position: Counter() for position in range(6)}
    for s in SEEDS:
        for block in blocks_of(one_stratum(s, 60, sizes=[6])).values():
            for position, slot in enumerate(block):
                counts[position][slot.arm] += 1
    for position_counts in counts.values():
        assert_uniform(position_counts, ["A", "P"])


# --- unpredictability (in the limited sense a test can show) ----------------------------------


def agreement(a: Sequence[Slot], b: Sequence[Slot]) -> float:
    n = min(len(a), len(b))
    return sum(x.arm == y.arm for x, y in zip(a[:n], b[:n], strict=True)) / n


def test_two_seeds_agree_on_the_arm_sequence_no_more_than_chance():
    for i in range(0, 40, 2):
        a, b = one_stratum(SEEDS[i], 400), one_stratum(SEEDS[i + 1], 400)
        assert 0.4 <= agreement(a, b) <= 0.6


def test_strata_and_extensions_draw_from_unrelated_streams():
    slots = generate(seed(13), slots_per_stratum=400)
    ra = [slot for slot in slots if slot.stratum == "disease=RA"]
    ssc = [slot for slot in slots if slot.stratum == "disease=SSc"]
    assert 0.4 <= agreement(ra, ssc) <= 0.6
    added = extend_stratum(ra, seed=seed(13), arms=ONE_TO_ONE, block_sizes=[4, 6], blocks=80)
    assert 0.4 <= agreement(ra, added) <= 0.6


def test_a_seed_differing_in_one_bit_gives_an_unrelated_list():
    flipped = bytes([SEEDS[0][0] ^ 1]) + SEEDS[0][1:]
    assert 0.4 <= agreement(one_stratum(SEEDS[0], 400), one_stratum(flipped, 400)) <= 0.6


# --- properties -------------------------------------------------------------------------------


@st.composite
def designs(draw: st.DrawFn) -> dict[str, object]:
    ratios = draw(st.lists(st.integers(1, 3), min_size=2, max_size=4))
    arms = [(f"ARM{i}", ratio) for i, ratio in enumerate(ratios)]
    multiples = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    levels = draw(
        st.lists(st.sampled_from(["RA", "SSc", "X1"]), min_size=1, max_size=3, unique=True)
    )
    return {
        "seed": draw(st.binary(min_size=32, max_size=32)),
        "strata": strata([("disease", levels)]),
        "arms": arms,
        "block_sizes": [m * sum(ratios) for m in multiples],
        "slots_per_stratum": draw(st.integers(0, 40)),
    }


@PROPERTY
@given(designs())
def test_every_generated_list_verifies_clean(design):
    slots = generate_schedule(**design)
    assert (
        verify_schedule(
            slots,
            arms=design["arms"],
            strata=design["strata"],
            block_sizes=design["block_sizes"],
        )
        == []
    )
    for stratum in design["strata"]:
        assert sum(slot.stratum == stratum for slot in slots) >= design["slots_per_stratum"]


@PROPERTY
@given(designs(), st.integers(1, 4))
def test_every_extension_verifies_clean_and_keeps_the_list(design, blocks):
    stratum = design["strata"][0]
    existing = [s for s in generate_schedule(**design) if s.stratum == stratum]
    added = extend_stratum(
        existing,
        seed=design["seed"],
        arms=design["arms"],
        block_sizes=design["block_sizes"],
        blocks=blocks,
        stratum=stratum,
    )
    assert len({slot.block for slot in added}) == blocks
    errors = verify_schedule(
        existing + added, arms=design["arms"], strata=[stratum], block_sizes=design["block_sizes"]
    )
    assert errors == []
