"""Score columns shared by the sampler and the budgeted selection: checked, standardised, renumbered.

:class:`~qdc_trainer.data.sampler.QDCSampler` and :func:`~qdc_trainer.data.selection.select_budget`
read the same per-example scores (quality, complexity, cluster ids, weights) and
turn them into weights the same way, so they share these helpers:

- :func:`check_column`: one checked 1-D numeric value per example (float32, or int64 ids);
- :func:`dataset_columns`: those columns read from a ``datasets.Dataset`` by name;
- :func:`moments` and :func:`zscore`: standardised scores, clipped to ``[-3, 3]``;
- :func:`dense_ids`: cluster ids renumbered ``0..K-1``.

All work on arrays of any size without N-sized float64 copies.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["ZSCORE_CLIP", "check_column", "dataset_columns", "dense_ids", "moments", "zscore"]

ZSCORE_CLIP = 3.0
""":func:`zscore` clips standardised scores to ``[-ZSCORE_CLIP, ZSCORE_CLIP]`` (one outlier cannot take all weight)."""
_CHUNK = 1 << 20  # values per float64 chunk in moments()


def check_column(values: Any, name: str, n: int | None, *, integer: bool = False) -> np.ndarray:
    """One value per example, checked: 1-D, ``n`` long (unless ``n`` is None), numeric and finite.

    Scores come back as float32 (4 bytes per example); with ``integer=True`` the
    values are cluster ids and come back as integers (whole floats are accepted).
    Tensors are moved to the host. ``name`` is the argument named in error messages.

    >>> check_column([1, 2.5], "quality", 2)
    array([1. , 2.5], dtype=float32)
    >>> check_column([0.0, 3.0], "clusters", 2, integer=True)
    array([0, 3])
    >>> check_column([1.0, float("nan")], "quality", 2)
    Traceback (most recent call last):
        ...
    ValueError: quality has NaN or inf at rows [1] (1 in all; ...); fix or drop them
    """
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


def dataset_columns(dataset: Any, spec: dict[str, tuple[str, str | None]]) -> dict[str, Any]:
    """Score columns of a ``datasets.Dataset``, by argument name.

    ``spec`` maps an argument name to (the parameter that named its column, the
    column, or None to leave the argument out). The argument ``keys`` comes back as
    a list (deduplication keys may be any hashable), every other one as a numeric
    array; :func:`check_column` checks them where they are used. A missing or
    non-numeric column raises an error that names the parameter to change.

    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"text": ["a", "b"], "q": [0.5, 1.0]})
    >>> cols = dataset_columns(ds, {"quality": ("quality_column", "q"), "keys": ("key_column", "text"),
    ...                             "clusters": ("cluster_column", None)})
    >>> cols["quality"].tolist(), cols["keys"], "clusters" in cols
    ([0.5, 1.0], ['a', 'b'], False)
    """
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


def moments(x: np.ndarray) -> tuple[float, float]:
    """Mean and (population) standard deviation, summed in float64 a chunk at a time (no N-sized float64 copy).

    >>> moments(np.array([1, 2, 3, 4], dtype=np.float32))
    (2.5, 1.118033988749895)
    """
    total, total_sq = 0.0, 0.0
    for lo in range(0, len(x), _CHUNK):
        chunk = x[lo : lo + _CHUNK].astype(np.float64)
        total += float(chunk.sum())
        total_sq += float(chunk @ chunk)
    mean = total / len(x)
    return mean, math.sqrt(max(total_sq / len(x) - mean * mean, 0.0))


def zscore(x: np.ndarray, moments: tuple[float, float]) -> np.ndarray:
    """``(x - mean) / std`` clipped to ``[-ZSCORE_CLIP, ZSCORE_CLIP]``, from :func:`moments` (possibly of more values
    than ``x``: a chunk is standardised against the whole column). A constant column gives zeros.

    >>> x = np.array([0.0] * 19 + [100.0])  # the outlier is 4.4 standard deviations out
    >>> zscore(x, moments(x))[[0, -1]].round(2).tolist()
    [-0.23, 3.0]
    >>> zscore(np.ones(3), (1.0, 0.0)).tolist()
    [0.0, 0.0, 0.0]
    """
    mean, std = moments
    if std <= 1e-12 * max(1.0, abs(mean)):
        return np.zeros(len(x))
    return np.clip((x - mean) / std, -ZSCORE_CLIP, ZSCORE_CLIP)


def dense_ids(raw: np.ndarray) -> np.ndarray:
    """Integer cluster ids renumbered ``0..K-1`` in order of value, as int32; ids that are already ``0..K-1`` are
    kept as they are (without a sort when the ids are small).

    >>> dense_ids(np.array([7, -1, 7, 3])).tolist()
    [2, 0, 2, 1]
    >>> dense_ids(np.array([0, 2, 2, 5])).tolist()
    [0, 1, 1, 2]
    """
    lo, hi = int(raw.min()), int(raw.max())
    if lo >= 0 and hi <= 4 * len(raw):  # O(N) lookup table instead of a sort
        present = np.bincount(raw, minlength=hi + 1) > 0
        if present.all() and hi < 2**31:
            return raw.astype(np.int32, copy=False)
        rank = (np.cumsum(present) - 1).astype(np.int32)
        return rank[raw]
    _, dense = np.unique(raw, return_inverse=True)
    return dense.astype(np.int32)
