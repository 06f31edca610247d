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


def cluster_embeddings(embeddings: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """Cluster ids (int64) from scikit-learn's k-means (``MiniBatchKMeans`` above 10,000 rows).

    ``n_clusters`` is capped at the number of distinct rows.

    >>> cluster_embeddings(np.array([[0, 1.0], [0, 1.1], [5, 0], [5.1, 0]]), 2).tolist() in ([0, 0, 1, 1], [1, 1, 0, 0])
    True
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"embeddings must be a non-empty 2-D array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf")
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or n_clusters < 1:
        raise ValueError(f"n_clusters must be an int >= 1, got {n_clusters!r}")
    k = min(n_clusters, len(np.unique(x, axis=0)))
    if k == 1:
        return np.zeros(len(x), dtype=np.int64)
    if len(x) > 10_000:
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096)
    else:
        model = KMeans(n_clusters=k, random_state=seed, n_init=3)
    return model.fit_predict(x).astype(np.int64)


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

    One batched ``Dataset.map`` pass (with a progress bar) computes quality,
    complexity and embeddings; embeddings are then clustered with scikit-learn's
    k-means into ``cluster_column``.

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
        if embedder is not None:
            joined = [f"{p}\n{t}" if p else t for p, t in zip(prompts, texts)]
            out[_EMBEDDING] = np.asarray(embedder(joined), dtype=np.float32).tolist()
        return out

    scored = dataset.map(
        score_batch, batched=True, batch_size=batch_size, desc="Scoring dataset", load_from_cache_file=False
    )
    if embedder is not None:
        if n_clusters:
            embeddings = np.asarray(scored.with_format("numpy")[_EMBEDDING], dtype=np.float32)
            scored = scored.add_column(cluster_column, cluster_embeddings(embeddings, n_clusters, seed).tolist())
        if keep_embeddings:
            scored = scored.rename_column(_EMBEDDING, "embedding")
        else:
            scored = scored.remove_columns(_EMBEDDING)
    return scored


def _finite(values: Any, what: str, expected: int) -> list[float]:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(arr) != expected:
        raise ValueError(f"the {what} function returned {len(arr)} values for a batch of {expected}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if len(bad):
        raise ValueError(f"the {what} function returned NaN or inf (positions {bad[:5].tolist()} of a batch)")
    return arr.tolist()
