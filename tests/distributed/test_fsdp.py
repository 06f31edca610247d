"""The sampler with importance weighting, the monitor and the detector launched with ``accelerate launch --use_fsdp``.

On two CPU processes (gloo), accelerate 1.15 does not shard: its ``AcceleratorState`` sets
``DistributedType.FSDP`` only for accelerator devices (GPU, NPU, XPU, ...); on ``MULTI_CPU`` the FSDP
request is dropped and the model is wrapped in ``DistributedDataParallel``. This test runs that launch as a
user would and checks that everything trains and agrees across ranks; it asserts which wrapper was used, so
a later accelerate that shards on CPU shows up here. Under real FSDP2 sharding the same script
(``tests/distributed/scripts/run_fsdp.py``) ran on one GPU; see docs/performance.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from launch import SCRIPTS, accelerate_launch, run

pytestmark = pytest.mark.slow


def test_fsdp_launch_on_two_cpu_processes(tmp_path):
    fsdp = (
        "--use_fsdp",
        "--fsdp_version",
        "2",
        "--fsdp_auto_wrap_policy",
        "TRANSFORMER_BASED_WRAP",
        "--fsdp_transformer_layer_cls_to_wrap",
        "GPT2Block",
        "--fsdp_state_dict_type",
        "SHARDED_STATE_DICT",
    )
    cmd = accelerate_launch(2, str(SCRIPTS / "run_fsdp.py"), str(tmp_path), options=fsdp)
    run(cmd, tmp_path / "launch.log")
    ranks = [json.loads(Path(tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    # accelerate 1.15 on CPU: FSDP is not applied (see the module docstring)
    assert {(r["distributed_type"], r["wrapper"], r["is_fsdp"]) for r in ranks} == {
        ("DistributedType.MULTI_CPU", "DistributedDataParallel", False)
    }
    # identical sampler state on both ranks, every example fed back once per step, three refreshes
    assert ranks[0]["probabilities_sha256"] == ranks[1]["probabilities_sha256"]
    assert [r["num_updates"] for r in ranks] == [3, 3] and [r["consumed"] for r in ranks] == [48, 48]
    assert ranks[0]["losses"] == ranks[1]["losses"] and len(ranks[0]["losses"]) == 3
    keys = set(ranks[0]["qdc_keys"])
    assert {
        "qdc/sampler/ess_ratio",
        "qdc/train/entropy",
        "qdc/gen/across_input/distinct_2",
        "qdc/collapse/level",
    } <= keys
    assert ranks[0]["monitor_failures"] == {} == ranks[1]["monitor_failures"]
