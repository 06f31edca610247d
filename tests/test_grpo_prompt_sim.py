"""The GRPO prompt-selection simulation: its smoke mode runs every arm, and the evidence page's tables are
rebuilt from the committed rows byte for byte."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import grpo_prompt_sim  # noqa: E402


def test_the_evidence_tables_regenerate_from_the_committed_rows():
    rows_file = ROOT / "docs" / "evidence" / "grpo_prompt_sim_rows.jsonl"
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    assert len(rows) == len(grpo_prompt_sim.ARMS) * 8 * 2  # 5 arms, seeds 100-107, 2 pools
    page = (ROOT / "docs" / "evidence" / "grpo_prompt_sampler.md").read_text()
    assert grpo_prompt_sim.table(rows) in page


def test_smoke_runs_every_arm_at_equal_generation(capsys):
    out = grpo_prompt_sim.main(["--smoke"])
    for arm in grpo_prompt_sim.ARMS:
        assert f"| {arm} |" in out
    assert "| a | 400 |" in out and "| e | 400 |" in out


def test_dapo_spends_its_extra_generation_and_trains_fewer_steps():
    import argparse

    args = argparse.Namespace(held_out=50, prompts=4, group=4, budget=800, lr=0.01)
    uniform = grpo_prompt_sim.run_arm("uniform", 0, args, 100)
    dapo = grpo_prompt_sim.run_arm("dapo", 0, args, 100)
    assert uniform["generated"] == dapo["generated"] == 800
    assert dapo["steps"] < uniform["steps"] == 800 // 16
