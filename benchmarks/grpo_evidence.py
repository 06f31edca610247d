"""GRPO with uniform prompts against GRPO with the QDC prompt sampler: the table of docs/evidence/grpo.md.

For each seed, runs the packaged recipes ``arithmetic/grpo_uniform`` and ``arithmetic/grpo_qdc`` with
``qdc train`` (one warm-up, shared by every run through ``sft_output_dir``; the seed changes GRPO's sampling and
prompt order) and prints a markdown table from their ``results.json``: pass@1 and pass@8 in and out of
distribution before and after GRPO, the rollouts' across-prompt distinct-2 and zero-signal share at the start and
the end of GRPO, and the verdict of the collapse detector's default RL watch (replayed over the logged series).
Each arm shows its mean over seeds with a 95% t interval, and the arms, which share their seeds, are compared by
their paired difference (``qdc_trainer.experiments.stats``). Runs already finished are reused, so an interrupted
run continues; ``--summarize`` only prints the table.

    python benchmarks/grpo_evidence.py --seeds 0 1 2 --workers 2     # docs/evidence/grpo.md
    python benchmarks/grpo_evidence.py --smoke                        # seconds (what CI runs)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ARMS = {"uniform": "arithmetic/grpo_uniform", "qdc": "arithmetic/grpo_qdc"}
COLUMNS = [
    ("pass@1_validation", "pass@1 ID"),
    ("pass@8_validation", "pass@8 ID"),
    ("pass@1_test_ood", "pass@1 OOD"),
    ("pass@8_test_ood", "pass@8 OOD"),
]


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return out / f"{arm}_seed{seed}"


def launch(arm: str, seed: int, args: argparse.Namespace) -> float:
    """Run one recipe with ``qdc train`` in a subprocess (one thread); returns its wall time in seconds."""
    folder = run_dir(Path(args.out), arm, seed)
    if (folder / "results.json").is_file():
        return 0.0
    command = [
        sys.executable, "-m", "qdc_trainer.cli", "train", "--config", ARMS[arm],
        "--seed", str(seed), "--output_dir", str(folder), "--sft_output_dir", str(Path(args.out) / "sft"),
        "--disable_tqdm", "true",
    ]  # fmt: skip
    if args.smoke:
        command += ["--smoke", "true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    with open(Path(args.out) / f"{arm}_seed{seed}.log", "w") as log:
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{arm} seed {seed} failed; see {Path(args.out) / f'{arm}_seed{seed}.log'}")
    return time.perf_counter() - start


def table(out: Path, seeds: list[int]) -> str:
    """The markdown table: per arm, the mean over seeds with its 95% t interval; then the paired difference
    ``qdc − uniform`` (the arms share their seeds) with its 95% t interval, the paired t test's p value, the exact
    sign-flip test's p value, Holm's adjustment of the t test's p values over the measures after GRPO (the
    family of secondary comparisons), and the minimum detectable effect of the design (80% power, two-sided 5%,
    from the observed standard deviation of the differences)."""
    from qdc_trainer.experiments.stats import (
        binomial_upper_bound,
        holm,
        minimum_detectable_effect,
        paired_difference,
        sign_flip_test,
    )

    def cell(values: list[float]) -> str:
        if not values:
            return "n/a"
        if len(values) == 1:
            return f"{values[0]:.3f}"
        d = paired_difference(values)
        return f"{d.mean:.3f} [{d.low:.3f}, {d.high:.3f}]"

    results = {arm: [json.loads((run_dir(out, arm, s) / "results.json").read_text()) for s in seeds] for arm in ARMS}
    measures: list[tuple[str, str, bool]] = []  # (results key, label, compared)
    for key, label in COLUMNS:
        for stage in ("before", "after"):
            measures.append((f"{stage}_{key}", f"{label}, {stage} GRPO", stage == "after"))
    for key, label in (
        ("rollout_across_prompt/distinct_2", "rollouts: across-prompt distinct-2"),
        ("rollout_zero_signal_share", "rollouts: share of groups without signal"),
        ("rollout_pass@1", "rollouts: pass@1 (training prompts)"),
    ):
        for stage in ("start", "end"):
            measures.append((f"{key}_{stage}", f"{label}, {stage}", stage == "end"))
    first, second = list(ARMS)
    rows, tests = [], []
    for key, label, compared in measures:
        values = {arm: [r[key] for r in results[arm] if key in r] for arm in ARMS}
        row = [label] + [cell(values[arm]) for arm in ARMS]
        paired = compared and len(values[first]) == len(values[second]) == len(seeds) > 1
        if paired:
            d = paired_difference(values[second], values[first])
            tests.append((len(rows), d.p_value))
            flips = sign_flip_test([b - a for a, b in zip(values[first], values[second])])
            mde = minimum_detectable_effect(d.sd, d.n) if d.sd > 0 else 0.0
            row += [d.format(), f"{d.p_value:.3f}", f"{flips:.3f}", "", f"{mde:.3f}"]
        else:
            row += ["—"] * 5
        rows.append(row)
        if key.startswith("after_"):  # what GRPO changed in each arm, paired by seed: after − before
            before = key.replace("after_", "before_", 1)
            gains = []
            for arm in ARMS:
                pairs = [(r[key], r[before]) for r in results[arm] if key in r and before in r]
                gains.append(paired_difference(*zip(*pairs)).format() if len(pairs) > 1 else "n/a")
            rows.append([f"{label.rsplit(',', 1)[0]}, change (after − before)", *gains] + ["—"] * 5)
    for (index, _), adjusted in zip(tests, holm([p for _, p in tests])):
        rows[index][len(ARMS) + 4] = f"{adjusted:.3f}"
    warned = {arm: [_first_warning(run_dir(out, arm, s)) for s in seeds] for arm in ARMS}
    cells = []
    for arm in ARMS:
        steps = [w for w in warned[arm] if w is not None]
        bound = binomial_upper_bound(len(steps), len(seeds))
        where = f"steps {', '.join(map(str, steps))}; " if steps else ""
        cells.append(f"{len(steps)} / {len(seeds)} ({where}rate ≤ {bound:.2f} at 95%)")
    rows.append(["collapse warnings of the default RL watch (runs)", *cells] + ["—"] * 5)
    header = (
        f"| measure | {' | '.join(ARMS)} | {second} − {first}, paired [95% CI] | p (t) | p (sign-flip) "
        "| p (t, Holm) | detectable (80%) |"
    )
    lines = [header, "|---|" + "---|" * (len(ARMS) + 5)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _first_warning(folder: Path) -> int | None:
    """The first step at which the shipped ``DEFAULT_RL_WATCH`` warns, replayed over the run's logged series
    (so the verdict is the current default's, whatever the detector did during the run)."""
    from qdc_trainer.callbacks.series import DEFAULT_RL_WATCH, SeriesDetector

    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    first = None
    for key, settings in DEFAULT_RL_WATCH.items():
        detector = SeriesDetector(key, **settings)
        for record in history:
            if key in record:
                detector.update(int(record["step"]), record[key])
        step = detector.first_warning_step
        if step is not None and (first is None or step < first):
            first = step
    return first


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/grpo_evidence")
    parser.add_argument("--workers", type=int, default=1, help="runs at a time (one CPU thread each)")
    parser.add_argument("--summarize", action="store_true", help="only print the table of finished runs")
    parser.add_argument("--smoke", action="store_true", help="one seed, a few steps (checks that it runs)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds = [0]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.summarize:
        start = time.perf_counter()
        # the first run makes the shared warm-up; the others reuse it
        first = (next(iter(ARMS)), args.seeds[0])
        launch(*first, args)
        rest = [(arm, seed) for seed in args.seeds for arm in ARMS if (arm, seed) != first]
        with ThreadPoolExecutor(max_workers=max(args.workers, 1)) as pool:
            list(pool.map(lambda job: launch(*job, args), rest))
        print(f"all runs: {time.perf_counter() - start:.0f} s", flush=True)
    text = table(out, args.seeds)
    print(text)
    return text


if __name__ == "__main__":
    main()
