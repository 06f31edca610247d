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
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from transformers.utils import logging

from ..grpo import completion_text
from ._inputs import Corpus
from ._segmented import collection_means, collection_stats
from .coverage import pass_at_k
from .diversity import _nanmean

__all__ = ["ROLLOUT_MEASURES", "answer_diversity", "group", "rollout_measures", "zero_signal_share"]

logger = logging.get_logger(__name__)

_FAILED_EXTRACTORS: set[int] = set()  # ids of the answer extractors whose failure was logged

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
    completions: Sequence[Any], num_generations: int, answer: Callable[[str], Hashable | None]
) -> float:
    """Mean over groups of (distinct final answers) / (group size); no answer counts as one answer.

    ``answer`` gets each completion's text (a conversation's message contents, see
    :func:`~qdc_trainer.grpo.completion_text`). A completion on which it raises, or whose answer cannot
    be hashed, counts as one without an answer (None); the first such failure is logged as a warning.

    >>> answer_diversity(["7", "7", "x", "9"], 2, lambda t: int(t) if t.isdigit() else None)
    0.75
    """
    shares = []
    for g in group([_text(c) for c in completions], num_generations):
        shares.append(len({_answer_of(answer, c) for c in g}) / len(g))
    return float(np.mean(shares))


def _answer_of(answer: Callable[[str], Hashable | None], text: str) -> Hashable | None:
    """``answer(text)``, or None (no answer) where it raises or returns an unhashable value."""
    try:
        value = answer(text)
        hash(value)
    except Exception as err:
        if id(answer) not in _FAILED_EXTRACTORS:  # once per extractor, with the first failure's reason
            _FAILED_EXTRACTORS.add(id(answer))
            logger.warning(
                f"the answer extractor {getattr(answer, '__name__', answer)!r} failed on a completion "
                f"({type(err).__name__}: {err}); such completions count as having no answer (warned once)"
            )
        return None
    return value


def _text(completion: Any) -> Any:
    """A completion as the text measures take it: a string as it is, a conversation (a list of messages) as
    its messages' contents, token ids as they are."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)) and any(isinstance(m, Mapping) for m in completion):
        return completion_text(completion)
    if hasattr(completion, "tolist") or (
        isinstance(completion, (list, tuple)) and all(isinstance(t, (int, np.integer)) for t in completion)
    ):
        return completion  # token ids
    return completion_text(completion)


def rollout_measures(
    completions: Sequence[Any],
    rewards: Sequence[float] | np.ndarray,
    num_generations: int,
    *,
    answer: Callable[[str], Hashable | None] | None = None,
    success_threshold: float | None = 1.0,
    token_ids: Sequence[Any] | None = None,
) -> dict[str, float]:
    """The rollout measures (see the module docstring) of ``completions`` in consecutive groups of
    ``num_generations``, with one reward per completion.

    A completion is a string, a conversation (a list of ``{"role", "content"}`` messages, measured on its
    messages' contents, as :func:`~qdc_trainer.grpo.completion_text` joins them) or a sequence of token ids
    (measured at the tokenizer's granularity; pass the ids GRPO already holds to skip the whitespace
    split). Measures that do not apply are left out: the within-group ones with groups of one, the
    across-prompt ones with one group, ``distinct_answers`` without an ``answer`` extractor, pass@k with
    ``success_threshold=None`` (rewards that are scores, not verdicts). An ``answer`` that fails on a
    completion counts it as having no answer (see :func:`answer_diversity`). An empty batch raises
    ``ValueError``. ``token_ids`` (one sequence of ids per completion, e.g. GRPO's ``completion_ids``) measures
    distinct-2 and self-BLEU on those tokens instead, while ``answer`` still reads the completions' text.

    Cost: the texts are tokenized once; per n-gram order one sort of all the batch's n-grams serves every
    group and both views (see ``qdc_trainer.metrics._segmented``): about 0.15-0.25 µs of CPU per word of
    text at GRPO's sizes (split in NumPy; about 0.3 µs where a NUL character makes it Python's split),
    0.15-0.23 µs per token from token-id arrays (``benchmarks/bench_rollout.py``), with
    values identical to measuring each group and each across-prompt collection on its own with
    :func:`~qdc_trainer.metrics.grouped_diversity`.

    >>> rollout_measures([[{"role": "assistant", "content": "a b"}], [{"role": "assistant", "content": "a c"}]],
    ...                  [1.0, 0.0], 2)["per_prompt/distinct_2"]
    1.0
    """
    texts = [_text(c) for c in completions]
    values = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if len(values) != len(texts):
        raise ValueError(f"{len(texts)} completions but {len(values)} rewards")
    if not texts:
        raise ValueError("there are no completions to measure: pass at least one group of num_generations")
    groups = group(texts, num_generations)
    k = int(num_generations)
    out: dict[str, float] = {}
    views, names = [], []
    docs = np.arange(len(texts), dtype=np.int64)
    if k >= 2:
        views.append(docs // k)
        names.append("per_prompt")
    if len(groups) >= 2:
        views.append(docs % k)
        names.append("across_prompt")
    if token_ids is not None and len(token_ids) != len(texts):
        raise ValueError(f"{len(texts)} completions but {len(token_ids)} token-id sequences")
    if views:
        corpus = Corpus.from_texts(texts if token_ids is None else list(token_ids), "completions")
        stats = collection_stats(corpus, views, max_n=4, distinct_orders=(2,))
        for name, view in zip(names, stats):
            out[f"{name}/distinct_2"] = _nanmean(view.distinct[2].tolist())
            out[f"{name}/self_bleu"] = _nanmean(collection_means(view.collection, view.bleu))
    if answer is not None:
        out["distinct_answers"] = answer_diversity(texts, k, answer)
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
