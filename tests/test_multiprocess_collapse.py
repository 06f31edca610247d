"""CollapseDetectorCallback under 2 processes: a stop decided from data only one rank saw stops both, no hang."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_multiprocess import ROOT, _free_port, _run

pytestmark = pytest.mark.slow


def test_one_rank_collapses_both_stop_at_the_same_step(tmp_path):
    script = ROOT / "tests" / "mp" / "run_collapse_stop.py"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), str(script), str(tmp_path),
    ]
    _run(cmd, tmp_path / "launch.log")
    ranks = [json.loads(Path(tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert [r["own_level"] for r in ranks] == [2, 0]  # only rank 0's own series collapsed
    assert [r["stopped_at"] for r in ranks] == [5, 5]
    assert [r["global_step"] for r in ranks] == [5, 5]  # both stopped, 7 steps before max_steps
