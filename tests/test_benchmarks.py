"""The benchmarks still run (smoke mode, tiny sizes) and their value checks pass."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_smoke(script: str, *extra: str) -> str:
    """Run ``benchmarks/<script> --smoke``; returns its stdout after checking the exit code."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", *extra],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_bench_metrics_smoke():
    out = run_smoke("bench_metrics.py", "--no-install")
    assert "self_bleu max_n=4 vs NLTK" in out
    assert "agree within 1e-06" in out


def test_bench_sampler_smoke():
    out = run_smoke("bench_sampler.py")
    assert "epoch iteration at N=1e5" in out
    assert "QDCTrainer per-step overhead vs Trainer" in out
    assert "guide table" in out and "streams identical" in out


def test_bench_rollout_smoke():
    out = run_smoke("bench_rollout.py")
    assert "1. rollout_measures" in out and "2. generation monitor" in out
    assert out.count("identical") == 4 and "DIFFER" not in out  # ours, Python split, token ids; the monitor
    assert "ratio vs level 9" in out and "Spearman" in out


def test_bench_scoring_smoke():
    out = run_smoke("bench_scoring.py")
    assert "ARI vs topics" in out and "ratio earlier / ours" in out and "clustering alone" in out


def test_bench_pairwise_smoke():
    out = run_smoke("bench_pairwise.py")
    assert "nearest neighbours 2,000 x 64" in out and "vendi_score q=2" in out


def test_bench_monitor_smoke():
    out = run_smoke("bench_monitor.py")
    assert "1. Training: QDCTrainer" in out
    assert "2. One evaluation vs a plain model.generate loop" in out
    assert "monitor share of train wall time" in out
    assert "evaluation vs plain generate at max_new_tokens=8" in out


def test_calibrate_collapse_smoke():
    out = run_smoke("calibrate_collapse.py")
    assert "collapse detector calibration" in out
    assert "the shipped defaults" in out and "false alarms" in out


def test_bench_selection_smoke():
    out = run_smoke("bench_selection.py")
    assert "no keys" in out and "with keys" in out
    assert "100000" in out


def test_bench_trainer_smoke(tmp_path):
    import json

    out = run_smoke("bench_trainer.py", "--json", str(tmp_path / "rows.json"), "--loss-path", "2")
    assert "median ms" in out and "qdc_importance" in out and "the loss call alone" in out
    rows = json.loads((tmp_path / "rows.json").read_text())
    steps, loss = [r for r in rows if "median_ms" in r], [r for r in rows if "best_ms" in r]
    assert [r["arm"] for r in steps] == ["plain", "qdc", "qdc_no_entropy", "qdc_importance", "entropy_only"]
    assert steps[0]["ratio"] == 1.0 and all(r["median_ms"] > 0 and r["steps"] == 2 for r in steps)
    assert [r["arm"] for r in loss] == ["plain", "qdc", "qdc_no_entropy", "qdc_importance"]
    assert loss[0]["extra_ms"] == 0.0 and all(r["best_ms"] > 0 for r in loss)


def test_calibrate_rl_collapse_smoke(tmp_path):
    out = run_smoke("calibrate_rl_collapse.py", "--out", str(tmp_path / "cal"), "--sft-dir", str(tmp_path / "sft"))
    assert "healthy: false alarms" in out and "planted: flagged" in out
    rows = sorted(p.name for p in (tmp_path / "cal" / "rows").glob("*.json"))
    assert rows == ["hacking_0.json", "healthy_0.json", "planted_0.json"]
    again = run_smoke("calibrate_rl_collapse.py", "--out", str(tmp_path / "cal"), "--summarize")
    assert again.strip() in out  # the tables come from the saved rows alone


def test_grpo_evidence_smoke(tmp_path):
    out = run_smoke("grpo_evidence.py", "--out", str(tmp_path / "ev"))
    assert "| pass@1 ID, before GRPO |" in out and "| collapse warnings of the default RL watch (runs) |" in out
    for arm in ("uniform", "qdc"):
        assert (tmp_path / "ev" / f"{arm}_seed0" / "results.json").is_file()
    # one warm-up, shared by both arms
    assert (tmp_path / "ev" / "sft" / "qdc_warmup.json").is_file()


def test_sft_evidence_smoke(tmp_path):
    rows = tmp_path / "rows"
    args = ("--out", str(rows), "--scratch", str(tmp_path / "runs"), "--arms", "qdc", "filter", "plain")
    out = run_smoke("sft_evidence.py", *args)
    names = sorted(p.name for p in rows.glob("*.json"))
    # noisy data: the three arms; clean data: no filter run (it would drop nothing)
    assert names == [
        "filter_noise0.2_seed0.json",
        "plain_noise0.2_seed0.json",
        "plain_noise0_seed0.json",
        "qdc_noise0.2_seed0.json",
        "qdc_noise0_seed0.json",
    ]
    filtered = json.loads((rows / "filter_noise0.2_seed0.json").read_text())
    plain = json.loads((rows / "plain_noise0.2_seed0.json").read_text())
    assert filtered["train_size"] < plain["train_size"]  # the verifier dropped the noisy examples
    assert set(plain["acc_ood_solved"]) <= {"0", "1"} and plain["acc_ood_solved"]
    assert plain["acc_id"] == pytest.approx(plain["acc_id_solved"].count("1") / len(plain["acc_id_solved"]))
    assert "| **qdc − filter, OOD accuracy > +0.00** | noise 0.2 | 1 |" in out
    again = run_smoke("sft_evidence.py", *args)  # every row exists: nothing runs, the same tables
    assert again.strip() and out.rstrip().endswith(again.strip())


def test_the_sft_evidence_tables_regenerate_from_the_committed_rows():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import sft_evidence

    rows = sft_evidence.load_rows(ROOT / "docs" / "evidence" / "sft_rows")
    assert rows, "no committed rows"
    page = (ROOT / "docs" / "evidence" / "sft.md").read_text()
    for table in sft_evidence.summarize(rows).split("\n\n"):
        assert table in page


def test_the_sft_evidence_keeps_the_design_seeds_apart_from_later_ones():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import sft_evidence

    def row(arm, seed, acc):
        return {"arm": arm, "noise": 0.2, "seed": seed, "train_size": 10, "acc_id": acc, "acc_ood": acc,
                "acc_id_solved": "10", "acc_ood_solved": "10"}  # fmt: skip

    # qdc - filter is +0.1 on seeds 0-4 and -0.1 on seeds 5-9
    rows = [row("filter", s, 0.5) for s in range(10)] + [row("qdc", s, 0.6 if s < 5 else 0.4) for s in range(10)]
    text = sft_evidence.summarize(rows)
    design, later = text.split("Claims over every seed run")
    assert "| noise 0.2 | qdc | 5 | 10 | 0.600 [0.600, 0.600]" in design  # the arms' table: seeds 0-4 only
    assert "| **qdc − filter, OOD accuracy > +0.00** | noise 0.2 | 5 | +0.100 [+0.100, +0.100]" in design
    assert "| **qdc − filter, OOD accuracy > +0.00** | noise 0.2 | 10 | +0.000" in later
    assert "qdc − plain" not in later  # only the claims that have more seeds than the design's
    assert "Claims over every seed run" not in sft_evidence.summarize([r for r in rows if r["seed"] < 5])


def test_the_rl_evidence_tables_regenerate_from_the_committed_runs():
    import json
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import calibrate_rl_collapse
    import grpo_evidence

    evidence = ROOT / "docs" / "evidence"
    calibration = (evidence / "rl_calibration.md").read_text()
    rows = [json.loads(p.read_text()) for p in sorted((ROOT / "docs" / "rl_calibration" / "rows").glob("*.json"))]
    assert len(rows) == 15
    for table in calibrate_rl_collapse.summarize(rows).split("\n\n"):
        assert table in calibration
    assert grpo_evidence.table(ROOT / "docs" / "grpo_evidence", [0, 1, 2]) in (evidence / "grpo.md").read_text()
