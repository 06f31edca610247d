"""Inverse-CDF draws in O(1) per index: a guide table over the cumulative weights (Chen & Asau, 1974).

A weighted draw maps a uniform ``u`` in ``[0, total)`` to the first index ``i`` with ``cdf[i] > u``, the
result of ``searchsorted(cdf, u, side="right")``. A binary search over an N-long float64 CDF takes
``log2(N)`` dependent cache misses per index (23 at N = 10^7). A guide table of ``M + 2`` integers, built
in one O(N) pass whenever the CDF changes, holds for each bucket ``j`` of ``[0, total)`` cut into ``M``
equal parts the first index whose CDF value falls in bucket ``j`` or later. The answer for ``u`` lies
between the guide entries of ``u``'s bucket and of the next one, so with ``M = N`` the search is over a
handful of entries on average: O(1) per index, whatever N.

The indices are *identical* to the binary search's (same ``u``, same index, bit for bit): bucketing
multiplies every value by the same float, a monotone operation, so no rounding can move an answer
outside its bucket's range (see :func:`guide_table`). The table costs 4 bytes per example (int32 while
N < 2^31, else int64) and is built in chunks of 2^20 examples, so its build needs no N-long temporary.

>>> cdf = np.cumsum([1.0, 0.0, 3.0, 0.5, 0.5])
>>> guide = guide_table(cdf)
>>> u = np.array([0.0, 0.99, 1.0, 3.9, 4.0, 4.49, 4.5, 4.999])
>>> lookup(cdf, guide, u).tolist()
[0, 0, 2, 2, 3, 3, 4, 4]
>>> np.searchsorted(cdf, u, side="right").tolist()
[0, 0, 2, 2, 3, 3, 4, 4]
"""

from __future__ import annotations

import numpy as np

__all__ = ["guide_table", "lookup"]

_CHUNK = 1 << 20  # CDF entries per vectorised chunk while building


def _scale(total: float, buckets: int) -> float:
    """The float every CDF value and every ``u`` is multiplied by to find its bucket."""
    return buckets / total


def guide_table(cdf: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The guide table of a non-decreasing ``cdf`` (float64, N long, ``cdf[-1] > 0``), with ``M = N`` buckets.

    Entry ``j`` (``0 <= j <= M + 1``) is the number of CDF values whose bucket ``floor(cdf[i] * M /
    cdf[-1])`` is below ``j``: the first index in bucket ``j`` or later. For ``u`` in bucket ``j``, every
    index before entry ``j`` has ``cdf[i] <= u`` and the index at entry ``j + 1`` (if below N) has
    ``cdf[i] > u``: the multiplication by ``M / cdf[-1]`` is monotone in floating point, so
    ``cdf[i] > u`` implies ``bucket(cdf[i]) >= bucket(u)``. ``out`` (an int array of ``M + 2``
    entries from an earlier call for the same N) is reused.

    >>> guide_table(np.array([1.0, 1.0, 3.0, 4.0])).tolist()  # buckets 1, 1, 3, 4
    [0, 0, 2, 2, 3, 4]
    """
    n = len(cdf)
    if n == 0:
        raise ValueError("the CDF is empty: there is nothing to draw")
    total = float(cdf[-1])
    if not np.isfinite(total) or total <= 0:
        raise ValueError(f"the CDF must end at a positive finite total, got {total}")
    buckets = n
    dtype = np.int32 if n < 2**31 - 1 else np.int64
    if out is None or out.shape != (buckets + 2,) or out.dtype != dtype:
        out = np.empty(buckets + 2, dtype=dtype)
    out[:] = 0
    scale = _scale(total, buckets)
    for lo in range(0, n, _CHUNK):
        bucket = np.floor(cdf[lo : lo + _CHUNK] * scale).astype(np.int64)
        np.minimum(bucket, buckets, out=bucket)  # cdf[-1] * scale may round up to M: the last bucket
        first = int(bucket[0])  # the chunk's buckets are one non-decreasing run
        counts = np.bincount(bucket - first)
        out[first + 1 : first + 1 + len(counts)] += counts.astype(dtype, copy=False)
    np.cumsum(out, out=out)
    return out


def lookup(cdf: np.ndarray, guide: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``searchsorted(cdf, u, side="right")`` for ``u`` in ``[0, cdf[-1])``, through the guide table
    ``guide`` of ``cdf`` (:func:`guide_table`): int64 indices, equal to the binary search's.

    A vectorised binary search over each ``u``'s bucket, which holds about one index when the weights
    are not extreme: the loop runs ``ceil(log2(widest bucket + 1))`` times (once or twice in practice;
    ``log2(N)`` at worst, when one bucket holds nearly every index).

    >>> cdf = np.cumsum([1.0, 1.0, 1.0, 1.0])
    >>> lookup(cdf, guide_table(cdf), np.array([0.5, 1.0, 3.99])).tolist()
    [0, 1, 3]
    """
    u = np.asarray(u, dtype=np.float64)
    buckets = len(guide) - 2
    scale = _scale(float(cdf[-1]), buckets)
    j = np.floor(u * scale).astype(np.int64)
    np.clip(j, 0, buckets, out=j)
    lo = guide[j].astype(np.int64)
    hi = guide[j + 1].astype(np.int64)
    open_ = np.flatnonzero(lo < hi)
    while len(open_):
        a, b = lo[open_], hi[open_]
        mid = (a + b) >> 1
        above = cdf[mid] > u[open_]
        hi[open_] = np.where(above, mid, b)
        lo[open_] = np.where(above, a, mid + 1)
        open_ = open_[lo[open_] < hi[open_]]
    return lo
