"""The weight formula of :class:`~qdc_trainer.data.sampler.QDCSampler` and its knobs (:class:`QDCSamplerConfig`).

The weight of example ``i`` (cluster ``k = cluster_i``, ``n_k`` examples in its cluster) is::

    w_i = exp(beta_q * zq_i)                       quality, soft (never a hard filter)
        * exp(b_c * zc_i)                          complexity (b_c = beta_c, or the tilt towards a target)
        * (n_k / mean_k n_k) ** (-alpha)           diversity: small clusters gain mass
        * clip((l_i / l_bar) ** gamma_e, 1/R, R)   online, per example: unlearned examples keep mass
        * clip((L_k / l_bar) ** gamma_k, 1/R, R)   online, per cluster
        * base_i                                   optional user weights

    p_i = (1 - floor) * w_i / sum_j w_j + floor / N

where ``zq``, ``zc`` are z-scores of the quality and complexity columns, clipped
to [-3, 3]; ``l_i`` is an exponential moving average (EMA) of example ``i``'s
training loss (its cluster's EMA ``L_k`` until it has been seen, the global
EMA ``l_bar`` until the cluster has been seen); ``R = max_online_ratio``. One knob,
``tradeoff`` (λ in [0, 1]), sets the quality-diversity balance:
``beta_q = λ · quality_strength`` and ``alpha = (1 - λ) · diversity_strength``.
The floor keeps every example reachable: ``p_i >= floor / N``.

**Complexity: a push or a target.** By default ``b_c = beta_c = complexity_strength``: the term pushes
upwards, rewarding whatever is above the column's mean, so data chosen or drawn with it is more complex than
the column, and a loop that feeds it back climbs every round. With ``complexity_target = t`` (a value in the
column's units, for example the original data's mean), ``b_c`` is instead the tilt in
``[-beta_c, beta_c]`` for which the complexity factor alone gives the column the mean ``t``::

    sum_i c_i exp(b_c zc_i) / sum_i exp(b_c zc_i) = t

(:func:`complexity_tilt`; the bound nearest to ``t`` when ``t`` is out of reach, 0 when ``t`` is the mean).
Below the mean the term pulls down, above it up, and at ``t`` it stops. An exponential tilt is the
reweighting with mean ``t`` that stays closest to the column's own mix (maximum entropy), so the mix keeps
its shape; a penalty on the distance ``|c_i - t|`` would instead pile the weight onto examples near ``t`` and
narrow the data. The quality, cluster, online and base factors then move the mean further: ``t`` is what the
complexity term aims at, not a guarantee.

The same knobs drive :func:`~qdc_trainer.data.selection.select_budget`, so one
config chooses a budget and then trains on it. The functions here are pure and
work a chunk of 1M examples at a time (no N-sized float64 temporaries): the
sampler keeps the state, these compute from it.

>>> cfg = QDCSamplerConfig(tradeoff=0.0, floor=0.1)
>>> clusters = np.array([0, 0, 0, 1], dtype=np.int32)
>>> static = static_weights(4, cfg)
>>> per_cluster, unseen = cluster_factors(np.bincount(clusters).astype(float), cfg)
>>> cdf = np.empty(4)
>>> fill_cdf(cdf, static, clusters, per_cluster, cfg)
>>> np.diff(cdf, prepend=0.0).round(3).tolist()  # the lone example of cluster 1 gets its cluster's half
[0.175, 0.175, 0.175, 0.475]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .columns import zscore

__all__ = [
    "QDCSamplerConfig",
    "cluster_factors",
    "complexity_tilt",
    "fill_cdf",
    "is_online",
    "online_factor",
    "static_weights",
    "weight_stats",
]

_CHUNK = 1 << 20  # examples per vectorised chunk
DEFAULT_UPDATE_EVERY = 10
"""Optimizer steps between weight refreshes when ``update_every`` is unset (the loss signal)."""


@dataclass
class QDCSamplerConfig:
    """Knobs of :class:`QDCSampler` (see the module docstring for the formula)."""

    tradeoff: float = field(
        default=0.5, metadata={"help": "λ in [0, 1]: 0 = all diversity (cluster balance), 1 = all quality."}
    )
    quality_strength: float = field(
        default=2.0, metadata={"help": "beta_q at tradeoff 1: weight multiplier per quality std."}
    )
    diversity_strength: float = field(
        default=1.0, metadata={"help": "alpha at tradeoff 0: 1 gives every cluster equal mass."}
    )
    complexity_strength: float = field(
        default=0.5, metadata={"help": "beta_c: weight multiplier per complexity std (0 = off)."}
    )
    complexity_target: float | None = field(
        default=None,
        metadata={
            "help": "A value in the complexity column's units that the complexity term pulls the mean towards "
            "(an exponential tilt of at most beta_c per std); unset: the term pushes upwards."
        },
    )
    example_loss_strength: float = field(
        default=0.5, metadata={"help": "gamma_e: exponent of the per-example loss ratio."}
    )
    cluster_loss_strength: float = field(
        default=0.5, metadata={"help": "gamma_k: exponent of the per-cluster loss ratio."}
    )
    max_online_ratio: float = field(default=4.0, metadata={"help": "R: each online factor is clipped to [1/R, R]."})
    ema_decay: float = field(default=0.9, metadata={"help": "EMA decay of the per-example and per-cluster losses."})
    floor: float = field(default=0.1, metadata={"help": "Share of probability spread uniformly: p_i >= floor / N."})
    update_every: int | None = field(
        default=None,
        metadata={
            "help": "Apply the feedback and refresh the weights every this many optimizer steps; unset: "
            f"{DEFAULT_UPDATE_EVERY}, or under GRPO after every generation batch."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the index stream (with the epoch and block)."})
    success_threshold: float | None = field(
        default=None,
        metadata={
            "help": "Under GRPO: the reward at or above which a completion counts as solved; unset: rewards must "
            "lie in [0, 1] and count as fractional successes."
        },
    )
    success_decay: float = field(
        default=0.995,
        metadata={
            "help": "Under GRPO: the success counts are multiplied by this per optimizer step (the policy moves; "
            "0.995: evidence halves in about 140 steps)."
        },
    )
    success_prior: float = field(
        default=2.0,
        metadata={
            "help": "Under GRPO: pseudo-counts with which a prompt's pass rate borrows its difficulty cell's, and a "
            "cell's the run's (more: more pooling)."
        },
    )

    def __post_init__(self) -> None:
        checks = {
            "tradeoff": 0 <= self.tradeoff <= 1,
            "quality_strength": self.quality_strength >= 0,
            "diversity_strength": self.diversity_strength >= 0,
            "complexity_strength": self.complexity_strength >= 0,
            "example_loss_strength": self.example_loss_strength >= 0,
            "cluster_loss_strength": self.cluster_loss_strength >= 0,
            "max_online_ratio": self.max_online_ratio >= 1,
            "ema_decay": 0 <= self.ema_decay < 1,
            "success_decay": 0 < self.success_decay <= 1,
            "floor": 0 < self.floor <= 1,
            "seed": isinstance(self.seed, int) and self.seed >= 0,
            "success_prior": self.success_prior > 0,
        }
        ranges = {
            "tradeoff": "[0, 1]",
            "max_online_ratio": ">= 1",
            "ema_decay": "[0, 1)",
            "success_decay": "(0, 1]",
            "floor": "(0, 1]",
            "update_every": "an int >= 1",
            "seed": "an int >= 0",
            "success_prior": "> 0",
        }
        every = self.update_every
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"QDCSampler update_every={every!r} is invalid; it must be an int >= 1 or None")
        for name in ("complexity_target", "success_threshold"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            ):
                raise ValueError(f"QDCSampler {name}={value!r} is invalid; it must be a finite number or None")
        for name, ok in checks.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok:
                raise ValueError(f"QDCSampler {name}={value!r} is invalid; it must be {ranges.get(name, '>= 0')}")


def static_weights(
    num_examples: int,
    config: QDCSamplerConfig,
    *,
    quality: np.ndarray | None = None,
    quality_moments: tuple[float, float] | None = None,
    complexity: np.ndarray | None = None,
    complexity_moments: tuple[float, float] | None = None,
    base_weights: np.ndarray | None = None,
) -> np.ndarray:
    """``exp(beta_q zq + b_c zc) * base_i`` as float32: the part of the weight that never changes (``b_c``:
    ``beta_c``, or with ``complexity_target`` the :func:`complexity_tilt`).

    The z-scores use the columns' :func:`~qdc_trainer.data.columns.moments` (computed once by the caller).

    >>> w = static_weights(2, QDCSamplerConfig(tradeoff=1.0, quality_strength=1.0), quality=np.array([0.0, 2.0]),
    ...                    quality_moments=(1.0, 1.0))
    >>> w.dtype, [round(float(x), 3) for x in w]  # exp(-1), exp(1)
    (dtype('float32'), [0.368, 2.718])
    """
    cfg, n = config, num_examples
    out = np.empty(n, dtype=np.float32)
    tilt = cfg.complexity_strength
    if complexity is not None and cfg.complexity_target is not None:
        tilt = complexity_tilt(complexity, complexity_moments, cfg.complexity_target, cfg.complexity_strength)
    for lo in range(0, n, _CHUNK):
        hi = min(lo + _CHUNK, n)
        log_w = np.zeros(hi - lo)
        if quality is not None:
            log_w += cfg.tradeoff * cfg.quality_strength * zscore(quality[lo:hi], quality_moments)
        if complexity is not None:
            log_w += tilt * zscore(complexity[lo:hi], complexity_moments)
        w = np.exp(log_w)
        if base_weights is not None:
            w *= base_weights[lo:hi]
        out[lo:hi] = w
    return out


def complexity_tilt(
    complexity: np.ndarray,
    moments: tuple[float, float],
    target: float,
    strength: float,
    *,
    tol: float = 1e-10,
) -> float:
    """The ``b`` in ``[-strength, strength]`` whose weights ``exp(b zc_i)`` give ``complexity`` the mean ``target``.

    ``zc`` is :func:`~qdc_trainer.data.columns.zscore` with ``moments``. The weighted mean grows with ``b``
    (its derivative is the weighted covariance of ``c`` and ``zc``), so bisection finds it; when ``target``
    is out of reach the nearest bound comes back. Each step is one pass over the column, a chunk at a time
    (about 40 passes, once, when the weights are built). A constant column gives 0.

    >>> c = np.array([1.0, 3.0])  # z = -1, +1: the weighted mean is 2 + tanh(b)
    >>> round(complexity_tilt(c, (2.0, 1.0), 2.5, 2.0), 6), round(float(np.arctanh(0.5)), 6)
    (0.549306, 0.549306)
    >>> complexity_tilt(c, (2.0, 1.0), 2.0, 2.0), complexity_tilt(c, (2.0, 1.0), 9.0, 0.3)  # the mean; out of reach
    (0.0, 0.3)
    """
    if not math.isfinite(target):
        raise ValueError(f"target must be a finite number, got {target!r}")
    if strength <= 0 or len(complexity) == 0:
        return 0.0
    mean, std = moments
    if std <= 1e-12 * max(1.0, abs(mean)):
        return 0.0

    def weighted_mean(b: float) -> float:
        # exp(b z - |b| * 3) never overflows (|z| <= 3): the shift cancels in the ratio.
        total, weighted = 0.0, 0.0
        for lo in range(0, len(complexity), _CHUNK):
            c = complexity[lo : lo + _CHUNK].astype(np.float64)
            w = np.exp(b * zscore(c, moments) - abs(b) * 3.0)
            total += float(w.sum())
            weighted += float(w @ c)
        return weighted / total

    if weighted_mean(0.0) == target:
        return 0.0
    lo, hi = -float(strength), float(strength)
    if weighted_mean(lo) >= target:
        return lo
    if weighted_mean(hi) <= target:
        return hi
    while hi - lo > tol * max(1.0, strength):
        mid = 0.5 * (lo + hi)
        if weighted_mean(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def online_factor(ratio: np.ndarray, strength: float, max_ratio: float) -> np.ndarray:
    """``clip(ratio ** strength, 1 / max_ratio, max_ratio)``: the weight factor of a loss ratio.

    >>> online_factor(np.array([0.25, 1.0, 100.0]), 1.0, 4.0).tolist()
    [0.25, 1.0, 4.0]
    """
    return np.clip(np.maximum(ratio, 1e-12) ** strength, 1 / max_ratio, max_ratio)


def is_online(global_loss_ema: float) -> bool:
    """Whether the loss feedback counts yet: a global loss EMA exists and is positive."""
    return not math.isnan(global_loss_ema) and global_loss_ema > 0


def cluster_factors(
    cluster_sizes: np.ndarray,
    config: QDCSamplerConfig,
    cluster_loss_ema: np.ndarray | None = None,
    global_loss_ema: float = math.nan,
) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster: (cluster balance x online cluster factor x an unseen example's factor, the latter alone).

    An example not seen yet takes its cluster's loss EMA; a cluster not seen yet the global one.

    >>> factor, unseen = cluster_factors(np.array([3.0, 1.0]), QDCSamplerConfig(tradeoff=0.0))
    >>> factor.tolist(), unseen.tolist()
    ([0.6666666666666666, 2.0], [1.0, 1.0])
    """
    cfg = config
    alpha = (1 - cfg.tradeoff) * cfg.diversity_strength
    factor = (cluster_sizes / cluster_sizes.mean()) ** (-alpha)
    unseen = np.ones(len(cluster_sizes))
    if cluster_loss_ema is not None and is_online(global_loss_ema):
        ratio = np.where(np.isnan(cluster_loss_ema), 1.0, cluster_loss_ema / global_loss_ema)
        factor = factor * online_factor(ratio, cfg.cluster_loss_strength, cfg.max_online_ratio)
        unseen = online_factor(ratio, cfg.example_loss_strength, cfg.max_online_ratio)
    return factor * unseen, unseen


def fill_cdf(
    cdf: np.ndarray,
    static: np.ndarray,
    clusters: np.ndarray,
    per_cluster: np.ndarray,
    config: QDCSamplerConfig,
    *,
    unseen: np.ndarray | None = None,
    loss_ema: np.ndarray | None = None,
    global_loss_ema: float = math.nan,
    example_factor: np.ndarray | None = None,
) -> None:
    """Write the cumulative draw probabilities into ``cdf`` (float64, N long), with the floor folded in.

    ``per_cluster`` and ``unseen`` come from :func:`cluster_factors`; with ``loss_ema``
    (NaN for an example not seen yet) each seen example's own loss factor replaces
    its cluster's; ``example_factor`` (N long) multiplies each weight (the success
    signal under GRPO: :mod:`qdc_trainer.data.success`). Raises ``FloatingPointError`` when the weights do not sum to a
    positive finite number (``cdf`` is then left partly written).
    """
    n, floor, cfg = len(cdf), config.floor, config
    per_cluster32 = per_cluster.astype(np.float32)
    example_signal = loss_ema is not None and is_online(global_loss_ema) and cfg.example_loss_strength > 0
    total = 0.0
    for lo in range(0, n, _CHUNK):
        hi = min(lo + _CHUNK, n)
        k = clusters[lo:hi]
        w = static[lo:hi] * per_cluster32[k]
        if example_signal:
            ema = loss_ema[lo:hi]
            seen = np.flatnonzero(~np.isnan(ema))
            if len(seen):
                own = online_factor(
                    ema[seen].astype(np.float64) / global_loss_ema, cfg.example_loss_strength, cfg.max_online_ratio
                )
                w[seen] *= (own / unseen[k[seen]]).astype(np.float32)
        if example_factor is not None:
            w *= example_factor[lo:hi].astype(np.float32, copy=False)
        np.cumsum(w, dtype=np.float64, out=cdf[lo:hi])
        cdf[lo:hi] += total
        total = float(cdf[hi - 1])
    if not math.isfinite(total) or total <= 0:
        raise FloatingPointError(f"QDCSampler weights sum to {total}; lower the strengths or check the score columns")
    # p_i = (1 - floor) w_i / W + floor / N, folded into the running sum:
    # cdf_i = (1 - floor) C_i / W + (i + 1) floor / N.
    scale = (1 - floor) / total
    for lo in range(0, n, _CHUNK):
        hi = min(lo + _CHUNK, n)
        chunk = cdf[lo:hi]
        chunk *= scale
        chunk += np.arange(lo + 1, hi + 1, dtype=np.float64) * (floor / n)


def weight_stats(cdf: np.ndarray) -> dict[str, float]:
    """ESS / N and the normalised entropy of the draw probabilities whose cumulative sum is ``cdf`` (one pass).

    >>> weight_stats(np.array([0.25, 0.5, 0.75, 1.0]))
    {'ess_ratio': 1.0, 'weight_entropy': 1.0}
    """
    n, sum_sq, entropy, previous = len(cdf), 0.0, 0.0, 0.0
    for lo in range(0, n, _CHUNK):
        hi = min(lo + _CHUNK, n)
        p = np.diff(cdf[lo:hi], prepend=previous)
        previous = float(cdf[hi - 1])
        sum_sq += float(p @ p)
        nz = p[p > 0]
        entropy -= float((nz * np.log(nz)).sum())
    return {"ess_ratio": 1.0 / (n * sum_sq), "weight_entropy": entropy / math.log(n) if n > 1 else 1.0}
