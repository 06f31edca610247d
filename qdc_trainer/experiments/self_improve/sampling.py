"""Candidates and the arms' selection rules: the model writes whole examples (:func:`sample_examples`), the
arithmetic verifier checks them, and each arm keeps a fixed budget (:func:`choose`)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...data.weights import QDCSamplerConfig
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
    fresh: Sequence[dict[str, Any]] = (),
    reservoir_share: float = 0.25,
    config: QDCSamplerConfig | None = None,
    n_clusters: int = 16,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The data an arm keeps in a round from ``candidates`` (rows of :func:`sample_examples`).

    - ``quality`` and ``fixed_pool``: the verified-correct candidates, most confident
      first, up to ``budget``;
    - ``reservoir``: the same for ``(1 - reservoir_share)`` of the budget, the rest
      drawn at random from ``original``;
    - ``qdc`` and ``star``: the candidates scored with :func:`~qdc_trainer.metrics.score_dataset`
      (verifier quality, step complexity, clusters of hashed n-grams) and chosen with
      :func:`~qdc_trainer.data.selection.select_budget` (verified only, one per problem,
      cluster quotas, the complexity term of ``config``: a push, or a pull towards its
      ``complexity_target``); the rows gain ``quality``, ``complexity`` and ``cluster``;
    - ``control``: the first ``budget`` of ``fresh`` (new examples of the task: perfect data);
    - ``replay``: ``budget`` examples drawn at random from ``original`` (no new data).

    ``config`` is a :class:`~qdc_trainer.data.weights.QDCSamplerConfig` (default: its defaults); ``seed``
    replaces its seed.

    >>> rows = [{"prompt": f"What is {i} + 1?\\n", "completion": "", "valid": float(i % 2), "confidence": -i,
    ...          "num_ops": 1, "key": str(i)} for i in range(6)]
    >>> [r["prompt"] for r in choose("quality", rows, 2)]
    ['What is 1 + 1?\\n', 'What is 3 + 1?\\n']
    """
    if arm not in ARMS:
        raise ValueError(f"arm={arm!r} must be one of {ARMS}")
    config = dataclasses.replace(config or QDCSamplerConfig(), seed=seed)
    if arm in ("qdc", "star"):
        return _choose_qdc(candidates, budget, config=config, n_clusters=n_clusters)
    if arm == "control":
        if len(fresh) < budget:
            raise ValueError(f"the control arm needs {budget} fresh examples, got {len(fresh)}")
        return [dict(r) for r in fresh[:budget]]
    if arm == "replay":
        if not original:
            raise ValueError("the replay arm needs the original data")
        rng = random.Random(seed)
        return [dict(original[i]) for i in rng.sample(range(len(original)), min(budget, len(original)))]
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


def score_rows(rows: Sequence[dict[str, Any]], *, n_clusters: int, seed: int) -> Any:
    """``rows`` (with ``prompt``, ``completion``, ``key``, ``num_ops``, ``valid``) as a ``datasets.Dataset`` scored
    with :func:`~qdc_trainer.metrics.score_dataset`: verifier ``quality``, ``complexity`` (reasoning steps of the
    completion) and ``cluster`` (k-means on hashed n-grams of prompt and completion)."""
    from datasets import Dataset

    from ...metrics import VerifierScorer, score_dataset

    columns = ("prompt", "completion", "key", "num_ops", "valid")
    ds = Dataset.from_list([{c: r[c] for c in columns} for r in rows])
    return score_dataset(
        ds,
        text_column="completion",
        prompt_column="prompt",
        quality=VerifierScorer(_safe_verify),
        complexity="steps",
        n_clusters=min(n_clusters, len(ds)),
        seed=seed,
    )


def mean_complexity(rows: Sequence[dict[str, Any]]) -> float:
    """The mean of :func:`score_rows`' complexity column (reasoning steps of the completion) over ``rows``:
    the unit of ``complexity_target``.

    >>> mean_complexity([{"completion": "1 + 2 = 3\\nThe answer is 3."}, {"completion": "Answer: 4"}])
    1.5
    """
    from ...metrics import reasoning_steps

    return float(np.mean(reasoning_steps([r["completion"] for r in rows])))


def _choose_qdc(
    candidates: Sequence[dict[str, Any]], budget: int, *, config: QDCSamplerConfig, n_clusters: int
) -> list[dict[str, Any]]:
    from ...data.selection import select_budget

    if not candidates:
        return []
    scored = score_rows(candidates, n_clusters=n_clusters, seed=config.seed)
    quality, complexity, cluster = scored["quality"][:], scored["complexity"][:], scored["cluster"][:]
    keys = [r["key"] for r in candidates]
    chosen = select_budget(
        len(candidates),
        budget,
        quality=quality,
        complexity=complexity,
        clusters=cluster,
        keys=keys,
        min_quality=1.0,
        config=config,
    )
    return [
        dict(candidates[i], quality=quality[i], complexity=complexity[i], cluster=cluster[i]) for i in chosen.tolist()
    ]
