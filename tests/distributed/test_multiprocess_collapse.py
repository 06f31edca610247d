"""CollapseDetectorCallback under 2 processes: a stop decided from data only one rank saw stops both, no hang."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from launch import SCRIPTS, accelerate_launch, run

pytestmark = pytest.mark.slow


def test_one_rank_collapses_both_stop_at_the_same_step(tmp_path):
    run(
        accelerate_launch(2, str(SCRIPTS / "run_collapse_stop.py"), str(tmp_path)),
        tmp_path / "launch.log",
    )
    ranks = [json.loads(Path(tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert [r["own_level"] for r in ranks] == [2, 0]  # only rank 0's own series collapsed
    assert [r["stopped_at"] for r in ranks] == [5, 5]
    assert [r["global_step"] for r in ranks] == [5, 5]  # both stopped, 7 steps before max_steps


def test_generation_monitor_with_an_uneven_prompt_split(tmp_path):
    from qdc_trainer.callbacks.monitor import SAMPLES_FILE

    run(accelerate_launch(2, str(SCRIPTS / "run_monitor.py"), str(tmp_path)), tmp_path / "launch.log")
    ranks = [json.loads(Path(tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2] and [r["global_step"] for r in ranks] == [4, 4]
    # 3 evaluations (steps 0, 2, 4) x 3 calls: rank 1 pads its 2 prompts to rank 0's 3
    assert ranks[0]["generate_calls"] == ranks[1]["generate_calls"] == [1] * 9  # one prompt (x 2 samples) per call

    def without_timing(logs):
        return [{k: v for k, v in e.items() if k != "qdc/gen/seconds"} for e in logs]

    assert without_timing(ranks[0]["logs"]) == without_timing(
        ranks[1]["logs"]
    )  # measured once, same numbers everywhere
    gen_steps = [e["step"] for e in ranks[0]["logs"] if "qdc/gen/per_input/distinct_2" in e]
    assert gen_steps == [0, 2, 4]
    assert [e["step"] for e in ranks[0]["logs"] if "qdc/train/entropy" in e] == [2, 4]
    rows = [json.loads(line) for line in (tmp_path / "run" / SAMPLES_FILE).read_text().splitlines()]
    # the main process wrote every prompt's samples once, padding dropped
    assert sorted((r["step"], r["prompt_index"], r["sample"]) for r in rows) == [
        (s, p, j) for s in (0, 2, 4) for p in range(5) for j in range(2)
    ]
