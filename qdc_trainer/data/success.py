"""The success signal of the prompt sampler under GRPO: pass rates, pooled, turned into what a group teaches.

Under GRPO a prompt teaches only when its group of ``G`` completions is *mixed*: if every completion
gets the same reward, every advantage is 0 and the group gives no gradient (TRL logs the share of such
groups as ``frac_reward_zero_std``). What a prompt is worth therefore depends on its pass rate ``p``:

- with TRL's default ``scale_rewards="group"`` every mixed group's advantages are scaled to unit
  variance, so a prompt is worth the chance that its group is mixed, ``1 - p^G - (1 - p)^G``;
- with ``scale_rewards="none"`` (or ``"batch"``) a group's advantages keep their size, and a prompt is
  worth its reward variance ``p (1 - p)`` (learnability, Foster & Foerster 2025, arXiv 2502.12272),
  here scaled by 4 so that ``p = 1/2`` is worth 1.

Both are 0 for a prompt the policy always or never solves, which the field's prompt selectors skip (DAPO's
dynamic sampling, Yu et al. 2025, arXiv 2503.14476; online difficulty filtering, Bae et al. 2025, arXiv
2504.03380; GRESO, arXiv 2506.02177).

**The posterior.** Each prompt ``i`` keeps decayed success and failure counts ``(s_i, f_i)``; each difficulty
*cell* ``c`` (a complexity level ``L``, crossed with the cluster and a user key where given:
:func:`difficulty_cells`) keeps the sums ``(S_c, F_c)`` over its prompts, each level the sums ``(S_L, F_L)``
over its cells, and the run the totals ``(S, F)``. All counts are multiplied by ``success_decay`` per optimizer
step (0.995 by default, at each weight refresh) before the new groups are added, since the policy moves. A
prompt's pass rate is then the Beta posterior (:func:`pooled_posterior`)::

    p_all = (S + 1) / (S + F + 2)                       the run's pass rate (Laplace)
    m_L   = (S_L + k p_all) / (S_L + F_L + k)           the level's, shrunk towards the run's
    m_c   = (S_c + k m_L) / (S_c + F_c + k)             the cell's, shrunk towards its level's
    p_i  ~ Beta(s_i + k m_c,  f_i + k (1 - m_c))        the prompt's, shrunk towards its cell's

with ``k`` pseudo-counts (``success_prior``, 2 by default). An unseen prompt borrows its cell's pass rate, an
unseen cell its level's, an unseen level the run's, each with the uncertainty of ``k`` observations; clusters
that carry no difficulty (phrasings, say) cost little, since their cells fall back on the level. The weight is
the expectation of the value under this posterior (:func:`mixed_group_probability`, :func:`expected_variance`),
so an uncertain prompt is worth a fair amount (``Beta(1, 1)`` with ``G = 8``: 0.78) and a prompt known to be
always or never solved close to nothing. Most draws from a large pool are first visits (400 draws from 4,000
prompts: about 95%), so the cell's pooled estimate is what carries over.

**Rewards to successes** (:func:`group_outcomes`): with a ``success_threshold`` a completion succeeds when its
reward is at least the threshold; without one, rewards must lie in ``[0, 1]`` and count as fractional
successes (a reward of 0.3 adds 0.3 to ``s`` and 0.7 to ``f``). Unscored completions (NaN) are left out.

>>> a, b = np.array([1.0]), np.array([1.0])             # a uniform prior over p
>>> round(float(mixed_group_probability(a, b, 8)[0]), 4)  # 1 - 2 / (G + 1)
0.7778
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .columns import dense_ids

__all__ = [
    "MAX_LEVELS",
    "OBJECTIVES",
    "cell_means",
    "difficulty_cells",
    "expected_success",
    "expected_variance",
    "frontier_level",
    "group_outcomes",
    "mixed_group_probability",
    "pooled_posterior",
    "prompt_value",
]

OBJECTIVES = ("mixed", "variance")
"""What a group is worth: ``"mixed"`` (TRL's ``scale_rewards="group"``) or ``"variance"`` (``"none"``/``"batch"``)."""
MAX_LEVELS = 8
"""A complexity column with more distinct values than this is cut into this many quantile levels."""
_CHUNK = 1 << 20


def group_outcomes(
    rewards: np.ndarray, group_size: int, threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group of ``group_size`` consecutive rewards: (successes, scored completions, whether it is mixed).

    A group is mixed when its scored rewards are not all equal (GRPO gives it a gradient). Successes are
    ``reward >= threshold`` with a threshold, else fractional (rewards must then lie in ``[0, 1]``).

    >>> r = np.array([1.0, 0.0, 1.0, 1.0, np.nan, 0.5])
    >>> s, t, mixed = group_outcomes(r, 2)
    >>> s.tolist(), t.tolist(), mixed.tolist()
    ([1.0, 2.0, 0.5], [2.0, 2.0, 1.0], [True, False, False])
    >>> group_outcomes(np.array([2.0, 0.0]), 2)
    Traceback (most recent call last):
        ...
    ValueError: rewards outside [0, 1] (2.0): set QDCSamplerConfig(success_threshold=...) ...
    """
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if len(r) % group_size:
        raise ValueError(f"{len(r)} rewards do not split into groups of {group_size}")
    r = r.reshape(-1, group_size)
    scored = np.isfinite(r)
    if threshold is None:
        outside = r[scored & ((r < 0) | (r > 1))]
        if len(outside):
            raise ValueError(
                f"rewards outside [0, 1] ({outside[0]}): set QDCSamplerConfig(success_threshold=...) to the reward "
                "at or above which a completion counts as solved"
            )
        success = np.where(scored, r, 0.0)
    else:
        success = np.where(scored, (r >= threshold).astype(np.float64), 0.0)
    trials = scored.sum(axis=1).astype(np.float64)
    lo = np.where(scored, r, np.inf).min(axis=1)
    hi = np.where(scored, r, -np.inf).max(axis=1)
    mixed = (trials >= 2) & (hi > lo)
    return success.sum(axis=1), trials, mixed


def difficulty_cells(
    num_examples: int,
    complexity: np.ndarray | None = None,
    clusters: np.ndarray | None = None,
    keys: np.ndarray | None = None,
    *,
    max_levels: int = MAX_LEVELS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell id per example, complexity level per example, each level's mean complexity).

    Levels are the distinct complexity values when there are at most ``max_levels`` of them, else quantile
    bins; cells cross the level with the cluster and the user key, where given (dense ids ``0..C-1``).

    >>> cells, levels, values = difficulty_cells(4, np.array([1.0, 2.0, 2.0, 3.0]), np.array([0, 0, 1, 1]))
    >>> cells.tolist(), levels.tolist(), values.tolist()
    ([0, 1, 2, 3], [0, 1, 1, 2], [1.0, 2.0, 3.0])
    """
    parts = []
    if complexity is None:
        levels, values = np.zeros(num_examples, dtype=np.int64), np.zeros(1)
    else:
        c = np.asarray(complexity, dtype=np.float64)
        distinct = np.unique(c)
        if len(distinct) <= max_levels:
            levels = np.searchsorted(distinct, c)
        else:
            edges = np.unique(np.quantile(c, np.linspace(0, 1, max_levels + 1)[1:-1]))
            levels = np.searchsorted(edges, c, side="right")
            levels = dense_ids(levels)
        values = np.bincount(levels, weights=c) / np.bincount(levels)
    parts.append(levels)
    for extra in (clusters, keys):
        if extra is not None:
            parts.append(dense_ids(np.asarray(extra, dtype=np.int64)))
    cell = parts[0].astype(np.int64)
    for part in parts[1:]:
        cell = cell * (int(part.max()) + 1) + part
    return dense_ids(cell).astype(np.int64), levels.astype(np.int64), values


def cell_means(cell_s: np.ndarray, cell_f: np.ndarray, cell_level: np.ndarray, prior: float) -> np.ndarray:
    """Each cell's pass rate ``m_c``, shrunk towards its level's and the level's towards the run's (module doc).

    >>> m = cell_means(np.array([8.0, 0.0]), np.array([0.0, 0.0]), np.array([0, 0]), prior=2.0)
    >>> m_level = (8 + 2 * 0.9) / (8 + 2)          # p_all = 9/10; the level holds both cells
    >>> m.round(4).tolist() == [round((8 + 2 * m_level) / 10, 4), round(m_level, 4)]
    True
    """
    total_s, total_f = float(cell_s.sum()), float(cell_f.sum())
    p_all = (total_s + 1.0) / (total_s + total_f + 2.0)
    n_levels = int(cell_level.max()) + 1 if len(cell_level) else 1
    level_s = np.bincount(cell_level, weights=cell_s, minlength=n_levels)
    level_f = np.bincount(cell_level, weights=cell_f, minlength=n_levels)
    m_level = (level_s + prior * p_all) / (level_s + level_f + prior)
    return (cell_s + prior * m_level[cell_level]) / (cell_s + cell_f + prior)


def pooled_posterior(
    s: np.ndarray, f: np.ndarray, cells: np.ndarray, means: np.ndarray, prior: float
) -> tuple[np.ndarray, np.ndarray]:
    """Beta parameters ``(a, b)`` of each example's pass rate: its own counts plus ``prior`` pseudo-counts at its
    cell's mean (:func:`cell_means`).

    >>> a, b = pooled_posterior(np.array([0.0, 8.0]), np.array([0.0, 0.0]), np.array([0, 0]), np.array([0.75]), 2.0)
    >>> a.tolist(), b.tolist()
    ([1.5, 9.5], [0.5, 0.5])
    """
    mc = means[cells]
    return s + prior * mc, f + prior * (1.0 - mc)


def _log_moment(a: np.ndarray, b: np.ndarray, g: int) -> np.ndarray:
    """``log E[p^g]`` for ``p ~ Beta(a, b)``: ``sum_{j<g} log((a + j) / (a + b + j))`` (exact; g passes)."""
    out = np.zeros(len(a))
    for j in range(g):
        out += np.log((a + j) / (a + b + j))
    return out


def mixed_group_probability(a: np.ndarray, b: np.ndarray, group_size: int) -> np.ndarray:
    """``E[1 - p^G - (1 - p)^G]`` for ``p ~ Beta(a, b)``: the chance that a group of ``G`` is mixed.

    From ``E[p^G] = prod_{j<G} (a + j) / (a + b + j)`` in float64: O(G) vector passes, no special functions.

    >>> round(float(mixed_group_probability(np.array([50.0]), np.array([50.0]), 2)[0]), 4)  # ~ 2 p (1 - p)
    0.495
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    out = np.empty(len(a))
    for lo in range(0, len(a), _CHUNK):
        ta, tb = a[lo : lo + _CHUNK], b[lo : lo + _CHUNK]
        both = np.exp(_log_moment(ta, tb, group_size)) + np.exp(_log_moment(tb, ta, group_size))
        out[lo : lo + _CHUNK] = np.maximum(1.0 - both, 0.0)
    return out


def expected_variance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``4 E[p (1 - p)] = 4 a b / ((a + b)(a + b + 1))`` for ``p ~ Beta(a, b)`` (1 at a certain ``p = 1/2``).

    >>> expected_variance(np.array([1.0]), np.array([1.0])).tolist()   # uniform p: 4 * (1/2 - 1/3)
    [0.6666666666666666]
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return 4.0 * a * b / ((a + b) * (a + b + 1.0))


def expected_success(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The posterior mean pass rate ``a / (a + b)``."""
    return np.asarray(a, dtype=np.float64) / (np.asarray(a, dtype=np.float64) + b)


def prompt_value(a: np.ndarray, b: np.ndarray, group_size: int, objective: str) -> np.ndarray:
    """What a prompt's group is expected to teach: :func:`mixed_group_probability` or :func:`expected_variance`."""
    if objective == "mixed":
        return mixed_group_probability(a, b, group_size)
    if objective == "variance":
        return expected_variance(a, b)
    raise ValueError(f"objective {objective!r} is not one of {OBJECTIVES}")


def frontier_level(level_s: Sequence[float], level_f: Sequence[float]) -> int | None:
    """The complexity level whose pass rate is nearest 1/2 (None before any evidence); ties go to the harder one.

    >>> frontier_level([8.0, 4.0, 1.0], [2.0, 6.0, 9.0])   # pass rates 0.8, 0.4, 0.1
    1
    """
    s, f = np.asarray(level_s, dtype=np.float64), np.asarray(level_f, dtype=np.float64)
    seen = (s + f) > 0
    if not seen.any():
        return None
    rate = (s + 0.5) / (s + f + 1.0)
    distance = np.where(seen, np.abs(rate - 0.5), math.inf)
    best = np.flatnonzero(distance == distance.min())
    return int(best[-1])
