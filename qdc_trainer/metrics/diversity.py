"""Diversity of a collection of texts, token sequences or embeddings.

All functions are pure: a list in, a float out. Strings are split on whitespace;
pass token-id sequences to measure at the tokenizer's granularity. Degenerate
input either has a defined value (documented on each function, with the reason)
or raises ``ValueError`` / ``TypeError`` with a message that says what to fix.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._inputs import Corpus, TextLike, as_matrix, as_strings, check_list, check_order, count_distinct, l2_normalize

__all__ = [
    "distinct_n",
    "ead",
    "ngram_entropy",
    "duplicate_rate",
    "self_bleu",
    "self_bleu_scores",
    "compression_ratio",
    "vendi_score",
    "vendi_score_from_kernel",
    "mean_pairwise_cosine_distance",
    "mean_nearest_neighbor_distance",
    "nearest_neighbor_distances",
    "GroupedDiversity",
    "grouped_diversity",
]


# --------------------------------------------------------------------------- n-gram counts


def distinct_n(texts: Sequence[TextLike], n: int = 2) -> float:
    """Distinct-n: unique n-grams divided by all n-grams, over the whole collection.

    N-grams never cross text boundaries. Range [0, 1]; higher is more diverse.
    If no text has ``n`` tokens there is no n-gram at all and the value is 0.0
    (nothing was said, so nothing distinct was said). An empty list raises.

    >>> distinct_n(["the cat sat", "the cat ran"], n=1)
    0.6666666666666666
    >>> distinct_n(["the cat sat", "the cat ran"], n=2)
    0.75
    """
    doc, key = Corpus.from_texts(texts).ngram_keys(n)
    if len(key) == 0:
        return 0.0
    return count_distinct(key) / len(key)


def ead(texts: Sequence[TextLike], n: int = 2, *, vocab_size: int) -> float:
    """Expectation-adjusted distinct n-grams (EAD; Liu et al., ACL 2022).

    Distinct-n falls as texts get longer even when every token is drawn
    uniformly at random. EAD divides the number of unique n-grams ``D`` by the
    number expected from ``C`` uniform draws over a vocabulary of ``V``:
    ``EAD = D / (V * (1 - ((V - 1) / V) ** C))``.

    ``vocab_size`` is required: use the tokenizer's vocabulary size for token
    ids, or a fixed vocabulary size for words. Values are comparable only
    between collections measured with the same ``vocab_size`` (with the
    collection's own vocabulary the expectation saturates and the value means
    little). Returns 0.0 when there is no n-gram (as ``distinct_n``). A
    ``vocab_size`` smaller than the number of distinct tokens in ``texts`` cannot
    be the vocabulary they were drawn from, and raises ``ValueError``.

    >>> round(ead(["a b", "a c"], n=1, vocab_size=3), 4)
    1.2462
    """
    v = check_order(vocab_size, "vocab_size")
    corpus = Corpus.from_texts(texts)
    seen = count_distinct(corpus.tokens)
    if seen > v:
        raise ValueError(
            f"vocab_size={v} is smaller than the {seen} distinct tokens in texts; pass the size of the vocabulary "
            "the texts come from (for token ids, len(tokenizer))"
        )
    doc, key = corpus.ngram_keys(n)
    if len(key) == 0:
        return 0.0
    unique = count_distinct(key)
    # 1 - ((V-1)/V)^C, computed without cancellation for large V.
    expected = v * -math.expm1(len(key) * math.log1p(-1.0 / v)) if v > 1 else 1.0
    return unique / expected


def ngram_entropy(texts: Sequence[TextLike], n: int = 1) -> float:
    """Shannon entropy (nats) of the n-gram frequency distribution of the collection.

    0.0 when every n-gram is the same, ``log(#n-grams)`` when all differ.
    0.0 when there is no n-gram at all.

    >>> ngram_entropy(["a a", "a a"])
    0.0
    >>> round(ngram_entropy(["a b", "c d"]), 6) == round(math.log(4), 6)
    True
    """
    doc, key = Corpus.from_texts(texts).ngram_keys(n)
    if len(key) == 0:
        return 0.0
    _, counts = np.unique(key, return_counts=True)
    p = counts / len(key)
    entropy = float(-(p * np.log(p)).sum())
    return entropy if entropy > 0 else 0.0


def duplicate_rate(texts: Sequence[TextLike]) -> float:
    """Share of texts that repeat an earlier text exactly (after whitespace tokenization).

    0.0 when all texts differ, ``(n - 1) / n`` when all are the same. Empty
    strings count as texts (two empty strings are duplicates).

    >>> duplicate_rate(["a b", "a  b", "c"])
    0.3333333333333333
    """
    corpus = Corpus.from_texts(texts)
    seen = {tuple(corpus.tokens[a:b].tolist()) for a, b in zip(corpus.offsets[:-1], corpus.offsets[1:])}
    return (corpus.n_docs - len(seen)) / corpus.n_docs


# --------------------------------------------------------------------------- self-BLEU


def self_bleu(texts: Sequence[TextLike] | Corpus, max_n: int = 4) -> float:
    """Leave-one-out self-BLEU: mean BLEU of each text against all the others.

    Each text is the hypothesis once, with every *other* text as a reference (a
    text is never its own reference, unlike Texygen's version, which inflates
    the score). Per text this is NLTK's ``sentence_bleu`` with uniform weights
    ``(1/max_n, ...)`` and ``SmoothingFunction().method1``: clipped n-gram
    precisions, a zero count replaced by ``0.1 / count``, brevity penalty
    against the closest reference length (shorter wins ties), 0.0 for a text
    with no unigram match. Computed for all texts at once from integer n-gram
    tables in O(total n-grams · log), so 10,000 texts take well under a second.

    Range [0, 1]; higher means more repetitive (less diverse). Needs at least two
    texts (with one there is no reference). :func:`self_bleu_scores` gives the
    per-text values.

    >>> self_bleu(["the cat sat on the mat", "the cat sat on the mat"])
    1.0
    >>> self_bleu(["a b c d", "e f g h"])
    0.0
    """
    return float(self_bleu_scores(texts, max_n).mean())


def self_bleu_scores(texts: Sequence[TextLike] | Corpus, max_n: int = 4) -> np.ndarray:
    """BLEU of each text against all the other texts (see :func:`self_bleu`), one value per text.

    >>> self_bleu_scores(["a b c d", "a b c d", "x y"]).tolist()
    [1.0, 1.0, 0.0]
    """
    max_n = check_order(max_n, "max_n")
    corpus = Corpus.from_texts(texts, min_items=2)
    lengths = corpus.lengths
    log_p = np.zeros(corpus.n_docs)
    matched_unigrams = None
    for n in range(1, max_n + 1):
        numerator = _leave_one_out_clipped_counts(corpus, n)
        denominator = np.maximum(1, lengths - n + 1).astype(np.float64)
        p = np.where(numerator == 0, 0.1 / denominator, numerator / denominator)
        log_p += np.log(p) / max_n
        if n == 1:
            matched_unigrams = numerator
    ref_len = _leave_one_out_closest_length(lengths)
    bp = np.where(lengths > ref_len, 1.0, np.exp(1.0 - ref_len / np.maximum(lengths, 1)))
    return np.where((matched_unigrams == 0) | (lengths == 0), 0.0, bp * np.exp(log_p))


def _leave_one_out_clipped_counts(corpus: Corpus, n: int) -> np.ndarray:
    """Per document: sum over its n-grams g of min(count_d(g), max_{j != d} count_j(g))."""
    doc, gram = corpus.ngrams(n)
    if len(gram) == 0:
        return np.zeros(corpus.n_docs)
    n_grams = int(gram.max()) + 1
    pair, count = np.unique(doc * n_grams + gram, return_counts=True)
    pair_doc, pair_gram = pair // n_grams, pair % n_grams
    # Sort each n-gram's documents by count, largest first.
    order = np.lexsort((-count, pair_gram))
    g, c = pair_gram[order], count[order]
    group_start = np.r_[True, g[1:] != g[:-1]]
    first = np.flatnonzero(group_start)
    group_of = np.cumsum(group_start) - 1
    group_size = np.diff(np.r_[first, len(g)])
    largest = c[first]
    second = np.where(group_size > 1, c[np.minimum(first + 1, len(c) - 1)], 0)
    # The largest count among the *other* documents: for the top document of a
    # group it is the runner-up, for every other document it is the top count.
    is_top = group_start
    others_max = np.where(is_top, second[group_of], largest[group_of])
    clipped = np.minimum(c, others_max)
    return np.bincount(pair_doc[order], weights=clipped, minlength=corpus.n_docs)


def _leave_one_out_closest_length(lengths: np.ndarray) -> np.ndarray:
    """Per document: the length of the closest *other* document (shorter on ties), as NLTK."""
    values, counts = np.unique(lengths, return_counts=True)
    pos = np.searchsorted(values, lengths)
    shared = counts[pos] > 1  # another document has the same length
    below = np.where(pos > 0, values[np.maximum(pos - 1, 0)], -1)
    above = np.where(pos + 1 < len(values), values[np.minimum(pos + 1, len(values) - 1)], -1)
    dist_below = np.where(below >= 0, lengths - below, np.iinfo(np.int64).max)
    dist_above = np.where(above >= 0, above - lengths, np.iinfo(np.int64).max)
    nearest = np.where(dist_below <= dist_above, below, above)
    return np.where(shared, lengths, nearest).astype(np.float64)


# --------------------------------------------------------------------------- compression


def compression_ratio(texts: Sequence[TextLike], level: int = 6) -> float:
    """Gzip compression ratio of the collection: raw bytes / compressed bytes.

    The texts are joined with single spaces, UTF-8 encoded and gzip-compressed
    once, in memory (``mtime=0`` so the value is reproducible). Higher means
    more repetitive. The gzip container adds about 20 bytes, so short or
    incompressible inputs give values below 1. Raises if all texts are empty
    (there are no bytes to compress).

    ``level`` is zlib's compression level; the default, 6, is zlib's own. Level 9
    (Python's ``gzip`` default, which the ``diversity`` package uses) searches
    longer for matches: it costs 2-7x the CPU (1.4 µs a word at level 9, 0.2 µs
    at level 6, on the benchmark's near-copies; 0.6 and 0.3 µs on Markdown and code)
    for ratios 0.2% higher on average at the monitor's sizes (at most 6%) and up
    to 10% higher on large collections of near-copies, ranking collections the
    same way (Spearman 0.998 or more; ``benchmarks/bench_rollout.py``).

    >>> compression_ratio(["spam"] * 200) > 20
    True
    """
    data = " ".join(as_strings(texts)).encode("utf-8")
    if not data.strip():
        raise ValueError("all texts are empty: there is nothing to compress")
    return len(data) / len(gzip.compress(data, compresslevel=level, mtime=0))


# --------------------------------------------------------------------------- embeddings


def _renyi_exp_entropy(p: np.ndarray, q: float, rank_tol: float) -> float:
    """exp of the order-q Rényi entropy of a probability vector (the Hill number)."""
    p = np.where(p > rank_tol, p, 0.0)  # floating-point noise around zero is zero
    p = p / p.sum()
    if q == 0:
        return float(np.count_nonzero(p > rank_tol))
    if math.isinf(q):
        return float(1.0 / p.max())
    nz = p[p > 0]
    if q == 1:
        return float(np.exp(-(nz * np.log(nz)).sum()))
    return float(np.exp(np.log((nz**q).sum()) / (1.0 - q)))


def _check_q(q: Any) -> float:
    if isinstance(q, str) and q.lower() == "inf":
        return math.inf
    if isinstance(q, bool) or not isinstance(q, (int, float, np.number)):
        raise TypeError(f"q must be a number >= 0 or 'inf', got {q!r}")
    q = float(q)
    if math.isnan(q) or q < 0:
        raise ValueError(f"q must be >= 0 (or inf), got {q}")
    return q


def vendi_score(embeddings: Any, q: float = 1.0) -> float:
    """Vendi score (Friedman & Dieng, 2023) with the cosine kernel.

    Rows are L2-normalised, ``K = X Xᵀ`` and the score is the exponential of the
    order-``q`` Rényi entropy of the eigenvalues of ``K / n``: the "effective
    number" of distinct items, between 1 (all the same direction) and
    ``min(n, dim)``. ``q`` is 0 (the rank, eigenvalues below a relative
    tolerance count as zero), 1 (Shannon, the default), 2, any positive number,
    or ``math.inf`` / ``"inf"`` (1 / largest eigenvalue). Eigenvalues below a
    relative tolerance of ``10 · max(n, dim) · eps`` are treated as zero, which
    matters for ``q < 1``, where floating-point noise would otherwise add to the
    score.

    When ``n > dim`` the non-zero eigenvalues are taken from the ``dim × dim``
    matrix ``Xᵀ X / n``, which has the same non-zero spectrum: O(n dim² + dim³)
    instead of O(n³). Cost: O(n · d · m + m³) for ``m = min(n, dim)``: 0.03 s at
    10,000 × 384, about 0.8 s at 1,000 × 1,024 (a 1,000 × 1,000 eigenproblem). With
    ``q=2`` no eigenproblem is solved: ``Σ λ² = ‖K / n‖_F²``, O(n · d · m) (same value
    within 1e-12).

    Raises on NaN/inf, all-zero rows (no direction) and empty input.

    >>> vendi_score([[1.0, 0.0], [0.0, 1.0]])
    2.0
    >>> vendi_score([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    1.0
    """
    q = _check_q(q)
    x = l2_normalize(as_matrix(embeddings))
    n, d = x.shape
    gram = (x.T @ x) if n > d else (x @ x.T)
    if q == 2:  # exp(H_2) = 1 / Σ λ², and Σ λ² is the squared Frobenius norm of K / n
        return float(1.0 / np.square(gram / n).sum())
    eigenvalues = np.linalg.eigvalsh(gram / n)
    return _renyi_exp_entropy(eigenvalues, q, _rank_tolerance(eigenvalues, max(n, d)))


def vendi_score_from_kernel(kernel: Any, q: float = 1.0, normalize: bool = False) -> float:
    """Vendi score of a similarity matrix ``K`` (n × n, symmetric, positive semi-definite, ``K[i, i] = 1``).

    With ``normalize=True`` the kernel is first rescaled to a unit diagonal,
    ``K[i, j] / sqrt(K[i, i] K[j, j])``. Same ``q`` as :func:`vendi_score`.

    Cost: O(n³) (the full spectrum of an n × n matrix, which also checks that it is
    positive semi-definite): about 1 s at 700 items, 25 s at 2,000. For embeddings, call
    :func:`vendi_score` instead, which works on the ``dim × dim`` dual when ``n > dim``.

    >>> vendi_score_from_kernel([[1.0, 0.0], [0.0, 1.0]])
    2.0
    """
    q = _check_q(q)
    k = as_matrix(kernel, "kernel")
    n = k.shape[0]
    if k.shape != (n, n):
        raise ValueError(f"kernel must be square, got shape {k.shape}")
    if not np.allclose(k, k.T, atol=1e-8):
        raise ValueError("kernel must be symmetric")
    diag = np.diag(k)
    if normalize:
        if (diag <= 0).any():
            raise ValueError("kernel has non-positive diagonal entries; cannot normalize")
        k = k / np.sqrt(np.outer(diag, diag))
    elif not np.allclose(diag, 1.0, atol=1e-6):
        raise ValueError("kernel diagonal must be 1 (a similarity of each item with itself); pass normalize=True")
    eigenvalues = np.linalg.eigvalsh(k / n)
    if eigenvalues.min() < -1e-6:
        raise ValueError(f"kernel is not positive semi-definite (eigenvalue {eigenvalues.min():.3g})")
    return _renyi_exp_entropy(eigenvalues, q, _rank_tolerance(eigenvalues, n))


def _rank_tolerance(eigenvalues: np.ndarray, size: int) -> float:
    return float(max(eigenvalues.max(), 0.0) * size * np.finfo(np.float64).eps * 10)


def mean_pairwise_cosine_distance(embeddings: Any) -> float:
    """Mean of ``1 - cos(x_i, x_j)`` over all pairs ``i != j``.

    O(n·dim): with unit rows, the sum of all pairwise similarities is
    ``||Σ x_i||²``. Range [0, 2]; 0 when all rows point the same way. Needs at
    least two rows.

    >>> mean_pairwise_cosine_distance([[1.0, 0.0], [0.0, 1.0]])
    1.0
    """
    x = l2_normalize(as_matrix(embeddings, min_rows=2))
    n = x.shape[0]
    total = x.sum(axis=0)
    mean_similarity = (float(total @ total) - n) / (n * (n - 1))
    return float(np.clip(1.0 - mean_similarity, 0.0, 2.0))


def nearest_neighbor_distances(embeddings: Any, chunk_size: int = 2048) -> np.ndarray:
    """Per row, the cosine distance to its nearest *other* row (0 for an exact duplicate direction).

    Exact search in float32 tiles of ``chunk_size × chunk_size`` similarities (memory bounded by that
    tile), each pair computed once (a tile above the diagonal gives both its rows' and its columns'
    candidates), keeping only each row's largest similarity. Cost: O(n² · dim / 2) multiply-adds in
    float32 BLAS and no n × n matrix: about 1.5-2 s of CPU for 20,000 × 384 on one core (float64 and
    every pair twice took 7-8 s). Float32 rounding moves a distance by about 1e-7 (at most a few 1e-6
    at 1,000+ dimensions) from an all-float64 search; distances below 1e-5 are recomputed in float64
    against the neighbour found, so a duplicate direction is at distance 0 (each such row costs one more
    pass over the rows).
    Needs at least two rows.

    >>> nearest_neighbor_distances([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).tolist()
    [0.0, 0.0, 1.0]
    """
    x = l2_normalize(as_matrix(embeddings, min_rows=2))
    n = x.shape[0]
    x32 = x.astype(np.float32)
    best = np.full(n, -np.inf, dtype=np.float32)
    step = max(int(chunk_size), 1)
    for lo in range(0, n, step):
        rows = x32[lo : lo + step]
        mine = best[lo : lo + len(rows)]
        for start in range(lo, n, step):
            sim = rows @ x32[start : start + step].T
            if start == lo:
                np.fill_diagonal(sim, -np.inf)
            np.maximum(mine, sim.max(axis=1), out=mine)
            if start != lo:  # the same tile, seen from the other rows
                theirs = best[start : start + sim.shape[1]]
                np.maximum(theirs, sim.max(axis=0), out=theirs)
    similarity = best.astype(np.float64)
    # near duplicates: find the neighbour again and take the similarity in float64, so that a duplicate
    # direction is at distance 0 (to float64 rounding) as in an all-float64 search
    close = np.flatnonzero(similarity > 1.0 - 1e-5)
    for lo in range(0, len(close), step):
        rows = close[lo : lo + step]
        sim = x32[rows] @ x32.T
        sim[np.arange(len(rows)), rows] = -np.inf
        partner = sim.argmax(axis=1)
        similarity[rows] = np.einsum("ij,ij->i", x[rows], x[partner])
    return np.clip(1.0 - similarity, 0.0, 2.0)


def mean_nearest_neighbor_distance(embeddings: Any, chunk_size: int = 2048) -> float:
    """Mean over rows of the cosine distance to the nearest *other* row (:func:`nearest_neighbor_distances`).

    Near 0 when every item has a near-duplicate. Needs at least two rows.

    >>> mean_nearest_neighbor_distance([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    0.3333333333333333
    """
    return float(nearest_neighbor_distances(embeddings, chunk_size).mean())


# --------------------------------------------------------------------------- grouped


@dataclass(frozen=True)
class GroupedDiversity:
    """Diversity within and across prompts (Kirk et al., 2023 report both: they collapse at different rates).

    Attributes:
        per_input: the metric over the samples of each prompt, averaged over prompts.
        across_input: the metric over one sample per prompt, averaged over the
            sample positions ``j = 0 .. k_min - 1`` (the j-th sample of every prompt).
    """

    per_input: float
    across_input: float


def grouped_diversity(groups: Sequence[Sequence[Any]], metric: Callable[[Any], float]) -> GroupedDiversity:
    """Per-input and across-input diversity of k samples per prompt, for any metric.

    ``groups[i]`` holds the samples of prompt ``i`` (texts, token sequences, or
    rows of an embedding matrix). ``metric`` is any function from a collection to
    a float, such as ``distinct_n`` or ``lambda e: vendi_score(e, q=2)``. Every
    group needs at least two samples (one sample has no within-prompt
    diversity) and there must be at least two groups. Collections where the
    metric returns NaN (undefined, for example all texts empty) are left out of
    the means; a mean over nothing is NaN.

    >>> g = [["a b", "a b"], ["c d", "e f"]]
    >>> grouped_diversity(g, lambda t: distinct_n(t, 1))
    GroupedDiversity(per_input=0.75, across_input=1.0)
    """
    groups = check_list(groups, "groups")
    if len(groups) < 2:
        raise ValueError(f"groups has {len(groups)} group(s); across-input diversity needs at least 2 prompts")
    groups = [check_list(g, f"groups[{i}]") for i, g in enumerate(groups)]
    sizes = [len(g) for g in groups]
    small = [i for i, s in enumerate(sizes) if s < 2]
    if small:
        raise ValueError(f"groups {small[:5]} have fewer than 2 samples; per-input diversity needs k >= 2 per prompt")
    per_input = _nanmean([metric(_collect(g)) for g in groups])
    across_input = _nanmean([metric(_collect([g[j] for g in groups])) for j in range(min(sizes))])
    return GroupedDiversity(per_input=per_input, across_input=across_input)


def _nanmean(values: list[float]) -> float:
    finite = [float(v) for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _collect(items: list) -> Any:
    """Stack embedding rows into a matrix; leave texts as a list."""
    if all(isinstance(it, np.ndarray) and it.ndim == 1 for it in items):
        return np.stack(items)
    if all(hasattr(it, "detach") and it.ndim == 1 for it in items):
        return np.stack([it.detach().float().cpu().numpy() for it in items])
    return items
