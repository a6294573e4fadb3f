"""Arm-independent lengths: how much padding makes an answer's size say nothing about the arms.

An answer that shows arms (the arm of a subject, allocations by arm) would otherwise differ in
length with them, "Placebo" being shorter than "Genakumab" and 9 shorter than 10, and lengths
are seen by people who never see the text (access logs, TLS record sizes). So each
arm-dependent value is given the room of its widest possible value:
  a label  takes the room of the protocol's widest label of its kind (codes or names), measured
           in bytes of the answer's encoding (after HTML or JSON escaping, UTF-8);
  a count  takes the room of the arm-independent total it is a part of (the subjects of a
           stratum, of the trial): len(str(total)) digits.
The padding goes where the format ignores it: spaces after the value in HTML, insignificant
whitespace after a JSON document, a trailing `padding` column of spaces in CSV. The values
themselves are never altered. Pure functions; callers supply the measure of their encoding.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

Measure = Callable[[str], int]


def utf8_length(text: str) -> int:
    """The length of `text` in UTF-8 bytes (the measure of a CSV field or plain text)."""
    return len(text.encode("utf-8"))


def label_padding(label: str, labels: Collection[str], *, measure: Measure = utf8_length) -> int:
    """Bytes to add after `label` so it takes the room of the widest of `labels` (the
    protocol's labels of that kind). ValueError if `label` is not one of them."""
    if label not in labels:
        raise ValueError("the label is not one of the protocol's labels")
    return max(measure(other) for other in labels) - measure(label)


def count_padding(count: int, total: int) -> int:
    """Bytes to add to a per-arm `count` so it takes the room of `total`, the arm-independent
    sum it is part of (0 <= count <= total)."""
    if not 0 <= count <= total:
        raise ValueError("a per-arm count lies between 0 and its total")
    return len(str(total)) - len(str(count))


def counts_padding(counts: Iterable[int], total: int) -> int:
    """The padding of several per-arm counts that share one total (a stratum's row)."""
    return sum(count_padding(count, total) for count in counts)
