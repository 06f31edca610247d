"""Budgeted QDC selection: quotas, filtering, deduplication, the weighted draw, and agreement with the sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qdc_trainer.data import QDCSampler, QDCSamplerConfig, cluster_quotas, select_budget, select_dataset

# --------------------------------------------------------------------------- cluster quotas


def test_quotas_by_hand():
    # alpha 1: equal shares 10/10/10; the singleton takes 1, the rest 29 split 14.5/14.5; the 10-cluster is
    # capped, so the big one takes 19.
    assert cluster_quotas([100, 10, 1], 30, 1.0).tolist() == [19, 10, 1]
    # alpha 0: proportional, 30 * [100, 10, 1] / 111 = [27.03, 2.70, 0.27] -> floors 27, 2, 0; one left for the
    # largest remainder (2.70).
    assert cluster_quotas([100, 10, 1], 30, 0.0).tolist() == [27, 3, 0]
    # alpha 0.5: weights sqrt(sizes) = [10, 3.162, 1] -> 30 * w / 14.162 = [21.18, 6.70, 2.12]; the singleton is
    # capped at 1, then 29 * [10, 3.162] / 13.162 = [22.03, 6.97] -> floors 22, 6, one left for the remainder 0.97.
    assert cluster_quotas([100, 10, 1], 30, 0.5).tolist() == [22, 7, 1]
    assert cluster_quotas([3, 0, 2], 10, 1.0).tolist() == [3, 0, 2]  # budget above the supply: everything
    assert cluster_quotas([5, 5], 0, 1.0).tolist() == [0, 0]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 60), min_size=1, max_size=12), st.integers(0, 300), st.sampled_from([0.0, 0.3, 1.0, 2.0])
)
def test_quota_properties(sizes, budget, alpha):
    q = cluster_quotas(sizes, budget, alpha)
    sizes = np.array(sizes)
    assert q.sum() == min(budget, sizes.sum())
    assert (q >= 0).all() and (q <= sizes).all()
    # Water filling: an uncapped cluster gets its share of what the capped ones left, to within one example.
    capped = q == sizes
    free = ~capped & (sizes > 0)
    if free.any():
        w = sizes[free].astype(float) ** (1 - alpha)
        share = (q.sum() - q[capped].sum()) * w / w.sum()
        assert np.abs(q[free] - share).max() < 1.0 + 1e-9
        # A capped cluster was capped because its share reached its size.
        if capped.any() and (sizes[capped] > 0).any():
            per_weight = share / w
            cw = sizes[capped & (sizes > 0)].astype(float) ** (1 - alpha)
            assert (sizes[capped & (sizes > 0)] <= cw * per_weight.max() + 1.0 + 1e-9).all()


def test_quota_errors():
    with pytest.raises(ValueError, match="budget"):
        cluster_quotas([1, 2], -1, 1.0)
    with pytest.raises(ValueError, match="sizes"):
        cluster_quotas([1, -2], 3, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        cluster_quotas([1, 2], 3, float("nan"))


# --------------------------------------------------------------------------- select_budget


def test_budget_filter_and_dedup():
    quality = [1, 1, 0, 1, 1, 1, 1]
    complexity = [1, 3, 5, 2, 1, 1, 2]
    keys = ["a", "a", "b", "c", "d", "e", "e"]
    picked = select_budget(7, 10, quality=quality, complexity=complexity, keys=keys, min_quality=1)
    # 2 fails the filter; of "a" the more complex 1 is kept, of "e" the more complex 6.
    assert picked.tolist() == [1, 3, 4, 6]
    assert select_budget(7, 2, quality=quality, keys=keys, min_quality=1).size == 2
    assert select_budget(7, 3, quality=[0] * 7, min_quality=1).size == 0


def test_cluster_coverage_follows_tradeoff():
    clusters = np.array([0] * 90 + [1] * 9 + [2] * 1)
    counts = {}
    for tradeoff in (0.0, 0.5, 1.0):
        picked = select_budget(100, 30, clusters=clusters, tradeoff=tradeoff)
        counts[tradeoff] = np.bincount(clusters[picked], minlength=3).tolist()
        assert len(picked) == 30 and len(set(picked.tolist())) == 30
    assert counts[0.0] == cluster_quotas([90, 9, 1], 30, 1.0).tolist() == [20, 9, 1]
    assert counts[1.0] == cluster_quotas([90, 9, 1], 30, 0.0).tolist() == [27, 3, 0]
    assert counts[0.5] == cluster_quotas([90, 9, 1], 30, 0.5).tolist()


def test_draw_matches_the_sampler_weights():
    # Budget 1 from one cluster: candidate i is drawn with probability exp(u_i) / sum exp(u) (Gumbel top-1), with
    # u = tradeoff * quality_strength * z(quality). quality [0, 1, 2]: z = [-1.2247, 0, 1.2247]; with tradeoff 0.5
    # and strength 2, u = z, so p = softmax(z) = [0.0651, 0.2214, 0.7135].
    quality = [0.0, 1.0, 2.0]
    expected = np.exp([-math.sqrt(1.5), 0.0, math.sqrt(1.5)])
    expected /= expected.sum()
    draws = np.bincount([select_budget(3, 1, quality=quality, seed=s)[0] for s in range(3000)], minlength=3) / 3000
    assert np.abs(draws - expected).max() < 0.03
    # The sampler's own probabilities for the same scores (no loss feedback, a tiny floor) are the same.
    sampler = QDCSampler(3, quality=quality, config=QDCSamplerConfig(floor=1e-9))
    assert np.allclose(sampler.probabilities(), expected, atol=1e-6)


def test_cluster_mass_matches_the_sampler():
    rng = np.random.default_rng(0)
    clusters = rng.choice(5, size=400, p=[0.6, 0.2, 0.1, 0.07, 0.03])
    for tradeoff in (0.2, 0.7):
        sampler = QDCSampler(400, clusters=clusters, config=QDCSamplerConfig(tradeoff=tradeoff, floor=1e-9))
        mass = np.bincount(clusters, weights=sampler.probabilities(), minlength=5)
        picked = select_budget(400, 100, clusters=clusters, tradeoff=tradeoff)
        share = np.bincount(clusters[picked], minlength=5) / 100
        assert np.abs(share - mass).max() <= 0.01 + 1e-9


def test_complexity_and_greedy():
    complexity = np.arange(50.0)
    picked = select_budget(50, 10, complexity=complexity, greedy=True)
    assert picked.tolist() == list(range(40, 50))
    drawn = select_budget(50, 10, complexity=complexity, complexity_strength=2.0, seed=3)
    assert complexity[drawn].mean() > complexity.mean() + 5
    flat = select_budget(50, 10, complexity=complexity, complexity_strength=0.0, seed=3)
    assert flat.tolist() == select_budget(50, 10, seed=3).tolist()  # no complexity term: a uniform draw


def test_seed_and_config():
    kwargs = dict(quality=np.linspace(0, 1, 40), clusters=np.arange(40) % 4)
    a = select_budget(40, 12, seed=5, **kwargs)
    assert a.tolist() == select_budget(40, 12, seed=5, **kwargs).tolist()
    assert a.tolist() != select_budget(40, 12, seed=6, **kwargs).tolist()
    cfg = QDCSamplerConfig(tradeoff=0.9, seed=5)
    assert (
        select_budget(40, 12, config=cfg, **kwargs).tolist()
        == select_budget(40, 12, tradeoff=0.9, seed=5, **kwargs).tolist()
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(budget=-1), ValueError, "budget"),
        (dict(budget=2.5), ValueError, "budget"),
        (dict(quality=[1.0, 2.0]), ValueError, "quality has 2 values"),
        (dict(keys=["a"]), ValueError, "keys has 1"),
        (dict(min_quality=0.5), ValueError, "min_quality needs"),
        (dict(temperature=2.0), TypeError, "unknown selection option"),
        (dict(tradeoff=2.0), ValueError, "tradeoff"),
        (dict(quality=[1.0, float("nan"), 0.0]), ValueError, "NaN"),
        (dict(clusters=[0.5, 1, 2]), TypeError, "integer cluster ids"),
        (dict(quality=[1.0, 0.0, 1.0], min_quality=float("nan")), ValueError, r"min_quality=nan would drop every"),
        (dict(quality=[1.0, 0.0, 1.0], min_quality=math.inf), ValueError, r"min_quality=inf would drop every"),
        (dict(quality=[1.0, 0.0, 1.0], min_quality="0.5"), TypeError, "min_quality must be a number"),
        (dict(quality=[1.0, float("nan"), 0.0], min_quality=0.5), ValueError, r"quality has NaN or inf at rows \[1\]"),
        (dict(complexity=[1.0, 2.0, float("nan")]), ValueError, r"complexity has NaN or inf at rows \[2\]"),
        (dict(budget=0, quality=[1.0, float("nan"), 0.0]), ValueError, "NaN"),  # checked with nothing to choose too
        (dict(budget=0, quality=[1.0, 0.0, 1.0], min_quality=float("nan")), ValueError, "min_quality"),
    ],
)
def test_bad_input(kwargs, error, match):
    args = dict(budget=2)
    args.update(kwargs)
    budget = args.pop("budget")
    with pytest.raises(error, match=match):
        select_budget(3, budget, **args)


def test_min_quality_minus_infinity_keeps_every_candidate():
    kwargs = dict(quality=[1.0, 0.0, 2.0], greedy=True)
    assert (
        select_budget(3, 2, min_quality=-math.inf, **kwargs).tolist()
        == select_budget(3, 2, **kwargs).tolist()
        == [0, 2]
    )
    assert select_budget(0, 2, quality=[], clusters=[], min_quality=0.0).tolist() == []


def test_select_dataset():
    from datasets import Dataset

    ds = Dataset.from_dict(
        {
            "text": ["a", "a", "b", "c", "d"],
            "quality": [1.0, 1.0, 0.0, 1.0, 1.0],
            "complexity": [1.0, 2.0, 3.0, 1.0, 1.0],
            "cluster": [0, 0, 0, 1, 1],
        }
    )
    out = select_dataset(ds, 4, key_column="text", min_quality=1.0, greedy=True)
    assert out["text"][:] == ["a", "c", "d"] and out["complexity"][:] == [2.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="column 'quality' is not in the dataset"):
        select_dataset(ds.remove_columns("quality"), 2)
    with pytest.raises(TypeError, match="datasets.Dataset"):
        select_dataset([{"text": "a"}], 1)


# --------------------------------------------------------------------------- complexity target


def test_complexity_target_pulls_the_choice_towards_it():
    """Half the candidates take 1 step, half 3; the tilt for the target 2.5 weighs them 1 : 3 (see
    test_complexity_target_tilts_the_mean_by_hand), so a small budget drawn by weight keeps about 3/4 of
    3-step candidates: a mean near 2.5. The push (no target) at the same strength keeps far more."""
    c = np.r_[np.ones(500), np.full(500, 3.0)]
    means = [
        c[select_budget(1000, 20, complexity=c, complexity_strength=3.0, complexity_target=2.5, seed=s)].mean()
        for s in range(200)
    ]
    assert np.mean(means) == pytest.approx(2.5, abs=0.04)
    low = [
        c[select_budget(1000, 20, complexity=c, complexity_target=1.5, complexity_strength=3.0, seed=s)].mean()
        for s in range(200)
    ]
    assert np.mean(low) == pytest.approx(1.5, abs=0.04)
    push = [c[select_budget(1000, 20, complexity=c, complexity_strength=3.0, seed=s)].mean() for s in range(50)]
    assert np.mean(push) > 2.9  # exp(3 * 2) = 403 : 1
    # At the candidates' mean the term is off: the same choice as complexity_strength 0.
    assert (
        select_budget(1000, 20, complexity=c, complexity_target=2.0, seed=3).tolist()
        == select_budget(1000, 20, complexity=c, complexity_strength=0.0, seed=3).tolist()
    )


def test_complexity_target_is_computed_on_the_eligible_candidates():
    # The failed candidates (quality 0) are the complex ones; among the rest the mean is 1.5 (1 and 2 steps).
    quality = [1, 1, 1, 1, 0, 0]
    complexity = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    cfg = QDCSamplerConfig(complexity_strength=2.0, complexity_target=1.5)
    picked = select_budget(6, 2, quality=quality, complexity=complexity, min_quality=1, greedy=True, config=cfg)
    # Target = the eligible mean: no pull, utilities equal, the first two in cluster order come back.
    assert picked.tolist() == [0, 1]
    up = select_budget(
        6, 2, quality=quality, complexity=complexity, min_quality=1, greedy=True, config=cfg, complexity_target=1.9
    )
    assert up.tolist() == [2, 3]
