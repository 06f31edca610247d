"""Two ranks see different values of a watched series; only rank 0's collapse.

Run under ``accelerate launch`` with 2 processes; writes ``<out>/rank<R>.json`` with the
step each rank stopped at. Used by tests/distributed/test_multiprocess_collapse.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from helpers import build_gpt2, build_tokenizer  # noqa: E402
from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from qdc_trainer.callbacks.collapse import CollapseDetectorCallback, SeriesDetector  # noqa: E402

KEY = "qdc/gen/per_input/distinct_2"
HEALTHY = [0.8] * 12
COLLAPSING = [0.8, 0.8, 0.8, 0.7, 0.5, 0.3] + [0.1] * 6  # collapse at step 5 (-37.5%)


class LogSeries(TrainerCallback):
    """Logs a per-rank value: the kind of data only one rank saw."""

    def __init__(self, trainer, values):
        self.trainer, self.values = trainer, values

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.log({KEY: self.values[state.global_step - 1]})


def main() -> None:
    out = Path(sys.argv[1])
    tokenizer = build_tokenizer()
    ds = Dataset.from_dict({"text": ["the cat sat on the mat"] * 96}).map(lambda b: tokenizer(b["text"]), batched=True)
    args = TrainingArguments(
        output_dir=str(out / "run"),
        per_device_train_batch_size=4,
        max_steps=12,
        logging_steps=1000,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=build_gpt2(tokenizer),
        args=args,
        train_dataset=ds.remove_columns(["text"]),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )
    rank = trainer.args.process_index
    detector = CollapseDetectorCallback(
        trainer, watch=[SeriesDetector(KEY, ema=1.0, warmup=3)], actions=("log", "stop")
    )
    trainer.add_callback(LogSeries(trainer, COLLAPSING if rank == 0 else HEALTHY))
    trainer.add_callback(detector)
    trainer.train()
    result = {
        "rank": rank,
        "world": trainer.args.world_size,
        "global_step": trainer.state.global_step,
        "stopped_at": detector.stopped_at,
        "own_level": detector.detectors[KEY].signal.level,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    trainer.accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()  # a clean exit (gloo threads torn down before interpreter exit)


if __name__ == "__main__":
    main()
    # Skip the interpreter's teardown: after all work is done, torch's CPU (gloo) process group sometimes
    # aborts there with 'terminate called without an active exception' (about 1 run in 6), failing the launch.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
