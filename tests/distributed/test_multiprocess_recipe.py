"""The main recipe runs unchanged under `accelerate launch` with 2 CPU processes (smoke mode)."""

from __future__ import annotations

import json

import pytest
from launch import accelerate_launch, run

pytestmark = pytest.mark.slow


def test_main_recipe_under_two_processes(tmp_path):
    out = tmp_path / "run"
    cmd = accelerate_launch(
        2,
        "-m",
        "qdc_trainer.cli",
        "train",
        "--config",
        "arithmetic/sft_qdc",
        "--smoke",
        "true",
        "--output_dir",
        str(out),
        "--report_to",
        "none",
    )
    run(cmd, tmp_path / "launch.log")
    log = (tmp_path / "launch.log").read_text()
    results = json.loads((out / "results.json").read_text())
    assert results["global_step"] == 4
    state = json.loads((out / "trainer_state.json").read_text())
    gen = [e for e in state["log_history"] if "qdc/gen/per_input/distinct_2" in e]
    assert [e["step"] for e in gen] == [0, 2, 4]
    rows = [json.loads(line) for line in (out / "qdc_generations.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 2 * 2  # 3 evaluations x 2 probes x 2 samples, written once
    assert (out / "report" / "report.html").is_file()
    assert log.count("run folder:") == 2  # both ranks finished
