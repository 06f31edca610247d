"""Train a tiny model with QDCTrainerMixin + TRL's GRPOTrainer and write what every rank saw to JSON
(tests/distributed/test_multiprocess_grpo.py).

    accelerate launch --multi_gpu --num_processes 2 ... run_grpo.py SPEC.json

``SPEC.json`` holds ``{"runs": [run, ...]}``, trained one after the other; a run has ``name``,
``results_dir``, ``output_dir``, ``max_steps``, ``save_steps`` (0: none) and ``resume_from`` (a
checkpoint folder or null). Each rank writes ``<results_dir>/<name>.rank<R>.json`` with

- ``generations``: for every generation batch, the step, this rank's prompt indices (read before the
  mixin takes them out of the rows), and the gathered completions and rewards;
- ``rollout_logs``: the ``qdc/rollout/*`` records of the log history;
- ``rollouts_observed``, ``rollouts_measured``: the generation batches the rollout monitor saw and measured;
- ``token_ids_match``: per generation batch, whether the gathered token ids decode to the completions' text;
- ``final``: the sampler state (probabilities digest, reward-spread EMAs, position, updates).

Importing this module has no side effects (pytest imports it for doctests).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from finish import finish

TESTS_DIR = Path(__file__).resolve().parent.parent.parent

NUM_PROMPTS = 12  # 3 generation batches of 4 prompts per epoch: the runs cross an epoch boundary
PER_DEVICE_BATCH = 4
GRAD_ACCUM = 2
NUM_GENERATIONS = 4
NUM_ITERATIONS = 2  # each generation batch serves 2 x GRAD_ACCUM micro-steps = 2 optimizer steps


def reward(completions, **kwargs):
    """A reward with spread inside groups even for a random model: the count of digits, modulo 5."""
    return [(sum(ch.isdigit() for ch in c) % 5) / 4 for c in completions]


def _digest(array) -> str:
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def main(spec_path: str) -> None:
    sys.path.insert(0, str(TESTS_DIR))
    import numpy as np
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from qdc_trainer import QDCSampler, QDCSamplerConfig, QDCTrainerMixin, RolloutMonitorCallback
    from qdc_trainer.data.collator import INDEX_KEY
    from qdc_trainer.tasks.arithmetic import ArithmeticConfig, build_model, build_tokenizer, make_splits

    spec = json.loads(Path(spec_path).read_text())
    tokenizer = build_tokenizer()
    prompts = make_splits(ArithmeticConfig(), NUM_PROMPTS, 2, 2, seed=0)["train"]
    dataset = Dataset.from_dict({"prompt": prompts["prompt"]})

    class Recording(QDCTrainerMixin, GRPOTrainer):
        generations: list[dict]

        def _generate_and_score_completions(self, inputs):
            local = [row.get(INDEX_KEY) for row in inputs]
            out = super()._generate_and_score_completions(inputs)
            if self.model.training:
                self.generations.append(
                    {
                        "step": self.state.global_step,
                        "indices": local,
                        "completions": list(self._logs["completion"]),
                        "rewards": [float(r) for r in self._logs["rewards"]["reward"]],
                    }
                )
            return out

    class TokenChecking(RolloutMonitorCallback):
        """Checks that the gathered token ids are the completions' own, in the records' order."""

        ids_match: list[bool]

        def observe(self, rollouts):
            decoded = [tokenizer.decode(ids, skip_special_tokens=True) for ids in rollouts.completion_ids]
            self.ids_match = [*getattr(self, "ids_match", []), decoded == list(rollouts.completions)]
            super().observe(rollouts)

    for run in spec["runs"]:
        sampler = QDCSampler(
            len(dataset),
            quality=np.linspace(0.0, 1.0, len(dataset)),
            clusters=np.arange(len(dataset)) % 3,
            config=QDCSamplerConfig(update_every=1, example_loss_strength=1.0, ema_decay=0.5, seed=5),
        )
        args = GRPOConfig(
            output_dir=run["output_dir"],
            per_device_train_batch_size=PER_DEVICE_BATCH,
            gradient_accumulation_steps=GRAD_ACCUM,
            num_generations=NUM_GENERATIONS,
            num_iterations=NUM_ITERATIONS,
            max_completion_length=8,
            max_steps=run["max_steps"],
            save_strategy="steps" if run["save_steps"] else "no",
            save_steps=run["save_steps"] or 500,
            logging_steps=1,
            learning_rate=1e-3,
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
            log_completions=False,
        )
        trainer = Recording(
            model=build_model(tokenizer, seed=0),
            args=args,
            reward_funcs=[reward],
            train_dataset=dataset,
            processing_class=tokenizer,
            qdc_sampler=sampler,
            callbacks=[monitor := TokenChecking(tokens=True)],
        )
        trainer.generations = []
        trainer.train(resume_from_checkpoint=run["resume_from"])
        accelerator = trainer.accelerator
        result = {
            "rank": accelerator.process_index,
            "world_size": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type),
            "global_step": trainer.state.global_step,
            "block_size": sampler.block_size,
            "generations": trainer.generations,
            "rollout_logs": [r for r in trainer.state.log_history if any(k.startswith("qdc/rollout/") for k in r)],
            "rollouts_observed": monitor.batches,
            "rollouts_measured": monitor.measured,
            "token_ids_match": monitor.ids_match,
            "train_logs": [r for r in trainer.state.log_history if "loss" in r],
            "final": {
                "probabilities_sha256": _digest(sampler.probabilities()),
                "success_sha256": _digest(np.concatenate(sampler.success_posterior())),
                "success_evidence": float(sampler.success_posterior()[0].sum() + sampler.success_posterior()[1].sum()),
                "telemetry": sampler.telemetry(reset=False),
                "num_updates": sampler.num_updates,
                "epoch": sampler.epoch,
                "consumed": sampler.consumed,
            },
        }
        out = Path(run["results_dir"]) / f"{run['name']}.rank{accelerator.process_index}.json"
        out.write_text(json.dumps(result))
        accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
    finish()
