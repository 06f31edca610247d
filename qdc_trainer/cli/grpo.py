"""The GRPO recipe (``trainer: grpo``): warm up, measure, reinforce, measure again.

1. **Warm-up.** The tiny model learns the arithmetic task by supervised training on the
   task's training split (``sft_steps``; the plain ``Trainer``, loss on the completion
   only; seeded by ``model_seed``). The warmed-up model is saved in ``sft_output_dir``
   with the settings that made it, and reused by any recipe that names the same folder
   with the same settings, so that two recipes (QDC prompts, uniform prompts) and
   several GRPO seeds start from one model.
2. **Before.** pass@1 and pass@k (k = ``eval_samples`` sampled completions, verified) on
   the in-distribution ``validation`` and the out-of-distribution ``test_ood`` problems.
3. **GRPO.** TRL's ``GRPOTrainer`` with the task's verifier as the reward, through
   ``QDCTrainerMixin``: the prompts come from a :class:`~qdc_trainer.QDCSampler` over the
   training problems, or ``grpo_prompts`` fresh ones (complexity and clusters scored as for SFT;
   each group's successes as the online signal; see :mod:`qdc_trainer.grpo`) or, with
   ``sampler: false``, from GRPO's own uniform sampler. The
   :class:`~qdc_trainer.RolloutMonitorCallback` logs ``qdc/rollout/*`` and the
   :class:`~qdc_trainer.CollapseDetectorCallback` watches them.
4. **After.** The same evaluation; ``results.json`` holds both, the rollout measures at the
   start and the end of GRPO, and the detector's verdict.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict
from typing import Any

from transformers.utils import logging

from .._io import atomic_write
from .config import RecipeConfig
from .output_dir import RESULTS_FILE, RUN_FILE, RunFolder

__all__ = ["SFT_MARKER", "train_grpo_recipe", "verifier_reward"]

logger = logging.get_logger(__name__)

SFT_MARKER = "qdc_warmup.json"
"""File in ``sft_output_dir`` that records the settings of the warmed-up model saved there."""


def verifier_reward(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
    """GRPO reward: 1.0 when the arithmetic task's verifier accepts the completion (every step and the answer)."""
    from ..tasks.arithmetic import verify

    return [verify(p, c) for p, c in zip(prompts, completions)]


def _warmup_settings(cfg: RecipeConfig) -> dict[str, Any]:
    g = cfg.grpo
    return {
        "model": asdict(cfg.model),
        "task": {k: getattr(cfg.data, k) for k in ("train_size", "noise", "task_seed", "max_tokens")},
        "sft_steps": g.sft_steps,
        "sft_learning_rate": g.sft_learning_rate,
        "sft_batch_size": g.sft_batch_size,
        "use_cpu": bool(cfg.training.use_cpu),
    }


def warm_up(cfg: RecipeConfig, model: Any, tokenizer: Any, train: Any) -> Any:
    """The warmed-up model: loaded from ``sft_output_dir`` when it holds one made with the same settings, else
    trained and saved there (the marker file last, so a folder without it is never taken for finished)."""
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from ..tasks.text import tokenize_dataset

    g = cfg.grpo
    if g.sft_steps == 0:
        return model
    folder = g.sft_output_dir or os.path.join(cfg.training.output_dir, "sft")
    settings = _warmup_settings(cfg)
    marker = os.path.join(folder, SFT_MARKER)
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as f:
            saved = json.load(f)
        if saved == settings:
            logger.info("reusing the warmed-up model in %s", folder)
            return AutoModelForCausalLM.from_pretrained(folder)
        raise ValueError(
            f"sft_output_dir {folder} holds a warmed-up model made with other settings "
            f"({', '.join(k for k in settings if saved.get(k) != settings[k])} differ): "
            "choose another sft_output_dir, or delete that folder to make a new one"
        )
    args = TrainingArguments(
        output_dir=folder,
        max_steps=g.sft_steps,
        per_device_train_batch_size=g.sft_batch_size,
        learning_rate=g.sft_learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=min(50, g.sft_steps // 10),
        weight_decay=0.0,
        logging_steps=max(g.sft_steps // 10, 1),
        save_strategy="no",
        report_to=[],
        use_cpu=bool(cfg.training.use_cpu),
        bf16=bool(cfg.training.bf16),  # one process has one precision (accelerate's state is set once)
        fp16=bool(cfg.training.fp16),
        seed=cfg.model.model_seed,  # the warm-up depends on the model alone, not on the GRPO run's seed
        disable_tqdm=cfg.training.disable_tqdm,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=tokenize_dataset(train, tokenizer, max_length=cfg.data.max_tokens),
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        processing_class=tokenizer,
    )
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model)
    if trainer.is_world_process_zero():
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        with atomic_write(marker) as f:
            json.dump(settings, f, indent=2)
    trainer.accelerator.wait_for_everyone()
    return model


def evaluate(cfg: RecipeConfig, model: Any, tokenizer: Any, splits: dict[str, Any]) -> dict[str, float]:
    """pass@1, pass@k and the never-solved share on ``validation`` and ``test_ood`` (``final_eval_size`` each)."""
    from ..tasks.arithmetic import evaluate_pass_at_k

    out: dict[str, float] = {}
    for split in ("validation", "test_ood"):
        if split not in splits or cfg.qdc.final_eval_size == 0:
            continue
        rows = splits[split].select(range(min(cfg.qdc.final_eval_size, len(splits[split]))))
        measured = evaluate_pass_at_k(
            model,
            tokenizer,
            rows,
            k=cfg.grpo.eval_samples,
            temperature=cfg.grpo.eval_temperature,
            seed=cfg.training.seed,
            max_new_tokens=cfg.training.max_completion_length,
        )
        out.update({f"{name}_{split}": value for name, value in measured.items()})
    return out


def _rollout_summary(history: list[dict[str, Any]]) -> dict[str, float]:
    """Each ``qdc/rollout/*`` series averaged over the first and the last fifth of its records."""
    records = [r for r in history if any(k.startswith("qdc/rollout/") for k in r)]
    if not records:
        return {}
    part = max(len(records) // 5, 1)
    out: dict[str, float] = {}
    for label, chunk in (("start", records[:part]), ("end", records[-part:])):
        keys = sorted({k for r in chunk for k in r if k.startswith("qdc/rollout/")})
        for key in keys:
            values = [r[key] for r in chunk if key in r and r[key] == r[key]]
            if values:
                out[f"{key.removeprefix('qdc/rollout/')}_{label}"] = sum(values) / len(values)
    return out


def fresh_problems(cfg: RecipeConfig, warmup: Any) -> Any:
    """``cfg.grpo.grpo_prompts`` clean problems of the arithmetic task that the warm-up never trained on: drawn from
    their own random stream, outside the held-out share (validation and OOD problems stay unseen), and without an
    expression of ``warmup`` (in any phrasing)."""
    from .run import _task

    task = _task(cfg)
    if task is None:
        raise ValueError("grpo_prompts needs task: arithmetic (fresh problems are generated by the task)")
    from ..tasks.arithmetic.splits import make_dataset

    want, seen = cfg.grpo.grpo_prompts, set(warmup["expression"])
    config = task.ArithmeticConfig(noise=0.0, seed=cfg.data.task_seed)
    drawn = make_dataset(3 * want + 100, config, zlib.crc32(f"{cfg.data.task_seed}/grpo".encode()), held_out=False)
    keep = [i for i, expression in enumerate(drawn["expression"]) if expression not in seen][:want]
    if len(keep) < want:
        raise ValueError(f"only {len(keep)} fresh problems found for grpo_prompts={want}; ask for fewer")
    return drawn.select(keep)


def train_grpo_recipe(cfg: RecipeConfig, folder: RunFolder, resume: str | None) -> dict[str, Any]:
    """A ``trainer: grpo`` recipe inside its output folder (locked, marked; :func:`~qdc_trainer.cli.run.train_recipe`
    checks the folder and finds the checkpoint to resume); returns ``{"output_dir", "results", "report"}``."""
    from datasets import Dataset
    from trl import GRPOTrainer

    from ..callbacks.rollout import RolloutMonitorCallback
    from ..data.sampler import QDCSampler
    from ..tasks.arithmetic import extract_answer
    from ..trainer import QDCTrainerMixin
    from .run import _describe, _is_main, build_callbacks, load_model_and_tokenizer, load_splits, score_training_data

    class QDCGRPOTrainer(QDCTrainerMixin, GRPOTrainer):
        pass

    out = cfg.training.output_dir
    model, tokenizer = load_model_and_tokenizer(cfg)
    splits = load_splits(cfg)
    model = warm_up(cfg, model, tokenizer, splits["train"])
    results: dict[str, Any] = {}
    if _is_main():
        results.update({f"before_{k}": v for k, v in evaluate(cfg, model, tokenizer, splits).items()})
    problems = fresh_problems(cfg, splits["train"]) if cfg.grpo.grpo_prompts else splits["train"]
    problems = score_training_data(cfg, problems) if cfg.qdc.sampler else problems
    sampler = None
    if cfg.qdc.sampler:
        columns = problems.column_names
        sampler = QDCSampler.from_dataset(
            problems,
            quality_column="quality" if "quality" in columns else None,
            complexity_column="complexity" if "complexity" in columns else None,
            cluster_column="cluster" if "cluster" in columns else None,
            config=cfg.sampler,
        )
    probes = list(splits["validation"]["prompt"][: cfg.qdc.probes]) if "validation" in splits else []
    callbacks = build_callbacks(cfg, probes)
    if cfg.grpo.rollout_monitor:
        callbacks.insert(0, RolloutMonitorCallback(answer=extract_answer))
    trainer = QDCGRPOTrainer(
        model=model,
        args=cfg.training,
        reward_funcs=[verifier_reward],
        train_dataset=Dataset.from_dict({"prompt": list(problems["prompt"])}),
        processing_class=tokenizer,
        callbacks=callbacks,
        qdc_sampler=sampler,
    )
    folder.started()
    if _is_main():
        with atomic_write(os.path.join(out, RUN_FILE)) as f:
            json.dump(_describe(cfg), f, indent=2, default=str)
    trainer.train(resume_from_checkpoint=resume)
    results["global_step"] = trainer.state.global_step
    detector = next((c for c in callbacks if hasattr(c, "warned_at")), None)
    if detector is not None:
        results.update(collapse_warning_step=detector.warned_at, collapse_stop_step=detector.stopped_at)
    trainer.save_model(out)
    report = None
    if trainer.is_world_process_zero():
        trainer.state.save_to_json(os.path.join(out, "trainer_state.json"))
        model = trainer.accelerator.unwrap_model(trainer.model)
        results.update({f"after_{k}": v for k, v in evaluate(cfg, model, tokenizer, splits).items()})
        results.update({f"rollout_{k}": v for k, v in _rollout_summary(trainer.state.log_history).items()})
        with atomic_write(os.path.join(out, RESULTS_FILE)) as f:
            json.dump(results, f, indent=2)
        logger.info("results: %s", results)
        if cfg.qdc.report:
            from ..report import write_run_report

            report = str(write_run_report([out], os.path.join(out, "report")))
    return {"output_dir": out, "results": results, "report": report}
