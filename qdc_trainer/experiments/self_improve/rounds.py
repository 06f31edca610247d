"""One seed, one arm in one data mode: measuring a model, training it on a round's data, the first model of a
seed (:func:`_base_job`) and the rounds of an arm (:func:`_arm_job`); each runs in a worker process.

Progress goes to the ``qdc_trainer.experiments.self_improve`` logger (one line per round, level INFO); the
``qdc self-improve`` command prints it, and worker processes send their records back to the parent's logging.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..._io import read_json, write_json
from ...callbacks.generation_metrics import PREFIX as GEN_PREFIX
from ...data.weights import QDCSamplerConfig
from .config import CANDIDATES_FILE, FRONTIER_ARMS, SelfImproveConfig, variant_name
from .sampling import (
    _problem_key,
    _safe_verify,
    choose,
    hinted_prompt,
    mean_complexity,
    pass_rates,
    sample_examples,
    score_rows,
    strip_hint,
)

_DAMAGED = (
    "a run killed while writing it (by an earlier version, which wrote it in place)? Delete that file to compute "
    "its part again, or start afresh with --overwrite true"
)

logger = logging.getLogger(__name__)


def probe_prompts() -> list[str]:
    """The opening words of each training template's prompt (``'What is'``, ``'Compute'``, ...)."""
    from ...tasks.arithmetic import TEMPLATES

    return [t.prompt.split("{")[0].strip() for t in TEMPLATES]


def _data_stats(rows: Sequence[dict[str, Any]], size: int, seed: int = 0) -> dict[str, float]:
    """Complexity and distinctness of a training set. Distinct-n falls as a collection grows, so ``data_unique``
    and ``data_distinct_2`` are measured on ``size`` rows (a seeded sample of a larger set): the original data,
    a round's budget and an accumulated pool are then compared at the same size."""
    from ...metrics import distinct_n

    if not rows:
        return {"data_ops": math.nan, "data_unique": math.nan, "data_distinct_2": math.nan, "data_size": 0}
    sample = (
        rows if len(rows) <= size else [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), size))]
    )
    return {
        "data_ops": float(np.mean([r["num_ops"] for r in rows])),
        "data_unique": len({r["key"] for r in sample}) / len(sample),
        "data_distinct_2": float(distinct_n([r["prompt"] + r["completion"] for r in sample], 2)),
        "data_size": len(rows),
    }


def _generation_stats(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    valid = [r for r in rows if r["valid"] >= 1.0]
    return {
        "valid": len(valid) / len(rows) if rows else math.nan,
        "gen_ops": float(np.mean([r["num_ops"] for r in valid])) if valid else math.nan,
        "gen_unique": len({r["key"] for r in valid}) / len(valid) if valid else math.nan,
    }


def _accuracy(model: Any, tokenizer: Any, split: Any, prefix: str) -> dict[str, float]:
    from ...tasks.arithmetic import generate_completions, verify

    prompts = list(split["prompt"])
    completions = generate_completions(model, tokenizer, prompts, max_new_tokens=80, batch_size=150, progress=False)
    correct = np.array([verify(p, c) for p, c in zip(prompts, completions)])
    ops = np.array(split["num_ops"])
    out = {prefix: float(correct.mean())}
    for k in (1, 2, 3):
        out[f"{prefix}_ops{k}"] = float(correct[ops == k].mean()) if (ops == k).any() else math.nan
    return out


def coverage(correct: Sequence[Sequence[float]], k: int) -> dict[str, float]:
    """pass@1, pass@k and the never-solved share from each problem's per-sample verdicts (0/1, ``k`` or more each).

    >>> coverage([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], k=4)
    {'pass_at_1': 0.4166666666666667, 'pass_at_k': 0.6666666666666666, 'never_solved': 0.3333333333333333}
    """
    from ...metrics import never_solved_share, pass_at_k

    n = [len(c) for c in correct]
    c = [int(sum(v >= 1.0 for v in row)) for row in correct]
    return {"pass_at_1": pass_at_k(n, c, 1), "pass_at_k": pass_at_k(n, c, k), "never_solved": never_solved_share(n, c)}


def _coverage(model: Any, tokenizer: Any, cfg: SelfImproveConfig, split: Any, seed: int) -> dict[str, float]:
    """:func:`coverage` of the first ``pass_size`` held-out problems, ``pass_k`` samples each at the temperature."""
    problems = list(split["prompt"][: cfg.pass_size])
    prompts = [p for p in problems for _ in range(cfg.pass_k)]
    rows = sample_examples(
        model,
        tokenizer,
        prompts,
        temperature=cfg.temperature,
        max_new_tokens=80,
        batch_size=cfg.generation_batch_size,
        seed=seed,
    )
    verdicts = [[r["valid"] for r in rows[i * cfg.pass_k : (i + 1) * cfg.pass_k]] for i in range(len(problems))]
    return coverage(verdicts, cfg.pass_k)


def _probe_stats(model: Any, tokenizer: Any, cfg: SelfImproveConfig, seed: int) -> dict[str, float]:
    from ...callbacks.generation_metrics import measure_generations

    probes = probe_prompts()
    prompts = [p for p in probes for _ in range(cfg.probe_samples)]
    rows = sample_examples(
        model,
        tokenizer,
        prompts,
        temperature=cfg.temperature,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.generation_batch_size,
        seed=seed,
    )
    # The probe is the start of a problem: measure the whole example the model writes from it.
    texts = [p + r["completion"] for p, r in zip(prompts, rows)]
    groups = [texts[i * cfg.probe_samples : (i + 1) * cfg.probe_samples] for i in range(len(probes))]
    m = measure_generations(groups)
    return {
        "per_input_distinct_2": m["per_input/distinct_2"],
        "across_input_distinct_2": m["across_input/distinct_2"],
        "per_input_self_bleu": m["per_input/self_bleu"],
    }


def _measure(
    model: Any, tokenizer: Any, cfg: SelfImproveConfig, splits: dict[str, Any], seed: int, round_: int, arm: str
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Everything measured on a model, and its samples (the next round's candidates)."""
    candidates = _candidates(model, tokenizer, cfg, splits, seed, round_, arm)
    stats = _generation_stats(candidates)
    stats.update(_accuracy(model, tokenizer, splits["validation"], "acc_id"))
    ood = _accuracy(model, tokenizer, splits["test_ood"], "acc_ood")
    stats.update(acc_ood=ood["acc_ood"], acc_ood_ops3=ood["acc_ood_ops3"])
    stats.update(_coverage(model, tokenizer, cfg, splits["validation"], _stream(seed, round_, 8)))
    stats.update(_probe_stats(model, tokenizer, cfg, _stream(seed, round_, 2)))
    return stats, candidates


def _candidates(
    model: Any, tokenizer: Any, cfg: SelfImproveConfig, splits: dict[str, Any], seed: int, round_: int, arm: str
) -> list[dict[str, Any]]:
    """The model's samples of a round: whole examples, or for ``fixed_pool`` and ``star`` solutions to given
    problems (the original data's, or new problems of the task's distribution); for the frontier arms
    ``candidates // solve_k`` new problems, each solved ``solve_k`` times (rows carry ``problem``, its index)."""
    rows = sample_examples(
        model,
        tokenizer,
        _candidate_prompts(arm, cfg, splits, seed, round_),
        temperature=cfg.temperature,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.generation_batch_size,
        seed=_stream(seed, round_, 1),
    )
    if arm in FRONTIER_ARMS:
        for i, row in enumerate(rows):
            row["problem"] = i // cfg.solve_k
    return rows


def _rationales(
    model: Any, tokenizer: Any, cfg: SelfImproveConfig, candidates: Sequence[dict[str, Any]], seed: int
) -> list[dict[str, Any]]:
    """Rationalization (STaR): each problem never solved in its ``solve_k`` samples (p̂ = 0) is prompted again
    ``solve_k`` times with the answer as a hint (:func:`~.sampling.hinted_prompt`); the rows are stored with the
    problem's own prompt and verified on it (:func:`~.sampling.strip_hint`), so the hint never reaches training."""
    rates = pass_rates(candidates)
    prompts = {}
    for r in candidates:
        if rates[r["problem"]] == 0.0:
            prompts.setdefault(r["problem"], r["prompt"])
    problems = [p for p in prompts for _ in range(cfg.solve_k)]
    if not problems:
        return []
    plain = [prompts[p] for p in problems]
    rows = sample_examples(
        model,
        tokenizer,
        [hinted_prompt(p) for p in plain],
        temperature=cfg.temperature,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.generation_batch_size,
        seed=seed,
    )
    return [dict(r, problem=p) for r, p in zip(strip_hint(rows, plain), problems)]


def _candidate_prompts(arm: str, cfg: SelfImproveConfig, splits: dict[str, Any], seed: int, round_: int) -> list[str]:
    if arm == "fixed_pool":
        pool = splits["original"]
        rng = random.Random(_stream(seed, round_, 3))
        return [pool[rng.randrange(len(pool))]["prompt"] for _ in range(cfg.candidates)]
    if arm == "star":
        return [r["prompt"] for r in _task_examples(cfg, cfg.candidates, _stream(seed, round_, 3))]
    if arm in FRONTIER_ARMS:
        problems = _task_examples(cfg, cfg.candidates // cfg.solve_k, _stream(seed, round_, 3))
        return [r["prompt"] for r in problems for _ in range(cfg.solve_k)]
    return [""] * cfg.candidates


def _task_examples(cfg: SelfImproveConfig, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` new clean examples of the task's distribution (never a held-out problem), as the original rows are."""
    from ...tasks.arithmetic import ArithmeticConfig, generate_examples

    return [_row(r) for r in generate_examples(n, ArithmeticConfig(noise=0.0), seed=seed, held_out=False)]


def _row(example: dict[str, Any]) -> dict[str, Any]:
    return {
        "prompt": example["prompt"],
        "completion": example["completion"],
        "text": example["text"],
        "num_ops": example["num_ops"],
        "key": _problem_key(example["prompt"]),
        "valid": _safe_verify(example["prompt"], example["completion"]),
    }


def _stream(seed: int, round_: int, purpose: int) -> int:
    """A seed for one purpose in one round, the same in every arm (so round 1's candidates are shared)."""
    return (seed * 1000 + round_) * 10 + purpose


# --------------------------------------------------------------------------- training


def _train(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    *,
    steps: int,
    learning_rate: float,
    cfg: SelfImproveConfig,
    seed: int,
    output_dir: str,
    sampler: QDCSamplerConfig | None = None,
) -> None:
    """Fine-tune on ``rows`` (loss on the whole example, so the model learns to write problems too); with
    ``sampler``, the rows are scored (:func:`score_rows`) and drawn by :class:`~qdc_trainer.data.QDCSampler`."""
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, PrinterCallback, Trainer, TrainingArguments

    from ...data.sampler import QDCSampler
    from ...tasks.text import tokenize_dataset
    from ...trainer import QDCTrainer

    if not rows:
        return  # nothing survived selection: the model is unchanged this round
    if sampler is not None:
        ds = score_rows(rows, n_clusters=cfg.n_clusters, seed=seed).select_columns(
            ["prompt", "completion", "quality", "complexity", "cluster"]
        )
    else:
        ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    ds = tokenize_dataset(ds, tokenizer, mask_prompt=False, desc=None)
    args = TrainingArguments(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=learning_rate,
        warmup_steps=min(50, steps // 10),
        lr_scheduler_type="cosine",
        weight_decay=0.0,
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        seed=seed,
        disable_tqdm=True,
        use_cpu=True,
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    if sampler is not None:
        trainer = QDCTrainer(
            model=model,
            args=args,
            train_dataset=ds,
            data_collator=collator,
            processing_class=tokenizer,
            qdc_sampler=QDCSampler.from_dataset(ds, config=dataclasses.replace(sampler, seed=seed)),
            log_entropy=False,
        )
    else:
        trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=collator, processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)  # the run logs one line per round instead
    trainer.train()


def _round_data(
    mode: str, pool: list[dict[str, Any]], kept: list[dict[str, Any]], total: int, seed: int, new_share: float = 0.4
) -> list[dict[str, Any]]:
    """What a round trains on in ``mode``; ``pool`` (the original data and every earlier round's kept data)
    grows by ``kept`` in the accumulating modes and in ``mix``, where the round trains on ``kept`` plus a uniform
    sample of the pool (before ``kept`` joins it) sized so that ``kept`` is ``new_share`` of the round's data.

    >>> pool = [{"i": 0}, {"i": 1}]
    >>> [r["i"] for r in _round_data("replace", pool, [{"i": 2}], 2, 0)], len(pool)
    ([2], 2)
    >>> mixed = _round_data("mix", [{"i": i} for i in range(10)], [{"i": 10}, {"i": 11}], 2, 0, new_share=0.4)
    >>> len(mixed), [r["i"] for r in mixed[:2]]  # 2 new rows are 40% of 5
    (5, [10, 11])
    >>> [r["i"] for r in _round_data("accumulate", pool, [{"i": 2}], 2, 0)]
    [0, 1, 2]
    >>> len(_round_data("accumulate_fixed", pool, [{"i": 3}], 2, 0)), len(pool)  # 2 of the 4 in the pool
    (2, 4)
    """
    if mode == "replace":
        return list(kept)
    if mode == "mix":
        others = min(len(pool), int(round(len(kept) * (1.0 - new_share) / new_share)))
        data = list(kept) + [pool[i] for i in sorted(random.Random(seed).sample(range(len(pool)), others))]
        pool.extend(kept)
        return data
    pool.extend(kept)
    if mode == "accumulate" or len(pool) <= total:
        return list(pool)
    return [pool[i] for i in sorted(random.Random(seed).sample(range(len(pool)), total))]


# --------------------------------------------------------------------------- one seed, one arm


def _splits(cfg: SelfImproveConfig, seed: int) -> dict[str, Any]:
    from ...tasks.arithmetic import ArithmeticConfig, make_splits

    task = ArithmeticConfig(noise=cfg.seed_noise, seed=seed)
    splits = make_splits(task, train_size=cfg.seed_examples, eval_size=cfg.eval_size, ood_size=cfg.ood_size, seed=seed)
    original = [_row(r) for r in splits["train"]]
    return {"original": original, "validation": splits["validation"], "test_ood": splits["test_ood"]}


def _seed_dir(cfg: SelfImproveConfig, seed: int) -> Path:
    return Path(cfg.output_dir) / f"seed{seed}"


def _variant_dir(cfg: SelfImproveConfig, seed: int, arm: str, mode: str) -> Path:
    return _seed_dir(cfg, seed) / arm / mode


def _configure(cfg: SelfImproveConfig) -> None:
    """Torch threads, and no per-call progress bars (the run logs one line per round)."""
    import datasets
    import torch
    import transformers

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def _sampler_config(cfg: SelfImproveConfig, original: Sequence[dict[str, Any]]) -> QDCSamplerConfig:
    """The selection's and the sampler's knobs; with ``target_original``, the complexity target is the original
    data's mean complexity (in the complexity column's units: reasoning steps of the solution)."""
    if cfg.target_original:
        return dataclasses.replace(cfg.sampler, complexity_target=mean_complexity(original))
    return cfg.sampler


def _base_job(cfg_dict: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train the seed's first model on the original data and measure it (round 0, shared by every arm)."""
    from transformers import AutoTokenizer

    from ...tasks.arithmetic import build_model, build_tokenizer

    cfg = SelfImproveConfig(**{**cfg_dict, "smoke": False})
    _configure(cfg)
    folder = _seed_dir(cfg, seed)
    done = folder / "base.json"
    if done.is_file():
        return read_json(done, _DAMAGED)
    start = time.perf_counter()
    build_tokenizer().save_pretrained(folder / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    splits = _splits(cfg, seed)
    model = build_model(tokenizer, seed=seed, n_layer=cfg.n_layer, n_embd=cfg.n_embd)
    _train(
        model,
        tokenizer,
        splits["original"],
        steps=cfg.base_steps,
        learning_rate=cfg.base_learning_rate,
        cfg=cfg,
        seed=seed,
        output_dir=str(folder / "trainer"),
    )
    model.save_pretrained(folder / "base")
    stats, candidates = _measure(model, tokenizer, cfg, splits, seed, 0, "quality")
    _write_jsonl(folder / CANDIDATES_FILE, candidates)  # round 1's candidates of the arms that write whole examples
    stats.update(_data_stats(splits["original"], cfg.budget, seed))
    stats.update(dict.fromkeys(KEPT_METRICS, math.nan))  # the first model: no round, nothing kept
    row = {"seed": seed, "round": 0, **stats, "seconds": time.perf_counter() - start}
    write_json(done, row)
    logger.info("seed %d first model: %s", seed, _row_line(row))
    return row


def _arm_job(cfg_dict: dict[str, Any], seed: int, arm: str, mode: str = "replace") -> list[dict[str, Any]]:
    """Rounds 1..R of one arm in one data mode from the seed's first model; the rows are written to
    ``seed<k>/<arm>/<mode>/rows.json``, which a later run reuses."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ...callbacks.series import watch_from_keys

    cfg = SelfImproveConfig(**{**cfg_dict, "smoke": False})
    _configure(cfg)
    folder = _variant_dir(cfg, seed, arm, mode)
    done = folder / "rows.json"
    if done.is_file():
        return read_json(done, _DAMAGED)
    tokenizer = AutoTokenizer.from_pretrained(_seed_dir(cfg, seed) / "tokenizer")
    model = AutoModelForCausalLM.from_pretrained(_seed_dir(cfg, seed) / "base")
    splits = _splits(cfg, seed)
    knobs = _sampler_config(cfg, splits["original"])
    base = read_json(_seed_dir(cfg, seed) / "base.json", _DAMAGED)
    detectors = watch_from_keys(list(cfg.detector_watch))
    name = variant_name(arm, mode)
    rows = [{**base, "arm": arm, "mode": mode, "variant": name, "detector": _detect(detectors, base, 0)}]
    # The first model's whole examples were written by _base_job; fixed_pool, star and the frontier arms ask for
    # solutions only.
    if arm in ("fixed_pool", "star", *FRONTIER_ARMS):
        candidates = _candidates(model, tokenizer, cfg, splits, seed, 0, arm)
    else:
        candidates = _read_jsonl(_seed_dir(cfg, seed) / CANDIDATES_FILE)
    pool = [] if mode == "replace" else list(splits["original"])
    for round_ in range(1, cfg.rounds + 1):
        start = time.perf_counter()
        rationales = (
            _rationales(model, tokenizer, cfg, candidates, _stream(seed, round_ - 1, 9))
            if arm == "frontier_rat"
            else []
        )
        kept = choose(
            arm,
            candidates,
            cfg.budget,
            original=splits["original"],
            fresh=_task_examples(cfg, cfg.budget, _stream(seed, round_, 7)) if arm == "control" else (),
            reservoir_share=cfg.reservoir_share,
            config=knobs,
            n_clusters=cfg.n_clusters,
            seed=_stream(seed, round_, 4),
            fill=cfg.fill_budget,
            frontier_weight=cfg.frontier_weight,
            per_problem_cap=cfg.per_problem_cap,
            rationales=rationales,
        )
        data = _round_data(mode, pool, kept, cfg.seed_examples, _stream(seed, round_, 6), cfg.new_share)
        _train(
            model,
            tokenizer,
            data,
            steps=cfg.round_steps,
            learning_rate=cfg.round_learning_rate,
            cfg=cfg,
            seed=_stream(seed, round_, 5),
            output_dir=str(folder / "trainer"),
            sampler=knobs if arm == "qdc" and cfg.train_sampler == "arm" else None,
        )
        _write_jsonl(folder / f"round{round_}_kept.jsonl", kept)
        stats, candidates = _measure(model, tokenizer, cfg, splits, seed, round_, arm)
        stats.update(_data_stats(data, cfg.budget))
        stats.update(kept_stats(arm, kept, len(data)))
        row = {
            "seed": seed,
            "round": round_,
            "arm": arm,
            "mode": mode,
            "variant": name,
            **stats,
            "seconds": time.perf_counter() - start,
        }
        row["detector"] = _detect(detectors, row, round_)
        rows.append(row)
        logger.info("seed %d %s round %d: %s", seed, name, round_, _row_line(row))
    model.save_pretrained(folder / "model")
    write_json(done, rows)
    return rows


KEPT_METRICS = ("filled", "new_share", "kept_p_hat", "rationales")
"""What :func:`kept_stats` measures of a round's kept data (NaN in the first model's row)."""


def kept_stats(arm: str, kept: Sequence[dict[str, Any]], data_size: int) -> dict[str, float]:
    """What a round kept: ``filled`` (rows filled from the original data), ``new_share`` (new rows, i.e. kept and
    neither filled nor drawn from the original data by ``replay``, as a share of the ``data_size`` rows trained
    on), ``kept_p_hat`` (the kept solutions' mean pass rate; NaN for arms without one) and ``rationales``.

    >>> kept = [{"p_hat": 0.5}, {"p_hat": 0.25, "rationale": True}, {"filled": True}]
    >>> kept_stats("frontier_rat", kept, 6)
    {'filled': 1, 'new_share': 0.3333333333333333, 'kept_p_hat': 0.375, 'rationales': 1}
    >>> kept_stats("replay", [{}, {}], 2)["new_share"]
    0.0
    """
    filled = sum(1 for r in kept if r.get("filled"))
    new = 0 if arm == "replay" else len(kept) - filled
    p_hat = [r["p_hat"] for r in kept if "p_hat" in r and not r.get("filled")]
    return {
        "filled": filled,
        "new_share": new / data_size if data_size else math.nan,
        "kept_p_hat": float(np.mean(p_hat)) if p_hat else math.nan,
        "rationales": sum(1 for r in kept if r.get("rationale")),
    }


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rows without their ``text`` (it is ``prompt + completion``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({k: v for k, v in row.items() if k != "text"}) + "\n")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [dict(row, text=row["prompt"] + row["completion"]) for row in rows]


def _detect(detectors: list, row: dict[str, Any], round_: int) -> int:
    level = 0
    for d in detectors:
        name = d.key.removeprefix(GEN_PREFIX).replace("/", "_")
        level = max(level, d.update(round_, row[name]).level)
    return int(level)


def _row_line(row: dict[str, Any]) -> str:
    keys = ("valid", "gen_unique", "data_ops", "acc_id", "acc_ood", "pass_at_1", "pass_at_k", "never_solved")
    return ", ".join(f"{k} {row[k]:.3f}" for k in keys if k in row) + f" ({row.get('seconds', 0):.0f} s)"
