"""Train a tiny GPT-2 with QDCTrainer and write what every rank saw to JSON (tests/distributed/test_multiprocess.py).

Run with one process per rank on the CPU (gloo), or with plain ``python`` for one process::

    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no
        --main_process_port PORT run_qdc_training.py SPEC.json

(``--multi_gpu`` only picks accelerate's torchrun launcher: ``--cpu`` on one machine
starts a single process. The Trainer's ``use_cpu=True`` makes every rank MULTI_CPU/gloo.)

``SPEC.json`` holds ``{"runs": [run, ...]}``; the runs are trained one after the
other in this process group. A run is a dict with the keys

- ``name``: results go to ``<results_dir>/<name>.rank<R>.json``;
- ``results_dir``, ``output_dir`` (the Trainer's; checkpoints land there);
- ``num_examples``, ``max_steps``, ``save_steps`` (0: no checkpoints);
- ``num_workers`` (``dataloader_num_workers``);
- ``resume_from``: a checkpoint folder to resume from, or null.

Each rank records, without touching private APIs:

- ``trained``: the ``qdc_idx`` of every training micro-batch this rank computed a
  loss on (read in ``compute_loss`` before the trainer pops it), with the global step;
- ``recorded``: every ``sampler.record`` call (indices and losses after the gather);
- ``streams``: every index the sampler yielded, one list per ``__iter__`` call;
- ``draws``: every block drawn (epoch, block, number of updates applied so far);
- ``updates``: every weight refresh that applied feedback;
- ``initial`` / ``final``: the sampler state (probabilities, loss EMAs, position).

Importing this module has no side effects (pytest imports it for doctests).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path

from finish import finish

TESTS_DIR = Path(__file__).resolve().parent.parent.parent

# Sampler knobs shared by every run (QDCSamplerConfig fields): non-uniform static weights, strong online feedback.
SAMPLER_KNOBS = dict(
    tradeoff=0.5,
    quality_strength=2.0,
    diversity_strength=1.0,
    complexity_strength=0.5,
    example_loss_strength=1.0,
    cluster_loss_strength=1.0,
    max_online_ratio=4.0,
    ema_decay=0.5,
    floor=0.1,
    update_every=2,
    seed=11,
)
PER_DEVICE_BATCH = 4
GRAD_ACCUM = 2


def _floats(values):
    """A JSON-safe exact list (NaN -> None; Python floats round-trip exactly through JSON)."""
    return [None if math.isnan(v) else float(v) for v in values]


def _digest(array) -> str:
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _sampler_state(sampler) -> dict:
    p = sampler.probabilities()
    return {
        "probabilities": _floats(p.tolist()),
        "probabilities_sha256": _digest(p),
        "loss_ema": _floats(sampler.loss_ema.astype(float).tolist()),
        "loss_ema_sha256": _digest(sampler.loss_ema),
        "cluster_loss_ema": _floats(sampler.cluster_loss_ema.tolist()),
        "global_loss_ema": None if math.isnan(sampler.global_loss_ema) else float(sampler.global_loss_ema),
        "num_updates": int(sampler.num_updates),
        "epoch": int(sampler.epoch),
        "consumed": int(sampler.consumed),
    }


def make_dataset(tokenizer, num_examples: int):
    """Token sequences of 6..20 words with quality, complexity and cluster columns (deterministic)."""
    import numpy as np
    from datasets import Dataset

    rng = np.random.default_rng(1234)
    words = [w for w in tokenizer.get_vocab() if not w.startswith("<")]
    words.sort()
    texts, clusters = [], []
    for _ in range(num_examples):
        k = int(rng.choice(4, p=[0.55, 0.25, 0.15, 0.05]))  # unequal cluster sizes
        length = int(rng.integers(6, 21))
        # each cluster draws from its own slice of the vocabulary, so clusters differ in loss
        pool = words[k * 5 : k * 5 + 12] or words
        texts.append(" ".join(rng.choice(pool, size=length)))
        clusters.append(k)
    enc = tokenizer(texts)
    return Dataset.from_dict(
        {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "quality": rng.normal(size=num_examples).tolist(),
            "complexity": rng.gamma(2.0, size=num_examples).tolist(),
            "cluster": clusters,
        }
    )


def run_one(run: dict) -> None:
    import numpy as np
    import torch
    from helpers import build_gpt2, build_tokenizer
    from transformers import DataCollatorForLanguageModeling, TrainingArguments

    from qdc_trainer import INDEX_KEY, QDCSampler, QDCSamplerConfig, QDCTrainer

    log: dict = {"trained": [], "recorded": [], "streams": [], "draws": [], "updates": []}
    trainer_ref: list = []

    def step() -> int:
        return int(trainer_ref[0].state.global_step) if trainer_ref else -1

    class RecordingSampler(QDCSampler):
        def __iter__(self):
            stream = {"epoch": int(self.epoch), "indices": []}
            log["streams"].append(stream)
            for i in super().__iter__():
                stream["indices"].append(int(i))
                yield i

        def draw_block(self, epoch, block, size):
            idx = super().draw_block(epoch, block, size)
            log["draws"].append(
                {
                    "epoch": int(epoch),
                    "block": int(block),
                    "num_updates": int(self.num_updates),
                    "step": step(),
                    "indices": [int(i) for i in idx],
                }
            )
            return idx

        def record(self, indices, losses):
            idx = np.asarray(indices.detach().cpu() if hasattr(indices, "detach") else indices).reshape(-1)
            loss = np.asarray(losses.detach().float().cpu() if hasattr(losses, "detach") else losses, dtype=np.float64)
            log["recorded"].append(
                {
                    "step": step(),
                    "indices": [int(i) for i in idx],
                    "losses": _floats(loss.reshape(-1).tolist()),
                }
            )
            return super().record(indices, losses)

        def update(self):
            applied = super().update()
            if applied:
                log["updates"].append(
                    {
                        "step": step(),
                        "num_updates": int(self.num_updates),
                        "probabilities_sha256": _digest(self.probabilities()),
                    }
                )
            return applied

    class RecordingTrainer(QDCTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training and INDEX_KEY in inputs:
                log["trained"].append(
                    {
                        "step": int(self.state.global_step),
                        "epoch": int(self.qdc_sampler.epoch),
                        "indices": [int(i) for i in inputs[INDEX_KEY].reshape(-1).tolist()],
                    }
                )
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )

    torch.use_deterministic_algorithms(True)
    tokenizer = build_tokenizer()
    dataset = make_dataset(tokenizer, run["num_examples"])
    model = build_gpt2(tokenizer, seed=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model.train()
    sampler = RecordingSampler.from_dataset(
        dataset,
        quality_column="quality",
        complexity_column="complexity",
        cluster_column="cluster",
        config=QDCSamplerConfig(**SAMPLER_KNOBS),
    )
    initial = _sampler_state(sampler)
    save_steps = int(run.get("save_steps") or 0)
    args = TrainingArguments(
        output_dir=run["output_dir"],
        per_device_train_batch_size=PER_DEVICE_BATCH,
        gradient_accumulation_steps=GRAD_ACCUM,
        max_steps=run["max_steps"],
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        warmup_steps=0,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_only_model=False,
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=42,
        dataloader_num_workers=int(run.get("num_workers", 0)),
        dataloader_persistent_workers=False,
    )
    trainer = RecordingTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        qdc_sampler=sampler,
    )
    trainer_ref.append(trainer)
    world, rank = trainer.accelerator.num_processes, trainer.accelerator.process_index
    trainer.train(resume_from_checkpoint=run.get("resume_from"))

    result = {
        "name": run["name"],
        "rank": rank,
        "world_size": world,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "backend": str(trainer.accelerator.state.backend),
        "num_examples": run["num_examples"],
        "max_steps": run["max_steps"],
        "resume_from": run.get("resume_from"),
        "global_step": int(trainer.state.global_step),
        "block_size": int(sampler.block_size),
        "per_device_batch": PER_DEVICE_BATCH,
        "grad_accum": GRAD_ACCUM,
        "train_losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
        "initial": initial,
        "final": _sampler_state(sampler),
        **log,
    }
    out = Path(run["results_dir"]) / f"{run['name']}.rank{rank}.json"
    out.write_text(json.dumps(result))
    trainer.accelerator.wait_for_everyone()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(TESTS_DIR))
    sys.path.insert(0, str(TESTS_DIR.parent))
    spec = json.loads(Path(argv[0]).read_text())
    for run in spec["runs"]:
        run_one(run)
    return 0


if __name__ == "__main__":
    finish(main(sys.argv[1:]))
