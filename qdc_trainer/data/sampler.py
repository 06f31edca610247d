"""QDCSampler: draws training examples with weights that balance quality, diversity and complexity,
and that move online with the training loss.

The weight of each example multiplies a quality, a complexity, a cluster-balance and two online
loss factors; :mod:`qdc_trainer.data.weights` gives the formula and :class:`QDCSamplerConfig` its knobs.
The complexity factor pushes towards complex examples, or with ``complexity_target`` pulls the mean
complexity towards a value in the column's units (an exponential tilt, computed once when the sampler is
built: :func:`~qdc_trainer.data.weights.complexity_tilt`).

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

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from .._config import resolve_config
from . import draws, sampler_state, weights
from .columns import check_column, dataset_columns, dense_ids, moments
from .sampler_state import SamplerStateError
from .weights import QDCSamplerConfig

__all__ = ["LOSS_WEIGHTINGS", "QDCSampler", "QDCSamplerConfig", "SamplerStateError"]

LOSS_WEIGHTINGS = ("none", "sampler", "importance")
"""The per-example loss weightings (:meth:`QDCSampler.loss_weights`; ``QDCTrainer(loss_weighting=...)``)."""

TELEMETRY_PREFIX = "qdc/sampler/"
"""Prefix of :meth:`QDCSampler.telemetry`'s keys (``QDCTrainer`` logs them)."""
TELEMETRY_KEYS = ("ess_ratio", "weight_entropy", "cluster_coverage", "quality", "complexity", "loss_ema", "updates")
"""The telemetry's names under the prefix; ``quality`` and ``complexity`` are logged as ``<name>_trained`` and
``<name>_dataset``."""
_MAX_WINDOW = 1 << 20  # telemetry keeps at most this many recent trained indices
_MAX_OPEN_BLOCKS = 16  # drawn blocks kept for a checkpoint (prefetching reaches only a few ahead)


class QDCSampler(torch.utils.data.Sampler[int]):
    """A weighted sampler over ``num_examples`` examples whose weights balance Q, D and C and follow the loss.

    Args:
        num_examples: the dataset size N.
        quality: one score per example (higher is better), or None.
        complexity: one score per example (higher is more complex), or None.
        clusters: one integer cluster id per example (e.g. from
            ``qdc_trainer.metrics.score_dataset``), or None for a single cluster.
        base_weights: optional non-negative user weights, multiplied in.
        config: the knobs, a :class:`QDCSamplerConfig` (None: its defaults).
        num_samples: indices per epoch (``len()``); default N.
        block_size: indices drawn per block from one set of weights; ``QDCTrainer``
            sets it to ``update_every`` optimizer steps' worth of examples.
        **overrides: deprecated: single knobs as keyword arguments (``tradeoff=0.3``); they still
            work in this release, with a ``FutureWarning``. Pass ``config=QDCSamplerConfig(tradeoff=0.3)``.

    >>> s = QDCSampler(4, quality=[0.0, 1.0, 2.0, 3.0], config=QDCSamplerConfig(seed=1), block_size=4)
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
        self.config = resolve_config(QDCSamplerConfig, config, overrides, owner="QDCSampler")
        n = int(num_examples)
        self.num_examples = n
        self.num_samples = n if num_samples is None else int(num_samples)
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.block_size = block_size  # checked by the property

        self.quality = None if quality is None else check_column(quality, "quality", n)
        self.complexity = None if complexity is None else check_column(complexity, "complexity", n)
        self._q_moments = None if self.quality is None else moments(self.quality)
        self._c_moments = None if self.complexity is None else moments(self.complexity)
        if clusters is None:
            self.clusters = np.zeros(n, dtype=np.int32)
        else:
            self.clusters = dense_ids(check_column(clusters, "clusters", n, integer=True))
        self.num_clusters = int(self.clusters.max()) + 1
        self.cluster_sizes = np.bincount(self.clusters, minlength=self.num_clusters).astype(np.float64)
        bw = None
        if base_weights is not None:
            bw = check_column(base_weights, "base_weights", n)
            if (bw < 0).any():
                raise ValueError(f"base_weights has negative values at rows {np.flatnonzero(bw < 0)[:5].tolist()}")
            if not (bw > 0).any():
                raise ValueError("base_weights are all zero: no example could be drawn")
        self._static = weights.static_weights(
            n,
            self.config,
            quality=self.quality,
            quality_moments=self._q_moments,
            complexity=self.complexity,
            complexity_moments=self._c_moments,
            base_weights=bw,
        )

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
        self._device_np: torch.Tensor | None = None  # loss_weights_tensor's device copy of N p
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
        can be computed with :func:`qdc_trainer.metrics.score_dataset`. ``kwargs`` go to
        :class:`QDCSampler` (``config=QDCSamplerConfig(...)``, ``num_samples``, ``block_size``).
        """
        if not hasattr(dataset, "__len__"):
            raise TypeError(
                "QDCSampler needs a map-style dataset with __len__ (an IterableDataset streams in its own order; "
                "materialise it or use a Dataset)"
            )
        names = getattr(dataset, "column_names", None)
        if names is None:
            raise TypeError(f"from_dataset needs a datasets.Dataset with named columns, got {type(dataset).__name__}")
        columns = dataset_columns(
            dataset,
            {
                "quality": ("quality_column", quality_column),
                "complexity": ("complexity_column", complexity_column),
                "clusters": ("cluster_column", cluster_column),
                "base_weights": ("weight_column", weight_column),
            },
        )
        knobs = {name: kwargs.pop(name) for name in list(kwargs) if name in QDCSamplerConfig.__dataclass_fields__}
        try:
            if knobs:  # the deprecated spelling, warned about here so that the warning names the caller's line
                kwargs["config"] = resolve_config(
                    QDCSamplerConfig, kwargs.get("config"), knobs, owner="QDCSampler.from_dataset"
                )
            return cls(len(dataset), **columns, **kwargs)
        except (TypeError, ValueError) as err:
            raise type(err)(
                f"{err} (dataset columns {quality_column!r}/{complexity_column!r}/{cluster_column!r})"
            ) from None

    # ------------------------------------------------------------------ block size

    @property
    def block_size(self) -> int | None:
        """Indices drawn per block from one set of weights; None until set (then blocks of ``min(len, 4096)``).

        Set it before iterating: a block drawn under one size is not replayed under another.
        """
        return self._block_size

    @block_size.setter
    def block_size(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"block_size must be a positive int (or None), got {value!r}")
        self._block_size = None if value is None else int(value)

    def configure_block(self, samples_per_step: int, global_batch: int) -> int:
        """Fit the blocks to a training run; returns the block size.

        ``samples_per_step`` is the examples of one optimizer step on all processes
        (batch size x gradient accumulation x world size), ``global_batch`` those of
        one dataloader step (batch size x world size). An unset block size becomes
        ``update_every`` steps' worth of examples, so each block is drawn from the
        weights of the previous update; a block smaller than one global batch is
        refused (a batch would straddle blocks drawn from different weights).

        >>> s = QDCSampler(100, config=QDCSamplerConfig(update_every=5))
        >>> s.configure_block(samples_per_step=8, global_batch=4)
        40
        >>> QDCSampler(100, block_size=2).configure_block(8, 4)
        Traceback (most recent call last):
            ...
        ValueError: QDCSampler block_size=2 is smaller than one global batch (4); leave it unset ...
        """
        for name, value in (("samples_per_step", samples_per_step), ("global_batch", global_batch)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.block_size is None:
            self.block_size = self.config.update_every * int(samples_per_step)
        if self.block_size < global_batch:
            raise ValueError(
                f"QDCSampler block_size={self.block_size} is smaller than one global batch ({global_batch}); "
                "leave it unset to get update_every optimizer steps' worth of examples"
            )
        return self.block_size

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
        u = torch.rand(size, generator=generator, dtype=torch.float64).numpy() * float(self._cdf[-1])
        return np.minimum(draws.lookup(self._cdf, self._guide, u), self.num_examples - 1)  # O(1) per index

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

    def record(self, indices: Any, losses: Any, *, consume: bool = True) -> None:
        """Feed back per-example training losses (identical on every process, in stream order).

        NaN losses (an example with no supervised token) count as consumed but carry
        no signal. Applied at the next :meth:`update`. ``consume=False`` records the
        signal without moving the stream position (``consumed``), for a caller that
        tracks the position itself (GRPO's reward feedback arrives before the
        generation batch is trained on; see :mod:`qdc_trainer.data.prompt_sampler`).
        """
        idx = np.asarray(indices.detach().cpu() if hasattr(indices, "detach") else indices, dtype=np.int64).reshape(-1)
        loss = np.asarray(
            losses.detach().float().cpu() if hasattr(losses, "detach") else losses, dtype=np.float64
        ).reshape(-1)
        if len(idx) != len(loss):
            raise ValueError(f"record: {len(idx)} indices but {len(loss)} losses")
        if len(idx) and (idx.min() < 0 or idx.max() >= self.num_examples):
            raise IndexError(f"record: indices must be in [0, {self.num_examples}), got {idx.min()}..{idx.max()}")
        if consume:
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

    def _refresh(self) -> None:
        """Recompute the cumulative probabilities from the current loss EMAs (see :mod:`.weights`)."""
        self._device_np = None  # loss_weights_tensor's device copy of N p, now stale
        self._stats = None
        per_cluster, unseen = weights.cluster_factors(
            self.cluster_sizes, self.config, self.cluster_loss_ema, self.global_loss_ema
        )
        weights.fill_cdf(
            self._cdf,
            self._static,
            self.clusters,
            per_cluster,
            self.config,
            unseen=unseen,
            loss_ema=self.loss_ema,
            global_loss_ema=self.global_loss_ema,
        )
        self._guide = draws.guide_table(self._cdf, getattr(self, "_guide", None))  # O(1) draws (draws.py)

    @property
    def _online(self) -> bool:
        return weights.is_online(self.global_loss_ema)

    def _weight_stats(self) -> dict[str, float]:
        """ESS / N and the normalised entropy of the draw probabilities (one pass, on demand)."""
        if self._stats is None:
            self._stats = weights.weight_stats(self._cdf)
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
        raise ValueError(f"loss weighting {mode!r} is not one of {LOSS_WEIGHTINGS}")

    def loss_weights_tensor(self, indices: torch.Tensor, mode: str) -> torch.Tensor:
        """:meth:`loss_weights` as a float32 tensor on the device of ``indices``, without a copy to the host.

        A device copy of ``N p`` (4 bytes per example) is made at the first call after each weight refresh,
        so the training step itself never synchronises with the host.

        >>> s = QDCSampler(4, config=QDCSamplerConfig(example_loss_strength=0.0, cluster_loss_strength=0.0))
        >>> s.loss_weights_tensor(torch.tensor([0, 3]), "importance").tolist()
        [1.0, 1.0]
        """
        if mode not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss weighting {mode!r} is not one of {LOSS_WEIGHTINGS}")
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
            for name, column, stats in (
                ("quality", self.quality, self._q_moments),
                ("complexity", self.complexity, self._c_moments),
            ):
                if column is not None:
                    out[f"qdc/sampler/{name}_trained"] = float(column[idx].mean(dtype=np.float64))
                    out[f"qdc/sampler/{name}_dataset"] = stats[0]
        if self._online:
            out["qdc/sampler/loss_ema"] = float(self.global_loss_ema)
        if reset:
            self._window, self._window_size = [], 0
        return out

    # ------------------------------------------------------------------ checkpointing (see sampler_state)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: loss EMAs, pending feedback, epoch, position, undrained blocks."""
        state = sampler_state.SamplerState(
            block_size=self.block_size,
            loss_ema=self.loss_ema,
            cluster_loss_ema=self.cluster_loss_ema,
            global_loss_ema=self.global_loss_ema,
            num_updates=self.num_updates,
            pending_idx=np.concatenate(self._pending_idx) if self._pending_idx else np.zeros(0, np.int64),
            pending_loss=np.concatenate(self._pending_loss) if self._pending_loss else np.zeros(0),
            epoch=self.epoch,
            consumed=self.consumed,
            blocks=self._blocks,
        )
        return sampler_state.encode(
            state, num_examples=self.num_examples, num_samples=self.num_samples, config=asdict(self.config)
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next iteration replays the undrained blocks and continues exactly.

        The state is checked before anything changes: a :class:`SamplerStateError` names a missing key, a
        value out of range (an index outside ``[0, num_examples)``, a negative position, an infinite loss
        EMA; NaN is how an unseen example, cluster or run is stored) or each setting that differs from
        this sampler's, with both values. On an error the sampler is left as it was.
        """
        restored = sampler_state.decode(
            state,
            num_examples=self.num_examples,
            num_samples=self.num_samples,
            config=asdict(self.config),
            clusters=self.clusters,
            num_clusters=self.num_clusters,
            block_size=self.block_size,
        )
        self.block_size = restored.block_size
        self.loss_ema = restored.loss_ema
        self.cluster_loss_ema = restored.cluster_loss_ema
        self.global_loss_ema = restored.global_loss_ema
        self.num_updates = restored.num_updates
        self._pending_idx = [restored.pending_idx]
        self._pending_loss = [restored.pending_loss]
        self.epoch = restored.epoch
        self.consumed = restored.consumed
        self._blocks = {}
        self._replay = restored.blocks
        self._skip_below = self.consumed
        self._refresh()

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` to ``path`` (an ``.npz`` file, written whole or not at all: through a
        temporary file in the same folder and an atomic rename)."""
        sampler_state.write(path, self.state_dict())

    def load(self, path: str | os.PathLike) -> None:
        """Read a file written by :meth:`save`; a damaged or mismatched file raises a :class:`SamplerStateError`
        that names it (the sampler is then left as it was)."""
        state = sampler_state.read(path)
        try:
            self.load_state_dict(state)
        except SamplerStateError as err:
            raise SamplerStateError(f"QDC sampler state {os.fspath(path)}: {err}") from None
