"""QDCTrainerMixin + TRL's GRPOTrainer under ``accelerate launch`` with 2 CPU processes (gloo).

tests/distributed/scripts/run_grpo.py trains a tiny model with the QDC prompt sampler and the rollout
monitor (generation batches of 4 prompts x 4 completions, each reused for 2 optimizer steps; 3 batches
per epoch, 8 steps: one epoch boundary), saving every step. Then three runs resume from its checkpoints:
at a generation boundary (step 2), in the middle of a batch's reuse (step 3) and at the epoch boundary
(step 6). Two launches in all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from launch import SCRIPTS, accelerate_launch, run

pytestmark = pytest.mark.slow

SCRIPT = SCRIPTS / "run_grpo.py"
MAX_STEPS = 8
NUM_GENERATIONS = 4  # as in run_grpo.py
PROMPTS_PER_GENERATION = 4  # 4 per device x 2 accumulation x 2 processes / 4 generations
RESUMES = (2, 3, 6)


def _spec(tmp: Path, name: str, save_steps: int, resume: str | None) -> dict:
    return {
        "name": name,
        "results_dir": str(tmp / "results"),
        "output_dir": str(tmp / "out" / name),
        "max_steps": MAX_STEPS,
        "save_steps": save_steps,
        "resume_from": resume,
    }


def _launch(tmp: Path, tag: str, runs: list[dict]) -> None:
    spec = tmp / f"{tag}.json"
    spec.write_text(json.dumps({"runs": runs}))
    run(accelerate_launch(2, str(SCRIPT), str(spec)), tmp / f"{tag}.log")


def _load(tmp: Path, name: str) -> list[dict]:
    return [json.loads((tmp / "results" / f"{name}.rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def grpo_runs(tmp_path_factory) -> dict[str, list[dict]]:
    tmp = tmp_path_factory.mktemp("qdc_grpo")
    (tmp / "results").mkdir()
    _launch(tmp, "a", [_spec(tmp, "a", 1, None)])
    resumed = [_spec(tmp, f"from{k}", 0, str(tmp / "out" / "a" / f"checkpoint-{k}")) for k in RESUMES]
    _launch(tmp, "b", resumed)
    return {name: _load(tmp, name) for name in ["a"] + [f"from{k}" for k in RESUMES]}


def _global_indices(generation_pair: tuple[dict, dict]) -> list[int]:
    return generation_pair[0]["indices"] + generation_pair[1]["indices"]


def test_two_ranks_draw_grpo_layout_and_hold_identical_state(grpo_runs):
    r0, r1 = grpo_runs["a"]
    assert (r0["rank"], r1["rank"], r0["world_size"]) == (0, 1, 2)
    assert r0["distributed_type"].endswith("MULTI_CPU")
    assert r0["global_step"] == r1["global_step"] == MAX_STEPS
    assert r0["final"] == r1["final"]
    assert r0["final"]["num_updates"] > 0 and r0["final"]["epoch"] == 1
    # one generation every 2 optimizer steps; both ranks see the same gathered rollouts
    assert [g["step"] for g in r0["generations"]] == [0, 2, 4, 6]
    for g0, g1 in zip(r0["generations"], r1["generations"]):
        assert g0["completions"] == g1["completions"] and g0["rewards"] == g1["rewards"]
        indices = _global_indices((g0, g1))  # rank 0's rows, then rank 1's: the sampler's order
        groups = [indices[i : i + NUM_GENERATIONS] for i in range(0, len(indices), NUM_GENERATIONS)]
        assert len(groups) == PROMPTS_PER_GENERATION
        assert all(len(set(group)) == 1 for group in groups), f"a group mixes prompts: {indices}"
    # the groups' successes reached the sampler: evidence beyond the prior (2 pseudo-counts per prompt)
    assert r0["final"]["success_evidence"] > 2.0 * 12 + 1.0


def test_rollout_measures_and_trainer_logs_every_step(grpo_runs):
    r0, r1 = grpo_runs["a"]
    assert r0["rollout_logs"] == r1["rollout_logs"]
    # measured once, on the main process; the other logs the broadcast records
    assert r0["rollouts_observed"] == r1["rollouts_observed"] == r0["rollouts_measured"] > 0
    assert r1["rollouts_measured"] == 0
    # tokens=True: GRPO's completion ids gathered over both ranks, in the order of the gathered texts
    assert r0["token_ids_match"] == r1["token_ids_match"] == [True] * r0["rollouts_observed"]
    assert [r["step"] for r in r0["rollout_logs"]] == [1, 3, 5, 7]  # logged at the end of the generating step
    for record in r0["rollout_logs"]:
        assert 0.0 <= record["qdc/rollout/across_prompt/distinct_2"] <= 1.0
        assert 0.0 <= record["qdc/rollout/zero_signal_share"] <= 1.0
        assert "loss" not in record and "reward" not in record  # TRL's metrics stay on TRL's records
    # the rollout records never replace the trainer's own log (logging_steps=1)
    assert [r["step"] for r in r0["train_logs"]] == list(range(1, MAX_STEPS + 1))
    assert all("reward" in r for r in r0["train_logs"] if r["step"] % 2 == 1)


@pytest.mark.parametrize("k", [2, 6])
def test_resume_at_a_generation_boundary_is_exact(grpo_runs, k):
    a, b = grpo_runs["a"], grpo_runs[f"from{k}"]
    for rank in range(2):
        after = [g for g in a[rank]["generations"] if g["step"] >= k]
        assert b[rank]["generations"] == after, f"rank {rank}: other prompts, completions or rewards after step {k}"
        assert b[rank]["final"] == a[rank]["final"], f"rank {rank}: sampler state differs at the end"


def test_resume_inside_a_generation_batch_keeps_its_prompts(grpo_runs):
    # Resumed at step 3, the second half of the batch generated at step 2: GRPO generates again (TRL keeps no
    # completions in a checkpoint), from the same prompts, and the following batches come in the same order.
    a, b = grpo_runs["a"], grpo_runs["from3"]
    a_batches = [_global_indices(pair) for pair in zip(*[r["generations"] for r in a])]
    b_batches = [_global_indices(pair) for pair in zip(*[r["generations"] for r in b])]
    assert b_batches == a_batches[1:], "the resumed run trained other prompts"
    assert b[0]["final"]["epoch"] == a[0]["final"]["epoch"]
