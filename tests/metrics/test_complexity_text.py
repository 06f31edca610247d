"""Text-only complexity measures: hand values and degenerate input."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qdc_trainer.metrics import compression_complexity, lengths, reasoning_steps, repetition_rate


def test_lengths_words_and_token_sequences():
    assert lengths(["one two  three", "", "x"]).tolist() == [3.0, 0.0, 1.0]
    assert lengths([[1, 2, 3], np.array([4, 5])]).tolist() == [3.0, 2.0]
    with pytest.raises(ValueError, match="empty"):
        lengths([])
    with pytest.raises(TypeError, match=r"texts\[0\] is dict"):
        lengths([{"a": 1}])


def test_reasoning_steps_default_and_custom_pattern():
    solution = "Add 2 and 3: 5.\nMultiply by 4: 20.\n\nThe answer is 20."
    assert reasoning_steps([solution]).tolist() == [3.0]
    assert reasoning_steps(["One. Two! Three? Four; five"]).tolist() == [5.0]
    assert reasoning_steps(["", "   ", "42"]).tolist() == [0.0, 0.0, 1.0]
    custom = "Step 1: add. Step 2: multiply. Step 3: answer."
    assert reasoning_steps([custom], pattern=r"Step \d+:").tolist() == [3.0]
    # Decimal points are not sentence ends.
    assert reasoning_steps(["3.5 + 1.5 = 5.0"]).tolist() == [1.0]


def test_compression_complexity_hand_value():
    text = "the quick brown fox jumps over the lazy dog"
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    expected = len(packer.compress(text.encode()) + packer.flush()) / len(text.encode())
    assert compression_complexity([text]).tolist() == [pytest.approx(expected)]
    assert compression_complexity([""]).tolist() == [0.0]
    values = compression_complexity(["ab" * 200, text])
    assert values[0] < 0.1 < values[1]


def test_repetition_rate_hand_values():
    # bigrams of "a b a b a b": ab ba ab ba ab -> 2 unique of 5 -> 3/5 repeat
    assert repetition_rate(["a b a b a b", "a b c d", "a"], n=2).tolist() == [pytest.approx(0.6), 0.0, 0.0]
    assert repetition_rate(["", "x x x x"], n=1).tolist() == [0.0, pytest.approx(0.75)]
    with pytest.raises(ValueError, match="n must be >= 1"):
        repetition_rate(["a"], n=0)


@given(
    st.lists(st.lists(st.sampled_from("abcde"), max_size=15).map(" ".join), min_size=1, max_size=6), st.integers(1, 3)
)
@settings(max_examples=100, deadline=None)
def test_repetition_rate_matches_definition(texts, n):
    expected = []
    for t in texts:
        toks = t.split()
        grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
        expected.append(1 - len(set(grams)) / len(grams) if grams else 0.0)
    assert repetition_rate(texts, n) == pytest.approx(np.array(expected))
    assert all(0.0 <= v < 1.0 for v in repetition_rate(texts, n))
