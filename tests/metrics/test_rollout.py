"""Rollout measures against hand-computed values."""

import math

import numpy as np
import pytest

from qdc_trainer.metrics import distinct_n, self_bleu
from qdc_trainer.metrics.rollout import answer_diversity, group, rollout_measures, zero_signal_share


def test_group_splits_consecutive_rows_and_refuses_a_ragged_batch():
    assert group([1, 2, 3, 4, 5, 6], 3) == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(ValueError, match="do not split"):
        group([1, 2, 3], 2)
    with pytest.raises(ValueError, match="positive int"):
        group([1], 0)


def test_zero_signal_share_by_hand():
    # groups: [1, 1] equal, [0, 1] signal, [0.5, 0.5 + 1e-12] equal within 1e-8, [nan, 1] one scored: none
    rewards = [1, 1, 0, 1, 0.5, 0.5 + 1e-12, math.nan, 1]
    assert zero_signal_share(rewards, 2) == pytest.approx(3 / 4)


def test_answer_diversity_by_hand():
    completions = ["Answer: 3", "Answer: 3", "Answer: 3", "Answer: 4", "no answer", "nothing", "Answer: 1", "Answer: 2"]

    def answer(text):
        return text.split(": ")[1] if ": " in text else None

    # groups of 4: {3, 4} -> 2/4; {None, 1, 2} -> 3/4
    assert answer_diversity(completions, 4, answer) == pytest.approx((2 / 4 + 3 / 4) / 2)


def test_rollout_measures_by_hand():
    completions = ["a b c", "a b c", "x y z", "x y w"]
    rewards = [1.0, 0.0, 1.0, 1.0]
    m = rollout_measures(completions, rewards, 2, answer=lambda t: t[-1])
    groups = [["a b c", "a b c"], ["x y z", "x y w"]]
    assert m["per_prompt/distinct_2"] == pytest.approx(np.mean([distinct_n(g, 2) for g in groups]))
    # across prompts: the j-th completion of every prompt, averaged over j
    across = [["a b c", "x y z"], ["a b c", "x y w"]]
    assert m["across_prompt/distinct_2"] == pytest.approx(np.mean([distinct_n(g, 2) for g in across]))
    assert m["per_prompt/self_bleu"] == pytest.approx(np.mean([self_bleu(g) for g in groups]))
    assert m["distinct_answers"] == pytest.approx((1 / 2 + 2 / 2) / 2)
    assert m["zero_signal_share"] == pytest.approx(1 / 2)
    assert m["pass@1"] == pytest.approx(3 / 4)
    assert m["pass@2"] == pytest.approx(1.0)  # both prompts solved at least once


def test_pass_at_k_counts_rewards_at_the_threshold_as_correct():
    m = rollout_measures(["a", "b", "c", "d"], [0.5, 0.4, 0.2, 0.1], 2, success_threshold=0.5)
    # group 1: one of two correct -> pass@1 0.5, pass@2 1; group 2: none
    assert m["pass@1"] == pytest.approx(0.25) and m["pass@2"] == pytest.approx(0.5)
    assert "pass@1" not in rollout_measures(["a", "b", "c", "d"], [0.5, 0.4, 0.2, 0.1], 2, success_threshold=None)


def test_measures_that_do_not_apply_are_left_out():
    one_group = rollout_measures(["a b", "a c"], [1, 0], 2)
    assert "across_prompt/distinct_2" not in one_group and "per_prompt/distinct_2" in one_group
    singles = rollout_measures(["a b", "c d"], [1, 0], 1)
    assert "per_prompt/distinct_2" not in singles and singles["across_prompt/distinct_2"] == pytest.approx(1.0)
    assert "pass@1" in singles and "distinct_answers" not in singles


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="3 completions but 2 rewards"):
        rollout_measures(["a", "b", "c"], [1, 0], 1)
