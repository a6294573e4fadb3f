"""Randomization schedules: stratified permuted blocks from a documented seed, and the list's
canonical CSV and fingerprint. Reading and verifying lists: blinding/schedule_import.py.

Algorithm "permuted_blocks/chacha20-rejection-v1", so a statistician can regenerate a list:
  sizes   = the allowed block sizes, ascending, each once
  content = for a block of size s, the arms in code order, each code repeated
            ratio * s / sum(ratios) times
  stream  = Drbg(seed, label="schedule/<stratum>/<number of the first block generated>")
            (blinding/drbg.py): one stream per stratum and per extension, so appending blocks
            later draws from a fresh stream and never changes a slot already generated
  a block = size = sizes[randbelow(len(sizes))] (drawn even when there is one size), then the
            content shuffled by Fisher-Yates: for i = s-1 down to 1, j = randbelow(i + 1), swap
  a list  = blocks appended, numbered on from the first block, until the stratum has at least
            the slots asked for (whole blocks only, so it may have more)
The list is reproducible byte for byte from (seed, strata, arms, block sizes, slots) and, without
the seed, unpredictable: ChaCha20's keystream is indistinguishable from random.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import hmac
import io
import itertools
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence

from blinding.drbg import SEED_BYTES, Drbg

ALGORITHM_VERSION = "permuted_blocks/chacha20-rejection-v1"
NO_STRATIFICATION = "all"  # the one stratum of an unstratified trial
CSV_HEADER = ("stratum", "sequence", "block", "block_size", "arm")
UNKNOWN = 0  # block and block_size of an imported table that carries no block boundaries


@dataclasses.dataclass(frozen=True)
class Slot:
    """One place in a stratum's list: the `sequence`-th subject randomized in `stratum` gets
    `arm`. `block` and `block_size` are 0 when unknown (a REDCap allocation table)."""

    stratum: str
    sequence: int
    block: int
    block_size: int
    arm: str
    # The file row the slot was read from (0 = generated); not part of the slot's identity.
    source_row: int = dataclasses.field(default=0, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class RowError:
    """A fault of one row of a list: the row (a file row; the header is row 1), the field,
    the rule it breaks and a message naming all three."""

    row: int
    field: str
    rule: str
    message: str


class ScheduleError(ValueError):
    """Schedule parameters that cannot make a valid list; names the parameter and the rule."""

    def __init__(self, message: str, *, field: str, rule: str) -> None:
        super().__init__(message)
        self.message, self.field, self.rule = message, field, rule


def row_error(row: int, field: str, rule: str, text: str) -> RowError:
    """A RowError whose message reads "row 7, arm: <text>"."""
    return RowError(row=row, field=field, rule=rule, message=f"row {row}, {field}: {text}")


def shown(value: str, limit: int = 40) -> str:
    """A value quoted for a message, cut short so junk input cannot flood it."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


# --- strata -----------------------------------------------------------------------------------


def strata(factors: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """Every combination of the factors' levels as a canonical key, in factor and level order:
    [("disease", ["RA", "SSc"])] -> ["disease=RA", "disease=SSc"]; no factors -> ["all"]."""
    if not factors:
        return [NO_STRATIFICATION]
    names = [name for name, _ in factors]
    if len(set(names)) != len(names):
        raise ScheduleError("a factor is named twice", field="factors", rule="factor_unique")
    for name, levels in factors:
        for text in (name, *levels):
            if not text or "|" in text or "=" in text:
                raise ScheduleError(
                    f"factor {shown(name)}: {shown(text)} must be non-empty, without '|' or '='",
                    field=name,
                    rule="key_syntax",
                )
        if not levels or len(set(levels)) != len(levels):
            raise ScheduleError(
                f"factor {shown(name)} needs at least one level, each named once",
                field=name,
                rule="levels_unique",
            )
    combinations = itertools.product(*(levels for _, levels in factors))
    return [
        "|".join(f"{n}={lv}" for n, lv in zip(names, combo, strict=True)) for combo in combinations
    ]


def stratum_key(levels: Mapping[str, str], factor_names: Sequence[str]) -> str:
    """The stratum key of one subject's levels, e.g. {"disease": "RA"} -> "disease=RA"."""
    if not factor_names:
        return NO_STRATIFICATION
    for name in factor_names:
        if not levels.get(name):
            raise ScheduleError(f"{name}: a level is required", field=name, rule="level_required")
    return "|".join(f"{name}={levels[name]}" for name in factor_names)


def stratum_levels(key: str) -> dict[str, str]:
    """The levels a stratum key names: "disease=RA|site=01" -> {"disease": "RA", "site": "01"}."""
    if key == NO_STRATIFICATION:
        return {}
    return dict(part.partition("=")[::2] for part in key.split("|"))


# --- generation -------------------------------------------------------------------------------


def _check_parameters(
    seed: bytes, arms: Sequence[tuple[str, int]], block_sizes: Sequence[int]
) -> None:
    if len(seed) != SEED_BYTES:
        raise ScheduleError(
            f"the seed must be {SEED_BYTES} bytes, got {len(seed)}",
            field="seed",
            rule="seed_length",
        )
    codes = [code for code, _ in arms]
    if len(codes) < 2 or len(set(codes)) != len(codes) or not all(codes):
        raise ScheduleError(
            "at least two arms are required, each with its own non-empty code",
            field="arms",
            rule="arms_distinct",
        )
    if not all(isinstance(ratio, int) and ratio >= 1 for _, ratio in arms):
        raise ScheduleError(
            "every arm's ratio must be a whole number >= 1", field="arms", rule="ratio"
        )
    total = sum(ratio for _, ratio in arms)
    if not block_sizes or not all(
        isinstance(s, int) and s >= 1 and s % total == 0 for s in block_sizes
    ):
        raise ScheduleError(
            f"block sizes must be given, each a positive multiple of the ratio sum {total}",
            field="block_sizes",
            rule="block_size_multiple",
        )


def _blocks(
    seed: bytes,
    stratum: str,
    arms: Sequence[tuple[str, int]],
    block_sizes: Sequence[int],
    first_block: int,
) -> Iterator[list[str]]:
    """The stream of blocks (arm codes in allocation order) of one stratum from `first_block`."""
    sizes = sorted(set(block_sizes))
    ordered = sorted(arms)
    total = sum(ratio for _, ratio in arms)
    stream = Drbg(seed, label=f"schedule/{stratum}/{first_block}")
    while True:
        size = stream.choice(sizes)
        content = [code for code, ratio in ordered for _ in range(ratio * size // total)]
        stream.shuffle(content)
        yield content


def _slots(
    blocks: Iterator[list[str]], stratum: str, first_block: int, first_sequence: int, *, until: int
) -> list[Slot]:
    """Number blocks as slots until there are at least `until` slots."""
    slots: list[Slot] = []
    number = first_block
    while len(slots) < until:
        content = next(blocks)
        for arm in content:
            slots.append(Slot(stratum, first_sequence + len(slots), number, len(content), arm))
        number += 1
    return slots


def permuted_blocks(
    *,
    seed: bytes,
    stratum: str,
    arms: Sequence[tuple[str, int]],
    block_sizes: Sequence[int],
    slots: int,
    first_block: int = 1,
    first_sequence: int = 1,
) -> list[Slot]:
    """One stratum's list: whole permuted blocks until at least `slots` slots (see the module)."""
    _check_parameters(seed, arms, block_sizes)
    if not stratum:
        raise ScheduleError("a stratum is required", field="stratum", rule="required")
    for name, value, minimum in (("slots", slots, 0), ("first_block", first_block, 1)):
        if value < minimum:
            raise ScheduleError(f"{name} must be at least {minimum}", field=name, rule="minimum")
    if first_sequence < 1:
        raise ScheduleError(
            "first_sequence must be at least 1", field="first_sequence", rule="minimum"
        )
    blocks = _blocks(seed, stratum, arms, block_sizes, first_block)
    return _slots(blocks, stratum, first_block, first_sequence, until=slots)


# The protocol file's randomization.algorithm -> its generator. Add a method here, by name.
ALGORITHMS: dict[str, Callable[..., list[Slot]]] = {"permuted_blocks": permuted_blocks}


def generate_schedule(
    *,
    seed: bytes,
    strata: Sequence[str],
    arms: Sequence[tuple[str, int]],
    block_sizes: Sequence[int],
    slots_per_stratum: int,
    algorithm: str = "permuted_blocks",
) -> list[Slot]:
    """The whole list: each stratum's slots, in the order the strata are given."""
    generator = ALGORITHMS.get(algorithm)
    if generator is None:
        raise ScheduleError(
            f"{shown(algorithm)} is not a known algorithm ({', '.join(sorted(ALGORITHMS))})",
            field="algorithm",
            rule="algorithm_known",
        )
    if not strata or len(set(strata)) != len(strata):
        raise ScheduleError("strata must be given, each once", field="strata", rule="strata_unique")
    return [
        slot
        for stratum in strata
        for slot in generator(
            seed=seed, stratum=stratum, arms=arms, block_sizes=block_sizes, slots=slots_per_stratum
        )
    ]


def extend_stratum(
    existing: Sequence[Slot],
    *,
    seed: bytes,
    arms: Sequence[tuple[str, int]],
    block_sizes: Sequence[int],
    blocks: int,
    stratum: str | None = None,
) -> list[Slot]:
    """The new slots only: `blocks` whole blocks numbered on after the stratum's last slot, from
    the stream of their first block. `existing` is never changed; `stratum` is needed only when
    `existing` is empty."""
    _check_parameters(seed, arms, block_sizes)
    names = {slot.stratum for slot in existing} | ({stratum} if stratum else set())
    if len(names) != 1:
        raise ScheduleError(
            "the slots to extend must all be of one stratum (name it if there are none)",
            field="existing",
            rule="one_stratum",
        )
    if blocks < 1:
        raise ScheduleError("at least one block must be added", field="blocks", rule="minimum")
    last_block = max((slot.block for slot in existing), default=0)
    if last_block > 0:
        last = [slot for slot in existing if slot.block == last_block]
        if len(last) != last[0].block_size:
            raise ScheduleError(
                f"block {last_block} has {len(last)} of its {last[0].block_size} slots: "
                "complete it before appending blocks",
                field="existing",
                rule="block_complete",
            )
    (name,) = names
    first_sequence = max((slot.sequence for slot in existing), default=0) + 1
    generated = _blocks(seed, name, arms, block_sizes, last_block + 1)
    content = [next(generated) for _ in range(blocks)]
    return _slots(iter(content), name, last_block + 1, first_sequence, until=sum(map(len, content)))


# --- canonical form ---------------------------------------------------------------------------


def canonical_order(slots: Sequence[Slot]) -> list[Slot]:
    """Sorted by stratum (code-point order), then sequence; ties keep their order."""
    return sorted(slots, key=lambda slot: (slot.stratum, slot.sequence))


def serialize(slots: Sequence[Slot]) -> bytes:
    """The canonical CSV (UTF-8, "\\n" line ends, header stratum,sequence,block,block_size,arm):
    the same list always gives the same bytes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for slot in canonical_order(slots):
        writer.writerow([slot.stratum, slot.sequence, slot.block, slot.block_size, slot.arm])
    return buffer.getvalue().encode("utf-8")


FINGERPRINT_LABEL = "iwrs/list-fingerprint/v1"


def fingerprint(slots: Sequence[Slot], *, key: bytes) -> str:
    """HMAC-SHA256 (hex) of the canonical CSV under `key`: one value that identifies the list.

    Keyed, because a list is small: an unkeyed digest of its arms could be brute-forced by anyone
    who reads the database (two arms and 24 subjects are only 2**24 guesses). The key is derived
    from the blinding key (blinding.sealing.derive_key with FINGERPRINT_LABEL), so it is never in
    the database, and a key rotation recomputes every list's fingerprint."""
    if len(key) != 32:
        raise ValueError("the fingerprint key must be 32 bytes")
    return hmac.new(key, serialize(slots), hashlib.sha256).hexdigest()


# --- import and verification live in blinding/schedule_import.py (size); re-exported here so
# callers need one module. Imported late: that module builds on this one.


def verify_schedule(
    slots: Sequence[Slot],
    *,
    arms: Sequence[tuple[str, int]],
    strata: Collection[str],
    block_sizes: Collection[int] | None,
) -> list[RowError]:
    """Every fault of a list, by row; see blinding.schedule_import.verify_schedule."""
    from blinding import schedule_import

    return schedule_import.verify_schedule(slots, arms=arms, strata=strata, block_sizes=block_sizes)


def parse_schedule_csv(
    text: str,
    *,
    arms: Collection[str],
    strata: Collection[str],
    factor_names: Sequence[str],
    redcap_groups: Mapping[str, str] | None = None,
) -> tuple[list[Slot], list[RowError]]:
    """Read a list from CSV text; see blinding.schedule_import.parse_schedule_csv."""
    from blinding import schedule_import

    return schedule_import.parse_schedule_csv(
        text, arms=arms, strata=strata, factor_names=factor_names, redcap_groups=redcap_groups
    )


def import_schedule(
    text: str,
    *,
    arms: Sequence[tuple[str, int]],
    strata: Collection[str],
    factor_names: Sequence[str],
    block_sizes: Collection[int] | None,
    redcap_groups: Mapping[str, str] | None = None,
) -> tuple[list[Slot], list[RowError]]:
    """Read, then verify, a list; see blinding.schedule_import.import_schedule."""
    from blinding import schedule_import

    return schedule_import.import_schedule(
        text,
        arms=arms,
        strata=strata,
        factor_names=factor_names,
        block_sizes=block_sizes,
        redcap_groups=redcap_groups,
    )
