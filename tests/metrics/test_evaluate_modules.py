"""The evaluate measurements shipped in qdc_trainer/measurements load offline and match the direct functions."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from qdc_trainer.metrics import (
    EVALUATE_MODULES,
    compression_complexity,
    compression_ratio,
    distinct_n,
    duplicate_rate,
    ead,
    evaluate_module_path,
    lengths,
    ngram_entropy,
    reasoning_steps,
    repetition_rate,
    self_bleu,
)

TEXTS = [
    "the cat sat on the mat",
    "the cat sat on the mat",
    "a dog ran in the park. then it ran home!",
    "first add 2 and 3 to get 5.\nthen multiply 5 by 4 to get 20.\nthe answer is 20.",
    "",
    "spam spam spam spam spam spam",
]


@pytest.fixture(scope="module")
def diversity():
    import evaluate

    assert os.environ.get("HF_EVALUATE_OFFLINE") == "1"  # set by conftest: nothing is fetched
    return evaluate.load(evaluate_module_path("qdc_diversity"))


@pytest.fixture(scope="module")
def complexity():
    import evaluate

    return evaluate.load(evaluate_module_path("qdc_complexity"))


def test_module_paths():
    assert EVALUATE_MODULES == ("qdc_diversity", "qdc_complexity")
    for name in EVALUATE_MODULES:
        path = Path(evaluate_module_path(name))
        assert path.is_dir() and path.name == name
        assert (path / f"{name}.py").is_file()
    assert Path(evaluate_module_path()).name == "qdc_diversity"
    with pytest.raises(ValueError, match="unknown measurement"):
        evaluate_module_path("qdc_quality")


def test_diversity_module_matches_functions(diversity):
    out = diversity.compute(data=TEXTS)
    expected = {f"distinct_{n}": distinct_n(TEXTS, n) for n in range(1, 5)}
    expected.update(
        ngram_entropy_1=ngram_entropy(TEXTS, 1),
        duplicate_rate=duplicate_rate(TEXTS),
        self_bleu=self_bleu(TEXTS, max_n=4),
        compression_ratio=compression_ratio(TEXTS),
    )
    assert set(out) == set(expected)
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    assert out["duplicate_rate"] > 0  # the repeated text is seen


def test_diversity_module_options(diversity):
    out = diversity.compute(data=TEXTS, max_n=2, vocab_size=50)
    assert set(out) == {
        "distinct_1",
        "distinct_2",
        "ead_1",
        "ead_2",
        "ngram_entropy_1",
        "duplicate_rate",
        "self_bleu",
        "compression_ratio",
    }
    for n in (1, 2):
        assert out[f"ead_{n}"] == pytest.approx(ead(TEXTS, n, vocab_size=50), rel=1e-12)
        assert out[f"distinct_{n}"] == pytest.approx(distinct_n(TEXTS, n), rel=1e-12)
    assert out["self_bleu"] == pytest.approx(self_bleu(TEXTS, max_n=2), rel=1e-12)
    assert out["self_bleu"] != pytest.approx(self_bleu(TEXTS, max_n=4), rel=1e-6)  # max_n really reaches self-BLEU


def test_diversity_module_hand_values_and_omissions(diversity):
    assert diversity.compute(data=["the cat sat", "the cat ran"])["distinct_1"] == pytest.approx(4 / 6)
    one = diversity.compute(data=["a b"])
    assert "self_bleu" not in one  # fewer than two texts
    assert one["distinct_1"] == 1.0
    blank = diversity.compute(data=["", " "])
    assert "compression_ratio" not in blank  # all texts empty
    assert blank["distinct_1"] == distinct_n(["", " "], 1)


def test_diversity_module_empty_input_raises(diversity):
    with pytest.raises(ValueError, match="empty"):
        diversity.compute(data=[])


def test_complexity_module_matches_functions(complexity):
    out = complexity.compute(data=TEXTS)
    expected = {
        "length": lengths(TEXTS),
        "steps": reasoning_steps(TEXTS),
        "compression": compression_complexity(TEXTS),
        "repetition": repetition_rate(TEXTS, 3),
    }
    assert set(out) == set(expected) | {f"mean_{k}" for k in expected}
    for key, values in expected.items():
        np.testing.assert_allclose(out[key], values, rtol=1e-12, atol=0)
        assert out[f"mean_{key}"] == pytest.approx(float(np.mean(values)), rel=1e-12)
    assert out["length"] == [6.0, 6.0, 10.0, 20.0, 0.0, 6.0]  # whitespace words, by hand
    assert out["steps"] == [1.0, 1.0, 2.0, 3.0, 0.0, 1.0]


def test_complexity_module_repetition_order(complexity):
    out = complexity.compute(data=["a b a b a b", "a b c d"], repetition_n=2)
    assert out["repetition"] == pytest.approx([0.6, 0.0])
    np.testing.assert_allclose(out["repetition"], repetition_rate(["a b a b a b", "a b c d"], 2))
    assert complexity.compute(data=["1 + 1 = 2.", "a b"])["length"] == [5.0, 2.0]
