"""QDCTrainer with the sampler, importance weighting, the generation monitor and the collapse detector under FSDP.

Run by tests/distributed/test_fsdp.py with two CPU processes (gloo)::

    accelerate launch --use_fsdp --num_processes 2 --fsdp_version 2 ... run_fsdp.py OUT_DIR

or on one GPU (one process) the same way with ``--num_processes 1``. Every rank writes
``OUT_DIR/rank<R>.json``: the sampler's state digest, its number of refreshes and recorded examples, the
losses and the ``qdc/`` keys it logged, and the parameters' placement (sharded or not). Uses a plain torch
dataset, so it needs neither ``datasets`` nor a hub.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from finish import finish

TESTS_DIR = Path(__file__).resolve().parent.parent.parent


def main(out_dir: str) -> None:
    sys.path.insert(0, str(TESTS_DIR))
    import numpy as np
    import torch
    from helpers import build_gpt2, build_tokenizer
    from transformers import TrainingArguments

    from qdc_trainer import (
        CollapseDetectorCallback,
        GenerationMonitorCallback,
        GenerationMonitorConfig,
        QDCSampler,
        QDCSamplerConfig,
        QDCTrainer,
    )

    tokenizer = build_tokenizer()
    words = sorted(w for w in tokenizer.get_vocab() if not w.startswith("<"))
    rng = np.random.default_rng(0)
    n, length = 64, 12
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(list(rng.choice(words, size=length))) for _ in range(n)])

    class Tokens(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int) -> dict:
            return {"input_ids": ids[i], "attention_mask": torch.ones(length, dtype=torch.long), "labels": ids[i]}

    gpu = torch.cuda.is_available()
    model = build_gpt2(tokenizer, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0).train()
    sampler = QDCSampler(
        n, quality=rng.random(n), clusters=np.arange(n) % 4, config=QDCSamplerConfig(update_every=2, seed=3)
    )
    monitor = GenerationMonitorCallback(
        ["the cat", "a dog", "first add"],
        config=GenerationMonitorConfig(num_samples=2, max_new_tokens=4, every_n_steps=3),
    )
    detector = CollapseDetectorCallback(actions=("log",))
    args = TrainingArguments(
        output_dir=os.path.join(out_dir, "trainer"),
        per_device_train_batch_size=4,
        max_steps=6,
        logging_steps=2,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
        bf16=gpu,
    )
    trainer = QDCTrainer(
        model=model,
        args=args,
        train_dataset=Tokens(),
        processing_class=tokenizer,
        qdc_sampler=sampler,
        loss_weighting="importance",
        callbacks=[monitor, detector],
    )
    trainer.train()
    wrapped = trainer.model_wrapped
    rank = trainer.args.process_index
    record = {
        "rank": rank,
        "world": trainer.args.world_size,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "is_fsdp": bool(trainer.is_fsdp_enabled),
        "wrapper": type(wrapped).__name__,
        "dtensor_params": sum(type(p).__name__ == "DTensor" for p in wrapped.parameters()),
        "probabilities_sha256": hashlib.sha256(sampler.probabilities().tobytes()).hexdigest(),
        "num_updates": int(sampler.num_updates),
        "consumed": int(sampler.consumed),
        "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
        "qdc_keys": sorted({k for e in trainer.state.log_history for k in e if k.startswith("qdc/")}),
        "monitor_failures": dict(getattr(monitor, "failures", {}) or {}),
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(record, f, indent=1)
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
    finish()
