"""Add quality, complexity and diversity-cluster columns to a ``datasets.Dataset``.

These are the columns that ``QDCSampler.from_dataset`` reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import complexity as _complexity
from .embeddings import Embedder, HashingEmbedder
from .quality import Scorer

__all__ = ["score_dataset", "cluster_embeddings", "COMPLEXITY_MEASURES"]

_EMBEDDING = "__qdc_embedding__"

COMPLEXITY_MEASURES: dict[str, Callable[[list[str]], np.ndarray]] = {
    "length": _complexity.lengths,
    "steps": _complexity.reasoning_steps,
    "compression": _complexity.compression_complexity,
}
"""Built-in text complexity measures by name, applied to the text column."""


_EXACT_ROWS = 10_000  # up to this many rows: k-means on the embeddings as they are
_REDUCED_DIM = 64  # above it: k-means in this many principal components ...
_FIT_ROWS = 50_000  # ... fitted, with the k-means, on a sample of this many rows
_ASSIGN_ROWS = 65_536  # rows per chunk of the assignment pass


def cluster_embeddings(embeddings: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """Cluster ids (int64) from scikit-learn's k-means.

    Up to 10,000 rows: ``KMeans`` on the rows as they are. Above: the rows are projected on their first 64
    principal components (PCA fitted on a seeded sample of 50,000 rows), ``MiniBatchKMeans`` is fitted on
    that sample, and every row is assigned to its nearest centre in one chunked pass. The cost is then
    linear in the rows, O(n·dim·64 + n·64·k), instead of the n^1.5 of k-means over all rows with
    k = √(n/2) (``score_dataset``'s default): a few seconds of CPU for 10^5 rows of 1,024 dimensions. BLAS
    and OpenMP run on one thread here, as the cost on a shared machine grows with the threads.

    ``n_clusters`` is capped at the number of distinct rows (of the projected rows, above 10,000).

    >>> cluster_embeddings(np.array([[0, 1.0], [0, 1.1], [5, 0], [5.1, 0]]), 2).tolist() in ([0, 0, 1, 1], [1, 1, 0, 0])
    True
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"embeddings must be a non-empty 2-D array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf")
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or n_clusters < 1:
        raise ValueError(f"n_clusters must be an int >= 1, got {n_clusters!r}")
    with threadpool_limits(limits=1):
        if len(x) <= _EXACT_ROWS:
            k = min(n_clusters, len(np.unique(x, axis=0)))
            if k == 1:
                return np.zeros(len(x), dtype=np.int64)
            return KMeans(n_clusters=k, random_state=seed, n_init=3).fit_predict(x).astype(np.int64)
        sample = np.sort(np.random.default_rng(seed).choice(len(x), min(len(x), _FIT_ROWS), replace=False))
        reduce = _Reduction.fit(x[sample], seed)
        if reduce is not None:
            x = reduce(x)
        k = min(n_clusters, _distinct_rows(x))
        if k == 1:
            return np.zeros(len(x), dtype=np.int64)
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096).fit(x[sample])
        return _assign(x, model.cluster_centers_.astype(np.float32))


class _Reduction:
    """Projection on the first principal components of a sample (a PCA), applied in chunks."""

    def __init__(self, mean: np.ndarray, components: np.ndarray) -> None:
        self.mean, self.components = mean, components

    @classmethod
    def fit(cls, sample: np.ndarray, seed: int) -> _Reduction | None:
        """The PCA of ``sample``; None when the rows already have at most ``_REDUCED_DIM`` dimensions."""
        from sklearn.decomposition import PCA

        dim = min(_REDUCED_DIM, *sample.shape)
        if sample.shape[1] <= _REDUCED_DIM:
            return None
        pca = PCA(n_components=dim, svd_solver="randomized", random_state=seed).fit(sample)
        return cls(pca.mean_.astype(np.float32), pca.components_.T.astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), self.components.shape[1]), dtype=np.float32)
        for lo in range(0, len(x), _ASSIGN_ROWS):
            out[lo : lo + _ASSIGN_ROWS] = (x[lo : lo + _ASSIGN_ROWS] - self.mean) @ self.components
        return out


def _distinct_rows(x: np.ndarray) -> int:
    """Number of distinct rows (of a few dozen float32 columns), by hashing their bytes."""
    rows = np.ascontiguousarray(x).view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).reshape(-1)
    return len(set(rows.tolist()))


def _assign(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of each row's nearest centre (squared Euclidean distance), in chunks of rows."""
    out = np.empty(len(x), dtype=np.int64)
    half_norms = 0.5 * (centres * centres).sum(axis=1)
    for lo in range(0, len(x), _ASSIGN_ROWS):
        chunk = x[lo : lo + _ASSIGN_ROWS]
        out[lo : lo + len(chunk)] = np.argmax(chunk @ centres.T - half_norms, axis=1)
    return out


def score_dataset(
    dataset: Any,
    *,
    text_column: str = "text",
    prompt_column: str | None = None,
    quality: Scorer | Callable[[list[str], list[str]], Sequence[float]] | None = None,
    complexity: str | Callable[[list[str], list[str]], Sequence[float]] | None = "length",
    embedder: Embedder | Callable[[list[str]], np.ndarray] | None = None,
    n_clusters: int | None = None,
    quality_column: str = "quality",
    complexity_column: str = "complexity",
    cluster_column: str = "cluster",
    batch_size: int = 256,
    seed: int = 0,
    keep_embeddings: bool = False,
) -> Any:
    """Score every example of a ``datasets.Dataset`` and return a new dataset with the score columns.

    One batched ``Dataset.map`` pass (with a progress bar) computes quality and
    complexity; a second pass embeds the texts, 4,096 at a time, keeping only their
    projection on 64 principal components (above 10,000 rows), and
    :func:`cluster_embeddings` clusters them into ``cluster_column`` (its docstring
    gives the cost: about 13 s of CPU per 10^5 rows with the hashing embedder, linear
    in the rows). With ``keep_embeddings`` the full embeddings are stored and
    clustered instead.

    Args:
        dataset: a ``datasets.Dataset`` with a string ``text_column``.
        text_column: the text to score (the completion, when ``prompt_column`` is set).
        prompt_column: optional prompt column; scorers receive ``(prompts, texts)``
            (empty prompts when None), and embeddings use prompt and text together.
        quality: a scorer ``(prompts, texts) -> floats``, or None to skip the column.
        complexity: a name from ``COMPLEXITY_MEASURES`` ("length", "steps",
            "compression"), a callable ``(prompts, texts) -> floats`` (for example
            an IFD under a model), or None to skip.
        embedder: texts -> embeddings; default ``HashingEmbedder()`` (no model).
            Use ``Embedder.sentence_transformers()`` for semantic clusters.
        n_clusters: number of clusters; default ``round(sqrt(n / 2))`` clipped to
            [1, 256]. Set to 0 to skip clustering.
        keep_embeddings: keep the embeddings as an ``embedding`` column.

    Returns:
        A new dataset; the input is not modified.

    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"text": ["1 + 1 = 2", "2 + 2 = 4", "a long story about cats and dogs"]})
    >>> out = score_dataset(ds, n_clusters=2)
    >>> out.column_names, list(out["complexity"])
    (['text', 'complexity', 'cluster'], [5.0, 5.0, 7.0])
    """
    names = getattr(dataset, "column_names", None)
    if names is None or not hasattr(dataset, "map"):
        raise TypeError(f"dataset must be a datasets.Dataset, got {type(dataset).__name__}")
    for column, label in ((text_column, "text_column"), (prompt_column, "prompt_column")):
        if column is not None and column not in names:
            raise ValueError(f"{label}={column!r} is not a column of the dataset (columns: {names})")
    if isinstance(complexity, str):
        if complexity not in COMPLEXITY_MEASURES:
            raise ValueError(
                f"complexity={complexity!r} is not one of {sorted(COMPLEXITY_MEASURES)} (or pass a callable)"
            )
        measure = COMPLEXITY_MEASURES[complexity]
        complexity_fn: Callable | None = lambda prompts, texts: measure(texts)  # noqa: E731
    else:
        complexity_fn = complexity
    n = len(dataset)
    if n == 0:
        raise ValueError("dataset is empty")
    if n_clusters is None:
        n_clusters = int(min(256, max(1, round(math.sqrt(n / 2)))))
    if not (n_clusters or keep_embeddings):
        embedder = None
    elif embedder is None:
        embedder = HashingEmbedder()
    outputs = [
        name
        for name, on in (
            (quality_column, quality is not None),
            (complexity_column, complexity_fn is not None),
            (cluster_column, bool(n_clusters)),
            ("embedding", keep_embeddings),
        )
        if on
    ]
    for column in outputs:
        if column in names:
            raise ValueError(f"the dataset already has a {column!r} column; drop it or choose another output name")

    def score_batch(batch: dict[str, list]) -> dict[str, list]:
        texts = batch[text_column]
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"{text_column!r} must hold strings; found {type(texts[bad[0]]).__name__}")
        prompts = batch[prompt_column] if prompt_column else [""] * len(texts)
        out: dict[str, list] = {}
        if quality is not None:
            out[quality_column] = _finite(quality(prompts, texts), "quality", len(texts))
        if complexity_fn is not None:
            out[complexity_column] = _finite(complexity_fn(prompts, texts), "complexity", len(texts))
        if embedder is not None and keep_embeddings:
            out[_EMBEDDING] = np.asarray(embedder(_joined(prompts, texts)), dtype=np.float32).tolist()
        return out

    scored = dataset.map(
        score_batch, batched=True, batch_size=batch_size, desc="Scoring dataset", load_from_cache_file=False
    )
    if embedder is not None and keep_embeddings:
        if n_clusters:
            embeddings = np.asarray(scored.with_format("numpy")[_EMBEDDING], dtype=np.float32)
            scored = scored.add_column(cluster_column, cluster_embeddings(embeddings, n_clusters, seed).tolist())
        scored = scored.rename_column(_EMBEDDING, "embedding")
    elif embedder is not None:  # the embeddings never enter the dataset: only their projection is kept
        embeddings = _reduced_embeddings(dataset, text_column, prompt_column, embedder, seed)
        scored = scored.add_column(cluster_column, cluster_embeddings(embeddings, n_clusters, seed).tolist())
    return scored


def _joined(prompts: list[str], texts: list[str]) -> list[str]:
    return [f"{p}\n{t}" if p else t for p, t in zip(prompts, texts)]


def _reduced_embeddings(
    dataset: Any, text_column: str, prompt_column: str | None, embedder: Callable, seed: int
) -> np.ndarray:
    """The embeddings of every row, projected as :func:`cluster_embeddings` projects them (above 10,000 rows:
    on the principal components of the same seeded sample), in one pass of 4,096 rows at a time: n × 64
    float32 in memory instead of n × dim."""
    n = len(dataset)
    columns = [text_column] + ([prompt_column] if prompt_column else [])
    view = dataset.select_columns(columns)

    def embed(batch: dict[str, list]) -> np.ndarray:
        texts = batch[text_column]
        prompts = batch[prompt_column] if prompt_column else [""] * len(texts)
        return np.asarray(embedder(_joined(prompts, texts)), dtype=np.float32)

    reduce = None
    if n > _EXACT_ROWS:
        sample = np.sort(np.random.default_rng(seed).choice(n, min(n, _FIT_ROWS), replace=False))
        reduce = _Reduction.fit(embed(view.select(sample)[:]), seed)
    parts = []
    for batch in view.iter(batch_size=4096):
        x = embed(batch)
        parts.append(x if reduce is None else reduce(x))
    return np.concatenate(parts)


def _finite(values: Any, what: str, expected: int) -> list[float]:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(arr) != expected:
        raise ValueError(f"the {what} function returned {len(arr)} values for a batch of {expected}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if len(bad):
        raise ValueError(f"the {what} function returned NaN or inf (positions {bad[:5].tolist()} of a batch)")
    return arr.tolist()
