"""Calibrate the collapse detector for GRPO: planted collapse and reward hacking against healthy GRPO.

A tiny GPT-2 first learns the arithmetic task by supervised training (the warm-up of
the packaged recipe ``arithmetic/grpo_qdc``, saved and reused), then GRPO runs from it with
the rollout monitor under three rewards, with several seeds each:

- ``healthy``: the task's verifier (1 when every step and the answer are right);
- ``planted``: a reward that pays one fixed string, whatever the problem: the share of
  the target's word bigrams a completion contains (the policy converges on the target);
- ``hacking``: a verbosity hack: the reward pays length (words, up to a cap) and never
  checks the arithmetic, as a careless reward model can.

No detector acts during the runs; afterwards each logged series is replayed through a
:class:`~qdc_trainer.SeriesDetector` with the settings of ``DEFAULT_RL_WATCH`` and
other candidates, and the script prints, per series and condition, how many runs it
flagged and at which step (and, for healthy runs, the false alarms). Each run's rows are
saved under ``--out`` as JSON, so an interrupted calibration continues where it stopped
and ``--summarize`` rebuilds the tables from the rows alone.

    python benchmarks/calibrate_rl_collapse.py --seeds 0 1 2 3 4          # about 40 min on 2 CPU cores
    python benchmarks/calibrate_rl_collapse.py --summarize --out runs/rl_calibration
    python benchmarks/calibrate_rl_collapse.py --smoke                      # seconds (what CI runs)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CONDITIONS = ("healthy", "planted", "hacking")
TARGET = "Step 1: 1 + 1 = 2.\nAnswer: 2"
"""The fixed string the planted reward pays for."""
_WORDS = re.compile(r"\S+")

# candidate settings: (series, SeriesDetector settings). The rollout series come every step from a few prompts, so
# the smoothed candidates take the baseline from the first 5 observations and weigh a new one by 0.2.
_SMOOTH = dict(warmup=5, ema=0.2)


def _candidate(key: str, direction: str, warn: float, collapse: float, relative: bool = False, smooth: bool = True):
    settings = dict(direction=direction, relative=relative, warn_change=warn, collapse_change=collapse)
    return key, {**settings, **(_SMOOTH if smooth else {})}


CANDIDATES = [
    _candidate("qdc/rollout/across_prompt/distinct_2", "decrease", 0.1, 0.25, smooth=False),
    _candidate("qdc/rollout/across_prompt/distinct_2", "decrease", 0.1, 0.25),
    _candidate("qdc/rollout/across_prompt/distinct_2", "decrease", 0.15, 0.3),
    _candidate("qdc/rollout/across_prompt/self_bleu", "increase", 0.1, 0.25, smooth=False),
    _candidate("qdc/rollout/across_prompt/self_bleu", "increase", 0.1, 0.25),
    _candidate("qdc/rollout/across_prompt/self_bleu", "increase", 0.15, 0.3),
    _candidate("qdc/rollout/per_prompt/distinct_2", "decrease", 0.1, 0.25),
    _candidate("qdc/rollout/per_prompt/self_bleu", "increase", 0.1, 0.25),
    _candidate("qdc/rollout/distinct_answers", "decrease", 0.1, 0.25),
    _candidate("entropy", "decrease", 0.1, 0.35, relative=True),
    _candidate("entropy", "decrease", 0.35, 0.6, relative=True),
]


def _bigrams(text: str) -> set[tuple[str, str]]:
    words = _WORDS.findall(text)
    return set(zip(words, words[1:]))


def planted_reward(completions: list[str], **kwargs: Any) -> list[float]:
    """The share of :data:`TARGET`'s word bigrams a completion contains."""
    target = _bigrams(TARGET)
    return [len(_bigrams(c) & target) / len(target) for c in completions]


def hacking_reward(completions: list[str], **kwargs: Any) -> list[float]:
    """Length in words, up to 40 (never checks the arithmetic)."""
    return [min(len(_WORDS.findall(c)), 40) / 40 for c in completions]


def _reward(condition: str) -> Any:
    from qdc_trainer.cli.grpo import verifier_reward

    return {"healthy": verifier_reward, "planted": planted_reward, "hacking": hacking_reward}[condition]


def warm_model(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The warmed-up model (trained once, then reused from ``--sft-dir``), its tokenizer and the problems."""
    from qdc_trainer.cli.config import load_config
    from qdc_trainer.cli.grpo import warm_up
    from qdc_trainer.cli.run import load_model_and_tokenizer, load_splits

    overrides = ["--sft_output_dir", args.sft_dir, "--output_dir", os.path.join(args.out, "warmup")]
    if args.smoke:
        overrides += ["--smoke", "true"]
    cfg = load_config(args.recipe, overrides)
    model, tokenizer = load_model_and_tokenizer(cfg)
    splits = load_splits(cfg)
    return warm_up(cfg, model, tokenizer, splits["train"]), tokenizer, splits["train"]


def run_one(condition: str, seed: int, args: argparse.Namespace, warm: tuple[Any, Any, Any]) -> dict[str, Any]:
    """One GRPO run from the warmed-up weights; returns its logged series."""
    import copy

    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from qdc_trainer import QDCTrainerMixin, RolloutMonitorCallback
    from qdc_trainer.tasks.arithmetic import extract_answer

    class QDCGRPOTrainer(QDCTrainerMixin, GRPOTrainer):
        pass

    model, tokenizer, problems = warm
    prompts = Dataset.from_dict({"prompt": list(problems["prompt"])})
    config = GRPOConfig(
        output_dir=os.path.join(args.out, "scratch"),
        per_device_train_batch_size=args.prompts * args.generations,
        num_generations=args.generations,
        max_completion_length=args.max_tokens,
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        seed=seed,
        disable_tqdm=True,
        log_completions=False,
    )
    trainer = QDCGRPOTrainer(
        model=copy.deepcopy(model),
        args=config,
        reward_funcs=[_reward(condition)],
        train_dataset=prompts,
        processing_class=tokenizer,
        callbacks=[RolloutMonitorCallback(answer=extract_answer, success_threshold=None)],
    )
    start = time.perf_counter()
    trainer.train()
    series: dict[str, list[tuple[int, float]]] = {}
    for record in trainer.state.log_history:
        for key, value in record.items():
            if key.startswith("qdc/rollout/") or key in ("entropy", "reward"):
                series.setdefault(key, []).append((int(record["step"]), float(value)))
    return {"condition": condition, "seed": seed, "seconds": time.perf_counter() - start, "series": series}


def replay(row: dict[str, Any], key: str, settings: dict[str, Any]) -> dict:
    """First warning and collapse step of one series of one run under these settings, and its largest drift."""
    from qdc_trainer import SeriesDetector

    detector = SeriesDetector(key, **settings)
    worst = 0.0
    for step, value in row["series"].get(key, []):
        signal = detector.update(step, value)
        if signal.change is not None and math.isfinite(signal.change):
            worst = max(worst, signal.change)
    return {"warn": detector.first_warning_step, "collapse": detector.first_collapse_step, "worst": worst}


def summarize(rows: list[dict[str, Any]]) -> str:
    """Markdown tables: per candidate, runs flagged per condition with their warning steps; and the trajectories.

    Each count carries its one-sided 95% Clopper-Pearson bound (``qdc_trainer.experiments.stats``): an upper bound
    on the false-alarm rate of healthy runs (0 of 5 bounds it only below 0.45), a lower bound on the detection rate
    of collapsing ones (5 of 5 bounds it only above 0.55).
    """
    from qdc_trainer.experiments.stats import binomial_upper_bound

    lines = [
        "| series | thresholds | baseline, EMA | healthy: false alarms (rate, 95% upper bound) "
        "| planted: flagged (warning steps; rate, 95% lower bound) "
        "| hacking: flagged (warning steps; rate, 95% lower bound) | largest healthy drift |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, settings in CANDIDATES:
        direction, relative = settings["direction"], settings["relative"]
        warn, collapse = settings["warn_change"], settings["collapse_change"]
        cells = []
        worst_healthy = 0.0
        for condition in CONDITIONS:
            runs = [r for r in rows if r["condition"] == condition]
            results = [replay(r, key, settings) for r in runs]
            flagged = [x["warn"] for x in results if x["warn"] is not None]
            if not runs:
                cells.append("n/a")
            elif condition == "healthy":
                worst_healthy = max((x["worst"] for x in results), default=0.0)
                bound = binomial_upper_bound(len(flagged), len(runs))
                cells.append(f"{len(flagged)} / {len(runs)} (≤ {bound:.2f})")
            else:
                steps = ", ".join(str(s) for s in sorted(flagged)) or "none"
                bound = 1.0 - binomial_upper_bound(len(runs) - len(flagged), len(runs))  # misses bound detection
                cells.append(f"{len(flagged)} / {len(runs)} ({steps}; ≥ {bound:.2f})")
        limits = f"{warn:.0%} / {collapse:.0%}" if relative else f"{warn:.2f} / {collapse:.2f}"
        drift = f"{worst_healthy:.0%}" if relative else f"{worst_healthy:.3f}"
        name = f"`{key}` ({direction}{', relative' if relative else ''})"
        smoothing = f"first {settings.get('warmup', 1)}, {settings.get('ema', 0.5)}"
        lines.append(f"| {name} | {limits} | {smoothing} | " + " | ".join(cells) + f" | {drift} |")
    lines += [
        "",
        "| condition | runs | reward first → last | reward half-way (steps) | TRL entropy first → last "
        "| across-prompt distinct-2 first → last | seconds per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for condition in CONDITIONS:
        runs = [r for r in rows if r["condition"] == condition]
        if not runs:
            continue

        def ends(key: str) -> str:
            pairs = [(r["series"][key][0][1], r["series"][key][-1][1]) for r in runs if r["series"].get(key)]
            if not pairs:
                return "n/a"
            first = sum(p[0] for p in pairs) / len(pairs)
            last = sum(p[1] for p in pairs) / len(pairs)
            return f"{first:.2f} → {last:.2f}"

        seconds = sum(r["seconds"] for r in runs) / len(runs)
        halfway = ", ".join(str(_halfway(r["series"].get("reward", []))) for r in runs)
        lines.append(
            f"| {condition} | {len(runs)} | {ends('reward')} | {halfway} | {ends('entropy')} | "
            f"{ends('qdc/rollout/across_prompt/distinct_2')} | {seconds:.0f} |"
        )
    return "\n".join(lines)


def _halfway(series: list[tuple[int, float]], window: int = 5) -> int | None:
    """The first step at which the reward's running mean (``window`` logs) has made half its gain over the run
    (the moment the policy has visibly moved; a warning's delay is measured from it)."""
    if len(series) < 2 * window:
        return None
    values = [v for _, v in series]
    means = [
        sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
        for i in range(len(values))
    ]
    start, end = means[window - 1], means[-1]
    if end <= start:
        return None
    target = start + (end - start) / 2
    return next(series[i][0] for i in range(window - 1, len(means)) if means[i] >= target)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    parser.add_argument("--steps", type=int, default=60, help="GRPO steps per run")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--generations", type=int, default=8, help="completions per prompt")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per completion at most")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--recipe", default="arithmetic/grpo_qdc")
    parser.add_argument("--sft-dir", default="runs/grpo_sft", help="warmed-up model (made if absent)")
    parser.add_argument("--out", default="runs/rl_calibration")
    parser.add_argument("--summarize", action="store_true", help="only print the tables from the saved rows")
    parser.add_argument("--smoke", action="store_true", help="a few steps of one seed per condition")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.steps, args.prompts, args.generations, args.max_tokens = [0], 2, 2, 2, 8
    rows_dir = Path(args.out) / "rows"
    rows_dir.mkdir(parents=True, exist_ok=True)
    if not args.summarize:
        import torch
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        torch.set_num_threads(max(torch.get_num_threads(), 1))
        warm = warm_model(args)
        for seed in args.seeds:
            for condition in args.conditions:
                path = rows_dir / f"{condition}_{seed}.json"
                if path.is_file():
                    continue
                row = run_one(condition, seed, args, warm)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(row))
                os.replace(tmp, path)
                print(f"{condition} seed {seed}: {row['seconds']:.0f} s", flush=True)
    rows = [json.loads(p.read_text()) for p in sorted(rows_dir.glob("*.json"))]
    print(summarize(rows))
    return rows


if __name__ == "__main__":
    main()
