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

Memory: 32 bytes per example (quality, complexity, cluster id, loss EMA, the fixed part of the weight and the
draw guide table as 32-bit values, the cumulative probabilities as float64), 8 more under GRPO (the success
counts). A refresh works in chunks of 1M examples and costs about 10 ns per example, so with 100 million
examples choose ``update_every`` so that a refresh (about a second) is rare next to the steps between refreshes.
"""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from transformers.utils import logging

from .._config import resolve_config
from . import draws, sampler_state, success, weights
from .columns import check_column, dataset_columns, dense_ids, moments, zscore
from .sampler_state import SamplerStateError
from .weights import QDCSamplerConfig

__all__ = ["LOSS_WEIGHTINGS", "QDCSampler", "QDCSamplerConfig", "SamplerStateError"]

LOSS_WEIGHTINGS = ("none", "sampler", "importance")
"""The per-example loss weightings (:meth:`QDCSampler.loss_weights`; ``QDCTrainer(loss_weighting=...)``)."""

TELEMETRY_PREFIX = "qdc/sampler/"
"""Prefix of :meth:`QDCSampler.telemetry`'s keys (``QDCTrainer`` logs them)."""
TELEMETRY_KEYS = (
    "ess_ratio",
    "weight_entropy",
    "cluster_coverage",
    "quality",
    "complexity",
    "loss_ema",
    "updates",
    "predicted_mixed",
    "measured_mixed",
    "success_drawn",
    "level_share",
)
"""The telemetry's names under the prefix; ``quality`` and ``complexity`` are logged as ``<name>_trained`` and
``<name>_dataset`` (only with those columns), ``loss_ema`` once a loss was fed back; under the success signal
(GRPO) ``predicted_mixed``, ``measured_mixed``, ``success_drawn`` and ``level_share_<j>`` (one per complexity
level ``j``, easiest first) replace ``loss_ema``."""
logger = logging.get_logger(__name__)

_MAX_WINDOW = 1 << 20  # telemetry keeps at most this many recent trained indices
_MAX_OPEN_BLOCKS = 16  # drawn blocks kept for a checkpoint (prefetching reaches only a few ahead)
_CHUNK = 1 << 20  # examples per vectorised chunk of the success factor
_MAX_SUCCESS_WINDOW = 4096  # generation batches of success telemetry kept for runs that never read it
_MAX_LOSS = float(np.finfo(np.float32).max)  # the loss EMAs are float32
_MIN_VALUE = 1e-4  # the success factor's lower bound: a prompt known to teach nothing keeps a trace of weight


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
        cells: optional integer key per example that marks examples of like difficulty; under GRPO a
            prompt's pass rate is pooled within its difficulty cell (complexity level x cluster x this key;
            :mod:`qdc_trainer.data.success`). Ignored by the loss signal.
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
        cells: Sequence[int] | np.ndarray | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(num_examples, bool) or not isinstance(num_examples, (int, np.integer)) or num_examples < 1:
            raise ValueError(f"num_examples must be a positive int, got {num_examples!r}")
        self.config = resolve_config(QDCSamplerConfig, config, overrides, owner="QDCSampler")
        self.update_every = self.config.update_every or weights.DEFAULT_UPDATE_EVERY
        """Optimizer steps between weight refreshes (``config.update_every``, or its default for the signal)."""
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
        self._base_weights = bw
        self._cell_keys = None if cells is None else check_column(cells, "cells", n, integer=True)
        self._static = weights.static_weights(
            n,
            self.config,
            quality=self.quality,
            quality_moments=self._q_moments,
            complexity=self.complexity,
            complexity_moments=self._c_moments,
            base_weights=bw,
        )
        # The success signal (GRPO; configure_success turns it on).
        self.group_size: int | None = None
        self.objective: str | None = None
        self._success: dict[str, Any] = {}
        self._pending_success: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (index, successes, trials)
        # (predicted mixed, success estimate, measured mixed) of the groups fed back since the last telemetry read
        self._success_window: collections.deque[np.ndarray] = collections.deque(maxlen=_MAX_SUCCESS_WINDOW)

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
            self.block_size = self.update_every * int(samples_per_step)
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
        """Start epoch ``epoch`` (a no-op when it is the current one, as on resume).

        >>> QDCSampler(3).set_epoch(-3)
        Traceback (most recent call last):
            ...
        ValueError: set_epoch: epoch must be an int >= 0, got -3
        """
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"set_epoch: epoch must be an int >= 0, got {epoch!r}")
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
        too_large = np.abs(loss) > _MAX_LOSS  # inf included; NaN (no signal) passes
        if too_large.any():
            first = int(np.flatnonzero(too_large)[0])
            raise ValueError(
                f"record: loss {loss[first]!r} of example {idx[first]} is infinite or beyond float32 range "
                f"(|loss| <= {_MAX_LOSS:.3g}); it would make the loss EMAs infinite and every later checkpoint "
                "unloadable. Check the loss (a diverged run?) before feeding it back"
            )
        if consume:
            self.consumed += len(idx)
        self._pending_idx.append(idx)
        self._pending_loss.append(loss)
        self._window.append(idx)
        self._window_size += len(idx)
        while self._window_size > _MAX_WINDOW and len(self._window) > 1:  # runs that never read telemetry
            self._window_size -= len(self._window.pop(0))

    def update(self) -> bool:
        """Apply the pending feedback (losses to the EMAs, GRPO groups to the success counts) and refresh the
        weights. Returns False when nothing was pending."""
        applied = self._apply_success()
        applied = self._apply_losses() or applied
        if applied:
            self.num_updates += 1
            self._refresh()
        return applied

    def _apply_losses(self) -> bool:
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
        return True

    # ------------------------------------------------------------------ the success signal (GRPO)

    @property
    def uses_success(self) -> bool:
        """Whether the online signal is GRPO's success counts (:meth:`configure_success`) rather than the loss."""
        return self.group_size is not None

    def configure_success(self, group_size: int, objective: str = "mixed", steps_per_generation: int = 1) -> None:
        """Weight prompts by what their GRPO group is expected to teach instead of by the training loss.

        ``QDCTrainerMixin`` calls this under TRL's ``GRPOTrainer`` with ``group_size = num_generations`` and
        ``objective="mixed"`` for ``scale_rewards="group"`` (TRL's default), ``"variance"`` otherwise, and the
        optimizer steps that one generation batch serves: an unset ``update_every`` becomes that many steps, so the
        weights are refreshed after every generation (a refresh costs little next to a generation). Each
        weight is then multiplied by the prompt's expected value under its pooled pass-rate posterior
        (:mod:`qdc_trainer.data.success`), and the complexity term aims at the frontier: instead of pushing
        upwards it tilts the draws towards the complexity level whose estimated pass rate is nearest 1/2
        (with ``complexity_strength`` as its bound; no tilt before the first feedback; a set
        ``complexity_target`` is kept as it is). Quality, cluster balance and the floor stay as they are.

        >>> s = QDCSampler(4, complexity=[1, 1, 3, 3], config=QDCSamplerConfig(seed=0))
        >>> s.configure_success(group_size=4)
        >>> s.record_success([0, 1, 2, 3], successes=[4, 4, 2, 2], trials=[4, 4, 4, 4])
        >>> _ = s.update()
        >>> p = s.probabilities()                       # level 1 always solved: only the floor is left for it
        >>> bool(p[2] > 4 * p[0]), round(float(p.sum()), 6)
        (True, 1.0)
        """
        if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
            raise ValueError(f"group_size must be a positive int, got {group_size!r}")
        if objective not in success.OBJECTIVES:
            raise ValueError(f"objective {objective!r} is not one of {success.OBJECTIVES}")
        if (
            isinstance(steps_per_generation, bool)
            or not isinstance(steps_per_generation, int)
            or steps_per_generation < 1
        ):
            raise ValueError(f"steps_per_generation must be a positive int, got {steps_per_generation!r}")
        if self.uses_success:
            if (int(group_size), objective) != (self.group_size, self.objective):
                raise ValueError(
                    f"this sampler already weights groups of {self.group_size} by {self.objective!r}; build a new "
                    f"sampler for groups of {group_size} by {objective!r}"
                )
            return
        n = self.num_examples
        clusters = self.clusters if self.num_clusters > 1 else None
        cells, levels, values = success.difficulty_cells(n, self.complexity, clusters, self._cell_keys)
        n_cells = int(cells.max()) + 1
        level_of_cell = np.zeros(n_cells, dtype=np.int64)
        level_of_cell[cells] = levels
        self.group_size, self.objective = int(group_size), objective
        if self.config.update_every is None:
            self.update_every = steps_per_generation
        self._success = {
            "cells": cells.astype(np.int32),
            "levels": levels.astype(np.int32),
            "level_values": values,
            "level_of_cell": level_of_cell,
            "s": np.zeros(n, dtype=np.float32),
            "f": np.zeros(n, dtype=np.float32),
            "cell_s": np.zeros(n_cells),
            "cell_f": np.zeros(n_cells),
            "tilts": {},
        }
        if self.complexity is not None and self.config.complexity_target is None:  # no static push
            self._static = weights.static_weights(
                n,
                self.config,
                quality=self.quality,
                quality_moments=self._q_moments,
                base_weights=self._base_weights,
            )
        self._refresh()

    def record_success(self, indices: Any, successes: Any, trials: Any, mixed: Any = None) -> None:
        """Feed back GRPO groups (identical on every process): per group, its prompt's index, the successes among
        its scored completions and their number (:func:`~qdc_trainer.data.success.group_outcomes`), and whether
        its rewards differed (telemetry only). Applied at the next :meth:`update`; the stream position is not
        moved (the trainer tracks it: :mod:`qdc_trainer.data.prompt_sampler`)."""
        if not self.uses_success:
            raise RuntimeError("record_success needs the success signal: call configure_success(group_size) first")
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        wins = np.asarray(successes, dtype=np.float64).reshape(-1)
        tries = np.asarray(trials, dtype=np.float64).reshape(-1)
        measured = np.full(len(idx), np.nan) if mixed is None else np.asarray(mixed, dtype=np.float64).reshape(-1)
        if not len(idx) == len(wins) == len(tries) == len(measured):
            raise ValueError(
                f"record_success: {len(idx)} indices, {len(wins)} successes, {len(tries)} trials, "
                f"{len(measured)} mixed flags"
            )
        if len(idx) and (idx.min() < 0 or idx.max() >= self.num_examples):
            raise IndexError(
                f"record_success: indices must be in [0, {self.num_examples}), got {idx.min()}..{idx.max()}"
            )
        if not (np.isfinite(wins).all() and np.isfinite(tries).all()) or (wins < 0).any() or (wins > tries).any():
            raise ValueError("record_success: successes must be finite and within [0, trials]")
        predicted, estimate = self._predict(idx)
        self._success_window.append(np.stack([predicted, estimate, measured]))
        self._pending_success.append((idx, wins, tries))
        self._window.append(idx)
        self._window_size += len(idx)
        while self._window_size > _MAX_WINDOW and len(self._window) > 1:
            self._window_size -= len(self._window.pop(0))

    def success_posterior(self, indices: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Beta parameters ``(a, b)`` of the pass rates of ``indices`` (all examples when None)."""
        if not self.uses_success:
            raise RuntimeError("success_posterior needs the success signal: call configure_success first")
        st = self._success
        idx = slice(None) if indices is None else np.asarray(indices, dtype=np.int64)
        return success.pooled_posterior(
            st["s"][idx].astype(np.float64),
            st["f"][idx].astype(np.float64),
            st["cells"][idx],
            self._cell_means(),
            self.config.success_prior,
        )

    def _cell_means(self) -> np.ndarray:
        st = self._success
        return success.cell_means(st["cell_s"], st["cell_f"], st["level_of_cell"], self.config.success_prior)

    def _predict(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(chance of a mixed group, expected pass rate) of ``idx`` under the current posterior."""
        a, b = self.success_posterior(idx)
        return success.mixed_group_probability(a, b, self.group_size), success.expected_success(a, b)

    def _apply_success(self) -> bool:
        if not self._pending_success:
            return False
        idx = np.concatenate([p[0] for p in self._pending_success])
        wins = np.concatenate([p[1] for p in self._pending_success])
        tries = np.concatenate([p[2] for p in self._pending_success])
        self._pending_success.clear()
        st, decay = self._success, self.config.success_decay**self.update_every
        for key in ("s", "f", "cell_s", "cell_f"):  # the policy moves: older evidence counts less
            st[key] *= decay
        np.add.at(st["s"], idx, wins.astype(np.float32))
        np.add.at(st["f"], idx, (tries - wins).astype(np.float32))
        cells, n_cells = st["cells"][idx], len(st["cell_s"])
        st["cell_s"] += np.bincount(cells, weights=wins, minlength=n_cells)
        st["cell_f"] += np.bincount(cells, weights=tries - wins, minlength=n_cells)
        return True

    def _frontier_tilt(self) -> float:
        """The complexity tilt towards the level whose pass rate is nearest 1/2 (0 when the term is off)."""
        cfg, st = self.config, self._success
        if self.complexity is None or cfg.complexity_strength == 0 or cfg.complexity_target is not None:
            return 0.0
        n_levels = len(st["level_values"])
        level_s = np.bincount(st["level_of_cell"], weights=st["cell_s"], minlength=n_levels)
        level_f = np.bincount(st["level_of_cell"], weights=st["cell_f"], minlength=n_levels)
        level = success.frontier_level(level_s, level_f)
        if level is None:
            return 0.0
        target = float(st["level_values"][level])
        if target not in st["tilts"]:
            st["tilts"][target] = weights.complexity_tilt(
                self.complexity, self._c_moments, target, cfg.complexity_strength
            )
        return st["tilts"][target]

    def _success_factor(self) -> np.ndarray:
        """Per example: the expected value of its group (:func:`~qdc_trainer.data.success.prompt_value`) times the
        frontier tilt, as float32, a chunk at a time."""
        st, n = self._success, self.num_examples
        out = np.empty(n, dtype=np.float32)
        tilt, means = self._frontier_tilt(), self._cell_means()
        k = self.config.success_prior
        # A prompt without its own evidence is worth its cell's unseen value: one value per cell.
        unseen = success.prompt_value(k * means, k * (1.0 - means), self.group_size, self.objective)
        for lo in range(0, n, _CHUNK):
            hi = min(lo + _CHUNK, n)
            cells = st["cells"][lo:hi]
            value = unseen[cells]
            own = np.flatnonzero((st["s"][lo:hi] > 0) | (st["f"][lo:hi] > 0))
            if len(own):
                a, b = success.pooled_posterior(
                    st["s"][lo:hi][own].astype(np.float64),
                    st["f"][lo:hi][own].astype(np.float64),
                    cells[own],
                    means,
                    k,
                )
                value[own] = success.prompt_value(a, b, self.group_size, self.objective)
            value = np.maximum(value, _MIN_VALUE)
            if tilt:
                value *= np.exp(tilt * zscore(self.complexity[lo:hi], self._c_moments))
            out[lo:hi] = value
        return out

    # ------------------------------------------------------------------ weights

    def _refresh(self) -> None:
        """Recompute the cumulative probabilities from the current loss EMAs (see :mod:`.weights`)."""
        self._device_np = None  # loss_weights_tensor's device copy of N p, now stale
        self._stats = None
        per_cluster, unseen = weights.cluster_factors(
            self.cluster_sizes, self.config, self.cluster_loss_ema, self.global_loss_ema
        )
        factor = self._success_factor() if self.uses_success else None
        weights.fill_cdf(
            self._cdf,
            self._static,
            self.clusters,
            per_cluster,
            self.config,
            unseen=unseen,
            loss_ema=self.loss_ema,
            global_loss_ema=self.global_loss_ema,
            example_factor=factor,
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
        if self.uses_success:
            out.update(self._success_telemetry())
        if reset:
            self._window, self._window_size = [], 0
            self._success_window.clear()
        return out

    def _success_telemetry(self) -> dict[str, float]:
        """The predicted and measured share of mixed groups, the mean estimated pass rate of the prompts fed back
        since the last read, and their shares per complexity level."""
        out: dict[str, float] = {}
        if self._success_window:
            predicted, estimate, measured = np.concatenate(self._success_window, axis=1)
            out["qdc/sampler/predicted_mixed"] = float(predicted.mean())
            out["qdc/sampler/success_drawn"] = float(estimate.mean())
            if np.isfinite(measured).any():
                out["qdc/sampler/measured_mixed"] = float(np.nanmean(measured))
        if self._window:
            levels = self._success["levels"][np.concatenate(self._window)]
            shares = np.bincount(levels, minlength=len(self._success["level_values"])) / len(levels)
            for j, share in enumerate(shares.tolist()):
                out[f"qdc/sampler/level_share_{j}"] = share
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
            success=self._success_state(),
        )
        return sampler_state.encode(
            state, num_examples=self.num_examples, num_samples=self.num_samples, config=self._stored_config()
        )

    def _stored_config(self) -> dict[str, Any]:
        """The settings a checkpoint records and a resumed sampler must share (``update_every`` as resolved)."""
        return {**asdict(self.config), "update_every": self.update_every}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next iteration replays the undrained blocks and continues exactly.

        The state is checked before anything changes: a :class:`SamplerStateError` names a missing key, a
        value out of range (an index outside ``[0, num_examples)``, a negative position, an infinite loss
        EMA; NaN is how an unseen example, cluster or run is stored) or each setting that differs from
        this sampler's, with both values. On an error the sampler is left as it was.
        """
        if not self.uses_success and any(key in state for key in sampler_state.SUCCESS_KEYS):
            self._check_success(sampler_state.SuccessState(0, "", *[np.zeros(0)] * 7))  # names the cause
        restored = sampler_state.decode(
            state,
            num_examples=self.num_examples,
            num_samples=self.num_samples,
            config=self._stored_config(),
            clusters=self.clusters,
            num_clusters=self.num_clusters,
            block_size=self.block_size,
            defaults=asdict(QDCSamplerConfig()),
        )
        self._check_success(restored.success)
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
        self._restore_success(restored.success)
        self._refresh()

    def _success_state(self) -> sampler_state.SuccessState | None:
        if not self.uses_success:
            return None
        st, pending = self._success, self._pending_success
        return sampler_state.SuccessState(
            group_size=self.group_size,
            objective=self.objective,
            s=st["s"],
            f=st["f"],
            cell_s=st["cell_s"],
            cell_f=st["cell_f"],
            pending_idx=np.concatenate([p[0] for p in pending]) if pending else np.zeros(0, np.int64),
            pending_successes=np.concatenate([p[1] for p in pending]) if pending else np.zeros(0),
            pending_trials=np.concatenate([p[2] for p in pending]) if pending else np.zeros(0),
        )

    def _check_success(self, saved: sampler_state.SuccessState | None) -> None:
        """Refuse success counts this sampler cannot continue from (before anything changes)."""
        if saved is None:
            return
        if not self.uses_success:
            raise SamplerStateError(
                "the checkpoint's sampler weighted GRPO groups (success counts), this one does not: resume it "
                "under GRPOTrainer"
            )
        if (saved.group_size, saved.objective) != (self.group_size, self.objective):
            raise SamplerStateError(
                f"the checkpoint's sampler weighted groups of {saved.group_size} by {saved.objective!r}, this one "
                f"groups of {self.group_size} by {self.objective!r} (num_generations or scale_rewards changed?)"
            )
        if len(saved.cell_s) != len(self._success["cell_s"]):
            raise SamplerStateError(
                f"the checkpoint has {len(saved.cell_s)} difficulty cells, this sampler {len(self._success['cell_s'])}:"
                " were the complexity, cluster or cells columns computed differently?"
            )

    def _restore_success(self, saved: sampler_state.SuccessState | None) -> None:
        """Restore the success counts (checked by :meth:`_check_success`); a checkpoint written without them
        (an earlier release) starts them afresh, with a warning."""
        if not self.uses_success:
            return
        if saved is None:
            logger.warning("the sampler checkpoint holds no success counts (an earlier release?): they start afresh")
            self._pending_success = []
            return
        st = self._success
        st["s"], st["f"] = saved.s.astype(np.float32), saved.f.astype(np.float32)
        st["cell_s"], st["cell_f"] = saved.cell_s.astype(np.float64), saved.cell_f.astype(np.float64)
        self._pending_success = (
            [(saved.pending_idx, saved.pending_successes, saved.pending_trials)] if len(saved.pending_idx) else []
        )

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
