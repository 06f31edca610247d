"""The success signal of the prompt sampler (GRPO): the pure functions against hand-computed values and brute
force, the sampler's pooled weights, its telemetry, checkpoint state and exact resume."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from qdc_trainer import QDCSampler, QDCSamplerConfig
from qdc_trainer.data import success
from qdc_trainer.data.sampler_state import SamplerStateError

# ---------------------------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize("a,b,g", [(1.0, 1.0, 8), (0.5, 3.5, 4), (7.0, 2.0, 16), (40.0, 60.0, 2), (0.2, 0.2, 6)])
def test_mixed_group_probability_matches_the_product_form_and_a_quadrature(a, b, g):
    # E[p^g] = prod_{j<g} (a + j) / (a + b + j) for p ~ Beta(a, b)
    e_pg = math.prod((a + j) / (a + b + j) for j in range(g))
    e_qg = math.prod((b + j) / (a + b + j) for j in range(g))
    closed = success.mixed_group_probability(np.array([a]), np.array([b]), g)[0]
    assert closed == pytest.approx(1 - e_pg - e_qg, rel=1e-9)
    # and a midpoint quadrature of the Beta density (a, b >= 1 only: the density is bounded there)
    if a >= 1 and b >= 1:
        p = (np.arange(200_000) + 0.5) / 200_000
        log_density = (
            (a - 1) * np.log(p) + (b - 1) * np.log1p(-p) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
        )
        quad = float(np.mean(np.exp(log_density) * (1 - p**g - (1 - p) ** g)))
        assert closed == pytest.approx(quad, abs=1e-4)


def test_a_certain_pass_rate_gives_the_binomial_chance_of_a_mixed_group():
    a, b = np.array([0.3e6, 0.5e6, 1e6]), np.array([0.7e6, 0.5e6, 1e-3])
    for p, value in zip([0.3, 0.5, 1.0], success.mixed_group_probability(a, b, 8)):
        assert value == pytest.approx(1 - p**8 - (1 - p) ** 8, abs=1e-4)


def test_expected_variance_is_four_times_the_beta_expectation_of_p_one_minus_p():
    a, b = 3.0, 5.0
    mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    expected = 4 * (mean - (var + mean**2))  # E[p] - E[p^2]
    assert success.expected_variance(np.array([a]), np.array([b]))[0] == pytest.approx(expected)


def test_group_outcomes_count_successes_trials_and_mixed_groups():
    rewards = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, np.nan, 1, 0.25, 0.75, 0.5, 0.5])
    wins, trials, mixed = success.group_outcomes(rewards, 4)
    assert wins.tolist() == [4.0, 0.0, 2.0, 2.0] and trials.tolist() == [4.0, 4.0, 3.0, 4.0]
    assert mixed.tolist() == [False, False, True, True]
    wins, _, mixed = success.group_outcomes(rewards, 4, threshold=0.5)
    assert wins.tolist() == [4.0, 0.0, 2.0, 3.0] and mixed.tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match="do not split into groups of 3"):
        success.group_outcomes(rewards, 3)


def test_pooled_posterior_by_hand():
    # three cells: cells 0 and 1 at level 0, cell 2 at level 1; cell 0 has 6 successes in 8, cell 1 1 in 4,
    # level 1 nothing seen; prior k = 4
    cell_s, cell_f, cell_level = np.array([6.0, 1.0, 0.0]), np.array([2.0, 3.0, 0.0]), np.array([0, 0, 1])
    k = 4.0
    p_all = (7 + 1) / (12 + 2)
    m_level0 = (7 + k * p_all) / (12 + k)
    expected = [(6 + k * m_level0) / (8 + k), (1 + k * m_level0) / (4 + k), p_all]  # the unseen level: the run's
    means = success.cell_means(cell_s, cell_f, cell_level, k)
    assert means.tolist() == pytest.approx(expected)
    s, f, cells = np.array([6.0, 0.0, 0.0]), np.array([2.0, 0.0, 0.0]), np.array([0, 0, 2])
    a, b = success.pooled_posterior(s, f, cells, means, prior=k)
    assert a.tolist() == pytest.approx([6 + k * expected[0], k * expected[0], k * p_all])
    assert b.tolist() == pytest.approx([2 + k * (1 - expected[0]), k * (1 - expected[0]), k * (1 - p_all)])


def test_difficulty_cells_cut_a_continuous_column_into_quantile_levels():
    c = np.linspace(0.0, 1.0, 1000)
    cells, levels, values = success.difficulty_cells(1000, c, max_levels=4)
    assert len(values) == 4 and np.bincount(levels).tolist() == [250] * 4
    assert np.all(np.diff(values) > 0) and (cells == levels).all()
    keyed, _, _ = success.difficulty_cells(1000, c, keys=np.arange(1000) % 2, max_levels=4)
    assert len(np.unique(keyed)) == 8


def test_frontier_level_is_the_pass_rate_nearest_one_half():
    assert success.frontier_level([0.0, 0.0], [0.0, 0.0]) is None
    assert success.frontier_level([9.0, 5.0, 0.0], [1.0, 5.0, 10.0]) == 1
    assert success.frontier_level([9.0, 0.0, 1.0], [1.0, 0.0, 9.0]) == 2  # unseen level 1 is not a candidate


# ---------------------------------------------------------------------------------------------- the sampler


def _levels_sampler(**knobs) -> QDCSampler:
    complexity = np.repeat([1.0, 2.0, 3.0], 10)
    sampler = QDCSampler(30, complexity=complexity, config=QDCSamplerConfig(seed=0, **knobs))
    sampler.configure_success(group_size=4)
    return sampler


def test_unseen_prompts_borrow_their_cell_and_the_weights_follow_the_mixed_chance():
    sampler = _levels_sampler(complexity_strength=0.0)
    # one prompt per level fed back: level 1 always solved, level 2 half, level 3 never
    sampler.record_success([0, 10, 20], successes=[4, 2, 0], trials=[4, 4, 4], mixed=[0, 1, 0])
    assert sampler.update()
    a, b = sampler.success_posterior()
    k, p_all = sampler.config.success_prior, (6 + 1) / (12 + 2)
    level = [(4 + k * p_all) / (4 + k), (2 + k * p_all) / (4 + k), (0 + k * p_all) / (4 + k)]
    m = [(wins + k * lv) / (4 + k) for wins, lv in zip([4, 2, 0], level)]  # one cell per level, shrunk twice
    assert a[[1, 11, 21]].tolist() == pytest.approx([k * x for x in m])  # unseen: the cell's mean
    assert a[[0, 10, 20]].tolist() == pytest.approx([4 + k * m[0], 2 + k * m[1], k * m[2]])
    value = success.mixed_group_probability(a, b, 4)
    p = sampler.probabilities()
    expected = 0.9 * value / value.sum() + 0.1 / 30  # the default floor
    assert p == pytest.approx(expected, rel=1e-5)
    assert p[10] > p[11] > p[1] and p[10] > p[0] and p[10] > p[20]


def test_counts_decay_at_each_refresh():
    sampler = _levels_sampler(success_decay=0.5)  # update_every: one step per generation batch
    sampler.record_success([5], [4], [4])
    sampler.update()
    sampler.record_success([6], [0], [4])
    sampler.update()
    st = sampler._success
    assert st["s"][5] == pytest.approx(2.0) and st["f"][6] == pytest.approx(4.0)
    assert st["cell_s"][0] == pytest.approx(2.0) and st["cell_f"][0] == pytest.approx(4.0)


def test_the_complexity_term_aims_at_the_frontier_instead_of_pushing_up():
    pushed = QDCSampler(30, complexity=np.repeat([1.0, 2.0, 3.0], 10), config=QDCSamplerConfig(seed=0))
    push_shares = pushed.probabilities().reshape(3, 10).sum(axis=1)
    assert push_shares[2] > push_shares[1] > push_shares[0]  # the SFT default pushes upwards
    sampler = _levels_sampler(complexity_strength=1.0)
    flat = sampler.probabilities().reshape(3, 10).sum(axis=1)
    assert flat == pytest.approx([1 / 3] * 3)  # no static push before any evidence
    # level 1 (complexity 1) is at the frontier: half solved; the others always / never
    sampler.record_success([0, 1, 10, 11, 20, 21], [2, 2, 4, 4, 0, 0], [4] * 6)
    sampler.update()
    assert sampler._frontier_tilt() < 0  # tilted down, towards complexity 1
    tilted = sampler.probabilities().reshape(3, 10).sum(axis=1)
    off = _levels_sampler(complexity_strength=0.0)
    off.record_success([0, 1, 10, 11, 20, 21], [2, 2, 4, 4, 0, 0], [4] * 6)
    off.update()
    untilted = off.probabilities().reshape(3, 10).sum(axis=1)
    assert tilted[0] > untilted[0] and tilted[2] < untilted[2]


def test_a_set_complexity_target_is_kept_under_the_success_signal():
    sampler = _levels_sampler(complexity_target=3.0)
    shares = sampler.probabilities().reshape(3, 10).sum(axis=1)
    assert shares[2] > shares[1] > shares[0]


def test_variance_objective_weights_p_one_minus_p():
    sampler = QDCSampler(4, config=QDCSamplerConfig(seed=0, floor=1.0))
    sampler.configure_success(group_size=8, objective="variance")
    assert sampler.probabilities() == pytest.approx([0.25] * 4)  # the floor alone: uniform
    weighted = QDCSampler(4, clusters=[0, 1, 2, 3], config=QDCSamplerConfig(seed=0, floor=1e-9, tradeoff=1.0))
    weighted.configure_success(group_size=8, objective="variance")
    weighted.record_success([0, 1, 2, 3], [8, 4, 0, 2], [8, 8, 8, 8])
    weighted.update()
    a, b = weighted.success_posterior()
    expected = success.expected_variance(a, b)
    assert weighted.probabilities() == pytest.approx(expected / expected.sum(), rel=1e-5)


def test_telemetry_reports_predicted_and_measured_mixed_shares_and_level_shares():
    sampler = _levels_sampler()
    a, b = sampler.success_posterior([0, 10, 20])
    predicted = success.mixed_group_probability(a, b, 4).mean()
    sampler.record_success([0, 10, 20], [4, 2, 0], [4, 4, 4], mixed=[False, True, False])
    sampler.update()
    t = sampler.telemetry()
    assert t["qdc/sampler/predicted_mixed"] == pytest.approx(predicted)
    assert t["qdc/sampler/measured_mixed"] == pytest.approx(1 / 3)
    assert t["qdc/sampler/success_drawn"] == pytest.approx(float((a / (a + b)).mean()))
    assert [t[f"qdc/sampler/level_share_{j}"] for j in range(3)] == pytest.approx([1 / 3] * 3)
    assert "qdc/sampler/predicted_mixed" not in sampler.telemetry()  # read and reset


def test_bad_success_feedback_is_refused():
    plain = QDCSampler(3)
    with pytest.raises(RuntimeError, match="configure_success"):
        plain.record_success([0], [1], [1])
    sampler = _levels_sampler()
    with pytest.raises(ValueError, match="within \\[0, trials\\]"):
        sampler.record_success([0], [5], [4])
    with pytest.raises(IndexError):
        sampler.record_success([30], [1], [4])
    with pytest.raises(ValueError, match="2 successes"):
        sampler.record_success([0], [1, 2], [4])
    with pytest.raises(ValueError, match="already weights groups of 4"):
        sampler.configure_success(group_size=8)
    with pytest.raises(ValueError, match="objective"):
        QDCSampler(3).configure_success(4, objective="spread")


def _feed(sampler: QDCSampler, rng: np.random.Generator, rounds: int) -> list[int]:
    """Draw blocks of 6 prompts, feed back synthetic groups, update: the stream the sampler produced (a resumed
    sampler's iterator first passes the positions already trained, which the Trainer skips)."""
    stream = []
    it = iter(sampler)
    for _ in range(sampler.consumed):
        next(it)
    for _ in range(rounds):
        block = list(itertools.islice(it, 6))
        stream += block
        wins = rng.integers(0, 5, size=len(block))
        sampler.record_success(block, wins, np.full(len(block), 4))
        sampler.consumed += len(block)
        sampler.update()
    return stream


def test_state_round_trip_and_exact_resume_with_success_counts(tmp_path):
    def fresh() -> QDCSampler:
        s = QDCSampler(30, complexity=np.repeat([1.0, 2.0, 3.0], 10), clusters=np.arange(30) % 2, num_samples=30)
        s.block_size = 6
        s.configure_success(group_size=4)
        return s

    full = fresh()
    stream = _feed(full, np.random.default_rng(0), 5)
    first = fresh()
    rng = np.random.default_rng(0)
    head = _feed(first, rng, 2)
    first.record_success([3], [1], [4])  # pending at the checkpoint
    first.save(tmp_path / "state.npz")
    resumed = fresh()
    resumed.load(tmp_path / "state.npz")
    assert resumed._pending_success[0][0].tolist() == [3]
    resumed._pending_success.clear()  # the uninterrupted run had no such feedback
    first._pending_success.clear()
    tail = _feed(resumed, rng, 3)
    assert head + tail == stream
    assert np.array_equal(resumed.probabilities(), full.probabilities())


def test_a_checkpoint_of_another_group_size_or_without_the_signal_is_refused(tmp_path):
    sampler = _levels_sampler()
    sampler.save(tmp_path / "g4.npz")
    other = QDCSampler(30, complexity=np.repeat([1.0, 2.0, 3.0], 10))
    other.configure_success(group_size=8)
    with pytest.raises(SamplerStateError, match="groups of 4 by 'mixed', this one groups of 8"):
        other.load(tmp_path / "g4.npz")
    plain = QDCSampler(30, complexity=np.repeat([1.0, 2.0, 3.0], 10))
    with pytest.raises(SamplerStateError, match="under GRPOTrainer"):
        plain.load(tmp_path / "g4.npz")
    assert plain.epoch == 0 and plain.num_updates == 0  # left as it was


def test_a_checkpoint_from_before_the_new_knobs_still_loads(tmp_path):
    sampler = QDCSampler(5)
    state = sampler.state_dict()
    import json

    config = json.loads(str(state["config"]))
    for key in ("success_threshold", "success_prior", "success_decay"):
        del config[key]  # written by a release without these settings
    state["config"] = np.array(json.dumps(config, sort_keys=True))
    QDCSampler(5).load_state_dict(state)
    with pytest.raises(SamplerStateError, match="success_prior"):
        QDCSampler(5, config=QDCSamplerConfig(success_prior=3.0)).load_state_dict(state)


def test_record_refuses_a_loss_beyond_float32_and_set_epoch_a_negative_epoch(tmp_path):
    sampler = QDCSampler(4)
    for bad in (1e308, float("inf"), -1e39):
        with pytest.raises(ValueError, match="beyond float32 range"):
            sampler.record([1], [bad])
    sampler.record([0, 1], [float("nan"), 2.0])  # NaN: consumed without signal
    sampler.update()
    sampler.save(tmp_path / "state.npz")
    QDCSampler(4).load(tmp_path / "state.npz")  # the checkpoint stays loadable
    for bad in (-3, 1.5, True):
        with pytest.raises(ValueError, match="epoch must be an int >= 0"):
            sampler.set_epoch(bad)
    sampler.set_epoch(np.int64(2))
    assert sampler.epoch == 2
