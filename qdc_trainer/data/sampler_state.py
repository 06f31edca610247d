"""Checkpoint state of :class:`~qdc_trainer.data.sampler.QDCSampler`: its arrays, their checks, the ``.npz`` file.

The Trainer saves no sampler state, so an online sampler checkpoints its own: the
loss EMAs, the feedback not yet applied, the epoch, the position and the blocks
drawn but not yet trained on. :class:`SamplerState` holds them; :func:`encode`
turns one into the flat arrays of :meth:`QDCSampler.state_dict`, :func:`decode`
checks such arrays against the sampler that loads them and gives a
:class:`SamplerState` back, or a :class:`SamplerStateError` that says what is
wrong before anything changes. :func:`write` and :func:`read` store the arrays.

>>> import numpy as np
>>> state = SamplerState(block_size=2, loss_ema=np.full(3, np.nan, np.float32), cluster_loss_ema=np.full(1, np.nan),
...                      global_loss_ema=float("nan"), num_updates=0, pending_idx=np.zeros(0, np.int64),
...                      pending_loss=np.zeros(0), epoch=0, consumed=0, blocks={0: np.array([2, 0])})
>>> arrays = encode(state, num_examples=3, num_samples=3, config={"seed": 0})
>>> again = decode(arrays, num_examples=3, num_samples=3, config={"seed": 0}, clusters=np.zeros(3, np.int32),
...                num_clusters=1, block_size=None)
>>> again.block_size, again.blocks[0].tolist()
(2, [2, 0])
>>> decode(arrays, num_examples=4, num_samples=3, config={"seed": 0}, clusters=np.zeros(4, np.int32),
...        num_clusters=1, block_size=None)
Traceback (most recent call last):
    ...
qdc_trainer.data.sampler_state.SamplerStateError: the checkpoint's sampler has num_examples=3, this one 4: ...
"""

from __future__ import annotations

import ast
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._io import atomic_savez

__all__ = [
    "STATE_KEYS",
    "STATE_VERSION",
    "SUCCESS_KEYS",
    "SamplerState",
    "SamplerStateError",
    "SuccessState",
    "decode",
    "encode",
    "read",
    "write",
]

STATE_VERSION = 2
"""Version of the stored state. 1: config stored as ``repr(sorted(items))``; 2: as JSON (both are read)."""
STATE_KEYS = (
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
"""Keys every stored state has (``version`` is written too, but old states may lack it)."""
SUCCESS_KEYS = (
    "success_group_size",
    "success_objective",
    "success_s",
    "success_f",
    "success_cell_s",
    "success_cell_f",
    "success_pending_idx",
    "success_pending_successes",
    "success_pending_trials",
)
"""Keys of the success counts, stored only by a sampler with the success signal (GRPO)."""


class SamplerStateError(ValueError):
    """A saved sampler state cannot be restored: damaged, incomplete, out of range or configured differently."""


@dataclass
class SuccessState:
    """The success counts of a sampler with the success signal (:mod:`qdc_trainer.data.success`)."""

    group_size: int
    objective: str
    s: np.ndarray
    """Per example, float32: decayed successes."""
    f: np.ndarray
    """Per example, float32: decayed failures."""
    cell_s: np.ndarray
    """Per difficulty cell, float64."""
    cell_f: np.ndarray
    pending_idx: np.ndarray
    """Groups fed back and not yet applied: their prompts' indices, successes and scored completions."""
    pending_successes: np.ndarray
    pending_trials: np.ndarray


@dataclass
class SamplerState:
    """What a sampler needs to continue exactly (its settings and scores come from its constructor)."""

    block_size: int | None
    """Indices per block; None when the sampler had not been given one."""
    loss_ema: np.ndarray
    """Per example, float32; NaN for an example not seen yet."""
    cluster_loss_ema: np.ndarray
    """Per cluster, float64; NaN for a cluster not seen yet."""
    global_loss_ema: float
    """NaN until any loss was fed back."""
    num_updates: int
    pending_idx: np.ndarray
    """Indices fed back and not yet applied by an update."""
    pending_loss: np.ndarray
    """Their losses."""
    epoch: int
    consumed: int
    """Indices of this epoch already trained on."""
    blocks: dict[int, np.ndarray]
    """Blocks drawn and not yet trained on, by block number."""
    success: SuccessState | None = None
    """The success counts (GRPO), or None."""


def encode(state: SamplerState, *, num_examples: int, num_samples: int, config: dict[str, Any]) -> dict[str, Any]:
    """The flat arrays of ``state`` (what :meth:`QDCSampler.state_dict` returns and :func:`write` stores)."""
    ids = sorted(state.blocks)
    out = {
        "version": np.int64(STATE_VERSION),
        "num_examples": np.int64(num_examples),
        "num_samples": np.int64(num_samples),
        "block_size": np.int64(state.block_size or 0),
        "config": np.array(json.dumps(config, sort_keys=True)),
        "loss_ema": state.loss_ema,
        "cluster_loss_ema": state.cluster_loss_ema,
        "global_loss_ema": np.float64(state.global_loss_ema),
        "num_updates": np.int64(state.num_updates),
        "pending_idx": state.pending_idx,
        "pending_loss": state.pending_loss,
        "epoch": np.int64(state.epoch),
        "consumed": np.int64(state.consumed),
        "block_ids": np.array(ids, dtype=np.int64),
        "blocks": np.concatenate([state.blocks[b] for b in ids]) if ids else np.zeros(0, np.int64),
        "block_lengths": np.array([len(state.blocks[b]) for b in ids], dtype=np.int64),
    }
    if state.success is not None:
        sc = state.success
        out.update(
            {
                "success_group_size": np.int64(sc.group_size),
                "success_objective": np.array(sc.objective),
                "success_s": sc.s,
                "success_f": sc.f,
                "success_cell_s": sc.cell_s,
                "success_cell_f": sc.cell_f,
                "success_pending_idx": sc.pending_idx,
                "success_pending_successes": sc.pending_successes,
                "success_pending_trials": sc.pending_trials,
            }
        )
    return out


def decode(
    arrays: dict[str, Any],
    *,
    num_examples: int,
    num_samples: int,
    config: dict[str, Any],
    clusters: np.ndarray,
    num_clusters: int,
    block_size: int | None,
    defaults: dict[str, Any] | None = None,
) -> SamplerState:
    """Check ``arrays`` (from :func:`encode` or :func:`read`) against the sampler that loads them; return copies.

    A :class:`SamplerStateError` names a missing key, a value out of range (an index
    outside ``[0, num_examples)``, a negative position, an infinite loss EMA; NaN is
    how an unseen example, cluster or run is stored) or each setting that differs
    from the loading sampler's (``config``, ``num_examples``, ``num_samples``, a
    ``block_size`` it already has), with both values. A setting the checkpoint does not
    name (one added in a later release) counts as its value in ``defaults``.
    """
    missing = [key for key in STATE_KEYS if key not in arrays]
    if missing:
        raise SamplerStateError(f"the state lacks {missing}: it is incomplete or was not written by QDCSampler.save")
    n = num_examples
    for key, mine in (("num_examples", n), ("num_samples", num_samples)):
        saved = _scalar(arrays, key, int)
        if saved != mine:
            raise SamplerStateError(
                f"the checkpoint's sampler has {key}={saved}, this one {mine}: a different dataset? Build the sampler "
                "over the dataset the checkpoint was trained on, or start a new run"
            )
    saved_config = _saved_config(arrays["config"])
    for key, value in (defaults or {}).items():
        saved_config.setdefault(key, value)
    differing = _config_differences(saved_config, config)
    if differing:
        raise SamplerStateError(
            "the checkpoint's sampler was configured differently: "
            + "; ".join(f"{key}={saved!r} in the checkpoint, {mine!r} now" for key, saved, mine in differing)
            + ". Build the sampler with the checkpoint's settings to resume exactly, or start a new run"
        )
    saved_block = _scalar(arrays, "block_size", int)
    if saved_block < 0:
        raise SamplerStateError(f"block_size={saved_block} is negative")
    saved_block = saved_block or None
    if block_size is not None and saved_block is not None and saved_block != block_size:
        raise SamplerStateError(
            f"block_size={saved_block} in the checkpoint, {block_size} now: leave block_size unset (QDCTrainer "
            "derives it from the batch size, accumulation and world size, which must match the checkpoint's run)"
        )

    loss_ema = _array(arrays, "loss_ema", np.float32, n)
    cluster_loss_ema = _array(arrays, "cluster_loss_ema", np.float64, num_clusters)
    global_loss_ema = _scalar(arrays, "global_loss_ema", float)
    for key, values in (
        ("loss_ema", loss_ema),
        ("cluster_loss_ema", cluster_loss_ema),
        ("global_loss_ema", np.array([global_loss_ema])),
    ):
        bad = np.flatnonzero(np.isinf(values))
        if len(bad):
            raise SamplerStateError(f"{key} is infinite at {bad[:5].tolist()} (NaN marks unseen; inf is never stored)")
    if math.isnan(global_loss_ema) and (not np.isnan(loss_ema).all() or not np.isnan(cluster_loss_ema).all()):
        raise SamplerStateError("global_loss_ema is NaN (nothing seen) but some example or cluster loss EMAs are set")
    unseen_cluster = np.isnan(cluster_loss_ema)[clusters[~np.isnan(loss_ema)]]
    if unseen_cluster.any():
        raise SamplerStateError(
            f"{int(unseen_cluster.sum())} examples have a loss EMA but their cluster has none: were the clusters "
            "computed differently for this run?"
        )
    num_updates = _scalar(arrays, "num_updates", int)
    epoch = _scalar(arrays, "epoch", int)
    consumed = _scalar(arrays, "consumed", int)
    for key, value in (("num_updates", num_updates), ("epoch", epoch)):
        if value < 0:
            raise SamplerStateError(f"{key}={value} is negative")
    if not 0 <= consumed <= num_samples:
        raise SamplerStateError(f"consumed={consumed} is outside [0, num_samples={num_samples}]")
    pending_idx = _indices(arrays, "pending_idx", n)
    pending_loss = _array(arrays, "pending_loss", np.float64, len(pending_idx))
    ids = _array(arrays, "block_ids", np.int64, None)
    lengths = _array(arrays, "block_lengths", np.int64, len(ids))
    blocks = _indices(arrays, "blocks", n)
    block = saved_block or block_size or min(num_samples, 4096)
    n_blocks = -(-num_samples // block)
    if len(ids) and (ids.min() < 0 or ids.max() >= n_blocks or len(np.unique(ids)) != len(ids)):
        raise SamplerStateError(f"block_ids {ids[:5].tolist()}... are not distinct blocks in [0, {n_blocks})")
    if (lengths < 0).any() or lengths.sum() != len(blocks) or (lengths > block).any():
        raise SamplerStateError(
            f"block_lengths {lengths[:5].tolist()}... do not split the {len(blocks)} saved indices into blocks "
            f"of <= {block}"
        )
    pieces = np.split(blocks.copy(), np.cumsum(lengths)[:-1]) if len(ids) else []
    success = _decode_success(arrays, n)
    return SamplerState(
        block_size=saved_block or block_size,
        loss_ema=loss_ema.copy(),
        cluster_loss_ema=cluster_loss_ema.copy(),
        global_loss_ema=global_loss_ema,
        num_updates=num_updates,
        pending_idx=pending_idx.copy(),
        pending_loss=pending_loss.copy(),
        epoch=epoch,
        consumed=consumed,
        blocks=dict(zip(ids.tolist(), pieces)),
        success=success,
    )


def _decode_success(arrays: dict[str, Any], n: int) -> SuccessState | None:
    """The checked success counts of ``arrays``, or None when it has none."""
    present = [key for key in SUCCESS_KEYS if key in arrays]
    if not present:
        return None
    if len(present) != len(SUCCESS_KEYS):
        missing = [key for key in SUCCESS_KEYS if key not in arrays]
        raise SamplerStateError(f"the state has some success counts but lacks {missing}")
    group_size = _scalar(arrays, "success_group_size", int)
    if group_size < 1:
        raise SamplerStateError(f"success_group_size={group_size} is not positive")
    counts = {key: _array(arrays, f"success_{key}", np.float64, n) for key in ("s", "f")}
    cell_s = _array(arrays, "success_cell_s", np.float64, None)
    cell_f = _array(arrays, "success_cell_f", np.float64, len(cell_s))
    pending_idx = _indices(arrays, "success_pending_idx", n)
    wins = _array(arrays, "success_pending_successes", np.float64, len(pending_idx))
    tries = _array(arrays, "success_pending_trials", np.float64, len(pending_idx))
    for key, values in (*counts.items(), ("cell_s", cell_s), ("cell_f", cell_f), ("pending", tries - wins)):
        if not np.isfinite(values).all() or (values < 0).any():
            raise SamplerStateError(f"success {key} has negative or non-finite counts")
    return SuccessState(
        group_size=group_size,
        objective=str(np.asarray(arrays["success_objective"])),
        s=counts["s"].astype(np.float32),
        f=counts["f"].astype(np.float32),
        cell_s=cell_s.copy(),
        cell_f=cell_f.copy(),
        pending_idx=pending_idx.copy(),
        pending_successes=wins.copy(),
        pending_trials=tries.copy(),
    )


def write(path: str | os.PathLike, arrays: dict[str, Any]) -> None:
    """Write ``arrays`` to ``path`` (an ``.npz`` file, written whole or not at all: through a temporary file in the
    same folder and an atomic rename)."""
    atomic_savez(path, **arrays)


def read(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a file written by :func:`write`; a damaged file raises a :class:`SamplerStateError` that names
    it (a missing one, ``FileNotFoundError``)."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise
    except Exception as err:  # BadZipFile, EOFError, zlib.error, ValueError (not an npz, pickled data), OSError
        raise SamplerStateError(
            f"QDC sampler state {path} cannot be read ({type(err).__name__}: {err}): it is truncated, empty or not "
            "written by QDCSampler.save (a run killed while saving it?). Resume from an earlier checkpoint"
        ) from err


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
