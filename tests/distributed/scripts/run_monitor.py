"""The generation monitor under several processes, with a probe count that does not divide evenly.

Run under ``accelerate launch`` with 2 processes; writes ``<out>/rank<R>.json`` with the
number of ``generate`` calls the rank made and the ``qdc/...`` values it logged. Used by
tests/distributed/test_multiprocess_collapse.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from finish import finish

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from datasets import Dataset  # noqa: E402
from helpers import build_gpt2, build_tokenizer  # noqa: E402
from transformers import DataCollatorForLanguageModeling, TrainingArguments  # noqa: E402

from qdc_trainer import CollapseDetectorCallback, GenerationMonitorCallback, GenerationMonitorConfig, QDCTrainer  # noqa: E402

PROMPTS = ["the cat", "a dog ran", "first add 2 and 3", "the answer is", "multiply 5 by 4"]  # 5 prompts, 2 ranks


def main() -> None:
    out = Path(sys.argv[1])
    tokenizer = build_tokenizer()
    texts = ["the cat sat on the mat", "a dog ran in the park", "first add 2 and 3 to get 5 ."] * 32
    ds = Dataset.from_dict({"text": texts}).map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])
    args = TrainingArguments(
        output_dir=str(out / "run"),
        per_device_train_batch_size=4,
        max_steps=4,
        logging_steps=2,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    # one prompt per generate call: rank 0 has prompts 0, 2, 4; rank 1 has 1, 3 and repeats one to keep step
    monitor = GenerationMonitorCallback(
        PROMPTS, config=GenerationMonitorConfig(num_samples=2, max_new_tokens=6, batch_size=2, every_n_steps=2)
    )
    detector = CollapseDetectorCallback(
        watch={"qdc/gen/per_input/distinct_2": "decrease", "qdc/train/entropy": "decrease"}
    )
    trainer = QDCTrainer(
        model=build_gpt2(tokenizer),
        args=args,
        train_dataset=ds,
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[monitor, detector],
    )
    calls = []
    generate = trainer.model.generate

    def counted(*a, **kw):
        calls.append(int(kw["input_ids"].shape[0]))
        return generate(*a, **kw)

    trainer.model.generate = counted
    trainer.train()
    rank = trainer.args.process_index
    logged = [{k: v for k, v in e.items() if k.startswith("qdc/") or k == "step"} for e in trainer.state.log_history]
    result = {
        "rank": rank,
        "world": trainer.args.world_size,
        "generate_calls": calls,
        "logs": [e for e in logged if len(e) > 1],
        "global_step": trainer.state.global_step,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
    finish()
