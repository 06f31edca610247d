"""QDCSampler: draws training examples with weights that balance quality, diversity and complexity,
and that move online with the training loss.

The weight of example ``i`` (cluster ``k = cluster_i``, ``n_k`` examples in its cluster) is::

    w_i = exp(beta_q * zq_i)                       quality, soft (never a hard filter)
        * exp(beta_c * zc_i)                       complexity
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

Losses come back from the training step (:meth:`QDCSampler.record`, called by
``QDCTrainer``); they are applied, and the weights refreshed, every
``update_every`` optimizer steps (:meth:`QDCSampler.update`). Indices are drawn
in blocks of ``block_size`` from the weights in force when the block is drawn,
with a random stream seeded by ``(seed, epoch, block)``: no global RNG, so every
process that sees the same feedback draws the same indices. ``len()`` is fixed.
A block is drawn when the dataloader first needs it; because dataloaders fetch
ahead, a block reflects the feedback of the blocks before the previous one (two
or more update windows back with dataloader workers).

Memory: 28 bytes per example (quality, complexity, cluster id, loss EMA and the
fixed part of the weight as 32-bit values, the cumulative probabilities as
float64). A refresh works in chunks of 1M examples and costs about 10 ns per
example, so with 100 million examples choose ``update_every`` so that a refresh
(about a second) is rare next to the steps between refreshes.
"""

from __future__ import annotations

import ast
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ._io import atomic_savez

__all__ = ["QDCSampler", "QDCSamplerConfig", "SamplerStateError"]

TELEMETRY_PREFIX = "qdc/sampler/"
"""Prefix of :meth:`QDCSampler.telemetry`'s keys (``QDCTrainer`` logs them)."""
TELEMETRY_KEYS = ("ess_ratio", "weight_entropy", "cluster_coverage", "quality", "complexity", "loss_ema", "updates")
"""The telemetry's names under the prefix; ``quality`` and ``complexity`` are logged as ``<name>_trained`` and
``<name>_dataset``."""
_CHUNK = 1 << 20  # examples per vectorised chunk of a refresh
_MAX_WINDOW = 1 << 20  # telemetry keeps at most this many recent trained indices
_MAX_OPEN_BLOCKS = 16  # drawn blocks kept for a checkpoint (prefetching reaches only a few ahead)


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
    example_loss_strength: float = field(
        default=0.5, metadata={"help": "gamma_e: exponent of the per-example loss ratio."}
    )
    cluster_loss_strength: float = field(
        default=0.5, metadata={"help": "gamma_k: exponent of the per-cluster loss ratio."}
    )
    max_online_ratio: float = field(default=4.0, metadata={"help": "R: each online factor is clipped to [1/R, R]."})
    ema_decay: float = field(default=0.9, metadata={"help": "EMA decay of the per-example and per-cluster losses."})
    floor: float = field(default=0.1, metadata={"help": "Share of probability spread uniformly: p_i >= floor / N."})
    update_every: int = field(
        default=10, metadata={"help": "Apply losses and refresh weights every this many optimizer steps."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the index stream (with the epoch and block)."})

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
            "floor": 0 < self.floor <= 1,
            "update_every": isinstance(self.update_every, int) and self.update_every >= 1,
            "seed": isinstance(self.seed, int) and self.seed >= 0,
        }
        ranges = {
            "tradeoff": "[0, 1]",
            "max_online_ratio": ">= 1",
            "ema_decay": "[0, 1)",
            "floor": "(0, 1]",
            "update_every": "an int >= 1",
            "seed": "an int >= 0",
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok:
                raise ValueError(f"QDCSampler {name}={value!r} is invalid; it must be {ranges.get(name, '>= 0')}")


def _column(values: Any, name: str, n: int | None, *, integer: bool = False) -> np.ndarray:
    """A checked 1-D column: right length, numeric, finite."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one value per example (1-D), got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} values but the dataset has {n} examples")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype} (e.g. {arr[:1].tolist()})")
    if integer:
        if arr.dtype.kind == "f":
            if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
                raise TypeError(f"{name} must hold integer cluster ids")
            arr = arr.astype(np.int64)
        return arr
    arr = arr.astype(np.float32, copy=False)  # 4 bytes per example
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{name} has NaN or inf at rows {bad[:5].tolist()} ({len(bad)} in all; values beyond the float32 range "
            "count as inf); fix or drop them"
        )
    return arr


def _dataset_columns(dataset: Any, spec: dict[str, tuple[str, str | None]]) -> dict[str, Any]:
    """Score columns of a ``datasets.Dataset`` by argument name; ``spec`` maps an argument to (the parameter that
    named its column, the column or None to leave it out). ``keys`` comes back as a list, any other column as a
    numeric array."""
    names = dataset.column_names
    out: dict[str, Any] = {}
    for arg, (param, column) in spec.items():
        if column is None:
            continue
        if column not in names:
            raise ValueError(
                f"{arg}: column {column!r} is not in the dataset (columns: {names}); pass {param}=None to "
                "leave it out, or compute it with qdc_trainer.metrics.score_dataset"
            )
        if arg == "keys":
            out[arg] = list(dataset[column])
            continue
        try:
            values = np.asarray(dataset.with_format("numpy")[column])
        except (TypeError, ValueError) as err:
            raise TypeError(f"column {column!r} is not numeric: {err}") from None
        if values.dtype == object:
            raise TypeError(f"column {column!r} is not numeric (mixed or missing values)")
        out[arg] = values
    return out


def _moments(x: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation in float64, a chunk at a time (no N-sized float64 copy)."""
    total, total_sq = 0.0, 0.0
    for lo in range(0, len(x), _CHUNK):
        chunk = x[lo : lo + _CHUNK].astype(np.float64)
        total += float(chunk.sum())
        total_sq += float(chunk @ chunk)
    mean = total / len(x)
    return mean, math.sqrt(max(total_sq / len(x) - mean * mean, 0.0))


def _zscore(x: np.ndarray, moments: tuple[float, float]) -> np.ndarray:
    mean, std = moments
    if std <= 1e-12 * max(1.0, abs(mean)):
        return np.zeros(len(x))
    return np.clip((x - mean) / std, -3, 3)


def _dense_ids(raw: np.ndarray) -> np.ndarray:
    """Cluster ids renumbered 0..K-1 (in order of value), as int32; ids that are already 0..K-1 are kept."""
    lo, hi = int(raw.min()), int(raw.max())
    if lo >= 0 and hi <= 4 * len(raw):  # O(N) lookup table instead of a sort
        present = np.bincount(raw, minlength=hi + 1) > 0
        if present.all() and hi < 2**31:
            return raw.astype(np.int32, copy=False)
        rank = (np.cumsum(present) - 1).astype(np.int32)
        return rank[raw]
    _, dense = np.unique(raw, return_inverse=True)
    return dense.astype(np.int32)


class QDCSampler(torch.utils.data.Sampler[int]):
    """A weighted sampler over ``num_examples`` examples whose weights balance Q, D and C and follow the loss.

    Args:
        num_examples: the dataset size N.
        quality: one score per example (higher is better), or None.
        complexity: one score per example (higher is more complex), or None.
        clusters: one integer cluster id per example (e.g. from
            ``qdc_trainer.metrics.score_dataset``), or None for a single cluster.
        base_weights: optional non-negative user weights, multiplied in.
        config: a :class:`QDCSamplerConfig`; keyword arguments override its fields.
        num_samples: indices per epoch (``len()``); default N.
        block_size: indices drawn per block from one set of weights; ``QDCTrainer``
            sets it to ``update_every`` optimizer steps' worth of examples.

    >>> s = QDCSampler(4, quality=[0.0, 1.0, 2.0, 3.0], seed=1, block_size=4)
    >>> len(s), len(list(s))
    (4, 4)
    >>> p = s.probabilities()
    >>> bool(p[3] > p[0]), round(float(p.sum()), 6)
    (True, 1.0)
    """

    def __init__(
        self,
        num_examples: int,
        *,
        quality: Sequence[float] | np.ndarray | None = None,
        complexity: Sequence[float] | np.ndarray | None = None,
        clusters: Sequence[int] | np.ndarray | None = None,
        base_weights: Sequence[float] | np.ndarray | None = None,
        config: QDCSamplerConfig | None = None,
        num_samples: int | None = None,
        block_size: int | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(num_examples, bool) or not isinstance(num_examples, (int, np.integer)) or num_examples < 1:
            raise ValueError(f"num_examples must be a positive int, got {num_examples!r}")
        base = asdict(config) if config is not None else {}
        unknown = set(overrides) - set(QDCSamplerConfig.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown QDCSampler option(s) {sorted(unknown)}; see QDCSamplerConfig")
        self.config = QDCSamplerConfig(**{**base, **overrides})
        n = int(num_examples)
        self.num_examples = n
        self.num_samples = n if num_samples is None else int(num_samples)
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.block_size = None if block_size is None else self._check_block_size(block_size)

        self.quality = None if quality is None else _column(quality, "quality", n)
        self.complexity = None if complexity is None else _column(complexity, "complexity", n)
        self._q_moments = None if self.quality is None else _moments(self.quality)
        self._c_moments = None if self.complexity is None else _moments(self.complexity)
        if clusters is None:
            self.clusters = np.zeros(n, dtype=np.int32)
        else:
            self.clusters = _dense_ids(_column(clusters, "clusters", n, integer=True))
        self.num_clusters = int(self.clusters.max()) + 1
        self.cluster_sizes = np.bincount(self.clusters, minlength=self.num_clusters).astype(np.float64)
        bw = None
        if base_weights is not None:
            bw = _column(base_weights, "base_weights", n)
            if (bw < 0).any():
                raise ValueError(f"base_weights has negative values at rows {np.flatnonzero(bw < 0)[:5].tolist()}")
            if not (bw > 0).any():
                raise ValueError("base_weights are all zero: no example could be drawn")
        self._static = self._static_weights(bw)

        # Online state.
        self.loss_ema = np.full(n, np.nan, dtype=np.float32)
        self.cluster_loss_ema = np.full(self.num_clusters, np.nan)
        self.global_loss_ema = math.nan
        self._pending_idx: list[np.ndarray] = []
        self._pending_loss: list[np.ndarray] = []
        self.num_updates = 0
        # Stream position.
        self.epoch = 0
        self.consumed = 0  # indices of this epoch already trained on (fed back)
        self._blocks: dict[int, np.ndarray] = {}  # blocks drawn and not yet trained on
        self._replay: dict[int, np.ndarray] = {}  # blocks restored from a checkpoint
        self._skip_below = 0  # positions a resumed run skips
        self._window: list[np.ndarray] = []  # indices fed back since the last telemetry read (the last _MAX_WINDOW)
        self._window_size = 0
        self._cdf = np.empty(n, dtype=np.float64)
        self._stats: dict[str, float] | None = None  # computed when telemetry asks
        self._refresh()

    # ------------------------------------------------------------------ construction helpers

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        *,
        quality_column: str | None = "quality",
        complexity_column: str | None = "complexity",
        cluster_column: str | None = "cluster",
        weight_column: str | None = None,
        **kwargs: Any,
    ) -> QDCSampler:
        """Build a sampler from the score columns of a ``datasets.Dataset``.

        Pass None for a column you do not have (its term is left out). The columns
        can be computed with :func:`qdc_trainer.metrics.score_dataset`.
        """
        if not hasattr(dataset, "__len__"):
            raise TypeError(
                "QDCSampler needs a map-style dataset with __len__ (an IterableDataset streams in its own order; "
                "materialise it or use a Dataset)"
            )
        names = getattr(dataset, "column_names", None)
        if names is None:
            raise TypeError(f"from_dataset needs a datasets.Dataset with named columns, got {type(dataset).__name__}")
        columns = _dataset_columns(
            dataset,
            {
                "quality": ("quality_column", quality_column),
                "complexity": ("complexity_column", complexity_column),
                "clusters": ("cluster_column", cluster_column),
                "base_weights": ("weight_column", weight_column),
            },
        )
        try:
            return cls(len(dataset), **columns, **kwargs)
        except (TypeError, ValueError) as err:
            raise type(err)(
                f"{err} (dataset columns {quality_column!r}/{complexity_column!r}/{cluster_column!r})"
            ) from None

    @staticmethod
    def _check_block_size(block_size: Any) -> int:
        if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {block_size!r}")
        return int(block_size)

    # ------------------------------------------------------------------ the Sampler protocol

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (a no-op when it is the current one, as on resume)."""
        epoch = int(epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            self.consumed = 0
            self._blocks.clear()
            self._replay.clear()
            self._skip_below = 0

    def reset_position(self) -> None:
        """Forget the stream position (a new training run from epoch 0); learned loss EMAs are kept."""
        self.epoch = 0
        self.consumed = 0
        self._blocks.clear()
        self._replay.clear()
        self._skip_below = 0

    def __iter__(self) -> Iterator[int]:
        block_size = self.block_size or min(self.num_samples, 4096)
        epoch, replay, skip_below = self.epoch, self._replay, self._skip_below
        self._replay, self._skip_below = {}, 0
        n_blocks = -(-self.num_samples // block_size)
        for b in range(n_blocks):
            size = min(block_size, self.num_samples - b * block_size)
            if b in replay:
                block = replay[b]
            elif (b + 1) * block_size <= skip_below:
                block = np.zeros(size, dtype=np.int64)  # a resumed run skips these positions
            else:
                block = self.draw_block(epoch, b, size)
            self._blocks[b] = block
            self._forget_trained_blocks(block_size)
            yield from block.tolist()

    def draw_block(self, epoch: int, block: int, size: int) -> np.ndarray:
        """Indices of block ``block`` of epoch ``epoch`` from the current weights (a pure function of them)."""
        seed = np.random.SeedSequence([self.config.seed, int(epoch), int(block)]).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(seed) & ((1 << 63) - 1))
        u = torch.rand(size, generator=generator, dtype=torch.float64) * float(self._cdf[-1])
        idx = torch.searchsorted(torch.from_numpy(self._cdf), u, right=True)
        return idx.clamp_(max=self.num_examples - 1).numpy()

    def _forget_trained_blocks(self, block_size: int) -> None:
        """Keep only blocks not yet trained on (at most the last ``_MAX_OPEN_BLOCKS``, for runs without feedback).

        Block 0 is always kept: under several processes accelerate completes the last, short batch of an
        epoch with the first indices of the epoch's stream, so a resumed run must replay them too.
        """
        newest = max(self._blocks)
        for b in [
            b
            for b in self._blocks
            if b > 0 and ((b + 1) * block_size <= self.consumed or b <= newest - _MAX_OPEN_BLOCKS)
        ]:
            del self._blocks[b]

    # ------------------------------------------------------------------ online feedback

    def record(self, indices: Any, losses: Any) -> None:
        """Feed back per-example training losses (identical on every process, in stream order).

        NaN losses (an example with no supervised token) count as consumed but carry
        no signal. Applied at the next :meth:`update`.
        """
        idx = np.asarray(indices.detach().cpu() if hasattr(indices, "detach") else indices, dtype=np.int64).reshape(-1)
        loss = np.asarray(
            losses.detach().float().cpu() if hasattr(losses, "detach") else losses, dtype=np.float64
        ).reshape(-1)
        if len(idx) != len(loss):
            raise ValueError(f"record: {len(idx)} indices but {len(loss)} losses")
        if len(idx) and (idx.min() < 0 or idx.max() >= self.num_examples):
            raise IndexError(f"record: indices must be in [0, {self.num_examples}), got {idx.min()}..{idx.max()}")
        self.consumed += len(idx)
        self._pending_idx.append(idx)
        self._pending_loss.append(loss)
        self._window.append(idx)
        self._window_size += len(idx)
        while self._window_size > _MAX_WINDOW and len(self._window) > 1:  # runs that never read telemetry
            self._window_size -= len(self._window.pop(0))

    def update(self) -> bool:
        """Apply the pending losses to the EMAs and refresh the weights. Returns False when nothing was pending."""
        if not self._pending_idx:
            return False
        idx = np.concatenate(self._pending_idx)
        loss = np.concatenate(self._pending_loss)
        self._pending_idx.clear()
        self._pending_loss.clear()
        keep = np.isfinite(loss)
        idx, loss = idx[keep], loss[keep]
        if len(idx) == 0:
            return False
        decay = self.config.ema_decay
        # Per example: the window's mean loss of each index enters its EMA once.
        uniq, inverse = np.unique(idx, return_inverse=True)
        mean_loss = np.bincount(inverse, weights=loss) / np.bincount(inverse)
        old = self.loss_ema[uniq].astype(np.float64)
        self.loss_ema[uniq] = np.where(np.isnan(old), mean_loss, decay * old + (1 - decay) * mean_loss)
        # Per cluster and global.
        k = self.clusters[idx]
        counts = np.bincount(k, minlength=self.num_clusters)
        sums = np.bincount(k, weights=loss, minlength=self.num_clusters)
        seen = counts > 0
        cluster_mean = sums[seen] / counts[seen]
        old_k = self.cluster_loss_ema[seen]
        self.cluster_loss_ema[seen] = np.where(
            np.isnan(old_k), cluster_mean, decay * old_k + (1 - decay) * cluster_mean
        )
        batch_mean = float(loss.mean())
        g = self.global_loss_ema
        self.global_loss_ema = batch_mean if math.isnan(g) else decay * g + (1 - decay) * batch_mean
        self.num_updates += 1
        self._refresh()
        return True

    # ------------------------------------------------------------------ weights

    def _static_weights(self, base_weights: np.ndarray | None) -> np.ndarray:
        """exp(beta_q zq + beta_c zc) * base weights, once, as float32 (the part that never changes)."""
        cfg, n = self.config, self.num_examples
        out = np.empty(n, dtype=np.float32)
        for lo in range(0, n, _CHUNK):
            hi = min(lo + _CHUNK, n)
            log_w = np.zeros(hi - lo)
            if self.quality is not None:
                log_w += cfg.tradeoff * cfg.quality_strength * _zscore(self.quality[lo:hi], self._q_moments)
            if self.complexity is not None:
                log_w += cfg.complexity_strength * _zscore(self.complexity[lo:hi], self._c_moments)
            w = np.exp(log_w)
            if base_weights is not None:
                w *= base_weights[lo:hi]
            out[lo:hi] = w
        return out

    def _cluster_factors(self) -> tuple[np.ndarray, np.ndarray]:
        """Per cluster: (cluster balance x online cluster factor x an unseen example's factor, the latter alone)."""
        cfg = self.config
        alpha = (1 - cfg.tradeoff) * cfg.diversity_strength
        factor = (self.cluster_sizes / self.cluster_sizes.mean()) ** (-alpha)
        unseen = np.ones(self.num_clusters)
        if self._online:
            ratio = np.where(np.isnan(self.cluster_loss_ema), 1.0, self.cluster_loss_ema / self.global_loss_ema)
            factor = factor * self._online_factor(ratio, cfg.cluster_loss_strength)
            unseen = self._online_factor(ratio, cfg.example_loss_strength)  # an unseen example takes its cluster's loss
        return factor * unseen, unseen

    @property
    def _online(self) -> bool:
        return not math.isnan(self.global_loss_ema) and self.global_loss_ema > 0

    def _online_factor(self, ratio: np.ndarray, strength: float) -> np.ndarray:
        r = self.config.max_online_ratio
        return np.clip(np.maximum(ratio, 1e-12) ** strength, 1 / r, r)

    def _refresh(self) -> None:
        """Recompute the cumulative probabilities, a chunk at a time (no N-sized temporaries)."""
        n, floor, cfg = self.num_examples, self.config.floor, self.config
        per_cluster, unseen = self._cluster_factors()
        per_cluster32 = per_cluster.astype(np.float32)
        example_signal = self._online and cfg.example_loss_strength > 0
        total = 0.0
        for lo in range(0, n, _CHUNK):
            hi = min(lo + _CHUNK, n)
            k = self.clusters[lo:hi]
            w = self._static[lo:hi] * per_cluster32[k]
            if example_signal:
                ema = self.loss_ema[lo:hi]
                seen = np.flatnonzero(~np.isnan(ema))
                if len(seen):
                    own = self._online_factor(
                        ema[seen].astype(np.float64) / self.global_loss_ema, cfg.example_loss_strength
                    )
                    w[seen] *= (own / unseen[k[seen]]).astype(np.float32)
            np.cumsum(w, dtype=np.float64, out=self._cdf[lo:hi])
            self._cdf[lo:hi] += total
            total = float(self._cdf[hi - 1])
        self._device_np: torch.Tensor | None = None  # loss_weights_tensor's device copy of N p, now stale
        if not math.isfinite(total) or total <= 0:
            raise FloatingPointError(
                f"QDCSampler weights sum to {total}; lower the strengths or check the score columns"
            )
        # p_i = (1 - floor) w_i / W + floor / N, folded into the running sum: cdf_i = (1 - floor) C_i / W + (i + 1) floor / N.
        scale = (1 - floor) / total
        for lo in range(0, n, _CHUNK):
            hi = min(lo + _CHUNK, n)
            chunk = self._cdf[lo:hi]
            chunk *= scale
            chunk += np.arange(lo + 1, hi + 1, dtype=np.float64) * (floor / n)
        self._stats = None

    def _weight_stats(self) -> dict[str, float]:
        """ESS / N and the normalised entropy of the draw probabilities (one pass, on demand)."""
        if self._stats is None:
            n, sum_sq, entropy, previous = self.num_examples, 0.0, 0.0, 0.0
            for lo in range(0, n, _CHUNK):
                hi = min(lo + _CHUNK, n)
                p = np.diff(self._cdf[lo:hi], prepend=previous)
                previous = float(self._cdf[hi - 1])
                sum_sq += float(p @ p)
                nz = p[p > 0]
                entropy -= float((nz * np.log(nz)).sum())
            self._stats = {"ess_ratio": 1.0 / (n * sum_sq), "weight_entropy": entropy / math.log(n) if n > 1 else 1.0}
        return self._stats

    def probabilities(self, indices: Any = None) -> np.ndarray:
        """Current draw probabilities (of all examples, or of ``indices`` only, in O(len(indices)))."""
        if indices is None:
            return np.diff(self._cdf, prepend=0.0)
        idx = np.asarray(indices, dtype=np.int64)
        return self._cdf[idx] - np.where(idx > 0, self._cdf[np.maximum(idx - 1, 0)], 0.0)

    def loss_weights(self, indices: Any, mode: str) -> np.ndarray:
        """Per-example loss weights: ``"sampler"`` gives ``N p_i``, ``"importance"`` gives ``1 / (N p_i)``
        (an unbiased estimate of the uniform-sampling loss), ``"none"`` gives ones."""
        idx = np.asarray(indices, dtype=np.int64)
        if mode == "none":
            return np.ones(len(idx))
        p = self.probabilities(idx)
        if mode == "sampler":
            return p * self.num_examples
        if mode == "importance":
            return 1.0 / (p * self.num_examples)
        raise ValueError(f"loss weighting {mode!r} is not one of 'none', 'sampler', 'importance'")

    def loss_weights_tensor(self, indices: torch.Tensor, mode: str) -> torch.Tensor:
        """:meth:`loss_weights` as a float32 tensor on the device of ``indices``, without a copy to the host.

        A device copy of ``N p`` (4 bytes per example) is made at the first call after each weight refresh,
        so the training step itself never synchronises with the host.

        >>> s = QDCSampler(4, example_loss_strength=0.0, cluster_loss_strength=0.0)
        >>> s.loss_weights_tensor(torch.tensor([0, 3]), "importance").tolist()
        [1.0, 1.0]
        """
        if mode not in ("none", "sampler", "importance"):
            raise ValueError(f"loss weighting {mode!r} is not one of 'none', 'sampler', 'importance'")
        if mode == "none":
            return torch.ones(indices.shape, dtype=torch.float32, device=indices.device)
        cached = self._device_np
        if cached is None or cached.device != indices.device:
            n_p = (np.diff(self._cdf, prepend=0.0) * self.num_examples).astype(np.float32)
            cached = self._device_np = torch.from_numpy(n_p).to(indices.device)
        n_p = cached[indices.long().reshape(-1)]
        return n_p if mode == "sampler" else 1.0 / n_p

    # ------------------------------------------------------------------ telemetry

    def telemetry(self, reset: bool = True) -> dict[str, float]:
        """Scalars for ``qdc/sampler/...``: ESS/N, normalised weight entropy, cluster coverage and mean
        quality/complexity of the examples trained on since the last call, against the dataset means."""
        out = {f"qdc/sampler/{k}": v for k, v in self._weight_stats().items()}
        out["qdc/sampler/updates"] = float(self.num_updates)
        if self._window:
            idx = np.concatenate(self._window)
            out["qdc/sampler/cluster_coverage"] = len(np.unique(self.clusters[idx])) / self.num_clusters
            for name, column, moments in (
                ("quality", self.quality, self._q_moments),
                ("complexity", self.complexity, self._c_moments),
            ):
                if column is not None:
                    out[f"qdc/sampler/{name}_trained"] = float(column[idx].mean(dtype=np.float64))
                    out[f"qdc/sampler/{name}_dataset"] = moments[0]
        if self._online:
            out["qdc/sampler/loss_ema"] = float(self.global_loss_ema)
        if reset:
            self._window, self._window_size = [], 0
        return out

    # ------------------------------------------------------------------ checkpointing

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: loss EMAs, pending feedback, epoch, position, undrained blocks."""
        pending_idx = np.concatenate(self._pending_idx) if self._pending_idx else np.zeros(0, np.int64)
        pending_loss = np.concatenate(self._pending_loss) if self._pending_loss else np.zeros(0)
        return {
            "version": np.int64(_STATE_VERSION),
            "num_examples": np.int64(self.num_examples),
            "num_samples": np.int64(self.num_samples),
            "block_size": np.int64(self.block_size or 0),
            "config": np.array(json.dumps(asdict(self.config), sort_keys=True)),
            "loss_ema": self.loss_ema,
            "cluster_loss_ema": self.cluster_loss_ema,
            "global_loss_ema": np.float64(self.global_loss_ema),
            "num_updates": np.int64(self.num_updates),
            "pending_idx": pending_idx,
            "pending_loss": pending_loss,
            "epoch": np.int64(self.epoch),
            "consumed": np.int64(self.consumed),
            "block_ids": np.array(sorted(self._blocks), dtype=np.int64),
            "blocks": np.concatenate([self._blocks[b] for b in sorted(self._blocks)])
            if self._blocks
            else np.zeros(0, np.int64),
            "block_lengths": np.array([len(self._blocks[b]) for b in sorted(self._blocks)], dtype=np.int64),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next iteration replays the undrained blocks and continues exactly.

        The state is checked before anything changes: a :class:`SamplerStateError` names a missing key, a
        value out of range (an index outside ``[0, num_examples)``, a negative position, an infinite loss
        EMA; NaN is how an unseen example, cluster or run is stored) or each setting that differs from
        this sampler's, with both values. On an error the sampler is left as it was.
        """
        missing = [key for key in _STATE_KEYS if key not in state]
        if missing:
            raise SamplerStateError(
                f"the state lacks {missing}: it is incomplete or was not written by QDCSampler.save"
            )
        n, n_clusters = self.num_examples, self.num_clusters
        for key, mine in (("num_examples", n), ("num_samples", self.num_samples)):
            saved = _scalar(state, key, int)
            if saved != mine:
                raise SamplerStateError(
                    f"the checkpoint's sampler has {key}={saved}, this one {mine}: a different dataset? Build the sampler "
                    "over the dataset the checkpoint was trained on, or start a new run"
                )
        differing = _config_differences(_saved_config(state["config"]), asdict(self.config))
        if differing:
            raise SamplerStateError(
                "the checkpoint's sampler was configured differently: "
                + "; ".join(f"{key}={saved!r} in the checkpoint, {mine!r} now" for key, saved, mine in differing)
                + ". Build the sampler with the checkpoint's settings to resume exactly, or start a new run"
            )
        saved_block = _scalar(state, "block_size", int)
        if saved_block < 0:
            raise SamplerStateError(f"block_size={saved_block} is negative")
        saved_block = saved_block or None
        if self.block_size is not None and saved_block is not None and saved_block != self.block_size:
            raise SamplerStateError(
                f"block_size={saved_block} in the checkpoint, {self.block_size} now: leave block_size unset (QDCTrainer "
                "derives it from the batch size, accumulation and world size, which must match the checkpoint's run)"
            )

        loss_ema = _array(state, "loss_ema", np.float32, n)
        cluster_loss_ema = _array(state, "cluster_loss_ema", np.float64, n_clusters)
        global_loss_ema = _scalar(state, "global_loss_ema", float)
        emas = (
            ("loss_ema", loss_ema),
            ("cluster_loss_ema", cluster_loss_ema),
            ("global_loss_ema", np.array([global_loss_ema])),
        )
        for key, values in emas:
            bad = np.flatnonzero(np.isinf(values))
            if len(bad):
                raise SamplerStateError(
                    f"{key} is infinite at {bad[:5].tolist()} (NaN marks unseen; inf is never stored)"
                )
        if math.isnan(global_loss_ema) and (not np.isnan(loss_ema).all() or not np.isnan(cluster_loss_ema).all()):
            raise SamplerStateError(
                "global_loss_ema is NaN (nothing seen) but some example or cluster loss EMAs are set"
            )
        unseen_cluster = np.isnan(cluster_loss_ema)[self.clusters[~np.isnan(loss_ema)]]
        if unseen_cluster.any():
            raise SamplerStateError(
                f"{int(unseen_cluster.sum())} examples have a loss EMA but their cluster has none: were the clusters "
                "computed differently for this run?"
            )
        num_updates = _scalar(state, "num_updates", int)
        epoch = _scalar(state, "epoch", int)
        consumed = _scalar(state, "consumed", int)
        for key, value in (("num_updates", num_updates), ("epoch", epoch)):
            if value < 0:
                raise SamplerStateError(f"{key}={value} is negative")
        if not 0 <= consumed <= self.num_samples:
            raise SamplerStateError(f"consumed={consumed} is outside [0, num_samples={self.num_samples}]")
        pending_idx = _indices(state, "pending_idx", n)
        pending_loss = _array(state, "pending_loss", np.float64, len(pending_idx))
        ids = _array(state, "block_ids", np.int64, None)
        lengths = _array(state, "block_lengths", np.int64, len(ids))
        blocks = _indices(state, "blocks", n)
        block = saved_block or self.block_size or min(self.num_samples, 4096)
        n_blocks = -(-self.num_samples // block)
        if len(ids) and (ids.min() < 0 or ids.max() >= n_blocks or len(np.unique(ids)) != len(ids)):
            raise SamplerStateError(f"block_ids {ids[:5].tolist()}... are not distinct blocks in [0, {n_blocks})")
        if (lengths < 0).any() or lengths.sum() != len(blocks) or (lengths > block).any():
            raise SamplerStateError(
                f"block_lengths {lengths[:5].tolist()}... do not split the {len(blocks)} saved indices into blocks of <= {block}"
            )

        self.block_size = saved_block or self.block_size
        self.loss_ema = loss_ema.copy()
        self.cluster_loss_ema = cluster_loss_ema.copy()
        self.global_loss_ema = global_loss_ema
        self.num_updates = num_updates
        self._pending_idx = [pending_idx.copy()]
        self._pending_loss = [pending_loss.copy()]
        self.epoch = epoch
        self.consumed = consumed
        pieces = np.split(blocks.copy(), np.cumsum(lengths)[:-1]) if len(ids) else []
        self._blocks = {}
        self._replay = dict(zip(ids.tolist(), pieces))
        self._skip_below = self.consumed
        self._refresh()

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` to ``path`` (an ``.npz`` file, written whole or not at all: through a
        temporary file in the same folder and an atomic rename)."""
        atomic_savez(path, **self.state_dict())

    def load(self, path: str | os.PathLike) -> None:
        """Read a file written by :meth:`save`; a damaged or mismatched file raises a :class:`SamplerStateError`
        that names it (the sampler is then left as it was)."""
        path = os.fspath(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                state = {k: data[k] for k in data.files}
        except FileNotFoundError:
            raise
        except Exception as err:  # BadZipFile, EOFError, zlib.error, ValueError (not an npz, pickled data), OSError
            raise SamplerStateError(
                f"QDC sampler state {path} cannot be read ({type(err).__name__}: {err}): it is truncated, empty or not "
                "written by QDCSampler.save (a run killed while saving it?). Resume from an earlier checkpoint"
            ) from err
        try:
            self.load_state_dict(state)
        except SamplerStateError as err:
            raise SamplerStateError(f"QDC sampler state {path}: {err}") from None


class SamplerStateError(ValueError):
    """A saved sampler state cannot be restored: damaged, incomplete, out of range or configured differently."""


_STATE_VERSION = 2  # 1: config stored as repr(sorted(items)); 2: as JSON
_STATE_KEYS = (
    "num_examples",
    "num_samples",
    "block_size",
    "config",
    "loss_ema",
    "cluster_loss_ema",
    "global_loss_ema",
    "num_updates",
    "pending_idx",
    "pending_loss",
    "epoch",
    "consumed",
    "block_ids",
    "blocks",
    "block_lengths",
)


def _scalar(state: dict[str, Any], key: str, kind: type) -> Any:
    """A scalar entry as ``int`` or ``float``, or a :class:`SamplerStateError` naming the key."""
    value = np.asarray(state[key])
    if value.shape != () or value.dtype.kind not in ("biu" if kind is int else "biuf"):
        raise SamplerStateError(f"{key} should be one {kind.__name__}, got {value.dtype} of shape {value.shape}")
    return kind(value)


def _array(state: dict[str, Any], key: str, dtype: Any, length: int | None) -> np.ndarray:
    """A 1-D numeric entry of the expected length, converted to ``dtype``."""
    value = np.asarray(state[key])
    kinds = "iu" if np.dtype(dtype).kind in "iu" else "iuf"
    if value.ndim != 1 or (value.dtype.kind not in kinds and len(value)):
        raise SamplerStateError(f"{key} should be a 1-D numeric array, got {value.dtype} of shape {value.shape}")
    if length is not None and len(value) != length:
        raise SamplerStateError(f"{key} has {len(value)} values, expected {length}")
    return value.astype(dtype, copy=False)


def _indices(state: dict[str, Any], key: str, n: int) -> np.ndarray:
    """A 1-D array of example indices, all in ``[0, n)``."""
    idx = _array(state, key, np.int64, None)
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        bad = np.flatnonzero((idx < 0) | (idx >= n))
        raise SamplerStateError(f"{key} has indices outside [0, {n}): {idx[bad[:5]].tolist()} ({len(bad)} in all)")
    return idx


def _saved_config(value: Any) -> dict[str, Any]:
    """The configuration stored in a state: JSON (version 2) or ``repr`` of the sorted items (version 1)."""
    text = str(np.asarray(value))
    try:
        config = json.loads(text) if text.startswith("{") else dict(ast.literal_eval(text))
    except (ValueError, SyntaxError, TypeError) as err:
        raise SamplerStateError(f"config {text[:80]!r} cannot be parsed ({err})") from None
    if not isinstance(config, dict):
        raise SamplerStateError(f"config {text[:80]!r} is not a mapping of settings")
    return config


def _config_differences(saved: dict[str, Any], mine: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, saved value, current value) for every setting that differs (a missing one counts as None)."""
    return [
        (key, saved.get(key), mine.get(key))
        for key in sorted(set(saved) | set(mine))
        if saved.get(key) != mine.get(key)
    ]
