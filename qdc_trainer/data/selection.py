"""Budgeted QDC selection: choose N of many scored candidates, balancing quality, diversity and complexity.

Self-improvement and synthetic-data pipelines generate many candidates and keep a
fixed budget of them. Keeping the most confident or highest-scored ones narrows
the data round after round; :func:`select_budget` keeps the budget spread out:

1. **Filter** (optional): candidates with ``quality < min_quality`` are dropped.
2. **Deduplicate**: of the candidates that share a key (for example the
   normalised text, or the problem a solution answers), only the one with the
   highest utility is kept.
3. **Cluster quotas** (coverage): cluster ``k`` with ``m_k`` remaining candidates
   gets a share of the budget proportional to ``m_k ** (1 - alpha)``, with the
   sampler's ``alpha = (1 - tradeoff) * diversity_strength``: at ``alpha = 1`` every
   cluster gets the same share, at ``alpha = 0`` clusters keep their sizes. A
   cluster with fewer candidates than its share gives the rest to the others.
4. **Within a cluster**: candidates are drawn without replacement with
   probability proportional to the sampler's static weight
   ``exp(tradeoff * quality_strength * zq + b_c * zc)`` (the Gumbel top-k trick),
   or, with ``greedy=True``, taken in order of that utility. ``b_c`` is
   ``complexity_strength`` (a push towards the complex candidates), or, with
   ``complexity_target=t``, the tilt in ``[-complexity_strength, complexity_strength]``
   that gives the eligible candidates' weighted mean complexity ``t``
   (:func:`~qdc_trainer.data.weights.complexity_tilt`): a pull towards a mix, for
   example the original data's, instead of a push that climbs round after round.
   The tilt sets draw weights, so the chosen data's mean lands near ``t`` when the
   budget is a small share of the candidates; taking most of them, or ``greedy``,
   stays closer to the candidates' own mix or to their most complex end.

The knobs are those of :class:`~qdc_trainer.data.weights.QDCSamplerConfig`, so one
config drives both the selection and the sampler that then trains on it.

>>> quality = [1, 1, 0, 1, 1, 1]  # candidate 2 fails the verifier
>>> complexity = [1, 3, 3, 2, 1, 1]
>>> clusters = [0, 0, 0, 0, 1, 2]  # one big cluster, two small ones
>>> keys = ["a", "a", "b", "c", "d", "e"]  # 0 and 1 are the same problem; 1 is the more complex
>>> select_budget(6, 3, quality=quality, complexity=complexity, clusters=clusters, keys=keys,
...               min_quality=1, greedy=True).tolist()
[1, 4, 5]
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from .columns import check_column, dataset_columns, dense_ids, moments, zscore
from .weights import QDCSamplerConfig, complexity_tilt

__all__ = ["select_budget", "select_dataset", "cluster_quotas"]

_KNOBS = ("tradeoff", "quality_strength", "diversity_strength", "complexity_strength", "complexity_target", "seed")


def cluster_quotas(sizes: Sequence[int] | np.ndarray, budget: int, alpha: float) -> np.ndarray:
    """Integer share of ``budget`` per cluster: proportional to ``size ** (1 - alpha)``, capped at ``size``.

    Capped clusters hand their excess to the others (water filling); the rounding
    keeps the largest remainders. The quotas sum to ``min(budget, sum(sizes))``.

    >>> cluster_quotas([100, 10, 1], 30, alpha=1.0).tolist()  # equal shares; the small clusters are capped
    [19, 10, 1]
    >>> cluster_quotas([100, 10, 1], 30, alpha=0.0).tolist()  # proportional to size
    [27, 3, 0]
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.ndim != 1 or (sizes < 0).any():
        raise ValueError(f"sizes must be a 1-D array of counts >= 0, got {sizes.tolist()!r}")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 0:
        raise ValueError(f"budget must be an int >= 0, got {budget!r}")
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    total = int(min(budget, sizes.sum()))
    quotas = np.zeros(len(sizes), dtype=np.int64)
    weight = np.where(sizes > 0, np.maximum(sizes, 1).astype(np.float64) ** (1.0 - alpha), 0.0)
    open_ = sizes > 0
    left = total
    # Water filling: give every open cluster its share of what is left; close the ones that are full.
    while left > 0 and open_.any():
        share = left * weight * open_ / (weight * open_).sum()
        room = sizes - quotas
        full = open_ & (share >= room)
        if full.any():
            quotas[full] = sizes[full]
            open_ &= ~full
            left = total - int(quotas.sum())
            continue
        floor = np.floor(share).astype(np.int64)
        quotas += floor
        remainder = left - int(floor.sum())
        if remainder:
            frac = np.where(open_, share - floor, -1.0)
            # Largest remainders first; ties go to the lower cluster index.
            quotas[np.argsort(-frac, kind="stable")[:remainder]] += 1
        left = 0
    return quotas


def select_budget(
    num_candidates: int,
    budget: int,
    *,
    quality: Sequence[float] | np.ndarray | None = None,
    complexity: Sequence[float] | np.ndarray | None = None,
    clusters: Sequence[int] | np.ndarray | None = None,
    keys: Sequence[Hashable] | None = None,
    min_quality: float | None = None,
    greedy: bool = False,
    config: QDCSamplerConfig | None = None,
    **overrides: Any,
) -> np.ndarray:
    """Indices (ascending) of at most ``budget`` of ``num_candidates`` candidates (see the module docstring).

    Args:
        num_candidates: how many candidates there are.
        budget: how many to choose; fewer come back only when fewer pass the
            filter and the deduplication.
        quality: one score per candidate (higher is better), e.g. a verifier's 0/1.
        complexity: one score per candidate (higher is more complex).
        clusters: one integer cluster id per candidate, e.g. from
            :func:`qdc_trainer.metrics.score_dataset`; None is a single cluster.
        keys: one hashable per candidate; candidates with equal keys are duplicates.
        min_quality: drop candidates below this quality before choosing; a number
            (``-inf`` keeps every candidate; NaN and ``+inf``, which would keep none, raise).
        greedy: take the highest utilities instead of drawing by weight.
        config: a :class:`QDCSamplerConfig`; ``tradeoff``, ``quality_strength``,
            ``diversity_strength``, ``complexity_strength``, ``complexity_target`` and
            ``seed`` are read from it, and keyword arguments override them.

    >>> sizes = [0] * 90 + [1] * 10  # a big and a small cluster, equal scores
    >>> picked = select_budget(100, 20, clusters=sizes, tradeoff=0.0)  # full cluster balance
    >>> int((np.asarray(sizes)[picked] == 1).sum())
    10
    >>> picked = select_budget(100, 20, clusters=sizes, tradeoff=1.0)  # no balance: proportional
    >>> int((np.asarray(sizes)[picked] == 1).sum())
    2
    """
    if isinstance(num_candidates, bool) or not isinstance(num_candidates, (int, np.integer)) or num_candidates < 0:
        raise ValueError(f"num_candidates must be an int >= 0, got {num_candidates!r}")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 0:
        raise ValueError(f"budget must be an int >= 0, got {budget!r}")
    unknown = set(overrides) - set(_KNOBS)
    if unknown:
        raise TypeError(f"unknown selection option(s) {sorted(unknown)}; choose from {list(_KNOBS)}")
    cfg = QDCSamplerConfig(**{**(asdict(config) if config is not None else {}), **overrides})
    n = int(num_candidates)
    # Every input is checked before anything is chosen, also when there is nothing to choose (n or budget 0).
    q = None if quality is None else check_column(quality, "quality", n).astype(np.float64)
    c = None if complexity is None else check_column(complexity, "complexity", n).astype(np.float64)
    cluster_ids = None if clusters is None else check_column(clusters, "clusters", n, integer=True)
    if keys is not None:
        keys = list(keys)
        if len(keys) != n:
            raise ValueError(f"keys has {len(keys)} values but there are {n} candidates")
    if min_quality is not None:
        if isinstance(min_quality, bool) or not isinstance(min_quality, (int, float, np.integer, np.floating)):
            raise TypeError(f"min_quality must be a number, got {type(min_quality).__name__}")
        if math.isnan(min_quality) or min_quality == math.inf:
            # NaN compares false with everything and no finite score reaches +inf: either would drop every candidate.
            raise ValueError(
                f"min_quality={min_quality!r} would drop every candidate; pass a finite threshold (or None)"
            )
        if q is None:
            raise ValueError("min_quality needs the quality scores")
    if n == 0 or budget == 0:
        return np.zeros(0, dtype=np.int64)
    k = np.zeros(n, dtype=np.int64) if cluster_ids is None else dense_ids(cluster_ids)

    keep = np.ones(n, dtype=bool)
    if min_quality is not None:
        keep &= q >= min_quality
    eligible = np.flatnonzero(keep)
    if len(eligible) == 0:
        return np.zeros(0, dtype=np.int64)

    # Utility: the log of the sampler's static weight, z-scores over the eligible candidates.
    utility = np.zeros(n)
    if q is not None:
        utility[eligible] += cfg.tradeoff * cfg.quality_strength * zscore(q[eligible], moments(q[eligible]))
    if c is not None:
        c_moments = moments(c[eligible])
        tilt = cfg.complexity_strength
        if cfg.complexity_target is not None:
            tilt = complexity_tilt(c[eligible], c_moments, cfg.complexity_target, cfg.complexity_strength)
        utility[eligible] += tilt * zscore(c[eligible], c_moments)

    if keys is not None:
        best: dict[Hashable, int] = {}
        for i in eligible.tolist():
            j = best.get(keys[i])
            if j is None or utility[i] > utility[j]:
                best[keys[i]] = i
        eligible = np.asarray(sorted(best.values()), dtype=np.int64)

    rng = np.random.default_rng(cfg.seed)
    score = utility[eligible] if greedy else utility[eligible] + rng.gumbel(size=len(eligible))
    ids = k[eligible]
    sizes = np.bincount(ids, minlength=int(k.max()) + 1)
    quotas = cluster_quotas(sizes, int(budget), (1.0 - cfg.tradeoff) * cfg.diversity_strength)
    order = np.lexsort((-score, ids))  # by cluster, best score first within a cluster
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(len(eligible), dtype=np.int64)
    rank[order] = np.arange(len(eligible)) - start[ids[order]]
    return np.sort(eligible[rank < quotas[ids]])


def select_dataset(
    dataset: Any,
    budget: int,
    *,
    quality_column: str | None = "quality",
    complexity_column: str | None = "complexity",
    cluster_column: str | None = "cluster",
    key_column: str | None = None,
    **kwargs: Any,
) -> Any:
    """:func:`select_budget` on the score columns of a ``datasets.Dataset``; returns ``dataset.select(...)``.

    The columns come from :func:`qdc_trainer.metrics.score_dataset`; pass None for
    one you do not have. ``key_column`` names the deduplication key (for example
    the text). Other keyword arguments go to :func:`select_budget`.

    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"text": ["a", "a", "b", "c"], "quality": [1.0, 0.5, 1.0, 0.0]})
    >>> kept = select_dataset(ds, 3, complexity_column=None, cluster_column=None, key_column="text", min_quality=0.5)
    >>> kept["text"][:]
    ['a', 'b']
    """
    names = getattr(dataset, "column_names", None)
    if names is None or not hasattr(dataset, "select"):
        raise TypeError(f"dataset must be a datasets.Dataset, got {type(dataset).__name__}")
    columns = dataset_columns(
        dataset,
        {
            "quality": ("quality_column", quality_column),
            "complexity": ("complexity_column", complexity_column),
            "clusters": ("cluster_column", cluster_column),
            "keys": ("key_column", key_column),
        },
    )
    return dataset.select(select_budget(len(dataset), budget, **columns, **kwargs).tolist())
