"""Diversity metrics: hand-computed values, reference implementations, properties, bad input."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qdc_trainer.metrics import (
    GroupedDiversity,
    compression_ratio,
    distinct_n,
    duplicate_rate,
    ead,
    grouped_diversity,
    mean_nearest_neighbor_distance,
    mean_pairwise_cosine_distance,
    nearest_neighbor_distances,
    ngram_entropy,
    self_bleu,
    vendi_score,
    vendi_score_from_kernel,
)

# ----------------------------------------------------------------------------- references


def nltk_self_bleu(texts: list[list], max_n: int = 4) -> float:
    """Leave-one-out self-BLEU with NLTK's sentence_bleu, the reference."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    smooth = SmoothingFunction().method1
    weights = (1.0 / max_n,) * max_n
    scores = [
        sentence_bleu([t for j, t in enumerate(texts) if j != i], h, weights=weights, smoothing_function=smooth)
        for i, h in enumerate(texts)
    ]
    return float(np.mean(scores))


def distinct_by_definition(texts: list[str], n: int) -> float:
    grams = [tuple(t.split()[i : i + n]) for t in texts for i in range(len(t.split()) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


word = st.sampled_from(["a", "b", "c", "d", "e", "cat", "dog", "1", "+", "="])
text_strategy = st.lists(word, min_size=0, max_size=12).map(" ".join)
texts_strategy = st.lists(text_strategy, min_size=2, max_size=8)


# ----------------------------------------------------------------------------- distinct-n, EAD, entropy, duplicates


def test_distinct_n_hand_values():
    texts = ["the cat sat", "the cat ran"]
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)  # the, cat, sat, ran over 6 tokens
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)  # (the cat) twice, (cat sat), (cat ran)
    assert distinct_n(texts, 3) == pytest.approx(2 / 2)


def test_distinct_n_does_not_cross_text_boundaries():
    # Joined, "b a" would be a bigram; per text there is none.
    assert distinct_n(["a b", "a b"], 2) == pytest.approx(1 / 2)


def test_distinct_n_token_ids_and_strings_agree():
    assert distinct_n([[1, 2, 3], [1, 2, 4]], 2) == distinct_n(["1 2 3", "1 2 4"], 2)
    assert distinct_n([np.array([1, 2, 3]), (1, 2, 4)], 2) == pytest.approx(3 / 4)


@given(texts_strategy, st.integers(1, 4))
@settings(max_examples=150, deadline=None)
def test_distinct_n_matches_definition(texts, n):
    assert distinct_n(texts, n) == pytest.approx(distinct_by_definition(texts, n))


def test_distinct_n_degenerate_inputs():
    assert distinct_n(["a", "b"], 3) == 0.0  # texts shorter than n: no n-gram, defined as 0
    assert distinct_n(["", ""], 1) == 0.0
    with pytest.raises(ValueError, match="empty"):
        distinct_n([], 1)
    with pytest.raises(TypeError, match="single string"):
        distinct_n("the cat sat", 1)
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        distinct_n(["a b", 3], 1)
    with pytest.raises(ValueError, match="n must be >= 1"):
        distinct_n(["a b"], 0)
    with pytest.raises(TypeError, match="n must be an int"):
        distinct_n(["a b"], 1.5)
    with pytest.raises(ValueError, match="non-finite"):
        distinct_n([[1.0, float("nan")]], 1)


def test_ead_hand_value_and_limits():
    # D = 3 unique of C = 4 tokens, V = 3: expected = 3 * (1 - (2/3)^4) = 195/81.
    assert ead(["a b", "a c"], 1, vocab_size=3) == pytest.approx(3 / (195 / 81))
    # For C << V the expectation is ~C, so EAD ~ distinct-n.
    texts = ["the cat sat on the mat", "a dog ran in the park"]
    assert ead(texts, 2, vocab_size=10**9) == pytest.approx(distinct_n(texts, 2), rel=1e-6)
    assert ead(["a"], 2, vocab_size=100) == 0.0
    with pytest.raises(TypeError):
        ead(texts, 2)  # vocab_size is required
    with pytest.raises(ValueError, match="vocab_size"):
        ead(texts, 2, vocab_size=0)


def test_ead_rejects_a_vocabulary_smaller_than_the_tokens_seen():
    # "a b" and "a c" hold 3 distinct tokens: a vocabulary of 2 cannot have produced them.
    with pytest.raises(ValueError, match=r"vocab_size=2 is smaller than the 3 distinct tokens"):
        ead(["a b", "a c"], 2, vocab_size=2)
    with pytest.raises(ValueError, match=r"vocab_size=1 is smaller than the 2 distinct tokens"):
        ead([[7, 9]], 3, vocab_size=1)  # also when there is no 3-gram to count
    # exactly the tokens seen: D = 3 of C = 4 unigrams, expected 3 * (1 - (2/3)^4) = 195/81 (as above)
    assert ead(["a b", "a c"], 1, vocab_size=3) == pytest.approx(3 * 81 / 195)


def test_ead_corrects_for_length():
    rng = random.Random(0)
    vocab = [str(i) for i in range(50)]
    short = [" ".join(rng.choices(vocab, k=10)) for _ in range(5)]
    long = [" ".join(rng.choices(vocab, k=200)) for _ in range(5)]
    # Uniform random text: distinct-1 collapses with length, EAD stays near 1.
    assert distinct_n(long, 1) < 0.1 < 0.6 < distinct_n(short, 1)
    assert ead(long, 1, vocab_size=50) == pytest.approx(1.0, abs=0.05)
    assert ead(short, 1, vocab_size=50) == pytest.approx(1.0, abs=0.15)


def test_ngram_entropy_hand_values():
    assert ngram_entropy(["a a a a"], 1) == 0.0
    assert ngram_entropy(["a b", "c d"], 1) == pytest.approx(math.log(4))
    # p = (1/2, 1/4, 1/4)
    assert ngram_entropy(["a a b c"], 1) == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert ngram_entropy(["a"], 2) == 0.0


def test_duplicate_rate():
    assert duplicate_rate(["a b", "a  b", "c"]) == pytest.approx(1 / 3)
    assert duplicate_rate(["x"] * 4) == pytest.approx(3 / 4)
    assert duplicate_rate(["a", "b"]) == 0.0
    assert duplicate_rate(["", ""]) == pytest.approx(1 / 2)


# ----------------------------------------------------------------------------- self-BLEU


def test_self_bleu_hand_value():
    # Hypothesis "a b" vs reference "a c": p1 = 1/2, p2 = 0 -> smoothed 0.1/1, p3, p4: no n-grams,
    # denominator max(1, 0) = 1 -> 0.1. Same length -> BP = 1. Symmetric, so the mean equals one score.
    expected = math.exp((math.log(0.5) + 3 * math.log(0.1)) / 4)
    assert self_bleu(["a b", "a c"]) == pytest.approx(expected)


def test_self_bleu_extremes():
    assert self_bleu(["the cat sat on the mat"] * 3) == pytest.approx(1.0)
    assert self_bleu(["a b c d", "e f g h"]) == 0.0
    assert self_bleu(["", "a b"]) == 0.0


def test_self_bleu_is_leave_one_out():
    # Texygen-style self-BLEU would include each text in its own references and give 1.0 here.
    assert self_bleu(["a b c d", "e f g h", "i j k l"]) == 0.0


@given(texts_strategy, st.integers(1, 4))
@settings(max_examples=150, deadline=None)
def test_self_bleu_matches_nltk(texts, max_n):
    expected = nltk_self_bleu([t.split() for t in texts], max_n)
    assert self_bleu(texts, max_n=max_n) == pytest.approx(expected, abs=1e-9)


def test_self_bleu_matches_nltk_on_realistic_texts():
    rng = np.random.default_rng(1)
    vocab = np.array([f"w{i}" for i in range(300)])
    p = 1.0 / np.arange(1, 301)
    p /= p.sum()
    texts = [list(rng.choice(vocab, size=rng.integers(20, 60), p=p)) for _ in range(60)]
    assert self_bleu(texts) == pytest.approx(nltk_self_bleu(texts), abs=1e-9)


def test_self_bleu_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        self_bleu(["only one"])
    with pytest.raises(ValueError, match="empty"):
        self_bleu([])
    with pytest.raises(ValueError, match="max_n"):
        self_bleu(["a", "b"], max_n=0)


# ----------------------------------------------------------------------------- compression


def test_compression_ratio_in_memory_gzip():
    import gzip

    texts = ["the cat sat on the mat"] * 50
    data = " ".join(texts).encode()
    assert compression_ratio(texts) == len(data) / len(gzip.compress(data, compresslevel=6, mtime=0))
    assert compression_ratio(texts, level=9) == len(data) / len(gzip.compress(data, compresslevel=9, mtime=0))
    assert compression_ratio(texts) > 10 > compression_ratio(["a quick brown fox", "jumps over 12 lazy dogs"])
    assert compression_ratio([[1, 2], [1, 2]]) == compression_ratio(["1 2", "1 2"])


def test_compression_ratio_writes_no_files(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    compression_ratio(["x y z"] * 10)
    assert list(tmp_path.iterdir()) == []


def test_compression_ratio_bad_input():
    with pytest.raises(ValueError, match="nothing to compress"):
        compression_ratio(["", " "])
    with pytest.raises(ValueError, match="empty"):
        compression_ratio([])


# ----------------------------------------------------------------------------- Vendi


def unit_rows(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("n,d", [(30, 8), (8, 30), (20, 20)])
@pytest.mark.parametrize("q", [0.5, 1, 2, "inf"])
def test_vendi_matches_reference_kernel_form(n, d, q):
    from vendi_score import vendi

    x = np.random.default_rng(n * d).normal(size=(n, d))
    k = unit_rows(x) @ unit_rows(x).T
    expected = vendi.score_K(k, q=q)
    # For q < 1 the reference also counts floating-point noise eigenvalues (~1e-17) of a rank-deficient
    # kernel, which moves it by ~1e-8 relative; we treat those as zero.
    assert vendi_score(x, q=q) == pytest.approx(expected, rel=1e-6)
    assert vendi_score_from_kernel(k, q=q) == pytest.approx(expected, rel=1e-6)
    if q in (1, 2, "inf"):
        assert vendi_score(x, q=q) == pytest.approx(expected, rel=1e-9)


def test_vendi_hand_values():
    assert vendi_score(np.eye(5)) == pytest.approx(5.0)
    assert vendi_score(np.ones((4, 3))) == pytest.approx(1.0)
    # Two identical rows and one orthogonal: eigenvalues of K/3 are 2/3 and 1/3.
    x = np.array([[1.0, 0], [1.0, 0], [0, 1.0]])
    h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert vendi_score(x) == pytest.approx(math.exp(h))
    assert vendi_score(x, q=2) == pytest.approx(1 / ((2 / 3) ** 2 + (1 / 3) ** 2))
    assert vendi_score(x, q=math.inf) == pytest.approx(1.5)
    assert vendi_score(x, q=0) == 2.0  # rank
    assert vendi_score(np.eye(6), q=0) == 6.0


def test_embedding_measures_survive_huge_and_tiny_rows():
    # Orthogonal directions whose norms overflow (1e300 * sqrt 2 > float max) or underflow when squared.
    for scale in (1e300, 1e-300, 1e-320):
        x = np.array([[1.0, 1.0], [1.0, -1.0]]) * scale
        assert vendi_score(x) == pytest.approx(2.0)
        assert mean_pairwise_cosine_distance(x) == pytest.approx(1.0)
        assert nearest_neighbor_distances(x).tolist() == pytest.approx([1.0, 1.0])
    same = np.array([[1e300, 1e300], [3e300, 3e300]])  # one direction
    assert vendi_score(same) == pytest.approx(1.0) and mean_pairwise_cosine_distance(same) == pytest.approx(0.0)


def test_vendi_q0_ignores_numerical_noise():
    # 50 points in a 3-dim subspace of R^20: rank 3 even though float eigenvalues are not exactly 0.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3)) @ rng.normal(size=(3, 20))
    assert vendi_score(x, q=0) == 3.0


def test_vendi_kernel_normalize():
    k = np.array([[4.0, 0.0], [0.0, 9.0]])
    assert vendi_score_from_kernel(k, normalize=True) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="diagonal must be 1"):
        vendi_score_from_kernel(k)


def test_vendi_bad_input():
    with pytest.raises(ValueError, match="NaN or inf"):
        vendi_score(np.array([[1.0, np.nan], [0, 1]]))
    with pytest.raises(ValueError, match="NaN or inf"):
        vendi_score(np.array([[1.0, np.inf], [0, 1]]))
    with pytest.raises(ValueError, match="all-zero rows"):
        vendi_score(np.array([[0.0, 0.0], [0, 1]]))
    with pytest.raises(ValueError, match="2-D"):
        vendi_score(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="at least 1"):
        vendi_score(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="q must be >= 0"):
        vendi_score(np.eye(2), q=-1)
    with pytest.raises(TypeError, match="q must be"):
        vendi_score(np.eye(2), q="two")
    with pytest.raises(ValueError, match="symmetric"):
        vendi_score_from_kernel(np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="square"):
        vendi_score_from_kernel(np.ones((2, 3)))
    with pytest.raises(ValueError, match="positive semi-definite"):
        vendi_score_from_kernel(np.array([[1.0, 2.0], [2.0, 1.0]]))


def test_vendi_accepts_torch_tensors():
    import torch

    assert vendi_score(torch.eye(3)) == pytest.approx(3.0)


# ----------------------------------------------------------------------------- embedding distances


def test_pairwise_cosine_distance_matches_loop():
    x = np.random.default_rng(3).normal(size=(12, 5))
    u = unit_rows(x)
    pairs = [1 - u[i] @ u[j] for i in range(12) for j in range(12) if i != j]
    assert mean_pairwise_cosine_distance(x) == pytest.approx(np.mean(pairs))


def test_nearest_neighbor_distance_matches_loop_and_chunks():
    x = np.random.default_rng(4).normal(size=(25, 4))
    u = unit_rows(x)
    expected = np.mean([min(1 - u[i] @ u[j] for j in range(25) if j != i) for i in range(25)])
    assert mean_nearest_neighbor_distance(x) == pytest.approx(expected)
    assert mean_nearest_neighbor_distance(x, chunk_size=7) == pytest.approx(expected)


def test_embedding_distances_degenerate():
    assert mean_pairwise_cosine_distance(np.ones((3, 2))) == pytest.approx(0.0, abs=1e-12)
    assert mean_nearest_neighbor_distance(np.ones((3, 2))) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        mean_pairwise_cosine_distance(np.ones((1, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        mean_nearest_neighbor_distance(np.ones((1, 2)))


# ----------------------------------------------------------------------------- grouped


def test_grouped_diversity_hand_values():
    groups = [["a b", "a b"], ["c d", "e f"]]
    result = grouped_diversity(groups, lambda t: distinct_n(t, 1))
    # per input: (2/4 + 4/4) / 2; across input: ["a b", "c d"] and ["a b", "e f"] are both all-distinct.
    assert result == GroupedDiversity(per_input=0.75, across_input=1.0)


def test_grouped_diversity_collapse_within_but_not_across():
    # Each prompt always gets the same answer (per-input collapse), but prompts differ (across-input diverse).
    groups = [[f"x{i} y{i} z{i} w{i}"] * 3 for i in range(3)]
    result = grouped_diversity(groups, self_bleu)
    assert result.per_input == pytest.approx(1.0)
    assert result.across_input == 0.0


def test_grouped_diversity_on_embeddings():
    groups = [np.eye(3)[[0, 0]], np.eye(3)[[1, 2]]]
    result = grouped_diversity(groups, vendi_score)
    assert result.per_input == pytest.approx((1.0 + 2.0) / 2)
    assert result.across_input == pytest.approx(2.0)


def test_grouped_diversity_bad_input():
    with pytest.raises(ValueError, match="fewer than 2 samples"):
        grouped_diversity([["a", "b"], ["c"]], distinct_n)
    with pytest.raises(ValueError, match="at least 2 prompts"):
        grouped_diversity([["a", "b"]], distinct_n)


# ----------------------------------------------------------------------------- properties


@given(texts_strategy)
@settings(max_examples=100, deadline=None)
def test_bounds(texts):
    for n in (1, 2):
        assert 0.0 <= distinct_n(texts, n) <= 1.0
    assert 0.0 <= self_bleu(texts) <= 1.0 + 1e-12
    assert 0.0 <= duplicate_rate(texts) < 1.0
    assert ngram_entropy(texts, 1) >= 0.0


@given(texts_strategy, st.randoms(use_true_random=False))
@settings(max_examples=100, deadline=None)
def test_permutation_invariance(texts, rnd):
    shuffled = list(texts)
    rnd.shuffle(shuffled)
    assert distinct_n(shuffled, 2) == pytest.approx(distinct_n(texts, 2))
    assert self_bleu(shuffled) == pytest.approx(self_bleu(texts))
    assert ngram_entropy(shuffled, 1) == pytest.approx(ngram_entropy(texts, 1))
    assert duplicate_rate(shuffled) == pytest.approx(duplicate_rate(texts))


@given(st.lists(word, min_size=4, max_size=10).map(" ".join), st.integers(2, 6))
@settings(max_examples=60, deadline=None)
def test_identical_texts_are_minimally_diverse(text, k):
    texts = [text] * k
    assert self_bleu(texts) == pytest.approx(1.0)
    assert duplicate_rate(texts) == pytest.approx((k - 1) / k)
    assert distinct_n(texts, 1) <= 1.0 / k + 1e-12
    assert compression_ratio(texts * 20) > compression_ratio([text])


@given(st.integers(2, 12), st.integers(2, 12), st.integers(0, 10_000))
@settings(max_examples=60, deadline=None)
def test_vendi_bounds_and_permutation(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d))
    score = vendi_score(x)
    assert 1.0 - 1e-9 <= score <= min(n, d) + 1e-9
    assert vendi_score(x[::-1]) == pytest.approx(score)
    assert vendi_score(np.repeat(x[:1], n, axis=0)) == pytest.approx(1.0)
    assert 0.0 <= mean_pairwise_cosine_distance(x) <= 2.0


# --------------------------------------------------------------------------- fast pairwise paths


def _nearest_float64_reference(x):
    """The search as it was: every pair in float64, ``1 - max similarity`` per row."""
    x = np.asarray(x, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    return np.clip(1.0 - sim.max(axis=1), 0.0, 2.0)


@pytest.mark.parametrize("n,d,chunk", [(2, 3, 2048), (37, 5, 8), (300, 64, 64), (301, 16, 100), (1000, 384, 256)])
def test_tiled_nearest_neighbours_match_the_float64_search(n, d, chunk):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d))
    if n > 10:
        x[3] = x[9] * 2.0  # a duplicate direction
        x[4] = x[5] + 1e-3 * rng.normal(size=d)  # a near duplicate
    got = nearest_neighbor_distances(x, chunk_size=chunk)
    want = _nearest_float64_reference(x)
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)
    if n > 10:
        assert got[3] < 1e-6 and got[9] < 1e-6
    assert mean_nearest_neighbor_distance(x, chunk_size=chunk) == pytest.approx(want.mean(), abs=2e-6)


@pytest.mark.parametrize("n,d", [(50, 8), (8, 50), (200, 200)])
def test_vendi_q2_without_an_eigenproblem_equals_the_spectrum(n, d):
    x = np.random.default_rng(d).normal(size=(n, d))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    eigenvalues = np.clip(np.linalg.eigvalsh(xn @ xn.T / n), 0, None)
    p = eigenvalues / eigenvalues.sum()
    assert vendi_score(x, q=2) == pytest.approx(1.0 / (p**2).sum(), rel=1e-10)
    assert vendi_score(x, q=2) == pytest.approx(vendi_score_from_kernel(xn @ xn.T, q=2), rel=1e-10)
