"""Candidates and the arms' selection rules: the model writes whole examples (:func:`sample_examples`), the
arithmetic verifier checks them, and each arm keeps a fixed budget (:func:`choose`)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from .config import ARMS


def _split_example(text: str) -> tuple[str, str]:
    """``(prompt, completion)`` of a generated whole example: the prompt is its first line (with the newline)."""
    head, newline, rest = text.partition("\n")
    return (head + newline, rest) if newline else (text, "")


def _safe_verify(prompt: str, completion: str) -> float:
    """:func:`verify`, with 0.0 for a prompt that holds no readable problem."""
    from ...tasks.arithmetic import verify

    try:
        return verify(prompt, completion)
    except ValueError:
        return 0.0


def _num_ops(prompt: str) -> int:
    from ...tasks.arithmetic import parse_problem

    try:
        return parse_problem(prompt).num_ops
    except ValueError:
        return 0


def _problem_key(prompt: str) -> str:
    """The problem a prompt states, whatever its phrasing (the prompt itself when it holds none)."""
    from ...tasks.arithmetic import parse_problem

    try:
        p = parse_problem(prompt)
    except ValueError:
        return prompt
    return f"{p.start}{p.steps}"


def sample_examples(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    temperature: float = 1.0,
    max_new_tokens: int = 100,
    batch_size: int = 250,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Sample one continuation of each prompt (an empty prompt asks for a whole example) and score it with the
    arithmetic task's verifier.

    Each row has ``prompt`` and ``completion`` (for an empty prompt: the generated
    text split after its first line), ``text``, ``valid`` (the verifier's 0/1),
    ``num_ops`` (0 when no problem can be read), ``key`` (the problem, whatever its
    phrasing) and ``confidence``: the mean log-likelihood per generated token
    (end-of-sequence included) under the model that wrote it. Sampling is plain
    ancestral sampling at ``temperature`` (no top-k or top-p) in a forked random
    state seeded by ``seed``; the global random state is untouched.

    >>> from qdc_trainer.tasks.arithmetic import build_model, build_tokenizer
    >>> tok = build_tokenizer()
    >>> rows = sample_examples(build_model(tok, n_layer=1), tok, ["", "What is 2 + 3?\\n"], max_new_tokens=5)
    >>> len(rows), sorted(rows[0])
    (2, ['completion', 'confidence', 'key', 'num_ops', 'prompt', 'text', 'valid'])
    """
    from ...generation import generate

    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings (use [''] * n for n whole examples), not one string")
    prompts = list(prompts)
    samples = generate(
        model,
        tokenizer,
        prompts,
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        eos_token_id=tokenizer.eos_token_id,
        return_logprobs=True,
        progress=False,
    )
    rows: list[dict[str, Any]] = []
    for prompt, sample in zip(prompts, samples):
        p, c = _split_example(sample.text) if not prompt else (prompt, sample.text)
        rows.append(
            {
                "prompt": p,
                "completion": c,
                "text": p + c,
                "valid": _safe_verify(p, c),
                "num_ops": _num_ops(p),
                "key": _problem_key(p),
                "confidence": float(sample.mean_logprob),
            }
        )
    return rows


def choose(
    arm: str,
    candidates: Sequence[dict[str, Any]],
    budget: int,
    *,
    original: Sequence[dict[str, Any]] = (),
    reservoir_share: float = 0.25,
    tradeoff: float = 0.5,
    complexity_strength: float = 0.5,
    n_clusters: int = 16,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The training data an arm keeps from ``candidates`` (rows of :func:`sample_examples`).

    ``quality`` and ``fixed_pool``: the verified-correct candidates, most confident
    first, up to ``budget``. ``reservoir``: the same for ``(1 - reservoir_share)`` of
    the budget, the rest drawn at random from ``original``. ``qdc``: the candidates
    scored with :func:`~qdc_trainer.metrics.score_dataset` and chosen with
    :func:`~qdc_trainer.selection.select_budget` (verified only, one per problem,
    cluster coverage, complexity); the rows gain ``quality``, ``complexity`` and
    ``cluster`` for the sampler.

    >>> rows = [{"prompt": f"What is {i} + 1?\\n", "completion": "", "valid": float(i % 2), "confidence": -i,
    ...          "num_ops": 1, "key": str(i)} for i in range(6)]
    >>> [r["prompt"] for r in choose("quality", rows, 2)]
    ['What is 1 + 1?\\n', 'What is 3 + 1?\\n']
    """
    if arm not in ARMS:
        raise ValueError(f"arm={arm!r} must be one of {ARMS}")
    if arm == "qdc":
        return _choose_qdc(
            candidates,
            budget,
            tradeoff=tradeoff,
            complexity_strength=complexity_strength,
            n_clusters=n_clusters,
            seed=seed,
        )
    own = budget if arm != "reservoir" else budget - int(round(reservoir_share * budget))
    valid = [r for r in candidates if r["valid"] >= 1.0]
    valid.sort(key=lambda r: -r["confidence"])  # stable: ties keep the generation order
    picked = [dict(r) for r in valid[:own]]
    if arm == "reservoir" and budget > own:
        if not original:
            raise ValueError("the reservoir arm needs the original data")
        rng = random.Random(seed)
        picked += [dict(original[i]) for i in rng.sample(range(len(original)), min(budget - own, len(original)))]
    return picked


def _choose_qdc(
    candidates: Sequence[dict[str, Any]],
    budget: int,
    *,
    tradeoff: float,
    complexity_strength: float,
    n_clusters: int,
    seed: int,
) -> list[dict[str, Any]]:
    from datasets import Dataset

    from ...metrics import VerifierScorer, score_dataset
    from ...selection import select_dataset

    if not candidates:
        return []
    ds = Dataset.from_list(
        [
            {
                "prompt": r["prompt"],
                "completion": r["completion"],
                "key": r["key"],
                "num_ops": r["num_ops"],
                "confidence": r["confidence"],
                "valid": r["valid"],
            }
            for r in candidates
        ]
    )
    scored = score_dataset(
        ds,
        text_column="completion",
        prompt_column="prompt",
        quality=VerifierScorer(_safe_verify),
        complexity="steps",
        n_clusters=min(n_clusters, len(ds)),
        seed=seed,
    )
    chosen = select_dataset(
        scored,
        budget,
        key_column="key",
        min_quality=1.0,
        tradeoff=tradeoff,
        complexity_strength=complexity_strength,
        seed=seed,
    )
    return [dict(r, text=r["prompt"] + r["completion"]) for r in chosen]
