"""Do kit numbers say the treatment? A rank test of kit numbers by treatment (pure python).

Kit numbers must carry no pattern by arm (`blinding.kits`). A vendor who numbers one treatment
low and the other high, or in runs, breaks that even when each number looks random. The test:
Mann-Whitney U (Wilcoxon rank-sum) of the kit numbers of each pair of treatments, two-sided;
with more than two treatments, the smallest p-value over the pairs times the number of pairs
(Bonferroni). Exact distribution of U when n1 * n2 <= EXACT_MAX (numbers are distinct, so no
ties); otherwise the normal approximation with continuity and tie correction.

Numbers can also encode the treatment without ranking it: one treatment on even numbers and the
other on odd ones, interleaved, or a digit that spells the treatment. The rank sums are then
alike, so the test adds, for integer numbers, a chi-square test of independence between the
treatment and each digit position, and between the treatment and the number's residue modulo
2 to 12 (tables over the values that occur). The kit-number test's p-value is the smallest of
the rank test's and these, times how many there were (Bonferroni over all of them).

Decision: the warning threshold is ALPHA = 0.001. A randomly numbered list warns about once in
a thousand imports (a warning asks for a look at the vendor's numbering; it refuses nothing),
while a list of 50 + 50 kits whose lower half holds 30 kits of one arm in a run is caught
(p < 1e-8). Generation redraws its treatment shuffle until the test is quiet, so a generated
list never warns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import combinations

__all__ = [
    "ALPHA",
    "EXACT_MAX",
    "RankTest",
    "chi_square_independence",
    "chi_square_sf",
    "kit_number_rank_test",
    "rank_sum_p_value",
]

ALPHA = 0.001
EXACT_MAX = 400


@dataclass(frozen=True)
class RankTest:
    """The outcome: the two-sided p-value (Bonferroni-adjusted over pairs of treatments) and
    whether it is below ALPHA. It says nothing of which treatment numbers high or low."""

    p_value: float
    warning: bool


@cache
def _u_counts(n1: int, n2: int) -> tuple[int, ...]:
    """How many of the C(n1 + n2, n1) orderings give U = 0 .. n1 * n2."""
    if n1 == 0 or n2 == 0:
        return (1,)
    with_last_of_first = _u_counts(n1 - 1, n2)  # the largest value is of the first sample
    with_last_of_second = _u_counts(n1, n2 - 1)
    counts = [0] * (n1 * n2 + 1)
    for u, ways in enumerate(with_last_of_first):
        counts[u + n2] += ways
    for u, ways in enumerate(with_last_of_second):
        counts[u] += ways
    return tuple(counts)


def _ranks(values: Sequence[int]) -> tuple[list[float], float]:
    """Mid-ranks (1-based) of `values` and the tie term sum(t^3 - t)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    ties = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    return ranks, ties


def rank_sum_p_value(first: Sequence[int], second: Sequence[int]) -> float:
    """Two-sided p-value of the Mann-Whitney U test that the two samples share a distribution.

    1.0 when either sample is empty. Raises nothing for any list of integers."""
    n1, n2 = len(first), len(second)
    if n1 == 0 or n2 == 0:
        return 1.0
    ranks, ties = _ranks([*first, *second])
    u = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    if n1 * n2 <= EXACT_MAX and ties == 0:
        counts = _u_counts(n1, n2)
        total = math.comb(n1 + n2, n1)
        at = round(u)
        below = sum(counts[: at + 1]) / total
        above = sum(counts[at:]) / total
        return min(1.0, 2 * min(below, above))
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:
        return 1.0
    z = max(0.0, abs(u - n1 * n2 / 2) - 0.5) / math.sqrt(variance)
    return min(1.0, math.erfc(z / math.sqrt(2)))


RESIDUES = range(2, 13)


def kit_number_rank_test(
    numbers_by_treatment: Mapping[str, Sequence[int]], *, alpha: float = ALPHA
) -> RankTest:
    """Test whether kit numbers (as integers) differ between treatments: in distribution (rank
    sums over each pair of treatments) or, for integers, in a digit or a residue (chi-square)."""
    pairs = list(combinations(sorted(numbers_by_treatment), 2))
    if not pairs:
        return RankTest(p_value=1.0, warning=False)
    p_values = [
        rank_sum_p_value(numbers_by_treatment[a], numbers_by_treatment[b]) for a, b in pairs
    ]
    p_values += _pattern_p_values(numbers_by_treatment)
    p_value = min(1.0, min(p_values) * len(p_values))
    return RankTest(p_value=p_value, warning=p_value < alpha)


def _pattern_p_values(numbers_by_treatment: Mapping[str, Sequence[int]]) -> list[float]:
    """Chi-square p-values of treatment against each digit position and each residue."""
    rows = sorted(numbers_by_treatment)
    values = [n for r in rows for n in numbers_by_treatment[r]]
    if not values or not all(isinstance(n, int) and n >= 0 for n in values):
        return []
    width = max(len(str(n)) for n in values)
    features: list[Callable[[int], int]] = [_digit(i, width) for i in range(width)]
    features += [_residue(m) for m in RESIDUES]
    return [
        chi_square_independence([[f(n) for n in numbers_by_treatment[r]] for r in rows])
        for f in features
    ]


def _digit(position: int, width: int) -> Callable[[int], int]:
    return lambda n: int(str(n).zfill(width)[position])


def _residue(modulus: int) -> Callable[[int], int]:
    return lambda n: n % modulus


def chi_square_independence(samples: Sequence[Sequence[int]]) -> float:
    """The p-value of Pearson's chi-square test that the category counts of the samples (one
    sample per treatment, each a list of category values) come from one distribution. 1.0 when
    fewer than two samples or categories occur."""
    samples = [s for s in samples if s]
    categories = sorted({c for s in samples for c in s})
    if len(samples) < 2 or len(categories) < 2:
        return 1.0
    n = sum(len(s) for s in samples)
    column = {c: sum(s.count(c) for s in samples) for c in categories}
    statistic = 0.0
    for sample in samples:
        for c in categories:
            expected = len(sample) * column[c] / n
            statistic += (sample.count(c) - expected) ** 2 / expected
    return chi_square_sf(statistic, (len(samples) - 1) * (len(categories) - 1))


def chi_square_sf(x: float, df: int) -> float:
    """P(X >= x) for X chi-square with `df` degrees of freedom (regularized upper gamma)."""
    if x <= 0:
        return 1.0
    a, z = df / 2, x / 2
    log_front = -z + a * math.log(z) - math.lgamma(a)
    if z < a + 1:  # series for the lower gamma
        term = total = 1 / a
        k = 1
        while term > total * 1e-15:
            term *= z / (a + k)
            total += term
            k += 1
        return min(1.0, max(0.0, 1 - total * math.exp(log_front)))
    # Lentz's continued fraction for the upper gamma
    tiny = 1e-300
    b = z + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        step = d * c
        h *= step
        if abs(step - 1) < 1e-15:
            break
    return min(1.0, max(0.0, math.exp(log_front) * h))
