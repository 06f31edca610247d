"""Statistics for the evidence tables: paired differences over seeds, and claims read from confidence intervals.

Every evidence table of the project compares arms that share their seeds (the same data, initial model and
evaluation problems), so the unit of evidence is the per-seed difference between two arms. This module gives:

- :func:`paired_difference`: the mean difference with a Student t interval and the paired t test's p value;
- :func:`bootstrap_paired_ci`: a percentile bootstrap over seeds and, within each seed, over evaluation problems
  (seeded, reproducible), for the case where per-problem outcomes are kept;
- :func:`sign_flip_test`: the exact sign-flip (permutation) test of a zero mean, for the small n of seeds;
- :func:`holm`: Holm's step-down adjustment of secondary metrics' p values (Holm 1979);
- :func:`minimum_detectable_effect`: the smallest true difference a paired design detects with a given power;
- :func:`binomial_upper_bound`: the one-sided Clopper-Pearson upper bound on a rate after ``k`` events in ``n`` runs
  (0 false alarms in 5 runs bounds the rate only below 45% at 95%);
- :func:`verdict`: "held", "did not hold" or "inconclusive", read from an interval and a claim's threshold.

Pure functions of numbers (``math`` and ``numpy`` only): the quantiles of Student's t and of the beta distribution
come from the regularized incomplete beta function (continued fraction of Numerical Recipes, Press et al. 2007,
§6.4), inverted by bisection; ``tests/experiments/test_stats.py`` checks them against ``scipy.stats``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "PairedDifference",
    "binomial_upper_bound",
    "bootstrap_paired_ci",
    "holm",
    "minimum_detectable_effect",
    "paired_difference",
    "sign_flip_test",
    "t_cdf",
    "t_ppf",
    "verdict",
]


# --------------------------------------------------------------------------- distributions


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes §6.4)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _bisect(f, low: float, high: float, target: float, iterations: int = 200) -> float:
    """The x in [low, high] with f(x) = target, for an increasing f."""
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        if f(mid) < target:
            low = mid
        else:
            high = mid
        if high - low <= 1e-15 * max(1.0, abs(mid)):
            break
    return 0.5 * (low + high)


def _beta_ppf(q: float, a: float, b: float) -> float:
    """The q-quantile of the Beta(a, b) distribution."""
    return _bisect(lambda x: _betainc(a, b, x), 0.0, 1.0, q)


def t_cdf(x: float, df: float) -> float:
    """The distribution function of Student's t with ``df`` degrees of freedom.

    >>> round(t_cdf(0.0, 4), 6), round(t_cdf(2.776445, 4), 4)
    (0.5, 0.975)
    """
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + x * x))
    return 1.0 - tail if x > 0 else tail


def t_ppf(q: float, df: float) -> float:
    """The q-quantile of Student's t with ``df`` degrees of freedom (``scipy.stats.t.ppf``).

    >>> round(t_ppf(0.975, 4), 4), round(t_ppf(0.975, 2), 4), round(t_ppf(0.025, 9), 4)
    (2.7764, 4.3027, -2.2622)
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    if q == 0.5:
        return 0.0
    upper = q > 0.5
    tail = 1.0 - q if upper else q  # P(T < -t) = tail, with I_{df/(df+t²)}(df/2, 1/2) = 2 · tail
    x = _beta_ppf(2.0 * tail, df / 2.0, 0.5)
    t = math.sqrt(df * (1.0 - x) / x) if x > 0 else math.inf
    return t if upper else -t


# --------------------------------------------------------------------------- paired differences


@dataclass(frozen=True)
class PairedDifference:
    """The mean of per-seed differences ``a − b`` with its Student t interval.

    ``low`` and ``high`` bound the mean at ``confidence``; ``sd`` is the differences' sample standard deviation;
    ``p_value`` is the two-sided paired t test of a zero mean (1.0 when every difference is 0, NaN for n = 1).
    When every difference is equal the interval has width 0: the spread cannot be estimated from the sample (two
    seeds of a discrete accuracy often show it), so read no verdict from such an interval on very few seeds.
    """

    mean: float
    low: float
    high: float
    sd: float
    n: int
    p_value: float
    confidence: float = 0.95

    def format(self, digits: int = 3, signed: bool = True) -> str:
        """``+0.012 [-0.004, +0.028]``: the mean and the interval, as a table cell.

        >>> paired_difference([0.5, 0.6, 0.7], [0.4, 0.4, 0.5]).format()
        '+0.167 [+0.023, +0.310]'
        """
        sign = "+" if signed else ""

        def number(x: float) -> str:
            return "n/a" if math.isnan(x) else f"{x:{sign}.{digits}f}"

        return f"{number(self.mean)} [{number(self.low)}, {number(self.high)}]"


def _as_vector(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty sequence of numbers, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds a NaN or an infinite value: {array.tolist()}")
    return array


def paired_difference(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray | None = None, confidence: float = 0.95
) -> PairedDifference:
    """The per-seed differences ``a[i] − b[i]`` (or ``a`` itself when ``b`` is None): mean, t interval, t test.

    >>> d = paired_difference([0.42, 0.40, 0.45], [0.40, 0.41, 0.41])
    >>> round(d.mean, 4), round(d.low, 4), round(d.high, 4), round(d.p_value, 3)
    (0.0167, -0.0458, 0.0792, 0.37)
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = _as_vector(a, "a")
    if b is not None:
        y = _as_vector(b, "b")
        if y.shape != x.shape:
            raise ValueError(f"a and b must be paired (the same length), got {x.size} and {y.size}")
        x = x - y
    n, mean = x.size, float(x.mean())
    if n == 1:
        return PairedDifference(mean, math.nan, math.nan, math.nan, 1, math.nan, confidence)
    sd = float(x.std(ddof=1))
    se = sd / math.sqrt(n)
    if se == 0.0:
        return PairedDifference(mean, mean, mean, 0.0, n, 1.0 if mean == 0.0 else 0.0, confidence)
    half = t_ppf(0.5 + confidence / 2.0, n - 1) * se
    p = 2.0 * t_cdf(-abs(mean) / se, n - 1)
    return PairedDifference(mean, mean - half, mean + half, sd, n, min(1.0, p), confidence)


def bootstrap_paired_ci(
    differences: Sequence[Sequence[float]] | np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of per-problem differences and its percentile bootstrap interval over seeds × problems.

    ``differences[s]`` holds, for seed ``s``, the per-problem differences between two arms (for example 1 − 0 where
    only the first arm solved a problem); seeds may hold different problems and different numbers of them. Each
    resample draws seeds with replacement and, within each drawn seed, its problems with replacement (a two-stage
    bootstrap: both the seeds and the finite evaluation set vary); the statistic is the mean over seeds of the
    per-seed mean. Seeded by ``seed``: the same call gives the same interval. Returns ``(mean, low, high)``.

    >>> mean, low, high = bootstrap_paired_ci([[1, 0, 0, 1], [0, 0, 1, 1], [1, 1, 0, 1]], n_resamples=2000)
    >>> round(mean, 3), low <= mean <= high
    (0.583, True)
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    seeds = [_as_vector(row, f"differences[{i}]") for i, row in enumerate(differences)]
    if not seeds:
        raise ValueError("differences is empty: give one sequence of per-problem differences per seed")
    rng = np.random.default_rng(seed)
    point = float(np.mean([row.mean() for row in seeds]))
    n = len(seeds)
    chosen = rng.integers(0, n, size=(n_resamples, n))
    per_seed = np.empty((n_resamples, n))
    for s, row in enumerate(seeds):  # every draw of seed s resamples its problems afresh
        mask = chosen == s
        values, counts = np.unique(row, return_counts=True)  # a resample's mean is a multinomial over the values
        draws = rng.multinomial(row.size, counts / row.size, size=int(mask.sum()))
        per_seed[mask] = draws @ values / row.size
    stats = per_seed.mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return point, float(low), float(high)


def sign_flip_test(differences: Sequence[float] | np.ndarray, max_exact: int = 20) -> float:
    """Two-sided p value of the exact sign-flip test that the per-seed differences have mean 0.

    Under the null, each difference is as likely positive as negative; the p value is the share of the ``2**n``
    sign assignments whose mean is at least as far from 0 as the observed one. Exact, with no normality assumption;
    the smallest p value it can give is ``2 / 2**n`` (0.0625 for 5 seeds, 0.25 for 3).

    >>> sign_flip_test([0.02, 0.03, 0.01, 0.04, 0.05])
    0.0625
    >>> sign_flip_test([0.02, -0.03, 0.01])
    1.0
    """
    x = _as_vector(differences, "differences")
    if x.size > max_exact:
        raise ValueError(f"{x.size} differences: the exact test enumerates 2**n signs; use at most {max_exact}")
    observed = abs(x.mean())
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=x.size)))
    means = np.abs(signs @ x) / x.size
    return float(np.mean(means >= observed - 1e-12 * max(1.0, observed)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p values (Holm 1979), in the input's order; compare each with alpha.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    p = [float(v) for v in p_values]
    if any(not 0.0 <= v <= 1.0 for v in p):
        raise ValueError(f"p values must lie in [0, 1], got {p}")
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = round(running, 15)
    return adjusted


def minimum_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference a two-sided paired t test on ``n`` seeds detects with ``power``.

    ``(t_{1−α/2, n−1} + t_{power, n−1}) · sd / √n``, with ``sd`` the standard deviation of the per-seed
    differences (the usual approximation of the noncentral t power; it is within a few points of power for n ≥ 3).

    >>> round(minimum_detectable_effect(0.025, 5), 4)
    0.0416
    """
    if sd < 0 or not math.isfinite(sd):
        raise ValueError(f"sd must be a non-negative number, got {sd}")
    if n < 2:
        raise ValueError(f"n must be at least 2 (a paired t test needs a standard deviation), got {n}")
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha} and {power}")
    return (t_ppf(1.0 - alpha / 2.0, n - 1) + t_ppf(power, n - 1)) * sd / math.sqrt(n)


def binomial_upper_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on a rate after ``k`` events in ``n`` runs.

    With 0 false alarms in ``n`` runs the bound is ``1 − (1 − confidence)^(1/n)``: about 45% for 5 runs, 24% for 11,
    and it needs 59 runs to reach 5% (the "rule of three", 3/n, approximates it for large n).

    >>> [round(binomial_upper_bound(k, n), 3) for k, n in ((0, 5), (0, 11), (1, 5))]
    [0.451, 0.238, 0.657]
    """
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if k == n:
        return 1.0
    if k == 0:
        return 1.0 - (1.0 - confidence) ** (1.0 / n)
    return _beta_ppf(confidence, k + 1, n - k)


Outcome = Literal["held", "did not hold", "inconclusive"]


def verdict(low: float, high: float, threshold: float = 0.0, claim: Literal["above", "below"] = "above") -> Outcome:
    """Read a claim about a difference from its confidence interval ``[low, high]``.

    ``claim="above"``: the difference is above ``threshold`` (held when the whole interval is; did not hold when
    the whole interval is at or below it). ``claim="below"``: the difference is below ``threshold`` (a "no worse
    than" claim is ``above`` a negative margin; "not above 0" is ``below`` 0). Otherwise "inconclusive": the
    data cannot tell, whatever the point estimate says.

    >>> verdict(0.01, 0.05), verdict(-0.02, 0.05), verdict(-0.05, -0.01), verdict(-0.03, 0.01, 0.02, "below")
    ('held', 'inconclusive', 'did not hold', 'held')
    """
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if low > high:
        raise ValueError(f"low must not exceed high, got [{low}, {high}]")
    if claim == "above":
        return "held" if low > threshold else "did not hold" if high <= threshold else "inconclusive"
    if claim == "below":
        return "held" if high < threshold else "did not hold" if low >= threshold else "inconclusive"
    raise ValueError(f"claim must be 'above' or 'below', got {claim!r}")
