"""QDCTrainer under real multi-process training: ``accelerate launch`` with 2 CPU processes (gloo).

tests/distributed/scripts/run_qdc_training.py trains a tiny GPT-2 and writes, per rank, what the
sampler drew, what each rank trained on (``qdc_idx`` read in ``compute_loss``),
what the sampler was fed back after the gather, and its final state. All the
comparisons happen here:

1. every rank holds the identical sampler state and index stream;
2. the ranks train on disjoint shards of each global batch, in stream order, and
   the gathered feedback is exactly the union of the shards;
3. resuming from a mid-epoch checkpoint in a fresh process group continues
   exactly (same indices, same losses, same final sampler state) with 1 and 2
   processes, with and without dataloader workers;
4. a dataset that does not divide by the global batch neither hangs nor crashes.

Three subprocesses in all: one plain ``python`` (1 process: runs A and the
resumed runs B), one 2-process launch for the runs A, one for the runs B.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from launch import SCRIPTS, accelerate_launch, run

pytestmark = pytest.mark.slow

SCRIPT = SCRIPTS / "run_qdc_training.py"

PER_DEVICE_BATCH = 4  # must match tests/distributed/scripts/run_qdc_training.py
GRAD_ACCUM = 2
UPDATE_EVERY = 2
SAVE_STEPS = 5  # odd: the checkpoint holds pending (not yet applied) feedback
EVEN_N = 96  # a multiple of the global batch for 1 and 2 processes
RAGGED_N = 102  # 2 processes: the last round has 4 + 2 examples (accelerate completes it); 1 process: a batch of 2
MAX_STEPS = {1: 16, 2: 12}  # crosses one epoch boundary in every configuration


def _launch(runs: list[dict], tmp: Path, tag: str, num_processes: int) -> None:
    spec = tmp / f"{tag}.spec.json"
    spec.write_text(json.dumps({"runs": runs}))
    if num_processes == 1:
        cmd = [sys.executable, str(SCRIPT), str(spec)]
    else:
        cmd = accelerate_launch(num_processes, str(SCRIPT), str(spec))
    run(cmd, tmp / f"{tag}.log")


def _run_spec(tmp: Path, world: int, name: str, num_examples: int, workers: int, resume: str | None = None) -> dict:
    return {
        "name": name,
        "results_dir": str(tmp / "results"),
        "output_dir": str(tmp / "out" / name),
        "num_examples": num_examples,
        "max_steps": MAX_STEPS[world],
        "save_steps": 0 if resume else SAVE_STEPS,
        "num_workers": workers,
        "resume_from": resume,
    }


# (scenario, dataset size, dataloader workers)
SCENARIOS = {"even": (EVEN_N, 0), "ragged": (RAGGED_N, 0), "even_workers2": (EVEN_N, 2)}
# (world size, scenario, checkpoint step) of every resumed run
RESUMES = [
    (1, "even", SAVE_STEPS),
    (1, "ragged", SAVE_STEPS),
    (1, "even_workers2", SAVE_STEPS),
    (2, "even", SAVE_STEPS),
    (2, "even", 2 * SAVE_STEPS),
    (2, "ragged", SAVE_STEPS),
    (2, "even_workers2", SAVE_STEPS),
]


def _name(world: int, scenario: str, resume_step: int | None = None) -> str:
    return f"w{world}_{scenario}" + ("" if resume_step is None else f"_from{resume_step}")


def _load(tmp: Path, name: str, world: int) -> list[dict]:
    ranks = []
    for r in range(world):
        path = tmp / "results" / f"{name}.rank{r}.json"
        assert path.is_file(), f"rank {r} of run {name} wrote no result"
        ranks.append(json.loads(path.read_text()))
    return ranks


@pytest.fixture(scope="module")
def mp_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("qdc_mp")
    (tmp / "results").mkdir()
    return tmp


@pytest.fixture(scope="module")
def one_process(mp_dir) -> dict:
    """1 process, plain python: the runs A, then the runs B resumed from their checkpoints (same process)."""
    runs = [_run_spec(mp_dir, 1, _name(1, s), n, w) for s, (n, w) in SCENARIOS.items()]
    for world, s, k in RESUMES:
        if world == 1:
            n, w = SCENARIOS[s]
            ckpt = mp_dir / "out" / _name(1, s) / f"checkpoint-{k}"
            runs.append(_run_spec(mp_dir, 1, _name(1, s, k), n, w, resume=str(ckpt)))
    _launch(runs, mp_dir, "one_process", 1)
    return {r["name"]: _load(mp_dir, r["name"], 1) for r in runs}


@pytest.fixture(scope="module")
def two_process_a(mp_dir) -> dict:
    """2 processes: the uninterrupted runs A (with checkpoints), one launch."""
    runs = [_run_spec(mp_dir, 2, _name(2, s), n, w) for s, (n, w) in SCENARIOS.items()]
    _launch(runs, mp_dir, "two_process_a", 2)
    return {r["name"]: _load(mp_dir, r["name"], 2) for r in runs}


@pytest.fixture(scope="module")
def two_process_b(mp_dir, two_process_a) -> dict:
    """2 processes: the runs B, resumed from the runs A's checkpoints in a fresh process group, one launch."""
    runs = []
    for world, s, k in RESUMES:
        if world == 2:
            n, w = SCENARIOS[s]
            ckpt = mp_dir / "out" / _name(2, s) / f"checkpoint-{k}"
            assert (ckpt / "qdc_sampler.npz").is_file(), f"{ckpt} holds no qdc_sampler.npz"
            runs.append(_run_spec(mp_dir, 2, _name(2, s, k), n, w, resume=str(ckpt)))
    _launch(runs, mp_dir, "two_process_b", 2)
    return {r["name"]: _load(mp_dir, r["name"], 2) for r in runs}


# ---------------------------------------------------------------------------------------------- helpers


def _micro_batches_per_epoch(num_examples: int, world: int) -> int:
    """Batches each rank gets per epoch (accelerate's even_batches pads the last round)."""
    return math.ceil(math.ceil(num_examples / PER_DEVICE_BATCH) / world)


def _expected_micro_batches(num_examples: int, world: int, max_steps: int) -> int:
    per_epoch = _micro_batches_per_epoch(num_examples, world)
    steps_per_epoch = math.ceil(per_epoch / GRAD_ACCUM)
    full_epochs, rest = divmod(max_steps, steps_per_epoch)
    return full_epochs * per_epoch + rest * GRAD_ACCUM


def _shard(stream: list[int], world: int, rank: int) -> list[list[int]]:
    """Rank ``rank``'s batches of one epoch's index stream, written out from accelerate's documented rule:
    batch i of the stream goes to rank i % world; a last round that is not full is completed with indices
    from the start of the epoch's stream, so every rank gets the same number of full batches."""
    b = PER_DEVICE_BATCH
    batches = [stream[i : i + b] for i in range(0, len(stream), b)]
    rounds = [batches[i : i + world] for i in range(0, len(batches), world)]
    out = []
    for rnd in rounds:
        if len(rnd) == world and all(len(x) == b for x in rnd):
            out.append(rnd[rank])
            continue
        flat = [i for x in rnd for i in x]
        cycle = 0
        while len(flat) < world * b:
            flat.append(stream[cycle % len(stream)])
            cycle += 1
        out.append(flat[rank * b : (rank + 1) * b])
    return out


def _by_step(entries: list[dict], from_step: int) -> list[dict]:
    return [e for e in entries if e["step"] >= from_step]


def _same_state(a: dict, b: dict) -> list[str]:
    keys = ["probabilities", "loss_ema", "cluster_loss_ema", "global_loss_ema", "num_updates", "epoch", "consumed"]
    return [k for k in keys if a[k] != b[k]]


# ---------------------------------------------------------------------------------------------- 1. identical state


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_two_ranks_hold_identical_sampler_state(two_process_a, scenario):
    r0, r1 = two_process_a[_name(2, scenario)]
    assert (r0["rank"], r1["rank"], r0["world_size"], r1["world_size"]) == (0, 1, 2, 2)
    assert r0["distributed_type"].endswith("MULTI_CPU") and r0["backend"] == "gloo"
    assert r0["global_step"] == r1["global_step"] == MAX_STEPS[2]
    assert r0["block_size"] == UPDATE_EVERY * PER_DEVICE_BATCH * GRAD_ACCUM * 2

    # The setup is not trivial: weights start non-uniform and the feedback moved them.
    p0 = r0["initial"]["probabilities"]
    assert max(p0) / min(p0) > 3
    assert r0["final"]["num_updates"] == MAX_STEPS[2] // UPDATE_EVERY
    assert len(r0["updates"]) == MAX_STEPS[2] // UPDATE_EVERY
    assert r0["final"]["probabilities"] != r0["initial"]["probabilities"]
    assert sum(v is not None for v in r0["final"]["loss_ema"]) > 20
    assert len(r0["draws"]) >= 4

    # Identical on both ranks: state, every refresh, every draw, every index yielded, every record.
    assert r0["final"]["probabilities_sha256"] == r1["final"]["probabilities_sha256"]
    assert r0["final"]["loss_ema_sha256"] == r1["final"]["loss_ema_sha256"]
    assert _same_state(r0["final"], r1["final"]) == []
    assert r0["updates"] == r1["updates"]
    assert r0["draws"] == r1["draws"]
    assert r0["streams"] == r1["streams"]
    assert [s["epoch"] for s in r0["streams"]] == [0, 1]
    assert r0["recorded"] == r1["recorded"]
    assert r0["train_losses"] == r1["train_losses"]


# ---------------------------------------------------------------------------------------------- 2. disjoint shards


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_two_ranks_train_disjoint_shards_in_stream_order(two_process_a, scenario):
    ranks = two_process_a[_name(2, scenario)]
    r0, r1 = ranks
    n = r0["num_examples"]
    t0, t1 = r0["trained"], r1["trained"]
    expected = _expected_micro_batches(n, 2, MAX_STEPS[2])
    assert len(t0) == len(t1) == expected
    assert all(len(t["indices"]) == PER_DEVICE_BATCH for t in t0 + t1)  # even batches, no empty rank

    # What each rank trained on is its shard of the sampler's stream, batch by batch.
    for rank, result in enumerate(ranks):
        trained = [(t["epoch"], t["indices"]) for t in result["trained"]]
        shards = [(s["epoch"], batch) for s in result["streams"] for batch in _shard(s["indices"], 2, rank)]
        assert trained == shards[: len(trained)], f"rank {rank} did not train on its shard of the stream"

    # The two shards of a round are different batches, rank 0's first, and together they are a
    # contiguous piece of the stream (positions 8j .. 8j+7 for every full round).
    for s in r0["streams"]:
        rounds = [(a["indices"], b["indices"]) for a, b in zip(t0, t1) if a["epoch"] == s["epoch"]]
        full = len(s["indices"]) // (2 * PER_DEVICE_BATCH)
        for j, (a, b) in enumerate(rounds[:full]):
            assert a != b
            assert a + b == s["indices"][8 * j : 8 * j + 8]

    # The feedback after the gather is exactly the union of the two shards, micro-batch by micro-batch in
    # stream order, on every rank. It stays on the device until a weight refresh (or a log or a checkpoint)
    # and is recorded then, in one piece per flush.
    for result in ranks:
        recorded = result["recorded"]
        assert len(recorded) < len(t0)
        assert sum((rec["indices"] for rec in recorded), []) == sum(
            (a["indices"] + b["indices"] for a, b in zip(t0, t1)), []
        )
        assert all(v is not None for rec in recorded for v in rec["losses"])
    # ... and the sampler counted it: consumed = examples fed back in the last epoch.
    last_epoch = r0["final"]["epoch"]
    assert r0["final"]["consumed"] == sum(
        len(a["indices"]) + len(b["indices"]) for a, b in zip(t0, t1) if a["epoch"] == last_epoch
    )


# ---------------------------------------------------------------------------------------------- 3. exact resume


def _check_checkpoint_is_mid_epoch(ckpt: Path, a: dict, k: int) -> None:
    """The checkpoint the run B resumes from is mid-epoch; at an odd step it holds feedback not yet applied."""
    import numpy as np

    with np.load(ckpt / "qdc_sampler.npz", allow_pickle=False) as state:
        consumed, epoch, pending = int(state["consumed"]), int(state["epoch"]), len(state["pending_idx"])
    world = a["world_size"]
    per_epoch = _micro_batches_per_epoch(a["num_examples"], world)
    steps_per_epoch = math.ceil(per_epoch / GRAD_ACCUM)
    assert k % steps_per_epoch != 0 and epoch == k // steps_per_epoch
    assert 0 < consumed < a["num_examples"]
    assert consumed == (k % steps_per_epoch) * GRAD_ACCUM * PER_DEVICE_BATCH * world
    assert (pending > 0) == (k % UPDATE_EVERY != 0)


def _assert_exact_resume(a_ranks: list[dict], b_ranks: list[dict], k: int) -> None:
    # First the trained indices of every rank, reporting the earliest difference over all ranks.
    first = []
    for rank, (a, b) in enumerate(zip(a_ranks, b_ranks)):
        assert b["global_step"] == a["global_step"] == a["max_steps"], f"rank {rank}"
        a_trained, b_trained = _by_step(a["trained"], k), b["trained"]
        assert [t["step"] for t in b_trained][:1] == [k], f"rank {rank}: run B did not start at step {k}"
        assert len(a_trained) == len(b_trained), f"rank {rank}: {len(a_trained)} vs {len(b_trained)} micro-batches"
        diff = next((i for i, (x, y) in enumerate(zip(a_trained, b_trained)) if x != y), None)
        if diff is not None:
            first.append((diff, rank, a_trained[diff], b_trained[diff]))
    if first:
        diff, rank, x, y = min(first, key=lambda t: t[0])
        pytest.fail(
            f"resumed from checkpoint-{k} with {len(a_ranks)} process(es): rank {rank} trained other indices in "
            f"micro-batch {diff} after the checkpoint (step {x['step'] + 1}, epoch {x['epoch']}): "
            f"uninterrupted {x['indices']} vs resumed {y['indices']}"
        )
    for rank, (a, b) in enumerate(zip(a_ranks, b_ranks)):
        where = f"rank {rank} of {len(a_ranks)}, resumed from checkpoint-{k}"
        # Feedback is recorded at flushes (refreshes, logs, checkpoints); run A flushed what it had at the
        # checkpoint, run B restored it as pending, so compare what each recorded after step k.
        a_rec, b_rec = _by_step(a["recorded"], k + 1), b["recorded"]
        assert sum((r["indices"] for r in a_rec), []) == sum((r["indices"] for r in b_rec), []), where
        # Same model too: the per-example losses fed back are bit-identical.
        assert sum((r["losses"] for r in a_rec), []) == sum((r["losses"] for r in b_rec), []), where
        # Blocks drawn after the resume come from the same weights as in the uninterrupted run.
        a_draws = {(d["epoch"], d["block"]): d for d in a["draws"]}
        for d in b["draws"]:
            key = (d["epoch"], d["block"])
            assert key in a_draws and d["indices"] == a_draws[key]["indices"], f"{where}: block {key} differs"
            assert d["num_updates"] == a_draws[key]["num_updates"], f"{where}: block {key} drawn at another time"
        assert _same_state(a["final"], b["final"]) == [], where
        assert a["final"]["probabilities_sha256"] == b["final"]["probabilities_sha256"], where


@pytest.mark.parametrize(("scenario", "k"), [(s, k) for w, s, k in RESUMES if w == 1])
def test_resume_is_exact_one_process(mp_dir, one_process, scenario, k):
    a, b = one_process[_name(1, scenario)], one_process[_name(1, scenario, k)]
    assert a[0]["world_size"] == b[0]["world_size"] == 1
    _check_checkpoint_is_mid_epoch(mp_dir / "out" / _name(1, scenario) / f"checkpoint-{k}", a[0], k)
    _assert_exact_resume(a, b, k)


@pytest.mark.parametrize(("scenario", "k"), [(s, k) for w, s, k in RESUMES if w == 2])
def test_resume_is_exact_two_processes(mp_dir, two_process_a, two_process_b, scenario, k):
    a, b = two_process_a[_name(2, scenario)], two_process_b[_name(2, scenario, k)]
    assert b[0]["world_size"] == 2
    _check_checkpoint_is_mid_epoch(mp_dir / "out" / _name(2, scenario) / f"checkpoint-{k}", a[0], k)
    _assert_exact_resume(a, b, k)
    # and the resumed ranks agree with each other
    assert b[0]["recorded"] == b[1]["recorded"] and b[0]["draws"] == b[1]["draws"]
    assert _same_state(b[0]["final"], b[1]["final"]) == []


# ---------------------------------------------------------------------------------------------- 4. ragged dataset


def test_ragged_dataset_two_processes_neither_hangs_nor_crashes(two_process_a):
    # Reaching here means the launch exited 0 within the timeout; check that the epoch end was really crossed.
    r0, r1 = two_process_a[_name(2, "ragged")]
    assert RAGGED_N % (PER_DEVICE_BATCH * 2) != 0
    assert r0["global_step"] == r1["global_step"] == MAX_STEPS[2]
    per_epoch = _micro_batches_per_epoch(RAGGED_N, 2)
    epochs = [t["epoch"] for t in r0["trained"]]
    assert epochs.count(0) == per_epoch and epochs[per_epoch:] and set(epochs[per_epoch:]) == {1}
    # the last round of epoch 0 is completed with the start of the epoch's stream on both ranks
    stream0 = r0["streams"][0]["indices"]
    assert len(stream0) == RAGGED_N
    last0, last1 = r0["trained"][per_epoch - 1]["indices"], r1["trained"][per_epoch - 1]["indices"]
    tail = stream0[(per_epoch - 1) * 2 * PER_DEVICE_BATCH :]
    assert last0 + last1 == (tail + stream0)[: 2 * PER_DEVICE_BATCH]
    # the epoch-1 stream restarts from block 0 of epoch 1, drawn from the updated weights
    assert r0["streams"][1]["epoch"] == 1
    assert r0["streams"][1]["indices"][:8] == r0["trained"][per_epoch]["indices"] + r1["trained"][per_epoch]["indices"]
    assert r0["final"]["consumed"] == sum(len(t["indices"]) for t in r0["trained"][per_epoch:]) * 2
