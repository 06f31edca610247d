"""Run a recipe: data, scoring, sampler, callbacks, training, final evaluation and report.

:func:`train_recipe` is what ``qdc train`` runs; :func:`profile_recipe` is ``qdc profile``.
Both take a :class:`~qdc_trainer.cli.config.RecipeConfig` (see :func:`~qdc_trainer.cli.config.load_config`).
The same recipe runs under ``accelerate launch`` on several processes: every rank
builds the same data and scores (all seeded), and only the main process writes
files other than the Trainer's own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

from .._io import atomic_write
from .config import RecipeConfig
from .output_dir import RESULTS_FILE, RUN_FILE, RunFolder, check_output_dir

__all__ = ["profile_recipe", "train_recipe"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- model and data


def load_model_and_tokenizer(cfg: RecipeConfig) -> tuple[Any, Any]:
    """``from_pretrained`` when ``model_name_or_path`` is set, else the built-in task's tiny model and tokenizer.

    The tiny tokenizer is saved into ``<output_dir>/tokenizer`` and loaded back with
    ``AutoTokenizer.from_pretrained``, the path a real model takes.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = cfg.model
    if m.model_name_or_path:
        try:
            tokenizer = AutoTokenizer.from_pretrained(m.tokenizer_name_or_path or m.model_name_or_path)
            model = AutoModelForCausalLM.from_pretrained(m.model_name_or_path)
        except OSError as err:  # no such folder or hub id, no network, a folder without the model's files
            raise ValueError(
                f"model_name_or_path {m.model_name_or_path} cannot be loaded: {err}. Name a hub id or a folder "
                "written by save_pretrained"
            ) from None
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer
    from ..tasks import arithmetic  # the built-in task's tiny model, whatever the data

    folder = os.path.join(cfg.training.output_dir, "tokenizer")
    if m.tokenizer_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(m.tokenizer_name_or_path)
    else:
        from accelerate import PartialState

        with PartialState().main_process_first():  # the main process writes it, then every process reads it
            if PartialState().is_main_process:
                arithmetic.build_tokenizer().save_pretrained(folder)
            tokenizer = AutoTokenizer.from_pretrained(folder)
    model = arithmetic.build_model(tokenizer, seed=m.model_seed, n_layer=m.n_layer, n_embd=m.n_embd, n_head=m.n_head)
    return model, tokenizer


def load_splits(cfg: RecipeConfig) -> dict[str, Any]:
    """``{"train", "validation"[, "test_ood"]}`` datasets with ``prompt`` and ``completion`` columns."""
    d = cfg.data
    task = _task(cfg)
    if task is not None:
        splits = task.make_splits(
            task.ArithmeticConfig(noise=d.noise, seed=d.task_seed),
            train_size=d.train_size,
            eval_size=d.eval_size,
            ood_size=d.ood_size,
            seed=d.task_seed,
        )
        out = {name: splits[name] for name in splits}
    else:
        loaded = _load_dataset(d)
        if d.train_split not in loaded:
            raise ValueError(f"{d.dataset_name} has no split {d.train_split!r}; it has {sorted(loaded)}")
        for column in (d.prompt_field, d.completion_field):
            if column not in loaded[d.train_split].column_names:
                raise ValueError(
                    f"{d.dataset_name} has no column {column!r}; it has {loaded[d.train_split].column_names} "
                    "(set prompt_field / completion_field)"
                )
        rename = {d.prompt_field: "prompt", d.completion_field: "completion"}

        def tidy(ds):
            ds = ds.select_columns([d.prompt_field, d.completion_field])
            return ds.rename_columns({k: v for k, v in rename.items() if k != v})

        train = _check_text(tidy(loaded[d.train_split]), d, d.train_split)
        if d.eval_split:
            if d.eval_split not in loaded:
                raise ValueError(f"{d.dataset_name} has no split {d.eval_split!r}; it has {sorted(loaded)}")
            validation = _check_text(tidy(loaded[d.eval_split]), d, d.eval_split)
        else:
            if len(train) < 2:
                raise ValueError(
                    f"{_source(d)}: the {d.train_split!r} split has {len(train)} row(s); at least 2 are "
                    "needed to keep some for evaluation and probe prompts. Add rows, or name a split "
                    "for them with eval_split"
                )
            parts = train.train_test_split(test_size=min(0.1, max(1, cfg.qdc.probes) / max(len(train), 1) * 4), seed=0)
            train, validation = parts["train"], parts["test"]
        out = {"train": train, "validation": validation}
    if d.max_train_examples is not None:
        out["train"] = out["train"].select(range(min(d.max_train_examples, len(out["train"]))))
    return out


def _source(d: Any) -> str:
    """The data files of a recipe, or its dataset name, for messages."""
    return f"data_files {d.data_files}" if d.data_files else f"dataset {d.dataset_name}"


def _load_dataset(d: Any) -> Any:
    """``load_dataset`` with its failures on unreadable data turned into a ``ValueError`` that names the files."""
    from datasets import load_dataset
    from datasets.exceptions import DatasetGenerationError

    kwargs = {"data_files": d.data_files} if d.data_files else {}
    try:
        loaded = load_dataset(d.dataset_name, d.dataset_config, **kwargs)
    except DatasetGenerationError as err:
        cause = err.__cause__ or err
        raise ValueError(
            f"{_source(d)} cannot be read with the {d.dataset_name!r} loader: {cause}. Check that the "
            f"file is in that format (json: one JSON object per line, or one JSON list of objects), "
            "or set dataset_name to the loader of its format (csv, parquet, text, ...)"
        ) from None
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{_source(d)}: {err}") from None
    except StopIteration:  # what the json loader raises for an empty file
        raise ValueError(f"{_source(d)} holds no rows: add training examples") from None
    if not all(len(split) for split in loaded.values()):
        empty = [name for name, split in loaded.items() if not len(split)]
        raise ValueError(f"{_source(d)}: split(s) {empty} hold no rows: add training examples")
    return loaded


def _check_text(ds: Any, d: Any, split: str) -> Any:
    """Every prompt and completion must be a string: name the first row that is not (counting from 1)."""
    for column, key in (("prompt", "prompt_field"), ("completion", "completion_field")):
        values = ds[column]
        bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
        if bad:
            name = getattr(d, key)
            raise ValueError(
                f"{_source(d)}: {len(bad)} row(s) of the {split!r} split have no text in column {name!r} ({key}); "
                f"row {bad[0] + 1} (counting from 1) holds {values[bad[0]]!r}. Every row needs a string prompt and "
                "completion: fix or remove those rows"
            )
    return ds


def _task(cfg: RecipeConfig) -> Any:
    """The built-in task module a recipe names (``task: arithmetic``), or None for ``task: dataset``.

    Everything task-specific the runner does goes through this module's public functions: its splits
    (``make_splits``), its tiny tokenizer and model (``build_tokenizer``, ``build_model``), its verifier
    (``verify``, for ``quality: verifier``) and its final evaluation (``evaluate_accuracy``)."""
    if cfg.data.task == "arithmetic":
        from ..tasks import arithmetic

        return arithmetic
    return None


def _quality_scorer(cfg: RecipeConfig) -> Any:
    """``quality: verifier``: the task's own verifier (:func:`~qdc_trainer.cli.config.load_config` refuses it for
    ``task: dataset``); ``quality: none``: no quality score."""
    if cfg.qdc.quality == "none":
        return None
    from ..metrics import VerifierScorer

    task = _task(cfg)
    if task is None:
        raise ValueError(f"quality: {cfg.qdc.quality} needs a task with a verifier (task: arithmetic)")
    return VerifierScorer(task.verify, progress=False)


def _embedder(cfg: RecipeConfig) -> Any:
    from ..metrics import Embedder, HashingEmbedder

    return Embedder.sentence_transformers() if cfg.qdc.embedder == "minilm" else HashingEmbedder()


def score_training_data(cfg: RecipeConfig, train: Any) -> Any:
    """Add ``quality``, ``complexity`` and ``cluster`` columns (one batched pass with a progress bar, then k-means)."""
    from ..metrics import score_dataset

    return score_dataset(
        train,
        text_column="completion",
        prompt_column="prompt",
        quality=_quality_scorer(cfg),
        complexity=None if cfg.qdc.complexity == "none" else cfg.qdc.complexity,
        embedder=_embedder(cfg),
        n_clusters=min(cfg.qdc.n_clusters, len(train)),
        seed=cfg.data.task_seed,
    )


# --------------------------------------------------------------------------- training


def _is_main() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def build_trainer(cfg: RecipeConfig, model: Any, tokenizer: Any, train: Any, validation: Any, callbacks: list) -> Any:
    """The Trainer the recipe names, with the sampler when it has one."""
    from transformers import DataCollatorForSeq2Seq, Trainer

    from ..data.sampler import QDCSampler
    from ..trainer import QDCTrainer, QDCTrainerMixin

    q = cfg.qdc
    sampler = None
    if q.sampler and q.trainer in ("qdc", "trl_sft"):
        sampler = QDCSampler.from_dataset(
            train,
            quality_column="quality" if "quality" in train.column_names else None,
            complexity_column="complexity" if "complexity" in train.column_names else None,
            cluster_column="cluster" if "cluster" in train.column_names else None,
            config=cfg.sampler,
        )
    if q.trainer == "trl_sft":
        from trl import SFTTrainer

        class QDCSFTTrainer(QDCTrainerMixin, SFTTrainer):
            pass

        # prompt and completion only: with a "text" column too, TRL would train on one and append EOS to the other
        pair = ["prompt", "completion"]
        return QDCSFTTrainer(
            model=model,
            args=cfg.training,
            train_dataset=train.select_columns(pair),
            eval_dataset=validation.select_columns(pair) if validation is not None else None,
            processing_class=tokenizer,
            callbacks=callbacks,
            qdc_sampler=sampler,
        )
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    from ..tasks.text import tokenize_dataset  # any prompt / completion data: loss on the completion only

    train_tok = tokenize_dataset(train, tokenizer, max_length=cfg.data.max_tokens)
    eval_tok = (
        tokenize_dataset(validation, tokenizer, max_length=cfg.data.max_tokens) if validation is not None else None
    )
    if q.trainer == "plain":
        trainer = Trainer(
            model=model,
            args=cfg.training,
            train_dataset=train_tok.remove_columns(
                [c for c in ("quality", "complexity", "cluster") if c in train_tok.column_names]
            ),
            eval_dataset=eval_tok,
            processing_class=tokenizer,
            data_collator=collator,
            callbacks=callbacks,
        )
        for callback in callbacks:
            callback.bind(trainer)
        return trainer
    return QDCTrainer(
        model=model,
        args=cfg.training,
        train_dataset=train_tok,
        eval_dataset=eval_tok,
        processing_class=tokenizer,
        data_collator=collator,
        callbacks=callbacks,
        qdc_sampler=sampler,
        loss_weighting=q.loss_weighting,
    )


def build_callbacks(cfg: RecipeConfig, probes: list[str]) -> list:
    from ..callbacks.collapse import CollapseDetectorCallback
    from ..callbacks.monitor import GenerationMonitorCallback

    q = cfg.qdc
    callbacks: list = []
    if q.monitor:
        callbacks.append(GenerationMonitorCallback(probes, cfg.monitor, scorer=_quality_scorer(cfg)))
    if q.detector:
        from ..callbacks.collapse import watch_from_keys

        watch = watch_from_keys(q.detector_watch) if q.detector_watch else None
        callbacks.append(
            CollapseDetectorCallback(watch=watch, actions=tuple(q.detector_actions), start_step=q.detector_start_step)
        )
    return callbacks


def train_recipe(cfg: RecipeConfig) -> dict[str, Any]:
    """Run a recipe end to end (``trainer: grpo`` through :func:`~qdc_trainer.cli.grpo.train_grpo_recipe`);
    returns ``{"output_dir", "results", "report"}``."""
    train = _train_in
    if cfg.qdc.trainer == "grpo":
        from .grpo import train_grpo_recipe as train
    out = cfg.training.output_dir
    if cfg.qdc.report:  # fail now, not after training
        from .._optional import require

        require("matplotlib", "plot", "the report (report: true)")
    check_output_dir(out)
    resume = _resume_point(cfg)
    cfg.training.resume_from_checkpoint = resume
    with RunFolder(out, fresh=resume is None, main=_is_main()) as folder:
        return train(cfg, folder, resume)


def _train_in(cfg: RecipeConfig, folder: RunFolder, resume: str | None) -> dict[str, Any]:
    """:func:`train_recipe` inside its output folder (locked, marked): build everything, then clear what an earlier
    run left (:meth:`RunFolder.started`), train, save and report."""
    out = cfg.training.output_dir
    model, tokenizer = load_model_and_tokenizer(cfg)
    splits = load_splits(cfg)
    train = (
        score_training_data(cfg, splits["train"]) if cfg.qdc.trainer != "plain" or cfg.qdc.sampler else splits["train"]
    )
    validation = splits.get("validation")
    probes = (
        list(validation["prompt"][: cfg.qdc.probes])
        if validation is not None
        else list(train["prompt"][: cfg.qdc.probes])
    )
    callbacks = build_callbacks(cfg, probes)
    trainer = build_trainer(cfg, model, tokenizer, train, validation, callbacks)
    folder.started()
    if _is_main():
        with atomic_write(os.path.join(out, RUN_FILE)) as f:
            json.dump(_describe(cfg), f, indent=2, default=str)
    trainer.train(resume_from_checkpoint=resume)
    results: dict[str, Any] = {"global_step": trainer.state.global_step}
    detector = next((c for c in callbacks if hasattr(c, "warned_at")), None)
    if detector is not None:
        results.update(collapse_warning_step=detector.warned_at, collapse_stop_step=detector.stopped_at)
    report = None
    trainer.save_model(out)  # on every process: under FSDP or ZeRO-3 saving gathers the shards
    if trainer.is_world_process_zero():
        trainer.state.save_to_json(os.path.join(out, "trainer_state.json"))
        task = _task(cfg)
        if task is not None and cfg.qdc.final_eval_size > 0:
            model = trainer.accelerator.unwrap_model(trainer.model)
            for split in ("validation", "test_ood"):
                if split in splits:
                    rows = splits[split].select(range(min(cfg.qdc.final_eval_size, len(splits[split]))))
                    results[f"accuracy_{split}"] = task.evaluate_accuracy(model, tokenizer, rows)
        with atomic_write(os.path.join(out, RESULTS_FILE)) as f:
            json.dump(results, f, indent=2)
        logger.info("results: %s", results)
        if cfg.qdc.report:
            from ..report import write_run_report

            report = str(write_run_report([out], os.path.join(out, "report")))
    return {"output_dir": out, "results": results, "report": report}


_YES, _NO = ("true", "yes", "last"), ("", "false", "no", "none")


def _resume_point(cfg: RecipeConfig) -> str | None:
    """The checkpoint folder to resume from: ``resume_from_checkpoint`` as a folder, or ``true`` for the last
    ``checkpoint-<step>`` in ``output_dir`` (as ``trainer.train(resume_from_checkpoint=True)``); None for a fresh run.
    Raises ``ValueError`` naming the folder when there is nothing to resume."""
    value = cfg.training.resume_from_checkpoint
    out = cfg.training.output_dir
    if value is None or str(value).strip().lower() in _NO:
        return None
    if str(value).strip().lower() in _YES:
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(out) if os.path.isdir(out) else None
        if last is None:
            raise ValueError(
                f"resume_from_checkpoint: {value}, but output_dir {out} holds no checkpoint-<step> folder "
                "to resume from. Leave resume_from_checkpoint out for a first run, or point output_dir at "
                "the run to continue"
            )
        return last
    if not os.path.isdir(str(value)):
        raise ValueError(
            f"resume_from_checkpoint: {value} is not a folder. Name a checkpoint-<step> folder, or say "
            f"true for the last one in output_dir ({out})"
        )
    return str(value)


def profile_recipe(cfg: RecipeConfig) -> str:
    """Score a recipe's training data and write its QDC profile to ``<output_dir>/profile``; returns the page."""
    from ..report import write_profile_report

    splits = load_splits(cfg)
    scored = score_training_data(cfg, splits["train"])
    scored = scored.map(lambda b: {"text": [p + c for p, c in zip(b["prompt"], b["completion"])]}, batched=True)
    return str(write_profile_report(scored, os.path.join(cfg.training.output_dir, "profile")))


def _describe(cfg: RecipeConfig) -> dict[str, Any]:
    return {
        "source": cfg.source,
        "model": dataclasses.asdict(cfg.model),
        "data": dataclasses.asdict(cfg.data),
        "qdc": dataclasses.asdict(cfg.qdc),
        "sampler": dataclasses.asdict(cfg.sampler),
        "monitor": dataclasses.asdict(cfg.monitor),
        "training": {k: v for k, v in cfg.training.to_dict().items() if not k.startswith("_")},
        **({"grpo": dataclasses.asdict(cfg.grpo)} if cfg.grpo is not None else {}),
    }
