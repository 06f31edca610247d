"""The main job under SFT, against the baselines a practitioner tries first: the evidence of docs/evidence/sft.md.

Arms, all from the packaged recipe ``arithmetic/sft_qdc`` (the main job) with the same model, data, steps and learning
rate; only the sampling of the training data differs:

- ``plain``: the plain ``Trainer``, uniform shuffling (``arithmetic/sft_baseline``);
- ``filter``: the examples the task's verifier rejects are dropped, then the plain ``Trainer`` (uniform);
- ``quality``: ``QDCSampler`` with quality weighting only (``tradeoff`` 1, no complexity term, no online terms);
- ``qdc``: ``QDCSampler`` at the recipe's settings (the main job);
- ``qdc_no_quality``: the same without the quality term (``quality_strength`` 0).

Each arm runs on the recipe's noisy data (``noise`` 0.2: a fifth of the solutions has a wrong step or answer) and on
clean data (``noise`` 0, where the filter drops nothing), for every seed; the seed sets the data (``task_seed``), the
initial model and the order of training, and is shared by the arms, so their differences are paired by seed. Each run
writes one JSON row into ``--out`` (greedy accuracy on held-out problems in distribution, ID, and in phrasings never
trained on, OOD); rows that exist are skipped, so an interrupted grid continues. ``--summarize`` only builds the
tables from the rows.

The runs are the recipe shortened (``--steps``, default 600 of its 1,500) so that the grid fits a CPU core: the
monitor, the detector and the report are off, which do not change the training.

    nice -n 10 python benchmarks/sft_evidence.py --seeds 0 1 2 3 4 --out docs/evidence/sft_rows   # the grid
    python benchmarks/sft_evidence.py --summarize --out docs/evidence/sft_rows --page docs/evidence/sft.md  # tables
    python benchmarks/sft_evidence.py --smoke --out /tmp/sft_smoke                               # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECIPE = "arithmetic/sft_qdc"  # the packaged recipe
ARMS: dict[str, list[str]] = {
    "plain": ["--trainer", "plain", "--sampler", "false"],
    "filter": ["--trainer", "plain", "--sampler", "false"],
    "quality": [
        "--tradeoff",
        "1.0",
        "--complexity_strength",
        "0",
        "--example_loss_strength",
        "0",
        "--cluster_loss_strength",
        "0",
    ],  # fmt: skip
    "qdc": [],
    "qdc_no_quality": ["--quality_strength", "0"],
}
NOISES = (0.2, 0.0)
COMMON = [
    "--monitor", "false", "--detector", "false", "--report", "false", "--eval_strategy", "no",
    "--report_to", "none", "--disable_tqdm", "true", "--logging_steps", "50",
]  # fmt: skip


def row_path(out: Path, arm: str, noise: float, seed: int) -> Path:
    return out / f"{arm}_noise{noise:g}_seed{seed}.json"


def run_one(arm: str, noise: float, seed: int, args: argparse.Namespace, scored: dict) -> dict[str, Any]:
    """Train one arm on one data set and seed; returns its row (accuracies, sizes, time)."""
    import torch

    from qdc_trainer.cli.config import load_config
    from qdc_trainer.cli.run import build_trainer, load_model_and_tokenizer, load_splits, score_training_data
    from qdc_trainer.tasks import arithmetic

    torch.set_num_threads(1)
    overrides = [
        *COMMON, *ARMS[arm], "--noise", str(noise), "--task_seed", str(seed), "--seed", str(seed),
        "--max_steps", str(args.steps), "--output_dir", str(Path(args.scratch) / f"{arm}_{noise:g}_{seed}"),
        "--final_eval_size", str(args.eval_size),
    ]  # fmt: skip
    if args.smoke:
        overrides += ["--smoke", "true", "--max_steps", str(args.steps), "--final_eval_size", "8"]
    cfg = load_config(RECIPE, overrides)
    start = time.perf_counter()
    key = (noise, seed)
    if key not in scored:
        splits = load_splits(cfg)
        scored[key] = (splits, score_training_data(cfg, splits["train"]))
    splits, train = scored[key]
    if arm == "filter":
        train = train.filter(lambda q: q >= 1.0, input_columns="quality")
    model, tokenizer = load_model_and_tokenizer(cfg)
    trainer = build_trainer(cfg, model, tokenizer, train, splits["validation"], [])
    trainer.train()
    row: dict[str, Any] = {"arm": arm, "noise": noise, "seed": seed, "steps": args.steps, "train_size": len(train)}
    model = trainer.model.eval()
    for split, name in (("validation", "acc_id"), ("test_ood", "acc_ood")):
        prompts = list(splits[split]["prompt"][: cfg.qdc.final_eval_size])
        completions = arithmetic.generate_completions(model, tokenizer, prompts)  # greedy
        solved = [int(arithmetic.verify(p, c)) for p, c in zip(prompts, completions)]
        row[name] = sum(solved) / len(solved)
        row[f"{name}_solved"] = "".join(map(str, solved))  # per problem, in order: for the bootstrap
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def grid(args: argparse.Namespace) -> list[tuple[str, float, int]]:
    """The runs, in the order they are made: first the arms the primary claims need (noisy data: qdc, filter,
    plain; clean data: qdc, plain) for every seed, then the others. On clean data the filter drops nothing, so
    ``filter`` is ``plain`` there and is not run."""
    primary = {0.2: ("qdc", "filter", "plain"), 0.0: ("qdc", "plain")}
    runs = [
        (arm, noise, seed)
        for seed in args.seeds
        for noise in args.noises
        for arm in primary.get(noise, tuple(ARMS))
        if arm in args.arms
    ]
    runs += [
        (arm, noise, seed)
        for seed in args.seeds
        for noise in args.noises
        for arm in args.arms
        if (arm, noise, seed) not in runs and not (arm == "filter" and noise == 0.0)
    ]
    return runs


def run_grid(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scored: dict = {}
    for arm, noise, seed in grid(args):
        path = row_path(out, arm, noise, seed)
        if path.is_file():
            continue
        if (noise, seed) not in scored:
            scored.clear()  # one data set in memory at a time
        row = run_one(arm, noise, seed, args, scored)
        path.write_text(json.dumps(row, indent=1, sort_keys=True) + "\n")
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("_solved")}), flush=True)


CLAIMS: list[tuple[str, str, float, str, str, float, bool]] = [
    # (arm, reference, noise, measure, claim, threshold, primary)
    ("qdc", "filter", 0.2, "acc_ood", "above", 0.0, True),
    ("qdc", "plain", 0.0, "acc_id", "above", -0.03, True),
    ("qdc", "plain", 0.2, "acc_id", "above", 0.0, False),
    ("qdc", "plain", 0.2, "acc_ood", "above", 0.0, False),
    ("qdc", "filter", 0.2, "acc_id", "above", 0.0, False),
    ("quality", "filter", 0.2, "acc_ood", "above", 0.0, False),
    ("qdc", "qdc_no_quality", 0.2, "acc_ood", "above", 0.0, False),
    ("qdc", "plain", 0.0, "acc_ood", "above", -0.03, False),
]
"""The claims of docs/evidence/sft.md, written before the runs: ``arm − reference`` on ``measure`` is ``claim``
(above or below) ``threshold``; the secondary ones' p values are Holm-corrected together."""
NAMES = {"acc_id": "ID accuracy", "acc_ood": "OOD accuracy"}
MIN_SEEDS = 3
"""A verdict needs this many seeds: with 2, equal differences give a t interval of width 0 (a spread of 0 is
what 2 discrete accuracies often show), and any other spread a useless one (t_{0.975, 1} = 12.7)."""


FIRST_SEEDS = 5
"""The design's seeds (0-4); seeds from here on were added after the first verdicts were read."""


def _number(x: float, signed: bool = False) -> str:
    return "n/a" if x != x else f"{x:{'+' if signed else ''}.3f}"


def summarize(rows: list[dict[str, Any]]) -> str:
    """The tables of docs/evidence/sft.md from the rows: per arm and data, the mean accuracy over the design's
    seeds (0-4) with its 95% t interval; per claim, the paired difference over the design's seeds both arms ran,
    with its 95% t interval (which decides the verdict), the bootstrap interval over seeds × problems, the t test's
    and the exact sign-flip test's p values and, for the secondary claims, Holm's adjustment of the t test's. When
    rows of later seeds exist, a third table gives the claims over every seed, for those that have more."""
    from qdc_trainer.experiments.stats import paired_difference

    first = [r for r in rows if int(r["seed"]) < FIRST_SEEDS]
    by = {(r["arm"], float(r["noise"]), int(r["seed"])): r for r in first}
    lines = [
        "| data | arm | seeds | training examples | ID accuracy [95% CI] | OOD accuracy [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for noise in NOISES:
        for arm in ARMS:
            mine = sorted((r for (a, n, _), r in by.items() if a == arm and n == noise), key=lambda r: r["seed"])
            if not mine:
                continue
            cells = []
            for measure in ("acc_id", "acc_ood"):
                d = paired_difference([r[measure] for r in mine])
                cells.append(f"{_number(d.mean)} [{_number(d.low)}, {_number(d.high)}]")
            size = round(sum(r["train_size"] for r in mine) / len(mine))
            data = f"noise {noise:g}"
            lines.append(f"| {data} | {arm} | {len(mine)} | {size} | " + " | ".join(cells) + " |")
    lines += ["", *claims_table(first)]
    if any(int(r["seed"]) >= FIRST_SEEDS for r in rows):
        more = claims_table(rows, only_more_than=FIRST_SEEDS)
        if len(more) > 2:
            lines += ["", f"Claims over every seed run, where more than the design's {FIRST_SEEDS} ran:", "", *more]
    return "\n".join(lines)


def claims_table(rows: list[dict[str, Any]], only_more_than: int = 0) -> list[str]:
    """The claims table's lines over ``rows``; with ``only_more_than``, only the claims with more seeds than that
    (Holm's adjustment then runs over the secondary claims shown)."""
    from qdc_trainer.experiments.stats import (
        bootstrap_paired_ci,
        holm,
        paired_difference,
        sign_flip_test,
        verdict,
    )

    by = {(r["arm"], float(r["noise"]), int(r["seed"])): r for r in rows}
    lines = [
        "| claim | data | seeds | difference [95% t CI] | bootstrap [95% CI] | p (t) vs threshold "
        "| p (sign-flip) vs threshold | p (t, Holm) | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    table, secondary = [], []
    for arm, reference, noise, measure, claim, threshold, primary in CLAIMS:
        seeds = sorted(s for (a, n, s) in by if a == arm and n == noise and (reference, noise, s) in by)
        if only_more_than and len(seeds) <= only_more_than:
            continue
        side = ">" if claim == "above" else "<"
        name = f"{'**' if primary else ''}{arm} − {reference}, {NAMES[measure]} {side} {threshold:+.2f}"
        name += "**" if primary else ""
        if not seeds:
            table.append([name, f"noise {noise:g}", "0", "n/a", "n/a", "n/a", "n/a", "—", "not run"])
            continue
        mine = [by[(arm, noise, s)][measure] for s in seeds]
        ref = [by[(reference, noise, s)][measure] for s in seeds]
        d = paired_difference(mine, ref)
        shifted = [a - b - threshold for a, b in zip(mine, ref)]  # the tests are against the claim's threshold
        tested = paired_difference(shifted)
        per_problem = [
            [
                int(x) - int(y)
                for x, y in zip(
                    by[(arm, noise, s)][f"{measure}_solved"], by[(reference, noise, s)][f"{measure}_solved"]
                )
            ]
            for s in seeds
        ]
        mean, low, high = bootstrap_paired_ci(per_problem, seed=0)
        flips = sign_flip_test(shifted)
        row = [
            name,
            f"noise {noise:g}",
            str(len(seeds)),
            d.format(),
            f"[{_number(low, True)}, {_number(high, True)}]",
            _number(tested.p_value),
            _number(flips),
            "—",
            verdict(d.low, d.high, threshold, claim) if len(seeds) >= MIN_SEEDS else "inconclusive (n < 3)",  # type: ignore[arg-type]
        ]
        if not primary and tested.p_value == tested.p_value:
            secondary.append((len(table), tested.p_value))
        table.append(row)
    for (index, _), adjusted in zip(secondary, holm([p for _, p in secondary])):
        table[index][7] = _number(adjusted)
        if adjusted >= 0.05 and table[index][8] in ("held", "did not hold"):  # a secondary claim needs Holm too
            table[index][8] += " uncorrected; inconclusive after Holm"
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return lines


def load_rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(Path(out).glob("*_seed*.json"))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "evidence" / "sft_rows"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--noises", type=float, nargs="+", default=list(NOISES))
    parser.add_argument("--steps", type=int, default=600, help="training steps (the recipe: 1,500)")
    parser.add_argument("--eval-size", type=int, default=100, help="held-out problems per split (the recipe's)")
    parser.add_argument("--scratch", default=os.path.join("runs", "sft_evidence"), help="the runs' output_dir")
    parser.add_argument("--smoke", action="store_true", help="a few steps on a little data, one seed")
    parser.add_argument("--summarize", action="store_true", help="only build the tables from the rows")
    parser.add_argument("--page", help="a Markdown page whose tables (between the TABLES markers) are replaced")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.seeds = min(args.steps, 4), args.seeds[:1]
    if not args.summarize:
        run_grid(args)
    text = summarize(load_rows(Path(args.out)))
    if args.page:
        write_page(Path(args.page), text)
    print(text)


BEGIN, END = "<!-- TABLES: benchmarks/sft_evidence.py -->", "<!-- END TABLES -->"


def write_page(page: Path, tables: str) -> None:
    """Replace what lies between the page's ``BEGIN`` and ``END`` markers by ``tables``."""
    text = page.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{page} has no {BEGIN} ... {END} markers to put the tables between")
    head, rest = text.split(BEGIN, 1)
    page.write_text(head + BEGIN + "\n\n" + tables + "\n\n" + END + rest.split(END, 1)[1])


if __name__ == "__main__":
    main()
