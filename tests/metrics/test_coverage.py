"""pass@k against the closed form and brute force, and the never-solved share."""

import itertools
from math import comb

import numpy as np
import pytest

from qdc_trainer.metrics import never_solved_share, pass_at_k, pass_at_k_per_problem


@pytest.mark.parametrize("n,c,k", [(8, 0, 1), (8, 1, 1), (8, 1, 8), (8, 3, 2), (10, 4, 5), (16, 2, 8), (5, 5, 3)])
def test_pass_at_k_matches_the_binomial_closed_form(n, c, k):
    expected = 1.0 - comb(n - c, k) / comb(n, k)
    assert pass_at_k_per_problem([n], [c], k)[0] == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_brute_force_over_all_subsets():
    outcomes = [1, 0, 0, 1, 0, 0]  # 2 correct of 6
    for k in range(1, 7):
        subsets = list(itertools.combinations(outcomes, k))
        brute = sum(any(s) for s in subsets) / len(subsets)
        assert pass_at_k([6], [2], k) == pytest.approx(brute)


def test_pass_at_1_is_the_share_correct_and_pass_at_k_grows_with_k():
    n, c = np.array([8, 8, 8, 8]), np.array([0, 1, 4, 8])
    assert pass_at_k(n, c, 1) == pytest.approx(c.sum() / n.sum())
    values = [pass_at_k(n, c, k) for k in range(1, 9)]
    assert all(a <= b + 1e-12 for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(0.75)  # pass@n: the share solved at least once
    assert never_solved_share(n, c) == pytest.approx(0.25)


def test_pass_at_k_is_stable_for_large_n():
    # C(1000, 500) overflows a float; the product form does not
    assert pass_at_k([1000], [1], 500) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "samples,correct,k,message",
    [
        ([4], [5], 1, "0 <= correct <= n"),
        ([4], [-1], 1, "0 <= correct <= n"),
        ([4, 4], [1], 1, "differ in length"),
        ([], [], 1, "at least one problem"),
        ([4], [1], 0, "positive int"),
        ([4], [1], 5, "at least 5 samples"),
        ([4.5], [1], 1, "integer counts"),
        ([np.nan], [1], 1, "finite"),
    ],
)
def test_bad_counts_are_refused(samples, correct, k, message):
    with pytest.raises(ValueError, match=message):
        pass_at_k(samples, correct, k)
