"""The self-improvement experiment: does training on the model's own filtered outputs collapse, and does QDC help?

Each seed trains a tiny model on the built-in arithmetic task (whole examples,
problem and solution, so that the model can write new problems). Then, for
``rounds`` rounds and for each arm, starting from that same model:

1. the current model samples ``candidates`` whole examples (problem and solution);
2. the verifier checks each one (:func:`qdc_trainer.tasks.arithmetic.verify`);
3. the arm's selection rule keeps ``budget`` of them;
4. the model is fine-tuned on the selection, which replaces the previous round's data.

Arms (same seeds, same number of candidates, same budget):

- ``quality``: verified-correct candidates, most confident first (mean token
  log-likelihood under the model that wrote them), as self-training and
  rejection-sampling pipelines do;
- ``qdc``: the same candidates scored with :func:`qdc_trainer.metrics.score_dataset`
  (verifier quality, step complexity, clusters of hashed n-grams), chosen with
  :func:`qdc_trainer.selection.select_budget` (verified only, deduplicated,
  cluster coverage, complexity) and trained with :class:`qdc_trainer.QDCSampler`;
- ``reservoir``: like ``quality``, but ``reservoir_share`` of the budget is drawn
  from the original data every round;
- ``fixed_pool``: the contrast; problems come from the original data's pool and
  the model writes only the solutions (selection as in ``quality``).

After every round the model is measured: the validity, complexity and distinctness
of what it generates, greedy accuracy by number of operations in distribution
(held-out problems) and out of distribution (new phrasings), the diversity of its
generations per input and across inputs (probe prompts: the opening words of each
template, several samples each), and the collapse detector's verdict on those
series. The run folder gets ``results.md`` (the table), ``results.json`` (every
row), one PNG per metric (arms on the same axes, mean over seeds with the range),
and a printed summary that checks the claims.

Run it with ``qdc self-improve --config recipes/arithmetic/self_improve.yaml``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .monitor import PREFIX as GEN_PREFIX

__all__ = [
    "ARMS",
    "METRICS",
    "SelfImproveConfig",
    "run_self_improvement",
    "sample_examples",
    "choose",
    "probe_prompts",
    "summarize",
    "write_results",
]

ARMS = ("quality", "qdc", "reservoir", "fixed_pool")
"""The selection rules the experiment can compare (see the module docstring)."""

METRICS: dict[str, str] = {
    "valid": "validity of generated examples (share verified correct)",
    "gen_ops": "complexity of valid generated problems (mean operations)",
    "gen_unique": "distinct problems among valid generated examples (share)",
    "data_ops": "complexity of the round's training data (mean operations)",
    "data_unique": "distinct problems in the round's training data (share; the original data: a budget-sized sample)",
    "data_distinct_2": "distinct-2 of the round's training data (the original data: a budget-sized sample)",
    "acc_id": "accuracy, in distribution (held-out problems)",
    "acc_id_ops1": "accuracy, in distribution, 1 operation",
    "acc_id_ops2": "accuracy, in distribution, 2 operations",
    "acc_id_ops3": "accuracy, in distribution, 3 operations",
    "acc_ood": "accuracy, out of distribution (new phrasings)",
    "acc_ood_ops3": "accuracy, out of distribution, 3 operations",
    "per_input_distinct_2": "generation distinct-2 per input (probe samples)",
    "across_input_distinct_2": "generation distinct-2 across inputs (probe samples)",
    "per_input_self_bleu": "generation self-BLEU per input (probe samples; higher = less diverse)",
    "detector": "collapse detector level (0 fine, 1 warning, 2 collapse)",
}
"""Every per-round measurement, with its meaning (the keys of a results row)."""

RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"
CONFIG_FILE = "config.json"
CANDIDATES_FILE = "round0_candidates.jsonl"
DETECTOR_WATCH = (
    f"{GEN_PREFIX}per_input/distinct_2",
    f"{GEN_PREFIX}across_input/distinct_2",
    f"{GEN_PREFIX}per_input/self_bleu",
    "gen_unique:decrease",
)
"""What the collapse detector watches, one observation per round: the probe series with their calibrated
thresholds (:data:`~qdc_trainer.collapse.KNOWN_SERIES`), and the share of distinct problems among the valid
generated examples (a relative drop of 15% warns, 35% is collapse). No accuracy or verifier signal is used."""


@dataclass
class SelfImproveConfig:
    """Settings of :func:`run_self_improvement` (the keys of ``recipes/arithmetic/self_improve.yaml``)."""

    experiment: str = field(
        default="self_improve",
        metadata={
            "help": "marks a self-improvement recipe, so that `qdc train` runs it too",
            "choices": ["self_improve"],
        },
    )
    output_dir: str = field(default="runs/self_improve", metadata={"help": "run folder (results, plots, models)"})
    arms: list[str] = field(
        default_factory=lambda: ["quality", "qdc", "reservoir", "fixed_pool"],
        metadata={"help": f"selection rules to compare, from {ARMS}"},
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "one full repetition per seed"})
    rounds: int = field(default=5, metadata={"help": "generate-select-train rounds after the first training"})
    candidates: int = field(default=2000, metadata={"help": "examples the model generates per round"})
    budget: int = field(default=500, metadata={"help": "examples kept per round (the next training set)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the candidates and probes"})
    seed_examples: int = field(default=4000, metadata={"help": "size of the original training data"})
    seed_noise: float = field(default=0.0, metadata={"help": "share of corrupted examples in the original data"})
    base_steps: int = field(default=1000, metadata={"help": "training steps on the original data"})
    base_learning_rate: float = field(default=3e-3, metadata={"help": "learning rate on the original data"})
    round_steps: int = field(default=100, metadata={"help": "training steps per round"})
    round_learning_rate: float = field(default=3e-4, metadata={"help": "learning rate per round"})
    batch_size: int = field(default=32, metadata={"help": "training batch size"})
    reservoir_share: float = field(
        default=0.25, metadata={"help": "share of the budget from the original data (reservoir arm)"}
    )
    tradeoff: float = field(
        default=0.0, metadata={"help": "QDC trade-off λ of the selection and the sampler (0 diversity .. 1 quality)"}
    )
    complexity_strength: float = field(
        default=0.5, metadata={"help": "weight of complexity in the QDC selection and sampler"}
    )
    n_clusters: int = field(default=16, metadata={"help": "clusters of the candidates (QDC arm)"})
    eval_size: int = field(default=300, metadata={"help": "in-distribution accuracy problems"})
    ood_size: int = field(default=300, metadata={"help": "out-of-distribution accuracy problems"})
    probe_samples: int = field(
        default=8, metadata={"help": "samples per probe prompt (one probe per template opening)"}
    )
    max_new_tokens: int = field(default=100, metadata={"help": "longest generated example, in tokens"})
    generation_batch_size: int = field(default=250, metadata={"help": "sequences per generate call"})
    n_layer: int = field(default=4, metadata={"help": "layers of the tiny model"})
    n_embd: int = field(default=128, metadata={"help": "width of the tiny model"})
    workers: int = field(
        default=2, metadata={"help": "processes running seeds and arms in parallel (one torch thread each)"}
    )
    threads: int = field(
        default=0, metadata={"help": "torch threads per process (0: 1 with several workers, else torch's default)"}
    )
    report: bool = field(default=True, metadata={"help": "write the PNG plots (needs the plot extra)"})
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "discard a previous run in output_dir instead of resuming it "
            "(only what qdc self-improve wrote there; "
            "a folder without its config.json, the current folder, its parents, home and / are refused)"
        },
    )
    smoke: bool = field(
        default=False,
        metadata={
            "help": "a tiny run that only checks the machinery (a flag on the command line wins over its settings)"
        },
    )

    def __post_init__(self) -> None:
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms or len(set(self.arms)) != len(self.arms):
            raise ValueError(f"arms={self.arms!r} must be distinct names from {ARMS}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds={self.seeds!r} must be distinct ints >= 0")
        for name in (
            "rounds",
            "candidates",
            "budget",
            "seed_examples",
            "base_steps",
            "round_steps",
            "batch_size",
            "n_clusters",
            "eval_size",
            "ood_size",
            "max_new_tokens",
            "generation_batch_size",
            "workers",
            "n_layer",
            "n_embd",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.probe_samples < 2:
            raise ValueError(f"probe_samples={self.probe_samples} must be at least 2 (diversity needs two samples)")
        if self.budget > self.candidates:
            raise ValueError(f"budget={self.budget} is larger than candidates={self.candidates}")
        for name in ("seed_noise", "reservoir_share", "tradeoff"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1]")
        if self.temperature <= 0 or self.complexity_strength < 0 or self.threads < 0:
            raise ValueError("temperature must be > 0, complexity_strength >= 0 and threads >= 0")
        if self.smoke:
            for name, value in SMOKE.items():
                setattr(self, name, value)


SMOKE: dict[str, Any] = dict(
    seeds=[0],
    rounds=2,
    candidates=48,
    budget=16,
    seed_examples=64,
    base_steps=4,
    round_steps=2,
    batch_size=8,
    n_clusters=4,
    eval_size=12,
    ood_size=6,
    probe_samples=2,
    max_new_tokens=40,
    n_layer=1,
    n_embd=32,
)
"""What ``smoke: true`` sets: every stage runs once on almost nothing."""


# --------------------------------------------------------------------------- generating and scoring candidates


def _split_example(text: str) -> tuple[str, str]:
    """``(prompt, completion)`` of a generated whole example: the prompt is its first line (with the newline)."""
    head, newline, rest = text.partition("\n")
    return (head + newline, rest) if newline else (text, "")


def _safe_verify(prompt: str, completion: str) -> float:
    """:func:`verify`, with 0.0 for a prompt that holds no readable problem."""
    from .tasks.arithmetic import verify

    try:
        return verify(prompt, completion)
    except ValueError:
        return 0.0


def _num_ops(prompt: str) -> int:
    from .tasks.arithmetic import parse_problem

    try:
        return parse_problem(prompt).num_ops
    except ValueError:
        return 0


def _problem_key(prompt: str) -> str:
    """The problem a prompt states, whatever its phrasing (the prompt itself when it holds none)."""
    from .tasks.arithmetic import parse_problem

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
    from .generation import generate

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

    from .metrics import VerifierScorer, score_dataset
    from .selection import select_dataset

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


# --------------------------------------------------------------------------- measuring a model


def probe_prompts() -> list[str]:
    """The opening words of each training template's prompt (``'What is'``, ``'Compute'``, ...)."""
    from .tasks.arithmetic import TEMPLATES

    return [t.prompt.split("{")[0].strip() for t in TEMPLATES]


def _data_stats(rows: Sequence[dict[str, Any]], size: int, seed: int = 0) -> dict[str, float]:
    """Complexity and distinctness of a training set. Distinct-n falls as a collection grows, so ``data_unique``
    and ``data_distinct_2`` are measured on ``size`` rows (a seeded sample of a larger set): the original data
    and a round's budget are then compared at the same size."""
    from .metrics import distinct_n

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
    from .tasks.arithmetic import generate_completions, verify

    prompts = list(split["prompt"])
    completions = generate_completions(model, tokenizer, prompts, max_new_tokens=80, batch_size=150, progress=False)
    correct = np.array([verify(p, c) for p, c in zip(prompts, completions)])
    ops = np.array(split["num_ops"])
    out = {prefix: float(correct.mean())}
    for k in (1, 2, 3):
        out[f"{prefix}_ops{k}"] = float(correct[ops == k].mean()) if (ops == k).any() else math.nan
    return out


def _probe_stats(model: Any, tokenizer: Any, cfg: SelfImproveConfig, seed: int) -> dict[str, float]:
    from .monitor import measure_generations

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

    from .sampler import QDCSampler
    from .tasks.arithmetic import tokenize_examples
    from .trainer import QDCTrainer

    if not rows:
        return  # nothing survived selection: the model is unchanged this round
    columns = ["prompt", "completion"] + (["quality", "complexity", "cluster"] if sampler else [])
    ds = Dataset.from_list([{c: r[c] for c in columns} for r in rows])
    ds = ds.map(
        tokenize_examples,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer, "mask_prompt": False},
        remove_columns=["prompt", "completion"],
    )
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
    from .tasks.arithmetic import ArithmeticConfig, make_splits

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

    from .tasks.arithmetic import build_model, build_tokenizer

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

    from .collapse import watch_from_keys

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


# --------------------------------------------------------------------------- the whole run


def run_self_improvement(cfg: SelfImproveConfig) -> dict[str, Any]:
    """Run every seed and arm (resuming finished ones), write the table and plots, print the summary.

    Returns ``{"rows", "summary", "table", "figures", "output_dir"}``.
    """
    out = Path(cfg.output_dir)
    ignored = ("experiment", "workers", "threads", "report", "overwrite")  # they do not change the results
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ignored}
    stored = out / CONFIG_FILE
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {str(out)!r} is a file, not a folder: choose another output_dir")
    if stored.is_file() and not cfg.overwrite:
        previous, current = json.loads(stored.read_text()), json.loads(json.dumps(settings))
        if previous != current:
            changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
            raise ValueError(
                f"{out} holds a run with other settings ({', '.join(changed)}); choose another "
                "output_dir or pass --overwrite true"
            )
    if cfg.overwrite and out.exists():
        _remove_previous_run(out)
    if cfg.report:
        from ._optional import require

        require("matplotlib", "plot", "the plots (report: true)")
    out.mkdir(parents=True, exist_ok=True)
    stored.write_text(json.dumps(settings, indent=1))
    start = time.perf_counter()
    cfg_dict = dataclasses.asdict(cfg)
    if cfg.workers > 1:
        cfg_dict["threads"] = cfg.threads or 1
    results = _run_jobs(cfg_dict, cfg.seeds, cfg.arms, cfg.workers)
    rows = [row for arm_rows in results for row in arm_rows]
    (out / RESULTS_FILE).write_text(json.dumps(rows, indent=1))
    summary = summarize(rows, cfg.arms)
    summary["seconds"] = time.perf_counter() - start
    table, figures = write_results(rows, out, arms=cfg.arms, plots=cfg.report, summary=summary, settings=settings)
    print(summary["text"])
    print(f"\ntable: {table}")
    return {
        "rows": rows,
        "summary": summary,
        "table": str(table),
        "figures": [str(f) for f in figures],
        "output_dir": str(out),
    }


_RUN_KEYS = ("arms", "seeds", "rounds", "candidates", "budget")
"""Keys every ``config.json`` written by :func:`run_self_improvement` holds: its run marker."""


def _is_run_folder(out: Path) -> bool:
    """Whether ``out`` holds a run of :func:`run_self_improvement`: its ``config.json`` is a JSON object with the
    experiment's settings (a model folder's ``config.json`` is not)."""
    try:
        stored = json.loads((out / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(stored, dict) and all(k in stored for k in _RUN_KEYS)


def _run_outputs(out: Path) -> list[Path]:
    """What a run wrote into ``out``, by name: its settings, results, table and figures, and its ``seed<k>`` folders."""
    import re

    names = {CONFIG_FILE, RESULTS_FILE, TABLE_FILE, "overview.png", *(f"{m}.png" for m in METRICS)}
    return sorted(
        p
        for p in out.iterdir()
        if (p.name in names and p.is_file()) or (re.fullmatch(r"seed\d+", p.name) and p.is_dir())
    )


def _remove_previous_run(out: Path) -> None:
    """``--overwrite true``: delete what an earlier run wrote into ``out``, and nothing else.

    Refuses (``ValueError``) the current folder, any folder above it, the home folder and its parents, the
    filesystem root, a path that is not a folder, and a non-empty folder without the run marker (``config.json``
    with the experiment's settings). Other files in a run folder are kept (and logged).
    """
    import logging
    import shutil

    where = out.resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    protected = [
        (where == Path(where.anchor), "the filesystem root"),
        (cwd == where or where in cwd.parents, "the current folder or a folder above it"),
        (home == where or where in home.parents, "the home folder or a folder above it"),
    ]
    for hit, what in protected:
        if hit:
            raise ValueError(
                f"--overwrite true: output_dir {str(out)!r} is {what}; qdc self-improve never deletes "
                "it. Choose a folder of its own (e.g. --output_dir runs/self_improve)"
            )
    if not out.is_dir():
        raise ValueError(f"--overwrite true: output_dir {str(out)!r} is not a folder; choose another output_dir")
    if not any(out.iterdir()):
        return
    if not _is_run_folder(out):
        raise ValueError(
            f"--overwrite true: {str(out)!r} holds no self-improvement run (no {CONFIG_FILE} written by "
            "qdc self-improve), so nothing in it was written by this tool; refusing to delete it. "
            "Choose a new or empty output_dir, or delete the folder yourself"
        )
    log = logging.getLogger(__name__)
    for path in _run_outputs(out):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    kept = sorted(p.name for p in out.iterdir())
    log.warning(
        "--overwrite true: removed the earlier run in %s%s",
        out,
        f"; kept what it did not write: {', '.join(kept)}" if kept else "",
    )


def _run_jobs(cfg_dict: dict[str, Any], seeds: Sequence[int], arms: Sequence[str], workers: int) -> list[list[dict]]:
    """Each seed's first model, then its arms; with several workers an arm starts as soon as its seed's first model
    is ready. Returns the arms' rows in the order (seed, arm)."""
    from tqdm.auto import tqdm

    total = len(seeds) * (1 + len(arms))
    if workers <= 1:
        out = []
        with tqdm(total=total, desc="first models and arms") as bar:
            for seed in seeds:
                _base_job(cfg_dict, seed)
                bar.update()
                for arm in arms:
                    out.append(_arm_job(cfg_dict, seed, arm))
                    bar.update()
        return out
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    done: dict[tuple[int, str], list[dict]] = {}
    context = multiprocessing.get_context("spawn")
    with (
        ProcessPoolExecutor(max_workers=min(workers, total), mp_context=context) as pool,
        tqdm(total=total, desc="first models and arms") as bar,
    ):
        pending = {pool.submit(_base_job, cfg_dict, seed): (seed, None) for seed in seeds}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                seed, arm = pending.pop(future)
                result = future.result()  # re-raises a worker's error
                bar.update()
                if arm is None:
                    pending.update({pool.submit(_arm_job, cfg_dict, seed, a): (seed, a) for a in arms})
                else:
                    done[(seed, arm)] = result
    return [done[(seed, arm)] for seed in seeds for arm in arms]


# --------------------------------------------------------------------------- summary, table and plots


def _aggregate(
    rows: Sequence[dict[str, Any]], arm: str, metric: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rounds, mean, min, max) of ``metric`` over seeds for ``arm``."""
    by_round: dict[int, list[float]] = {}
    for r in rows:
        if r.get("arm") == arm and metric in r and r[metric] is not None and math.isfinite(r[metric]):
            by_round.setdefault(r["round"], []).append(float(r[metric]))
    rounds = np.array(sorted(by_round))
    values = [np.array(by_round[k]) for k in rounds]
    return (
        rounds,
        np.array([v.mean() for v in values]),
        np.array([v.min() for v in values]),
        np.array([v.max() for v in values]),
    )


def _first_round(
    rows: Sequence[dict[str, Any]], arm: str, seed: int, test: Callable[[dict[str, Any]], bool]
) -> int | None:
    for r in sorted((r for r in rows if r.get("arm") == arm and r["seed"] == seed), key=lambda r: r["round"]):
        if test(r):
            return r["round"]
    return None


def _first_warnings(rows: Sequence[dict[str, Any]], arm: str, seeds: Sequence[int]) -> dict[int, int | None]:
    """Per seed, the first round in which the arm's collapse detector warned (None: never)."""
    return {s: _first_round(rows, arm, s, lambda r: r.get("detector", 0) >= 1) for s in seeds}


def summarize(rows: Sequence[dict[str, Any]], arms: Sequence[str]) -> dict[str, Any]:
    """Per arm: the first and last round's means over seeds, when the detector warned, and which claims held.

    Claims (each True or False, with the numbers that decide it):

    - ``quality_collapses``: in the quality arm, validity rose while complexity and
      distinctness of the training data and in-distribution accuracy fell (means over seeds);
    - ``qdc_beats_quality_id`` / ``qdc_beats_quality_ood``: the QDC arm ends with the
      higher accuracy, in the mean and in a majority of seeds;
    - ``detector_early``: in every seed whose quality arm lost 5 points of
      in-distribution accuracy, the detector warned no later than that round.
    """
    seeds = sorted({r["seed"] for r in rows})
    last = max(r["round"] for r in rows)
    per_arm: dict[str, dict[str, Any]] = {}
    for arm in arms:
        arm_rows = [r for r in rows if r.get("arm") == arm]
        if not arm_rows:
            continue
        first = {m: _mean(arm_rows, 0, m) for m in METRICS if m != "detector"}
        final = {m: _mean(arm_rows, last, m) for m in METRICS if m != "detector"}
        warned = _first_warnings(rows, arm, seeds)
        per_arm[arm] = {"round_0": first, "final": final, "warned": warned}
    claims: dict[str, Any] = {}
    if "quality" in per_arm:
        q0, qf = per_arm["quality"]["round_0"], per_arm["quality"]["final"]
        claims["quality_collapses"] = {
            "held": bool(
                qf["valid"] > q0["valid"]
                and qf["data_ops"] < q0["data_ops"]
                and qf["data_unique"] < q0["data_unique"]
                and qf["acc_id"] < q0["acc_id"]
            ),
            "valid": [q0["valid"], qf["valid"]],
            "data_ops": [q0["data_ops"], qf["data_ops"]],
            "data_unique": [q0["data_unique"], qf["data_unique"]],
            "acc_id": [q0["acc_id"], qf["acc_id"]],
        }
        drops = {
            s: _first_round(rows, "quality", s, lambda r, s=s: r["acc_id"] < _seed_value(rows, s, 0, "acc_id") - 0.05)
            for s in seeds
        }
        warned = per_arm["quality"]["warned"]
        dropped = {s: d for s, d in drops.items() if d is not None}
        claims["detector_early"] = {
            "held": bool(dropped) and all(warned[s] is not None and warned[s] <= d for s, d in dropped.items()),
            "accuracy_drop_round": drops,
            "warning_round": warned,
        }
    if "quality" in per_arm and "qdc" in per_arm:
        for name, metric in (("qdc_beats_quality_id", "acc_id"), ("qdc_beats_quality_ood", "acc_ood")):
            wins = sum(
                _seed_value(rows, s, last, metric, "qdc") > _seed_value(rows, s, last, metric, "quality") for s in seeds
            )
            q, d = per_arm["quality"]["final"][metric], per_arm["qdc"]["final"][metric]
            claims[name] = {
                "held": bool(d > q and wins > len(seeds) / 2),
                "qdc": d,
                "quality": q,
                "seeds_won": f"{wins}/{len(seeds)}",
            }
    return {
        "arms": per_arm,
        "claims": claims,
        "seeds": seeds,
        "rounds": last,
        "text": _summary_text(per_arm, claims, seeds, last),
    }


def _mean(rows: Sequence[dict[str, Any]], round_: int, metric: str) -> float:
    values = [
        r[metric] for r in rows if r["round"] == round_ and r.get(metric) is not None and math.isfinite(r[metric])
    ]
    return float(np.mean(values)) if values else math.nan


def _seed_value(rows: Sequence[dict[str, Any]], seed: int, round_: int, metric: str, arm: str | None = None) -> float:
    for r in rows:
        if r["seed"] == seed and r["round"] == round_ and (arm is None or r.get("arm") == arm):
            return float(r[metric])
    return math.nan


def _summary_text(per_arm: dict[str, Any], claims: dict[str, Any], seeds: list[int], last: int) -> str:
    lines = [f"Self-improvement: {len(seeds)} seed(s), rounds 0..{last} (means over seeds; round 0 is the first model)"]
    shown = ("valid", "data_ops", "data_unique", "acc_id", "acc_id_ops3", "acc_ood", "across_input_distinct_2")
    lines.append(f"{'arm':<11}" + "".join(f"{m:>26}" for m in shown))
    for arm, info in per_arm.items():
        cells = "".join(f"{_fmt(info['round_0'][m]) + ' -> ' + _fmt(info['final'][m]):>26}" for m in shown)
        lines.append(f"{arm:<11}{cells}")
    for arm, info in per_arm.items():
        warned = ", ".join(
            f"seed {s}: {'round ' + str(w) if w is not None else 'never'}" for s, w in info["warned"].items()
        )
        lines.append(f"detector warned ({arm}): {warned}")
    for name, claim in claims.items():
        detail = {k: v for k, v in claim.items() if k != "held"}
        lines.append(
            f"claim {name}: {'held' if claim['held'] else 'did not hold'} {json.dumps(detail, default=_json_num)}"
        )
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _json_num(value: Any) -> Any:
    return round(float(value), 3) if isinstance(value, (float, np.floating)) else str(value)


HEADLINE_COLUMNS = ("valid", "gen_unique", "data_ops", "acc_id", "acc_id_ops3", "acc_ood")
TABLE_COLUMNS = (
    "valid",
    "gen_ops",
    "gen_unique",
    "data_ops",
    "data_unique",
    "acc_id",
    "acc_id_ops1",
    "acc_id_ops3",
    "acc_ood",
    "per_input_distinct_2",
    "across_input_distinct_2",
    "detector",
)


def write_results(
    rows: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    arms: Sequence[str],
    plots: bool = True,
    summary: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> tuple[Path, list[Path]]:
    """``results.md`` (mean ± std over seeds, per round and arm; the detector column counts seeds that warned)
    and, with ``plots``, one PNG per metric with the arms on the same axes. Returns the table and the figures."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = sorted({r["seed"] for r in rows})
    rounds = sorted({r["round"] for r in rows})
    firsts = {arm: _first_warnings(rows, arm, seeds) for arm in arms}
    header = ["round", "arm", *TABLE_COLUMNS]
    last = rounds[-1]
    lines = [
        "# Self-improvement results",
        "",
        f"## Round 0 → round {last}",
        "",
        f"Means over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}): the first model (trained on the original "
        f"data; its data columns describe the original data), then the model after round {last}, ± the standard "
        "deviation between seeds. The last column is the round in which each seed's collapse detector first warned.",
        "",
        "| arm | " + " | ".join(HEADLINE_COLUMNS) + " | detector warned |",
        "|---|" + "---|" * (len(HEADLINE_COLUMNS) + 1),
    ]
    for arm in arms:
        sel = [r for r in rows if r.get("arm") == arm]
        if not sel:
            continue
        cells = []
        for m in HEADLINE_COLUMNS:
            start = _mean(sel, 0, m)
            end = np.array([r[m] for r in sel if r["round"] == last and r.get(m) is not None and math.isfinite(r[m])])
            spread = f" ± {end.std():.2f}" if len(end) > 1 else ""
            cells.append(f"{_fmt(start)} → {_fmt(float(end.mean())) if len(end) else 'n/a'}{spread}")
        warned = firsts[arm].values()
        cells.append(", ".join("–" if w is None else str(w) for w in warned))
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Every round",
        "",
        "Means over the seeds, ± the standard deviation between seeds. `data_*` describe the data each round "
        "trained on. `detector`: seeds whose collapse detector had warned (or declared collapse) by that round.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for round_ in rounds:
        for arm in arms:
            sel = [r for r in rows if r.get("arm") == arm and r["round"] == round_]
            if not sel:
                continue
            cells = [str(round_), arm]
            for m in TABLE_COLUMNS:
                if m == "detector":
                    warned = sum(firsts[arm][r["seed"]] is not None and firsts[arm][r["seed"]] <= round_ for r in sel)
                    cells.append(f"{warned}/{len(sel)}")
                    continue
                values = np.array([r[m] for r in sel if r.get(m) is not None and math.isfinite(r[m])])
                cells.append(
                    "n/a"
                    if not len(values)
                    else f"{values.mean():.3f}" + (f" ± {values.std():.3f}" if len(values) > 1 else "")
                )
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Columns: " + "; ".join(f"`{m}` {METRICS[m]}" for m in TABLE_COLUMNS), ""]
    if settings:
        lines += ["Settings: " + ", ".join(f"`{k}: {v}`" for k, v in settings.items()), ""]
    if summary is not None:
        lines += ["## Summary", "", "```", summary["text"], "```", ""]
    table = out / TABLE_FILE
    table.write_text("\n".join(lines))
    figures = _plot(rows, out, arms) if plots else []
    return table, figures


def _plot(rows: Sequence[dict[str, Any]], out: Path, arms: Sequence[str]) -> list[Path]:
    from .report import color, figure_class

    Figure = figure_class()
    figures = []
    metrics = [m for m in METRICS if m != "detector" and any(m in r for r in rows)]
    seeds = sorted({r["seed"] for r in rows})
    firsts = {arm: sorted({w for w in _first_warnings(rows, arm, seeds).values() if w is not None}) for arm in arms}
    grid = Figure(figsize=(16, 3.2 * math.ceil(len(metrics) / 4)))
    axes = grid.subplots(math.ceil(len(metrics) / 4), 4, squeeze=False).ravel()
    for i, metric in enumerate(metrics):
        single = Figure(figsize=(5.5, 3.6))
        for ax in (single.add_subplot(), axes[i]):
            for j, arm in enumerate(arms):
                rounds, mean, lo, hi = _aggregate(rows, arm, metric)
                if not len(rounds):
                    continue
                ax.plot(rounds, mean, marker="o", color=color(j), label=arm)
                ax.fill_between(rounds, lo, hi, color=color(j), alpha=0.15, linewidth=0)
                warned = firsts[arm]
                if warned:  # the first warning round of each seed, on the mean curve
                    ax.scatter(warned, np.interp(warned, rounds, mean), marker="v", s=60, color=color(j), zorder=5)
            ax.set_title(METRICS[metric], fontsize=9)
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
        if single.axes[0].get_legend_handles_labels()[0]:
            single.axes[0].legend(fontsize=8)
        single.tight_layout()
        path = out / f"{metric}.png"
        single.savefig(path, dpi=110)
        figures.append(path)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    grid.suptitle("Self-improvement: arms over rounds (mean over seeds, shaded: range; ▼ first detector warning)")
    grid.tight_layout()
    path = out / "overview.png"
    grid.savefig(path, dpi=72)
    figures.insert(0, path)
    return figures
