"""Coverage of a set of problems by k samples each: pass@k and the share never solved.

pass@k is the chance that at least one of k samples drawn from a problem's n
samples is correct. With c correct among n, the unbiased estimator of Chen et al.
(2021, "Evaluating Large Language Models Trained on Code", arXiv 2107.03374) is
``1 - C(n - c, k) / C(n, k)``, computed here as the product
``1 - prod_{i = n - c + 1}^{n} (1 - k / i)``, which never forms a large binomial.
pass@1 is the mean share correct; pass@k >= pass@1, and collapse shows in pass@k
first: a model that always answers the same way solves the same problems in all
its samples.

>>> pass_at_k([4, 4], [1, 0], k=2)  # one of four correct: 1 - C(3,2)/C(4,2) = 0.5; none: 0
0.25
>>> never_solved_share([4, 4, 4], [0, 2, 0])
0.6666666666666666
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["never_solved_share", "pass_at_k", "pass_at_k_per_problem"]


def _counts(samples: Sequence[int] | np.ndarray, correct: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(samples, dtype=np.float64).reshape(-1)
    c = np.asarray(correct, dtype=np.float64).reshape(-1)
    if n.shape != c.shape:
        raise ValueError(f"samples and correct differ in length ({len(n)} and {len(c)})")
    if len(n) == 0:
        raise ValueError("pass@k needs at least one problem")
    if not (np.isfinite(n).all() and np.isfinite(c).all()):
        raise ValueError("sample and correct counts must be finite")
    if (n != np.round(n)).any() or (c != np.round(c)).any() or (n < 1).any() or (c < 0).any() or (c > n).any():
        raise ValueError("need integer counts with n >= 1 and 0 <= correct <= n for every problem")
    return n, c


def pass_at_k_per_problem(
    samples: Sequence[int] | np.ndarray, correct: Sequence[int] | np.ndarray, k: int
) -> np.ndarray:
    """The unbiased pass@k of each problem from its ``samples`` (n) and ``correct`` (c) counts; needs k <= n.

    >>> pass_at_k_per_problem([8, 8, 8], [0, 1, 8], k=8).tolist()
    [0.0, 1.0, 1.0]
    >>> round(float(pass_at_k_per_problem([8], [1], k=1)[0]), 3)  # pass@1 is c / n
    0.125
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    n, c = _counts(samples, correct)
    if (n < k).any():
        raise ValueError(f"pass@{k} needs at least {k} samples per problem; the fewest here is {int(n.min())}")
    out = np.ones(len(n))
    for j, (nj, cj) in enumerate(zip(n, c)):
        if nj - cj >= k:  # otherwise every draw of k holds a correct sample
            i = np.arange(nj - cj + 1, nj + 1)
            out[j] = 1.0 - float(np.prod(1.0 - k / i))
    return out


def pass_at_k(samples: Sequence[int] | np.ndarray, correct: Sequence[int] | np.ndarray, k: int) -> float:
    """Mean unbiased pass@k over problems (see :func:`pass_at_k_per_problem`).

    >>> pass_at_k([2], [1], k=1), pass_at_k([2], [1], k=2)
    (0.5, 1.0)
    """
    return float(pass_at_k_per_problem(samples, correct, k).mean())


def never_solved_share(samples: Sequence[int] | np.ndarray, correct: Sequence[int] | np.ndarray) -> float:
    """Share of problems with no correct sample among their n (``1 - pass@n`` when every problem has n samples)."""
    _, c = _counts(samples, correct)
    return float((c == 0).mean())
