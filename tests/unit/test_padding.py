"""Arm-independent lengths (blinding/padding.py): whatever the labels and counts, a value plus
its padding always takes the same room."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blinding.padding import count_padding, counts_padding, label_padding, utf8_length

LABELS = st.lists(st.text(min_size=1, max_size=30), min_size=2, max_size=5, unique=True)


@given(LABELS, st.data())
def test_every_label_with_its_padding_takes_the_room_of_the_widest(labels, data):
    for measure in (utf8_length, lambda text: len(json.dumps(text))):
        chosen = data.draw(st.sampled_from(labels))
        room = {measure(label) + label_padding(label, labels, measure=measure) for label in labels}
        assert room == {max(measure(label) for label in labels)}
        assert label_padding(chosen, labels, measure=measure) >= 0


@given(st.integers(min_value=0, max_value=10**6), st.data())
def test_counts_that_share_a_total_always_take_the_same_room(total, data):
    first = data.draw(st.integers(min_value=0, max_value=total))
    split = [first, total - first]
    room = sum(len(str(n)) for n in split) + counts_padding(split, total)
    assert room == 2 * len(str(total))
    assert count_padding(first, total) == len(str(total)) - len(str(first))


def test_multibyte_labels_are_measured_in_bytes():
    labels = ["安慰剂", "Genakumab"]
    assert label_padding("安慰剂", labels) == 0  # 9 UTF-8 bytes, as many as "Genakumab"
    assert label_padding("Genakumab", ["Placebo", "Genakumab"]) == 0
    assert label_padding("Placebo", ["Placebo", "Genakumab"]) == 2


def test_unknown_labels_and_impossible_counts_are_refused():
    with pytest.raises(ValueError):
        label_padding("X", ["A", "P"])
    with pytest.raises(ValueError):
        count_padding(5, 4)
    with pytest.raises(ValueError):
        count_padding(-1, 4)
