"""One seed, one arm: measuring a model, training it on a round's data, the first model of a seed
(:func:`_base_job`) and the rounds of an arm (:func:`_arm_job`); each runs in a worker process."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...monitor import PREFIX as GEN_PREFIX
from .config import CANDIDATES_FILE, DETECTOR_WATCH, SelfImproveConfig
from .sampling import _problem_key, _safe_verify, choose, sample_examples


def probe_prompts() -> list[str]:
    """The opening words of each training template's prompt (``'What is'``, ``'Compute'``, ...)."""
    from ...tasks.arithmetic import TEMPLATES

    return [t.prompt.split("{")[0].strip() for t in TEMPLATES]


def _data_stats(rows: Sequence[dict[str, Any]], size: int, seed: int = 0) -> dict[str, float]:
    """Complexity and distinctness of a training set. Distinct-n falls as a collection grows, so ``data_unique``
    and ``data_distinct_2`` are measured on ``size`` rows (a seeded sample of a larger set): the original data
    and a round's budget are then compared at the same size."""
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


def _probe_stats(model: Any, tokenizer: Any, cfg: SelfImproveConfig, seed: int) -> dict[str, float]:
    from ...monitor import measure_generations

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
    """Everything measured on a model, and its whole-example samples (the next round's candidates)."""
    candidates = sample_examples(
        model,
        tokenizer,
        _candidate_prompts(arm, cfg, splits, seed, round_),
        temperature=cfg.temperature,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.generation_batch_size,
        seed=_stream(seed, round_, 1),
    )
    stats = _generation_stats(candidates)
    stats.update(_accuracy(model, tokenizer, splits["validation"], "acc_id"))
    ood = _accuracy(model, tokenizer, splits["test_ood"], "acc_ood")
    stats.update(acc_ood=ood["acc_ood"], acc_ood_ops3=ood["acc_ood_ops3"])
    stats.update(_probe_stats(model, tokenizer, cfg, _stream(seed, round_, 2)))
    return stats, candidates


def _candidate_prompts(arm: str, cfg: SelfImproveConfig, splits: dict[str, Any], seed: int, round_: int) -> list[str]:
    if arm != "fixed_pool":
        return [""] * cfg.candidates
    pool = splits["original"]
    rng = random.Random(_stream(seed, round_, 3))
    return [pool[rng.randrange(len(pool))]["prompt"] for _ in range(cfg.candidates)]


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
    sampler: bool = False,
) -> None:
    """Fine-tune on ``rows`` (loss on the whole example, so the model learns to write problems too)."""
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, PrinterCallback, Trainer, TrainingArguments

    from ...sampler import QDCSampler
    from ...tasks.text import tokenize_dataset
    from ...trainer import QDCTrainer

    if not rows:
        return  # nothing survived selection: the model is unchanged this round
    columns = ["prompt", "completion"] + (["quality", "complexity", "cluster"] if sampler else [])
    ds = Dataset.from_list([{c: r[c] for c in columns} for r in rows])
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
    if sampler:
        qdc_sampler = QDCSampler.from_dataset(
            ds, tradeoff=cfg.tradeoff, complexity_strength=cfg.complexity_strength, seed=seed
        )
        trainer = QDCTrainer(
            model=model,
            args=args,
            train_dataset=ds,
            data_collator=collator,
            processing_class=tokenizer,
            qdc_sampler=qdc_sampler,
            log_entropy=False,
        )
    else:
        trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=collator, processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)  # the run prints one line per round instead
    trainer.train()


# --------------------------------------------------------------------------- one seed, one arm


def _splits(cfg: SelfImproveConfig, seed: int) -> dict[str, Any]:
    from ...tasks.arithmetic import ArithmeticConfig, make_splits

    task = ArithmeticConfig(noise=cfg.seed_noise, seed=seed)
    splits = make_splits(task, train_size=cfg.seed_examples, eval_size=cfg.eval_size, ood_size=cfg.ood_size, seed=seed)
    original = [
        {
            "prompt": r["prompt"],
            "completion": r["completion"],
            "text": r["text"],
            "num_ops": r["num_ops"],
            "key": _problem_key(r["prompt"]),
            "valid": _safe_verify(r["prompt"], r["completion"]),
        }
        for r in splits["train"]
    ]
    return {"original": original, "validation": splits["validation"], "test_ood": splits["test_ood"]}


def _seed_dir(cfg: SelfImproveConfig, seed: int) -> Path:
    return Path(cfg.output_dir) / f"seed{seed}"


def _configure(cfg: SelfImproveConfig) -> None:
    """Torch threads, and no per-call progress bars (the run prints one line per round)."""
    import datasets
    import torch
    import transformers

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def _base_job(cfg_dict: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train the seed's first model on the original data and measure it (round 0, shared by every arm)."""
    from transformers import AutoTokenizer

    from ...tasks.arithmetic import build_model, build_tokenizer

    cfg = SelfImproveConfig(**{**cfg_dict, "smoke": False})
    _configure(cfg)
    folder = _seed_dir(cfg, seed)
    done = folder / "base.json"
    if done.is_file():
        return json.loads(done.read_text())
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
    _write_jsonl(folder / CANDIDATES_FILE, candidates)  # round 1's candidates in every arm but fixed_pool
    stats.update(_data_stats(splits["original"], cfg.budget, seed))
    row = {"seed": seed, "round": 0, **stats, "seconds": time.perf_counter() - start}
    done.write_text(json.dumps(row, indent=1))
    print(f"seed {seed} base: " + _row_line(row), flush=True)
    return row


def _arm_job(cfg_dict: dict[str, Any], seed: int, arm: str) -> list[dict[str, Any]]:
    """Rounds 1..R of one arm from the seed's first model; rows are written to ``seed<k>/<arm>.json``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ...collapse import watch_from_keys

    cfg = SelfImproveConfig(**{**cfg_dict, "smoke": False})
    _configure(cfg)
    folder = _seed_dir(cfg, seed)
    done = folder / f"{arm}.json"
    if done.is_file():
        return json.loads(done.read_text())
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    model = AutoModelForCausalLM.from_pretrained(folder / "base")
    splits = _splits(cfg, seed)
    base = json.loads((folder / "base.json").read_text())
    detectors = watch_from_keys(list(DETECTOR_WATCH))
    rows = [{**base, "arm": arm, "detector": _detect(detectors, base, 0)}]
    # The first model's candidates: written by _base_job, except for fixed_pool, which asks for solutions only.
    if arm == "fixed_pool":
        candidates = sample_examples(
            model,
            tokenizer,
            _candidate_prompts(arm, cfg, splits, seed, 0),
            temperature=cfg.temperature,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.generation_batch_size,
            seed=_stream(seed, 0, 1),
        )
    else:
        candidates = _read_jsonl(folder / CANDIDATES_FILE)
    for round_ in range(1, cfg.rounds + 1):
        start = time.perf_counter()
        data = choose(
            arm,
            candidates,
            cfg.budget,
            original=splits["original"],
            reservoir_share=cfg.reservoir_share,
            tradeoff=cfg.tradeoff,
            complexity_strength=cfg.complexity_strength,
            n_clusters=cfg.n_clusters,
            seed=_stream(seed, round_, 4),
        )
        _train(
            model,
            tokenizer,
            data,
            steps=cfg.round_steps,
            learning_rate=cfg.round_learning_rate,
            cfg=cfg,
            seed=_stream(seed, round_, 5),
            output_dir=str(folder / arm / "trainer"),
            sampler=arm == "qdc",
        )
        _write_jsonl(folder / arm / f"round{round_}_data.jsonl", data)
        stats, candidates = _measure(model, tokenizer, cfg, splits, seed, round_, arm)
        stats.update(_data_stats(data, cfg.budget))
        row = {"seed": seed, "round": round_, "arm": arm, **stats, "seconds": time.perf_counter() - start}
        row["detector"] = _detect(detectors, row, round_)
        rows.append(row)
        print(f"seed {seed} {arm} round {round_}: " + _row_line(row), flush=True)
    model.save_pretrained(folder / arm / "model")
    done.write_text(json.dumps(rows, indent=1))
    return rows


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
    return level


def _row_line(row: dict[str, Any]) -> str:
    keys = ("valid", "gen_ops", "gen_unique", "data_ops", "acc_id", "acc_id_ops3", "acc_ood", "across_input_distinct_2")
    return ", ".join(f"{k} {row[k]:.3f}" for k in keys if k in row) + f" ({row.get('seconds', 0):.0f} s)"
