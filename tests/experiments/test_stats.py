"""The evidence tables' statistics against scipy and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from qdc_trainer.experiments.stats import (
    binomial_upper_bound,
    bootstrap_paired_ci,
    holm,
    minimum_detectable_effect,
    paired_difference,
    sign_flip_test,
    t_cdf,
    t_ppf,
    verdict,
)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 29, 200])
@pytest.mark.parametrize("q", [0.001, 0.025, 0.1, 0.5, 0.8, 0.9, 0.975, 0.995])
def test_t_quantile_and_cdf_match_scipy(q, df):
    assert t_ppf(q, df) == pytest.approx(sps.t.ppf(q, df), rel=1e-9, abs=1e-12)
    x = sps.t.ppf(q, df)
    assert t_cdf(x, df) == pytest.approx(q, rel=1e-9)


def test_t_quantile_refuses_what_has_none():
    for q in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="q must be in"):
            t_ppf(q, 3)
    with pytest.raises(ValueError, match="df must be positive"):
        t_ppf(0.9, 0)


@pytest.mark.parametrize(
    "a, b",
    [
        ([0.411, 0.399, 0.422], [0.388, 0.372, 0.406]),
        ([0.1, 0.3, 0.2, 0.25, 0.15], [0.12, 0.2, 0.22, 0.2, 0.1]),
        ([1.0, -2.0, 3.5, 0.0, 4.0, 2.0, -1.0, 0.5], None),
    ],
)
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_paired_difference_matches_scipys_t_test_and_interval(a, b, confidence):
    d = np.asarray(a) - (np.asarray(b) if b is not None else 0.0)
    got = paired_difference(a, b, confidence=confidence)
    ref = sps.ttest_1samp(d, 0.0)
    low, high = ref.confidence_interval(confidence)
    assert got.mean == pytest.approx(d.mean())
    assert got.sd == pytest.approx(d.std(ddof=1))
    assert (got.low, got.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert got.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    assert got.n == len(a)


def test_paired_difference_edge_cases():
    same = paired_difference([0.3, 0.3], [0.3, 0.3])
    assert (same.mean, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    constant = paired_difference([0.5, 0.5, 0.5], [0.4, 0.4, 0.4])
    assert constant.low == constant.high == pytest.approx(0.1) and constant.p_value == 0.0
    one = paired_difference([0.5], [0.4])
    assert one.mean == pytest.approx(0.1) and math.isnan(one.low) and one.format() == "+0.100 [n/a, n/a]"
    with pytest.raises(ValueError, match="paired"):
        paired_difference([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        paired_difference([1, float("nan")])
    with pytest.raises(ValueError, match="non-empty"):
        paired_difference([])


@pytest.mark.parametrize(
    "d",
    [
        [0.02, 0.03, 0.01, 0.04, 0.05],
        [0.02, -0.03, 0.01, 0.04, 0.05],
        [0.023, -0.012, 0.017],
        [1.0, -1.0, 2.0, 0.5, -0.25, 3.0, 0.75],
        [0.0, 0.0, 0.1],
    ],
)
def test_sign_flip_test_matches_scipys_exact_permutation_test(d):
    ref = sps.permutation_test(
        (np.asarray(d),), np.mean, permutation_type="samples", n_resamples=np.inf, alternative="two-sided"
    )
    assert sign_flip_test(d) == pytest.approx(ref.pvalue, rel=1e-12)


def test_sign_flip_test_hand_computed():
    # 3 seeds all positive: 2 of the 8 sign patterns are as extreme (all +, all -)
    assert sign_flip_test([0.1, 0.2, 0.3]) == 0.25
    # 2 of 5 negative and small: |mean| is beaten by the flips of the large ones
    assert sign_flip_test([0.02, 0.03, 0.01, 0.04, 0.05]) == 2 / 32
    with pytest.raises(ValueError, match="at most 20"):
        sign_flip_test(np.ones(21))


def _holm_reference(p):
    """Holm (1979), step by step: reject in order while p_(i) <= alpha / (m - i); adjusted p by that rule."""
    m = len(p)
    order = np.argsort(p, kind="stable")
    out = np.empty(m)
    prev = 0.0
    for rank, i in enumerate(order):
        prev = max(prev, min(1.0, (m - rank) * p[i]))
        out[i] = prev
    return out


@pytest.mark.parametrize(
    "p, expected",
    [
        ([0.01, 0.04, 0.03], [0.03, 0.06, 0.06]),
        ([0.067, 0.2, 0.5, 0.9, 0.01, 0.3, 0.02, 0.7], [0.402, 1.0, 1.0, 1.0, 0.08, 1.0, 0.14, 1.0]),
        ([0.001], [0.001]),
        ([], []),
    ],
)
def test_holm_against_hand_computed_values(p, expected):
    assert holm(p) == pytest.approx(expected)
    if p:
        assert holm(p) == pytest.approx(_holm_reference(np.asarray(p)).tolist())


def test_holm_controls_the_family_rejections_like_its_definition():
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = rng.uniform(0, 0.2, size=6)
        alpha = 0.05
        # the definition: sort, reject while p_(i) <= alpha / (m - i)
        rejected = set()
        for rank, i in enumerate(np.argsort(p)):
            if p[i] <= alpha / (6 - rank):
                rejected.add(int(i))
            else:
                break
        assert {i for i, q in enumerate(holm(p.tolist())) if q <= alpha} == rejected
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.2, 1.5])


@pytest.mark.parametrize("n", [3, 5, 8, 12])
@pytest.mark.parametrize("sd", [0.01, 0.025])
def test_minimum_detectable_effect_gives_its_power_under_scipys_noncentral_t(n, sd):
    mde = minimum_detectable_effect(sd, n, alpha=0.05, power=0.8)
    assert mde == pytest.approx((sps.t.ppf(0.975, n - 1) + sps.t.ppf(0.8, n - 1)) * sd / math.sqrt(n))
    crit = sps.t.ppf(0.975, n - 1)
    nc = mde / (sd / math.sqrt(n))
    power = sps.nct.sf(crit, n - 1, nc) + sps.nct.cdf(-crit, n - 1, nc)
    assert abs(power - 0.8) < 0.04  # the approximation is within a few points of the asked power (0.77 at n = 3)
    with pytest.raises(ValueError, match="at least 2"):
        minimum_detectable_effect(sd, 1)


@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (0, 3), (2, 3), (3, 3), (0, 5), (1, 5), (0, 11), (2, 15), (0, 59)])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_binomial_upper_bound_matches_clopper_pearson_from_scipy(k, n, confidence):
    ref = 1.0 if k == n else sps.beta.ppf(confidence, k + 1, n - k)
    got = binomial_upper_bound(k, n, confidence)
    assert got == pytest.approx(ref, rel=1e-9)
    # the defining property: at the bound, seeing k or fewer events has probability 1 - confidence
    if k < n:
        assert sps.binom.cdf(k, n, got) == pytest.approx(1 - confidence, rel=1e-7)


def test_binomial_upper_bound_known_values():
    assert binomial_upper_bound(0, 5) == pytest.approx(0.4507, abs=1e-4)  # 0 of 5 healthy runs
    assert binomial_upper_bound(0, 11) == pytest.approx(0.2384, abs=1e-4)  # 0 of 11
    assert binomial_upper_bound(0, 59) < 0.05 < binomial_upper_bound(0, 58)
    with pytest.raises(ValueError, match="k <= n"):
        binomial_upper_bound(6, 5)


def test_bootstrap_is_reproducible_and_near_the_analytic_interval():
    rng = np.random.default_rng(0)
    seeds = [rng.binomial(1, 0.6, 300) - rng.binomial(1, 0.5, 300) for _ in range(6)]
    first = bootstrap_paired_ci(seeds, seed=1)
    assert first == bootstrap_paired_ci(seeds, seed=1)
    assert first != bootstrap_paired_ci(seeds, seed=2)
    mean, low, high = first
    assert mean == pytest.approx(np.mean([s.mean() for s in seeds]))
    assert low < mean < high
    # two-stage variance: between-seed variance of the means plus the within-seed sampling variance
    means = np.array([s.mean() for s in seeds])
    within = np.mean([s.var() / s.size for s in seeds])
    se = math.sqrt((means.var() + within) / len(seeds))
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.25)


def test_bootstrap_with_one_seed_is_scipys_problem_bootstrap():
    rng = np.random.default_rng(5)
    d = rng.binomial(1, 0.7, 200) - rng.binomial(1, 0.55, 200)
    _, low, high = bootstrap_paired_ci([d], n_resamples=20_000, seed=0)
    ref = sps.bootstrap((d,), np.mean, n_resamples=20_000, method="percentile", random_state=0).confidence_interval
    assert low == pytest.approx(ref.low, abs=0.01) and high == pytest.approx(ref.high, abs=0.01)


def test_bootstrap_refuses_empty_input():
    with pytest.raises(ValueError, match="empty"):
        bootstrap_paired_ci([])
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_paired_ci([[1, 0], []])


@pytest.mark.parametrize(
    "low, high, threshold, claim, expected",
    [
        (0.01, 0.05, 0.0, "above", "held"),
        (-0.01, 0.05, 0.0, "above", "inconclusive"),
        (-0.05, -0.01, 0.0, "above", "did not hold"),
        (-0.05, 0.0, 0.0, "above", "did not hold"),
        (0.031, 0.09, 0.03, "above", "held"),
        (-0.03, -0.01, 0.0, "below", "held"),
        (-0.03, 0.01, 0.0, "below", "inconclusive"),
        (0.0, 0.02, 0.0, "below", "did not hold"),
        (-0.012, 0.04, -0.02, "above", "held"),  # "no worse than plain by more than 2 points"
        (float("nan"), float("nan"), 0.0, "above", "inconclusive"),
    ],
)
def test_verdict(low, high, threshold, claim, expected):
    assert verdict(low, high, threshold, claim) == expected


def test_verdict_refuses_a_reversed_interval_and_unknown_claims():
    with pytest.raises(ValueError, match="low must not exceed high"):
        verdict(0.1, 0.0)
    with pytest.raises(ValueError, match="'above' or 'below'"):
        verdict(0.0, 0.1, claim="sideways")  # type: ignore[arg-type]
