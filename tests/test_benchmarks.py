"""The benchmarks still run (smoke mode, tiny sizes) and their value checks pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_metrics_smoke():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_metrics.py"), "--smoke", "--no-install"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "self_bleu max_n=4 vs NLTK" in result.stdout
    assert "agree within 1e-06" in result.stdout


def test_bench_sampler_smoke():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_sampler.py"), "--smoke"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "epoch iteration at N=1e5" in result.stdout
    assert "QDCTrainer per-step overhead vs Trainer" in result.stdout


def test_bench_monitor_smoke():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_monitor.py"), "--smoke"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1. Training: QDCTrainer" in result.stdout
    assert "2. One evaluation vs a plain model.generate loop" in result.stdout
    assert "monitor share of train wall time" in result.stdout
    assert "evaluation vs plain generate at max_new_tokens=8" in result.stdout


def test_calibrate_collapse_smoke():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "calibrate_collapse.py"), "--smoke"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "collapse detector calibration" in result.stdout
    assert "the shipped defaults" in result.stdout and "false alarms" in result.stdout
