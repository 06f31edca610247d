"""Candidates and the arms' selection rules: the model writes whole examples (:func:`sample_examples`), the
arithmetic verifier checks them, and each arm keeps a fixed budget (:func:`choose`); the frontier arms solve
each candidate problem several times and keep solutions by the problem's pass rate (:func:`pass_rates`,
:func:`frontier_weights`, :func:`choose_frontier`, :func:`hinted_prompt` for rationalization)."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...data.weights import QDCSamplerConfig
from .config import ARMS, FRONTIER_ARMS, FRONTIER_WEIGHTS


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
    fill: bool = False,
    frontier_weight: str = "variance",
    per_problem_cap: int = 2,
    rationales: Sequence[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """The data an arm keeps in a round from ``candidates`` (rows of :func:`sample_examples`).

    With ``fill``, a selection that keeps fewer than ``budget`` rows is filled up to ``budget`` from ``original``
    (drawn at random, as ``replay`` draws, each marked ``filled: True``), so that every arm trains on the same
    number of rows; the frontier arms (:func:`choose_frontier`, with ``frontier_weight``, ``per_problem_cap`` and
    ``rationales``) are listed there.

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
    kept = _choose(
        arm,
        candidates,
        budget,
        original=original,
        fresh=fresh,
        reservoir_share=reservoir_share,
        config=config,
        n_clusters=n_clusters,
        seed=seed,
        frontier_weight=frontier_weight,
        per_problem_cap=per_problem_cap,
        rationales=rationales,
    )
    if fill:
        _fill(kept, budget, original, seed + 1)
    return kept


def _choose(
    arm: str,
    candidates: Sequence[dict[str, Any]],
    budget: int,
    *,
    original: Sequence[dict[str, Any]],
    fresh: Sequence[dict[str, Any]],
    reservoir_share: float,
    config: QDCSamplerConfig | None,
    n_clusters: int,
    seed: int,
    frontier_weight: str,
    per_problem_cap: int,
    rationales: Sequence[dict[str, Any]],
) -> list[dict[str, Any]]:
    if arm in FRONTIER_ARMS:
        return choose_frontier(
            arm,
            candidates,
            budget,
            weight=frontier_weight,
            per_problem_cap=per_problem_cap,
            rationales=rationales,
            seed=seed,
        )
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


# --------------------------------------------------------------------------- the frontier arms


def pass_rates(candidates: Sequence[dict[str, Any]]) -> dict[int, float]:
    """Each problem's pass rate p̂: the verified share of its samples (rows carry ``problem``, the index of the
    candidate problem they solve, and ``valid``, the verifier's 0/1).

    >>> rows = [{"problem": p, "valid": v} for p, v in ((0, 1), (0, 0), (0, 0), (0, 1), (1, 0), (1, 0))]
    >>> pass_rates(rows)
    {0: 0.5, 1: 0.0}
    """
    totals: dict[int, list[float]] = {}
    for r in candidates:
        totals.setdefault(int(r["problem"]), []).append(1.0 if r["valid"] >= 1.0 else 0.0)
    return {p: sum(v) / len(v) for p, v in totals.items()}


def frontier_weights(p_hat: Sequence[float] | np.ndarray, weight: str = "variance") -> np.ndarray:
    """The frontier weight of a problem from its pass rate p̂: ``variance`` p̂(1 − p̂) or ``unsolved`` 1 − p̂.

    This is the QDC complexity term made relative to the model: instead of a fixed property of the text (steps
    of the solution), a problem counts as hard by how rarely the current model solves it, and ``variance`` keeps
    the problems the model solves sometimes (those that still teach it something and that it can verify), as
    curricula at the frontier of competence do.

    >>> frontier_weights([0.0, 0.25, 0.5, 1.0]).tolist(), frontier_weights([0.0, 0.25, 1.0], "unsolved").tolist()
    ([0.0, 0.1875, 0.25, 0.0], [1.0, 0.75, 0.0])
    """
    p = np.asarray(p_hat, dtype=float)
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"pass rates must lie in [0, 1], got {p.tolist()}")
    if weight == "variance":
        return p * (1.0 - p)
    if weight == "unsolved":
        return 1.0 - p
    raise ValueError(f"weight={weight!r} must be one of {FRONTIER_WEIGHTS}")


def weighted_draw(weights: Sequence[float] | np.ndarray, n: int, seed: int) -> list[int]:
    """``n`` indices drawn without replacement with probability proportional to ``weights`` (seeded; the
    Efraimidis-Spirakis keys u^(1/w)), in the order drawn; a zero weight is never drawn.

    >>> weighted_draw([1.0, 0.0, 1.0, 1.0], 5, seed=0) == weighted_draw([1.0, 0.0, 1.0, 1.0], 5, seed=0)
    True
    >>> sorted(weighted_draw([1.0, 0.0, 1.0, 1.0], 5, seed=0))
    [0, 2, 3]
    """
    w = np.asarray(weights, dtype=float)
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be finite and >= 0, got {w.tolist()}")
    positive = np.flatnonzero(w > 0)
    if not len(positive):
        return []
    u = np.random.default_rng(seed).random(len(positive))
    keys = np.log(u) / w[positive]  # log of u^(1/w): larger is drawn first
    order = positive[np.argsort(-keys, kind="stable")]
    return [int(i) for i in order[:n]]


def _fill(kept: list[dict[str, Any]], budget: int, original: Sequence[dict[str, Any]], seed: int) -> int:
    """Append ``budget - len(kept)`` rows of ``original`` (drawn at random, marked ``filled``); returns how many."""
    short = budget - len(kept)
    if short <= 0:
        return 0
    if len(original) < short:
        raise ValueError(f"filling {short} rows of the budget needs that many original rows, got {len(original)}")
    rng = random.Random(seed)
    kept += [dict(original[i], filled=True) for i in rng.sample(range(len(original)), short)]
    return short


def choose_frontier(
    arm: str,
    candidates: Sequence[dict[str, Any]],
    budget: int,
    *,
    weight: str = "variance",
    per_problem_cap: int = 2,
    rationales: Sequence[dict[str, Any]] = (),
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The solutions a frontier arm keeps (at most ``budget``; :func:`choose` fills a shortfall when asked).

    ``candidates`` are the round's samples, ``solve_k`` per candidate problem, each with ``problem`` (the
    problem's index) and ``valid``; p̂ of a problem is its verified share (:func:`pass_rates`). Every arm keeps
    verified solutions only, distinct by text (prompt and completion), at most ``per_problem_cap`` per problem
    (the first in generation order), then draws ``budget`` of them without replacement (seeded):

    - ``frontier`` and ``frontier_rat``: with probability proportional to :func:`frontier_weights` of their
      problem's p̂ (``weight``); ``frontier_rat`` also has ``rationales``: verified solutions of problems never
      solved (p̂ = 0), written with the answer as a hint (:func:`hinted_prompt`) and stored under the problem's
      own prompt, weighted as a problem solved once in ``k + 1`` tries (``frontier_weights(1 / (k + 1))``);
    - ``solved`` (quality-only under the same separation): uniformly, whatever p̂.

    Kept rows gain ``p_hat``, ``weight`` and ``rationale`` (True for a rationale).

    >>> rows = [{"problem": i // 4, "prompt": f"P{i // 4}", "completion": f"c{i % 2}", "valid": float(v)}
    ...         for i, v in enumerate([1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0])]
    >>> [(r["prompt"], r["completion"], r["p_hat"]) for r in choose_frontier("frontier", rows, 5)]
    [('P1', 'c0', 0.25)]
    >>> sorted((r["prompt"], r["completion"]) for r in choose_frontier("solved", rows, 5))
    [('P0', 'c0'), ('P0', 'c1'), ('P1', 'c0')]
    """
    if arm not in FRONTIER_ARMS:
        raise ValueError(f"arm={arm!r} is not a frontier arm of {FRONTIER_ARMS}")
    if per_problem_cap < 1:
        raise ValueError(f"per_problem_cap={per_problem_cap} must be at least 1")
    rates = pass_rates(candidates)
    k = max(Counter(int(r["problem"]) for r in candidates).values(), default=1)
    pool: list[dict[str, Any]] = []
    seen: set[str] = set()
    per_problem: dict[int, int] = {}
    extra = list(rationales) if arm == "frontier_rat" else []
    for r, is_rationale in [*((r, False) for r in candidates), *((r, True) for r in extra)]:
        problem = int(r["problem"])
        text = r["prompt"] + r["completion"]
        if r["valid"] < 1.0 or text in seen or per_problem.get(problem, 0) >= per_problem_cap:
            continue
        if is_rationale and rates.get(problem, 0.0) > 0.0:
            continue  # rationalization is only for problems never solved
        seen.add(text)
        per_problem[problem] = per_problem.get(problem, 0) + 1
        p_hat = 1.0 / (k + 1) if is_rationale else rates[problem]
        pool.append(dict(r, p_hat=rates.get(problem, 0.0), rationale=is_rationale, _w=p_hat))
    if arm == "solved":
        weights = np.ones(len(pool))
    else:
        weights = frontier_weights([r["_w"] for r in pool], weight) if pool else np.zeros(0)
    picked = weighted_draw(weights, budget, seed)
    return [{**{k_: v for k_, v in pool[i].items() if k_ != "_w"}, "weight": float(weights[i])} for i in sorted(picked)]


HINT = " The answer is {answer}."
"""What rationalization appends to a problem's prompt line: the task's own final-answer phrase (every word of it
is in the task's vocabulary), so that the model writes the steps towards a known answer."""


def hinted_prompt(prompt: str) -> str:
    """The prompt with the answer given as a hint (STaR's rationalization, Zelikman et al. 2022): :data:`HINT`
    after the problem, before the prompt's newline. The verifier still reads the problem from it.

    >>> hinted_prompt("What is 4 * 3 - 2?\\n")
    'What is 4 * 3 - 2? The answer is 10.\\n'
    """
    from ...tasks.arithmetic import parse_problem

    line, newline, rest = prompt.partition("\n")
    return line + HINT.format(answer=parse_problem(prompt).answer) + newline + rest


def strip_hint(rows: Sequence[dict[str, Any]], prompts: Sequence[str]) -> list[dict[str, Any]]:
    """Rationales with the hint removed: each row's ``prompt`` becomes the problem's own prompt (``prompts``,
    in the same order) and ``valid`` is the verifier's verdict on that prompt and the completion."""
    out = []
    for r, prompt in zip(rows, prompts, strict=True):
        out.append(dict(r, prompt=prompt, text=prompt + r["completion"], valid=_safe_verify(prompt, r["completion"])))
    return out
