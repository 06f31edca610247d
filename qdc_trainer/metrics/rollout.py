"""Diversity and coverage of RL rollouts: k completions per prompt, with their rewards.

GRPO (and its variants) samples a group of k completions for each prompt and
learns from the differences of their rewards. Its best-known failure is a
narrowing of the groups: the completions of one prompt agree (entropy collapse,
Cui et al. 2025, arXiv 2505.22617) and pass@k falls while the mean reward (pass@1)
rises (Yue et al. 2025, arXiv 2504.13837). :func:`rollout_measures` measures a
batch of groups, as the trainer already generated them:

- ``per_prompt/distinct_2``, ``per_prompt/self_bleu``: within each group, averaged
  over groups; ``across_prompt/...``: over one completion per prompt (see
  :func:`~qdc_trainer.metrics.grouped_diversity`);
- ``distinct_answers``: the number of distinct final answers in a group (with an
  ``answer`` extractor; a completion without an answer counts as one more
  answer, "none"), divided by the group size, averaged over groups: 1 when all
  k answers differ, 1/k when all agree;
- ``zero_signal_share``: the share of groups whose rewards are all equal: GRPO's
  advantages are zero there, so these prompts teach nothing;
- ``pass@1`` and ``pass@<k>``: the unbiased pass@k of Chen et al. 2021
  (:func:`~qdc_trainer.metrics.pass_at_k`), where a completion counts as correct
  when its reward is at least ``success_threshold``.

>>> completions = ["Answer: 4", "Answer: 4", "Answer: 5", "Answer: 4"]
>>> m = rollout_measures(completions, [1.0, 1.0, 0.0, 1.0], num_generations=2, answer=lambda t: t[-1])
>>> m["distinct_answers"], m["zero_signal_share"], m["pass@1"], m["pass@2"]
(0.75, 0.5, 0.75, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from .coverage import pass_at_k
from .diversity import distinct_n, grouped_diversity, self_bleu

__all__ = ["ROLLOUT_MEASURES", "answer_diversity", "group", "rollout_measures", "zero_signal_share"]

ROLLOUT_MEASURES = (
    "per_prompt/distinct_2",
    "across_prompt/distinct_2",
    "per_prompt/self_bleu",
    "across_prompt/self_bleu",
    "distinct_answers",
    "zero_signal_share",
    "pass@1",
)
"""The names :func:`rollout_measures` returns (plus ``pass@<k>`` for the group size k)."""


def group(items: Sequence[Any], num_generations: int) -> list[list[Any]]:
    """Split a flat batch into consecutive groups of ``num_generations`` (GRPO's layout: prompt i's k completions
    are rows ``i * k .. i * k + k - 1``).

    >>> group(["a", "b", "c", "d"], 2)
    [['a', 'b'], ['c', 'd']]
    """
    if isinstance(num_generations, bool) or not isinstance(num_generations, (int, np.integer)) or num_generations < 1:
        raise ValueError(f"num_generations must be a positive int, got {num_generations!r}")
    items = list(items)
    if len(items) % num_generations:
        raise ValueError(f"{len(items)} rollouts do not split into groups of num_generations={num_generations}")
    return [items[i : i + num_generations] for i in range(0, len(items), num_generations)]


def zero_signal_share(rewards: Sequence[float] | np.ndarray, num_generations: int) -> float:
    """Share of groups whose rewards are all equal (within 1e-8, as TRL's ``frac_reward_zero_std`` compares;
    NaN rewards are left out, and a group with fewer than two left has no signal).

    >>> zero_signal_share([1, 1, 0, 1, 0, 0], 2)
    0.6666666666666666
    """
    values = np.asarray(rewards, dtype=np.float64).reshape(-1)
    flat = [np.asarray(g) for g in group(values.tolist(), num_generations)]
    none = 0
    for g in flat:
        g = g[np.isfinite(g)]
        none += len(g) < 2 or bool(np.isclose(g.max(), g.min(), rtol=0.0, atol=1e-8))
    return none / len(flat)


def answer_diversity(
    completions: Sequence[str], num_generations: int, answer: Callable[[str], Hashable | None]
) -> float:
    """Mean over groups of (distinct final answers) / (group size); no answer counts as one answer.

    >>> answer_diversity(["7", "7", "x", "9"], 2, lambda t: int(t) if t.isdigit() else None)
    0.75
    """
    shares = []
    for g in group(completions, num_generations):
        shares.append(len({answer(c) for c in g}) / len(g))
    return float(np.mean(shares))


def rollout_measures(
    completions: Sequence[str],
    rewards: Sequence[float] | np.ndarray,
    num_generations: int,
    *,
    answer: Callable[[str], Hashable | None] | None = None,
    success_threshold: float | None = 1.0,
) -> dict[str, float]:
    """The rollout measures (see the module docstring) of ``completions`` in consecutive groups of
    ``num_generations``, with one reward per completion.

    Measures that do not apply are left out: the within-group ones with groups of one, the across-prompt
    ones with one group, ``distinct_answers`` without an ``answer`` extractor, pass@k with
    ``success_threshold=None`` (rewards that are scores, not verdicts).
    """
    completions = [c if isinstance(c, str) else str(c) for c in completions]
    values = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if len(values) != len(completions):
        raise ValueError(f"{len(completions)} completions but {len(values)} rewards")
    groups = group(completions, num_generations)
    k = int(num_generations)
    out: dict[str, float] = {}
    if k >= 2 and len(groups) >= 2:
        for name, metric in (("distinct_2", lambda t: distinct_n(t, 2)), ("self_bleu", self_bleu)):
            both = grouped_diversity(groups, metric)
            out[f"per_prompt/{name}"], out[f"across_prompt/{name}"] = both.per_input, both.across_input
    elif k >= 2:
        out["per_prompt/distinct_2"] = distinct_n(groups[0], 2)
        out["per_prompt/self_bleu"] = self_bleu(groups[0])
    elif len(groups) >= 2:
        out["across_prompt/distinct_2"] = distinct_n(completions, 2)
        out["across_prompt/self_bleu"] = self_bleu(completions)
    if answer is not None:
        out["distinct_answers"] = answer_diversity(completions, k, answer)
    out["zero_signal_share"] = zero_signal_share(values, k)
    if success_threshold is not None:
        if not isinstance(success_threshold, (int, float)) or not math.isfinite(success_threshold):
            raise ValueError(f"success_threshold must be a finite number or None, got {success_threshold!r}")
        correct = np.array([int(np.sum(np.nan_to_num(g, nan=-np.inf) >= success_threshold)) for g in group(values, k)])
        sizes = np.full(len(correct), k)
        out["pass@1"] = pass_at_k(sizes, correct, 1)
        if k > 1:
            out[f"pass@{k}"] = pass_at_k(sizes, correct, k)
    return out
