"""GRPO with uniform prompts against GRPO with the QDC prompt sampler: the evidence table of docs/evidence/grpo.md.

For each seed, runs the packaged recipes ``arithmetic/grpo_uniform`` and ``arithmetic/grpo_qdc`` with
``qdc train`` (one warm-up, shared by every run through ``sft_output_dir``; the seed changes GRPO's sampling and
prompt order) and prints a markdown table from their ``results.json``: pass@1 and pass@8 in and out of
distribution before and after GRPO, the rollouts' across-prompt distinct-2 and zero-signal share at the start and
the end of GRPO, and the verdict of the collapse detector's default RL watch (replayed over the logged series).
Runs already finished are reused, so an interrupted run continues; ``--summarize`` only prints the table.

    python benchmarks/grpo_evidence.py --seeds 0 1 2 --workers 2     # the table of docs/evidence/grpo.md
    python benchmarks/grpo_evidence.py --smoke                        # seconds (what CI runs)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
    """The markdown table: mean (min–max) over seeds of each measure, per arm."""

    def cell(values: list[float]) -> str:
        if not values:
            return "n/a"
        if len(values) == 1:
            return f"{values[0]:.3f}"
        return f"{statistics.fmean(values):.3f} ({min(values):.3f}–{max(values):.3f})"

    results = {arm: [json.loads((run_dir(out, arm, s) / "results.json").read_text()) for s in seeds] for arm in ARMS}
    header = "| measure | " + " | ".join(ARMS) + " |"
    lines = [header, "|---|" + "---|" * len(ARMS)]
    for key, label in COLUMNS:
        for stage in ("before", "after"):
            row = [cell([r[f"{stage}_{key}"] for r in results[arm] if f"{stage}_{key}" in r]) for arm in ARMS]
            lines.append(f"| {label}, {stage} GRPO | " + " | ".join(row) + " |")
    for key, label in (
        ("rollout_across_prompt/distinct_2", "rollouts: across-prompt distinct-2"),
        ("rollout_zero_signal_share", "rollouts: share of groups without signal"),
        ("rollout_pass@1", "rollouts: pass@1 (training prompts)"),
    ):
        for stage in ("start", "end"):
            row = [cell([r[f"{key}_{stage}"] for r in results[arm] if f"{key}_{stage}" in r]) for arm in ARMS]
            lines.append(f"| {label}, {stage} | " + " | ".join(row) + " |")
    warned = {arm: [_first_warning(run_dir(out, arm, s)) for s in seeds] for arm in ARMS}
    cells = []
    for arm in ARMS:
        steps = [w for w in warned[arm] if w is not None]
        cells.append(f"{len(steps)} / {len(seeds)}" + (f" (steps {', '.join(map(str, steps))})" if steps else ""))
    lines.append("| collapse warnings of the default RL watch (runs) | " + " | ".join(cells) + " |")
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
