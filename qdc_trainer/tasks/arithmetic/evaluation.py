"""Evaluation on the arithmetic task: greedy :func:`generate_completions` and :func:`evaluate_accuracy`
(the share of problems whose completion passes :func:`~qdc_trainer.tasks.arithmetic.verify`), and
:func:`evaluate_pass_at_k` (k sampled completions per problem: pass@1, pass@k, the share never solved)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...metrics.coverage import never_solved_share, pass_at_k
from .verifier import verify

DEFAULT_MAX_NEW_TOKENS = 120
"""Enough tokens for the longest completion of the default out-of-distribution split."""


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 64,
    progress: bool | None = None,
) -> list[str]:
    """Greedy completions of ``prompts``, decoded up to the first end-of-sequence token.

    Prompts are left-padded in batches of ``batch_size`` (the completions are the
    same as one prompt at a time) by :func:`qdc_trainer.generation.generate`, in eval
    mode under ``torch.no_grad`` on the model's device, and the model's mode is
    restored. ``progress``: a progress bar over the batches (None: when there are two
    or more).

    >>> from qdc_trainer.tasks.arithmetic import build_model, build_tokenizer
    >>> tok = build_tokenizer()
    >>> prompts = ["What is 2 + 3?\\n", "Compute 4 * 2.\\n"]
    >>> completions = generate_completions(build_model(tok), tok, prompts, max_new_tokens=4)
    >>> len(completions), all(isinstance(c, str) for c in completions)
    (2, True)
    """
    from ...generation import generate

    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    samples = generate(
        model,
        tokenizer,
        list(prompts),
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        eos_token_id=tokenizer.eos_token_id,
        progress=progress,
    )
    return [s.text for s in samples]


def evaluate_accuracy(
    model: Any, tokenizer: Any, examples: Any, *, check_steps: bool = True, **generate_kwargs: Any
) -> float:
    """Share of ``examples`` (a ``Dataset`` or a list of dicts with ``prompt``, or a list of prompts) whose greedy
    completion (:func:`generate_completions`, which takes ``generate_kwargs``) passes :func:`verify`.

    >>> from qdc_trainer.tasks.arithmetic import build_model, build_tokenizer
    >>> tok = build_tokenizer()
    >>> evaluate_accuracy(build_model(tok), tok, ["What is 2 + 3?\\n"], max_new_tokens=4)  # an untrained model
    0.0
    """
    prompts = _prompts(examples)
    if not prompts:
        raise ValueError("examples is empty")
    completions = generate_completions(model, tokenizer, prompts, **generate_kwargs)
    return sum(verify(p, c, check_steps=check_steps) for p, c in zip(prompts, completions)) / len(prompts)


def _prompts(examples: Any) -> list[str]:
    if hasattr(examples, "column_names"):
        return list(examples["prompt"])
    return [e if isinstance(e, str) else e["prompt"] for e in examples]


def evaluate_pass_at_k(
    model: Any,
    tokenizer: Any,
    examples: Any,
    *,
    k: int = 8,
    temperature: float = 1.0,
    seed: int = 0,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 64,
    check_steps: bool = True,
    progress: bool | None = None,
) -> dict[str, float]:
    """Sample ``k`` completions of each problem at ``temperature`` and verify them: ``pass@1``, ``pass@<k>``
    (the unbiased estimator of :func:`~qdc_trainer.metrics.pass_at_k`) and ``never_solved`` (the share of
    problems none of the k samples solves). Sampling is seeded (``seed``) and leaves the caller's random
    streams alone.

    >>> from qdc_trainer.tasks.arithmetic import build_model, build_tokenizer
    >>> tok = build_tokenizer()
    >>> evaluate_pass_at_k(build_model(tok), tok, ["What is 2 + 3?\\n"], k=2, max_new_tokens=4)
    {'pass@1': 0.0, 'pass@2': 0.0, 'never_solved': 1.0}
    """
    from ...generation import generate

    prompts = _prompts(examples)
    if not prompts:
        raise ValueError("examples is empty")
    samples = generate(
        model,
        tokenizer,
        prompts,
        num_samples=k,
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=temperature,
        batch_size=max(batch_size, k),
        seed=seed,
        eos_token_id=tokenizer.eos_token_id,
        progress=progress,
    )
    correct = [
        sum(verify(p, samples[i * k + j].text, check_steps=check_steps) >= 1.0 for j in range(k))
        for i, p in enumerate(prompts)
    ]
    sizes = [k] * len(prompts)
    return {
        "pass@1": pass_at_k(sizes, correct, 1),
        f"pass@{k}": pass_at_k(sizes, correct, k),
        "never_solved": never_solved_share(sizes, correct),
    }
