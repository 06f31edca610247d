"""The guide-table draws against the binary search they replace (same indices, bit for bit)."""

import time

import numpy as np
import pytest
import torch

from qdc_trainer import QDCSampler, QDCSamplerConfig
from qdc_trainer.data import draws


def _random_cdf(rng, n, kind):
    if kind == "uniform":
        w = np.ones(n)
    elif kind == "lognormal":
        w = rng.lognormal(0.0, 3.0, n)
    elif kind == "zeros":  # runs of zero weight: equal CDF values
        w = rng.random(n) * (rng.random(n) < 0.3)
        w[rng.integers(n)] = 1.0
    elif kind == "one_heavy":  # one bucket holds almost every index
        w = np.full(n, 1e-12)
        w[rng.integers(n)] = 1.0
    else:  # wildly different scales
        w = 10.0 ** rng.uniform(-300, 300, n)
    return np.cumsum(w)


@pytest.mark.parametrize("kind", ["uniform", "lognormal", "zeros", "one_heavy", "scales"])
@pytest.mark.parametrize("n", [1, 2, 7, 1000, 50_000])
def test_lookup_equals_searchsorted(kind, n):
    rng = np.random.default_rng(n)
    cdf = _random_cdf(rng, n, kind)
    guide = draws.guide_table(cdf)
    u = np.concatenate([rng.random(20_000) * cdf[-1], cdf[:200], np.nextafter(cdf[:200], 0), [0.0]])
    u = u[u < cdf[-1]]
    assert np.array_equal(draws.lookup(cdf, guide, u), np.searchsorted(cdf, u, side="right"))


def test_the_guide_table_is_rebuilt_in_place_and_checks_its_input():
    cdf = np.cumsum(np.ones(10))
    guide = draws.guide_table(cdf)
    again = draws.guide_table(cdf * 2, guide)
    assert again is guide
    with pytest.raises(ValueError, match="positive finite"):
        draws.guide_table(np.zeros(3))
    with pytest.raises(ValueError, match="empty"):
        draws.guide_table(np.zeros(0))


def _old_draw_block(sampler, epoch, block, size):
    """``draw_block`` as it was: a binary search with ``torch.searchsorted``."""
    seed = np.random.SeedSequence([sampler.config.seed, int(epoch), int(block)]).generate_state(1, np.uint64)[0]
    generator = torch.Generator().manual_seed(int(seed) & ((1 << 63) - 1))
    u = torch.rand(size, generator=generator, dtype=torch.float64) * float(sampler._cdf[-1])
    idx = torch.searchsorted(torch.from_numpy(sampler._cdf), u, right=True)
    return idx.clamp_(max=sampler.num_examples - 1).numpy()


def test_the_sampler_draws_the_same_stream_as_the_binary_search_before_and_after_updates():
    rng = np.random.default_rng(0)
    n = 20_000
    sampler = QDCSampler(
        n,
        quality=rng.random(n),
        complexity=rng.random(n),
        clusters=rng.integers(0, 50, n),
        config=QDCSamplerConfig(seed=3, update_every=1),
    )
    for epoch, block in [(0, 0), (0, 1), (2, 17)]:
        assert np.array_equal(sampler.draw_block(epoch, block, 4096), _old_draw_block(sampler, epoch, block, 4096))
    idx = rng.integers(0, n, 2000)
    sampler.record(idx, rng.lognormal(0, 1, 2000))
    assert sampler.update()
    for epoch, block in [(0, 0), (1, 3)]:
        assert np.array_equal(sampler.draw_block(epoch, block, 320), _old_draw_block(sampler, epoch, block, 320))


def test_a_small_block_is_drawn_quickly_with_torch_threads():
    rng = np.random.default_rng(1)
    sampler = QDCSampler(100_000, quality=rng.random(100_000))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        sampler.draw_block(0, 0, 320)
        best = min(_timed(lambda b=b: sampler.draw_block(0, b, 320)) for b in range(1, 30))
    finally:
        torch.set_num_threads(threads)
    assert best < 1e-3  # about 30 µs on two shared cores; the binary search with the thread pool took 4-16 ms


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
