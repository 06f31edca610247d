"""Quality against diversity: the Pareto frontier of two measures, and quality and diversity per cluster.

Pure functions (arrays and texts in, arrays out) behind the dataset profile's
quality-diversity plot (:func:`qdc_trainer.report.write_profile_report`).

>>> pareto_frontier([1, 2, 3, 2.5], [3, 2, 1, 0.5]).tolist()
[0, 1, 2]
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from .diversity import distinct_n

__all__ = ["CLUSTER_TEXTS", "cluster_quality_diversity", "pareto_frontier"]

CLUSTER_TEXTS = 64
"""Texts drawn per cluster (seeded) at most for its distinct-2 in :func:`cluster_quality_diversity`."""


def pareto_frontier(x: Any, y: Any) -> np.ndarray:
    """Indices of the Pareto-optimal points when both ``x`` and ``y`` are to be maximised, by increasing x.

    A point is on the frontier when no other point is at least as good on both
    coordinates and better on one. Of several identical points one is kept.
    Points with a NaN or infinite coordinate are never on it.

    >>> pareto_frontier([0, 1, 1, 2], [2, 1, 2, 0]).tolist()  # (1, 1) is dominated by (1, 2); (0, 2) too
    [2, 3]
    >>> pareto_frontier([], []).tolist()
    []
    """
    xs = np.asarray(x, dtype=np.float64).reshape(-1)
    ys = np.asarray(y, dtype=np.float64).reshape(-1)
    if xs.shape != ys.shape:
        raise ValueError(f"x and y must have the same length, got {len(xs)} and {len(ys)}")
    valid = np.flatnonzero(np.isfinite(xs) & np.isfinite(ys))
    order = valid[np.lexsort((-ys[valid], -xs[valid]))]  # x descending, then y descending
    frontier = []
    best_y = -np.inf
    for i in order:
        if ys[i] > best_y:  # nothing to its right (or at its x) reaches its y
            frontier.append(i)
            best_y = ys[i]
    return np.array(frontier[::-1], dtype=np.int64)


def cluster_quality_diversity(
    quality: Any, clusters: Sequence[Any], texts: Sequence[str], *, max_texts: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """Per cluster: size, mean quality and the distinct-2 of its texts (the profile's cluster scatter).

    Distinct-n falls as a collection grows, so every cluster's distinct-2 is taken
    on the same number of texts, drawn at random (seeded): ``max_texts``, by default
    the median cluster size capped at ``CLUSTER_TEXTS`` (at least 2). Clusters
    smaller than that use all their texts, which favours them slightly. Examples
    with a non-finite quality are left out. Returns the arrays ``cluster`` (ids as
    text, in natural order), ``size``, ``quality`` (mean), ``distinct_2``, and
    ``max_texts``.

    >>> r = cluster_quality_diversity([1.0, 0.0, 0.5, 0.5], [0, 0, 1, 1], ["a b c", "a b d", "x y", "x y"])
    >>> r["cluster"].tolist(), r["quality"].tolist(), r["distinct_2"].tolist(), r["max_texts"]
    (['0', '1'], [0.5, 0.5], [0.75, 0.5], 2)
    """
    q = np.asarray(quality, dtype=np.float64)
    if not (len(q) == len(clusters) == len(texts)):
        raise ValueError(f"quality, clusters and texts differ in length ({len(q)}, {len(clusters)}, {len(texts)})")
    members: dict[str, list[int]] = {}
    for i, c in enumerate(clusters):
        if math.isfinite(q[i]):
            members.setdefault(str(c), []).append(i)
    rng = np.random.default_rng(seed)
    ids = sorted(members, key=_natural_key)
    if max_texts is None:
        median = np.median([len(m) for m in members.values()]) if members else CLUSTER_TEXTS
        max_texts = int(min(CLUSTER_TEXTS, max(2, median)))
    sizes, means, distinct = [], [], []
    for c in ids:
        index = np.asarray(members[c])
        sizes.append(len(index))
        means.append(float(q[index].mean()))
        pick = index if len(index) <= max_texts else rng.choice(index, size=max_texts, replace=False)
        distinct.append(distinct_n([texts[i] for i in sorted(pick)], 2))
    return {
        "cluster": np.array(ids, dtype=object),
        "size": np.array(sizes, dtype=np.int64),
        "quality": np.array(means),
        "distinct_2": np.array(distinct),
        "max_texts": max_texts,
    }


def _natural_key(text: str) -> tuple:
    """Sort key putting ``"2"`` before ``"10"`` (runs of digits compared as numbers)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text) if t)
