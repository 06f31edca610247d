"""QDCSampler on its own: the weight formula, the draw distribution, online updates, state, bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from qdc_trainer.data import QDCSampler, QDCSamplerConfig


def hand_probabilities(quality, clusters, cfg: QDCSamplerConfig, complexity=None):
    """The documented formula, written out directly (no online state)."""
    q = np.asarray(quality, dtype=float)
    zq = np.clip((q - q.mean()) / q.std(), -3, 3) if q.std() > 0 else np.zeros_like(q)
    log_w = cfg.tradeoff * cfg.quality_strength * zq
    if complexity is not None:
        c = np.asarray(complexity, dtype=float)
        log_w += cfg.complexity_strength * np.clip((c - c.mean()) / c.std(), -3, 3)
    k = np.asarray(clusters)
    sizes = np.bincount(k).astype(float)
    alpha = (1 - cfg.tradeoff) * cfg.diversity_strength
    w = np.exp(log_w) * (sizes[k] / sizes.mean()) ** (-alpha)
    n = len(q)
    return (1 - cfg.floor) * w / w.sum() + cfg.floor / n


def test_probabilities_match_the_documented_formula():
    rng = np.random.default_rng(0)
    q, c = rng.normal(size=50), rng.gamma(2.0, size=50)
    k = rng.integers(0, 4, size=50)
    cfg = QDCSamplerConfig(tradeoff=0.3, floor=0.05)
    s = QDCSampler(50, quality=q, complexity=c, clusters=k, config=cfg)
    assert s.probabilities() == pytest.approx(hand_probabilities(q, k, cfg, c), rel=1e-6)
    assert s.probabilities().sum() == pytest.approx(1.0)


def test_tradeoff_moves_mass_between_quality_and_cluster_balance():
    # Cluster 0: 90 examples of high quality; cluster 1: 10 examples of low quality.
    q = np.r_[np.full(90, 1.0), np.full(10, 0.0)]
    k = np.r_[np.zeros(90, int), np.ones(10, int)]
    mass_small = {
        t: QDCSampler(100, quality=q, clusters=k, config=QDCSamplerConfig(tradeoff=t)).probabilities()[90:].sum()
        for t in (0, 0.5, 1)
    }
    # tradeoff 0: each cluster gets equal mass (up to the floor); 1: quality decides, the small cluster starves.
    assert mass_small[0] == pytest.approx(0.9 * 0.5 + 0.1 * 0.1)
    assert mass_small[0] > mass_small[0.5] > mass_small[1]
    assert mass_small[1] < 0.05


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_draws_follow_the_probabilities(seed):
    rng = np.random.default_rng(seed)
    n = 40
    s = QDCSampler(
        n,
        quality=rng.normal(size=n),
        clusters=rng.integers(0, 5, n),
        num_samples=40_000,
        block_size=1000,
        config=QDCSamplerConfig(seed=seed),
    )
    counts = np.bincount(np.fromiter(iter(s), dtype=np.int64), minlength=n)
    expected = s.probabilities() * counts.sum()
    assert stats.chisquare(counts, expected).pvalue > 1e-3


def test_a_skewed_distribution_is_not_uniform():
    """The chi-square test above can fail: uniform draws are rejected against skewed weights."""
    n = 40
    s = QDCSampler(n, quality=np.arange(n, dtype=float), num_samples=40_000, config=QDCSamplerConfig(tradeoff=1.0))
    uniform = np.random.default_rng(0).integers(0, n, 40_000)
    counts = np.bincount(uniform, minlength=n)
    assert stats.chisquare(counts, s.probabilities() * counts.sum()).pvalue < 1e-6


def test_floor_keeps_every_example_reachable():
    q = np.r_[np.full(99, 10.0), -1000.0]
    s = QDCSampler(100, quality=q, config=QDCSamplerConfig(tradeoff=1.0, quality_strength=50.0, floor=0.2))
    assert s.probabilities().min() >= 0.2 / 100 * (1 - 1e-9)
    s.record(np.arange(99), np.full(99, 100.0))
    s.record([99], [1e-9])
    s.update()
    assert s.probabilities().min() >= 0.2 / 100 * (1 - 1e-9)


def test_online_update_moves_mass_to_unlearned_examples():
    s = QDCSampler(6, clusters=[0, 0, 0, 1, 1, 1], config=QDCSamplerConfig(cluster_loss_strength=0.0))
    before = s.probabilities()
    assert before == pytest.approx(np.full(6, 1 / 6))
    s.record([0, 1, 3, 4], [4.0, 4.0, 1.0, 1.0])
    assert s.probabilities() == pytest.approx(before)  # nothing moves before update()
    assert s.update()
    after = s.probabilities()
    assert after[0] > before[0] and after[3] < before[3]
    # Unseen examples take their cluster's loss: 2 (unlearned cluster) gains like 0, 5 loses like 3.
    assert after[2] == pytest.approx(after[0]) and after[5] == pytest.approx(after[3])
    assert s.update() is False  # nothing pending


def test_cluster_level_signal():
    s = QDCSampler(
        4, clusters=[0, 0, 1, 1], config=QDCSamplerConfig(example_loss_strength=0.0, cluster_loss_strength=1.0)
    )
    s.record([0, 2], [3.0, 1.0])
    s.update()
    p = s.probabilities()
    # global EMA 2: cluster 0 ratio 1.5, cluster 1 ratio 0.5, floor 0.1.
    w = np.array([1.5, 1.5, 0.5, 0.5])
    assert p == pytest.approx(0.9 * w / w.sum() + 0.1 / 4)


def test_ema_update_values():
    s = QDCSampler(3, config=QDCSamplerConfig(ema_decay=0.5))
    s.record([0, 0, 1], [2.0, 4.0, 1.0])  # index 0 twice in one window: its mean (3) enters once
    s.update()
    assert s.loss_ema[:2].tolist() == [3.0, 1.0] and math.isnan(s.loss_ema[2])
    s.record([0], [5.0])
    s.update()
    assert s.loss_ema[0] == pytest.approx(0.5 * 3.0 + 0.5 * 5.0)
    assert s.global_loss_ema == pytest.approx(0.5 * (7 / 3) + 0.5 * 5.0)  # global: mean over entries


def test_nan_loss_counts_as_consumed_without_signal():
    s = QDCSampler(3)
    s.record([0, 1], [float("nan"), 2.0])
    assert s.consumed == 2
    s.update()
    assert math.isnan(s.loss_ema[0]) and s.loss_ema[1] == 2.0


def test_stream_is_deterministic_and_ignores_global_rng():
    make = lambda: QDCSampler(100, quality=np.linspace(0, 1, 100), config=QDCSamplerConfig(seed=7), block_size=16)  # noqa: E731
    torch.manual_seed(1)
    np.random.seed(1)
    a = list(make())
    torch.manual_seed(2)
    np.random.seed(2)
    b = list(make())
    assert a == b
    other = QDCSampler(100, quality=np.linspace(0, 1, 100), block_size=16, config=QDCSamplerConfig(seed=8))
    assert list(other) != a


def test_epochs_differ_and_length_is_constant():
    s = QDCSampler(50, num_samples=70, block_size=16)
    e0 = list(s)
    assert list(s) == e0  # same epoch, same weights: same stream
    s.set_epoch(1)
    e1 = list(s)
    assert len(e0) == len(e1) == len(s) == 70
    assert e0 != e1


def test_blocks_use_the_weights_in_force_when_drawn():
    s = QDCSampler(
        10,
        block_size=5,
        num_samples=10,
        config=QDCSamplerConfig(example_loss_strength=4.0, max_online_ratio=1e6, floor=0.01),
    )
    it = iter(s)
    first = [next(it) for _ in range(5)]
    s.record(list(range(10)), [1e-3] * 9 + [1e3])
    s.update()
    second = [next(it) for _ in range(5)]
    assert first != [9] * 5
    assert second.count(9) >= 4  # after the update, example 9 holds almost all the mass


def test_state_round_trip_and_exact_resume(tmp_path):
    kwargs = dict(
        quality=np.linspace(0, 1, 200),
        clusters=np.arange(200) % 7,
        config=QDCSamplerConfig(seed=3),
        block_size=20,
        num_samples=200,
    )
    original = QDCSampler(200, **kwargs)
    stream, it = [], iter(original)
    for step in range(6):  # 6 batches of 10, feedback after each, update every 2 batches
        batch = [next(it) for _ in range(10)]
        stream += batch
        original.record(batch, np.sin(np.asarray(batch, float)) + 2)
        if step % 2 == 1:
            original.update()
    # Prefetching has drawn one more batch that was not trained on.
    prefetched = [next(it) for _ in range(10)]
    path = tmp_path / "sampler.npz"
    original.save(str(path))
    rest_original = prefetched + list(it)

    resumed = QDCSampler(200, **kwargs)
    resumed.load(str(path))
    assert resumed.probabilities() == pytest.approx(original.probabilities(), abs=0)
    assert np.array_equal(resumed.loss_ema, original.loss_ema, equal_nan=True)
    replay = list(resumed)  # the Trainer skips the first `consumed` positions
    assert replay[60:] == rest_original
    assert resumed.consumed == 60


def test_load_rejects_a_different_sampler(tmp_path):
    s = QDCSampler(20, config=QDCSamplerConfig(seed=1))
    path = tmp_path / "s.npz"
    s.save(str(path))
    with pytest.raises(ValueError, match="num_examples"):
        QDCSampler(21, config=QDCSamplerConfig(seed=1)).load(str(path))
    with pytest.raises(ValueError, match="configured differently"):
        QDCSampler(20, config=QDCSamplerConfig(seed=2)).load(str(path))


def test_beyond_multinomial_category_limit():
    n = 2**24 + 1000
    s = QDCSampler(
        n,
        clusters=(np.arange(n) >= n - 10).astype(np.int32),
        block_size=4096,
        num_samples=4096,
        config=QDCSamplerConfig(tradeoff=0.0),
    )
    with pytest.raises(RuntimeError):
        torch.multinomial(torch.ones(n), 1)  # the limit QDCSampler avoids
    drawn = np.fromiter(iter(s), dtype=np.int64)
    # The last 10 examples form their own cluster and hold ~45% of the mass (tradeoff 0, floor 0.1).
    assert 0.35 < np.mean(drawn >= n - 10) < 0.55
    assert drawn.max() < n


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(quality=[1.0, float("nan"), 0.0]), ValueError, r"quality has NaN or inf at rows \[1\]"),
        (dict(complexity=[1.0, float("inf"), 0.0]), ValueError, "complexity has NaN or inf"),
        (dict(quality=[1.0, 2.0]), ValueError, "quality has 2 values but the dataset has 3"),
        (dict(quality=["a", "b", "c"]), TypeError, "quality must be numeric"),
        (dict(clusters=[0, 1.5, 2]), TypeError, "integer cluster ids"),
        (dict(base_weights=[1.0, -1.0, 1.0]), ValueError, "negative"),
        (dict(base_weights=[0.0, 0.0, 0.0]), ValueError, "all zero"),
        (dict(colour="red"), TypeError, "unknown QDCSampler option"),
        (dict(config={"tradeoff": 0.5}), TypeError, "config must be a QDCSamplerConfig, got dict"),
        (dict(block_size=0), ValueError, "block_size"),
    ],
)
def test_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        QDCSampler(3, **kwargs)


@pytest.mark.parametrize(
    "knobs, match",
    [
        (dict(tradeoff=1.5), r"tradeoff=1.5 is invalid; it must be \[0, 1\]"),
        (dict(floor=0.0), "floor"),
        (dict(update_every=0), "update_every"),
    ],
)
def test_bad_knobs(knobs, match):
    with pytest.raises(ValueError, match=match):
        QDCSamplerConfig(**knobs)


def test_the_keyword_spelling_of_the_knobs_warns_and_still_works():
    from datasets import Dataset

    q = np.linspace(0, 1, 20)
    config = QDCSamplerConfig(tradeoff=0.9, seed=4)
    new = QDCSampler(20, quality=q, config=config)
    assert new.config == config and new.config is not config  # a copy: changing config afterwards changes nothing
    with pytest.warns(
        FutureWarning, match=r"QDCSampler\(tradeoff=0.9, seed=4\).*config=QDCSamplerConfig\(tradeoff=0.9, seed=4\)"
    ) as caught:
        old = QDCSampler(20, quality=q, tradeoff=0.9, seed=4)
    assert caught[0].filename == __file__  # the warning names the caller's line
    assert old.config == config and old.probabilities().tolist() == new.probabilities().tolist()
    with pytest.warns(FutureWarning, match=r"config=dataclasses.replace\(config, seed=4\)"):
        both = QDCSampler(20, quality=q, config=QDCSamplerConfig(tradeoff=0.9), seed=4)
    assert both.config == config
    ds = Dataset.from_dict({"quality": q.tolist()})
    with pytest.warns(FutureWarning, match=r"QDCSampler.from_dataset\(tradeoff=0.9, seed=4\)") as caught:
        from_dataset = QDCSampler.from_dataset(ds, complexity_column=None, cluster_column=None, tradeoff=0.9, seed=4)
    assert caught[0].filename == __file__ and from_dataset.config == config
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the config spelling does not warn
        QDCSampler.from_dataset(ds, complexity_column=None, cluster_column=None, config=config)


def test_bad_size_and_feedback():
    with pytest.raises(ValueError, match="num_examples"):
        QDCSampler(0)
    s = QDCSampler(3)
    with pytest.raises(IndexError, match=r"indices must be in \[0, 3\)"):
        s.record([3], [1.0])
    with pytest.raises(ValueError, match="2 indices but 1 losses"):
        s.record([0, 1], [1.0])
    with pytest.raises(ValueError, match="loss weighting"):
        s.loss_weights([0], "magic")


def test_from_dataset_reads_columns_and_names_problems():
    from datasets import Dataset, IterableDataset

    ds = Dataset.from_dict({"text": ["a", "b", "c"], "quality": [0.1, 0.9, 0.5], "cluster": [0, 1, 1]})
    s = QDCSampler.from_dataset(ds, complexity_column=None)
    assert s.num_examples == 3 and s.num_clusters == 2
    with pytest.raises(ValueError, match="column 'complexity' is not in the dataset"):
        QDCSampler.from_dataset(ds)
    with pytest.raises(TypeError, match="not numeric|must be numeric"):
        QDCSampler.from_dataset(ds, quality_column="text", complexity_column=None)
    bad = Dataset.from_dict({"quality": [0.1, float("nan")]})
    with pytest.raises(ValueError, match="quality has NaN"):
        QDCSampler.from_dataset(bad, complexity_column=None, cluster_column=None)
    stream = IterableDataset.from_generator(lambda: iter([{"quality": 1.0}]))
    with pytest.raises(TypeError, match="map-style dataset with __len__"):
        QDCSampler.from_dataset(stream)


def test_loss_weights():
    s = QDCSampler(4, quality=[0.0, 0.0, 1.0, 1.0], config=QDCSamplerConfig(tradeoff=1.0))
    p = s.probabilities()
    assert s.loss_weights([0, 2], "sampler") == pytest.approx(4 * p[[0, 2]])
    assert s.loss_weights([0, 2], "importance") == pytest.approx(1 / (4 * p[[0, 2]]))
    assert s.loss_weights([0, 2], "none").tolist() == [1.0, 1.0]
    # Importance weights undo the sampling bias: E_p[w * f] = mean(f).
    f = np.array([1.0, 2.0, 3.0, 4.0])
    assert (p * s.loss_weights(np.arange(4), "importance") * f).sum() == pytest.approx(f.mean())


def test_telemetry():
    s = QDCSampler(4, quality=[0.0, 1.0, 2.0, 3.0], complexity=[1.0, 1.0, 1.0, 5.0], clusters=[0, 0, 1, 2])
    t = s.telemetry()
    assert 0 < t["qdc/sampler/ess_ratio"] <= 1 and 0 < t["qdc/sampler/weight_entropy"] <= 1
    assert "qdc/sampler/cluster_coverage" not in t  # nothing trained yet
    s.record([0, 1], [1.0, 1.0])
    t = s.telemetry()
    assert t["qdc/sampler/cluster_coverage"] == pytest.approx(1 / 3)
    assert t["qdc/sampler/quality_trained"] == pytest.approx(0.5)
    assert t["qdc/sampler/quality_dataset"] == pytest.approx(1.5)
    assert t["qdc/sampler/complexity_trained"] == pytest.approx(1.0)
    assert "qdc/sampler/cluster_coverage" not in s.telemetry()  # the window was reset
    uniform = QDCSampler(10).telemetry()
    assert uniform["qdc/sampler/ess_ratio"] == pytest.approx(1.0)
    assert uniform["qdc/sampler/weight_entropy"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- complexity target


def test_complexity_target_tilts_the_mean_by_hand():
    """Two complexities, 1 and 3 (z = -1, +1): the factor exp(b z) gives the mean 2 + tanh(b). The target 2.5
    needs tanh(b) = 0.5, b = atanh(0.5) = 0.5493, i.e. weights 1 : e^(2b) = 1 : 3."""
    from qdc_trainer.data.weights import complexity_tilt

    c = np.array([1.0, 3.0, 1.0, 3.0])
    assert complexity_tilt(c, (2.0, 1.0), 2.5, 2.0) == pytest.approx(math.atanh(0.5), abs=1e-8)
    assert complexity_tilt(c, (2.0, 1.0), 1.5, 2.0) == pytest.approx(-math.atanh(0.5), abs=1e-8)
    assert complexity_tilt(c, (2.0, 1.0), 2.0, 2.0) == 0.0  # the column's mean: no pull
    assert complexity_tilt(c, (2.0, 1.0), 2.9, 0.25) == 0.25  # out of reach of the strength: its bound
    assert complexity_tilt(c, (2.0, 1.0), 0.0, 0.25) == -0.25
    assert complexity_tilt(np.full(3, 2.0), (2.0, 0.0), 5.0, 1.0) == 0.0  # a constant column
    s = QDCSampler(4, complexity=c, config=QDCSamplerConfig(complexity_target=2.5, complexity_strength=2.0, floor=1e-9))
    p = s.probabilities()
    assert p[1] / p[0] == pytest.approx(3.0, rel=1e-5) and float(p @ c) == pytest.approx(2.5, abs=1e-6)


def test_complexity_target_unset_is_the_push_and_pulls_both_ways():
    rng = np.random.default_rng(0)
    c = rng.integers(1, 4, size=300).astype(float)
    push = QDCSampler(300, complexity=c, config=QDCSamplerConfig(complexity_strength=1.0, floor=1e-9))
    assert push.config.complexity_target is None
    assert push.probabilities() == pytest.approx(
        hand_probabilities(np.zeros(300), np.zeros(300, int), QDCSamplerConfig(complexity_strength=1.0, floor=1e-9), c)
    )
    for target in (1.5, c.mean(), 2.4):
        cfg = QDCSamplerConfig(complexity_strength=3.0, complexity_target=target, floor=1e-9)
        p = QDCSampler(300, complexity=c, config=cfg).probabilities()
        assert float(p @ c) == pytest.approx(target, abs=1e-6)
    with pytest.raises(ValueError, match="complexity_target"):
        QDCSamplerConfig(complexity_target=float("nan"))
