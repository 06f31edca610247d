"""Sample from the model on fixed probe prompts during training and log the QDC of its generations.

:func:`measure_generations` is the pure part (texts in, numbers out);
:class:`GenerationMonitorCallback` does the sampling inside a ``Trainer`` run::

    monitor = GenerationMonitorCallback(probe_prompts, config=GenerationMonitorConfig(num_samples=4), trainer=trainer)
    trainer.add_callback(monitor)

(:class:`~qdc_trainer.QDCTrainer` binds itself to callbacks given without a trainer.)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from transformers import TrainerCallback
from transformers.utils import logging

from .._config import resolve_config
from ..generation import fit_to_context, generate, split_prompts
from ._logging import log_record
from .generation_metrics import (  # noqa: F401  (also importable from here, as before the split)
    DIVERSITY_METRICS,
    EMBEDDING_METRICS,
    GENERATION_METRICS,
    PREFIX,
    SAMPLES_FILE,
    SCOPES,
    TEXT_METRICS,
    GenerationMonitorConfig,
    measure_generations,
)

__all__ = ["GenerationMonitorCallback", "GenerationMonitorConfig", "measure_generations", "PREFIX", "SAMPLES_FILE"]

logger = logging.get_logger(__name__)


# --------------------------------------------------------------------------- the callback


class GenerationMonitorCallback(TrainerCallback):
    """Generate from the model on probe prompts during training and log the QDC of the generations.

    Every ``every_n_steps`` optimizer steps (default: the evaluation cadence), and once
    before the first step, the model samples ``num_samples`` completions for each probe
    prompt, in batches, with ``use_cache=True`` and under ``no_grad``, in eval mode (which
    also turns activation checkpointing off in transformers models, so the cache works);
    train mode is restored afterwards, the tokenizer is never modified (prompts are
    left-padded by hand), and the training random streams are untouched (sampling runs
    in a forked RNG).

    Args:
        prompts: probe prompts: strings, or chat conversations (lists of
            ``{"role", "content"}`` messages, rendered with the tokenizer's chat template).
            A prompt longer than the context minus ``max_new_tokens`` keeps its last tokens.
        config: the settings, a :class:`GenerationMonitorConfig` (None: its defaults).
        trainer: the Trainer (its ``log``, model, tokenizer and accelerator are used);
            or call :meth:`bind` later. ``QDCTrainer`` binds it automatically.
        embedder: optional; maps a list of texts to an embedding matrix
            (:class:`~qdc_trainer.metrics.Embedder`) for Vendi and cosine diversity.
        scorer: optional quality scorer ``scorer(prompts, completions) -> scores``
            (:class:`~qdc_trainer.metrics.VerifierScorer` and friends).
        **overrides: deprecated: single settings as keyword arguments (``num_samples=4``); they still
            work in this release, with a ``FutureWarning``. Pass ``config=GenerationMonitorConfig(num_samples=4)``.

    Logged keys (through ``trainer.log``, so they reach TensorBoard, W&B and MLflow):
    ``qdc/gen/per_input/<m>`` and ``qdc/gen/across_input/<m>`` for ``<m>`` in
    ``distinct_1``, ``distinct_2``, ``self_bleu``, ``compression_ratio`` (and ``vendi``,
    ``cosine_distance`` with an embedder; ``across_input`` needs two or more prompts);
    ``qdc/gen/length``, ``qdc/gen/entropy`` (mean next-token entropy of the model over
    the generated tokens, in nats), ``qdc/gen/repetition``, ``qdc/gen/empty_rate``,
    ``qdc/gen/quality`` (with a scorer) and ``qdc/gen/seconds`` (wall time of the evaluation).

    Each evaluation's samples are appended to ``<output_dir>/qdc_generations.jsonl`` (``step``,
    ``prompt_index``, ``prompt``, ``sample``, ``completion``, ``num_tokens``) and logged as a
    W&B table (``qdc/gen/samples``) when W&B is among ``report_to``. The file holds one run:
    a fresh ``train()`` (step 0) starts it anew (with a warning when it held samples), as the
    Trainer overwrites what it writes in ``output_dir``; a run resumed from a checkpoint at
    step N keeps the records of steps <= N and drops later ones (rewritten atomically), so it
    ends up as an uninterrupted run's file. With ``save_samples=False`` the file is not touched.

    A monitor never stops training: when generating, embedding, scoring, measuring or
    writing the samples fails, training goes on, the values that could not be computed are
    logged as NaN (the collapse detector skips NaN), the samples are still written (they are
    written before they are measured), and the first failure of each kind in a run is logged
    as a warning (later ones at debug level; ``failures`` counts them). Set-up errors (no
    trainer, no tokenizer, prompts that cannot fit the context) still raise in ``on_train_begin``.

    Several processes: prompts are split over ranks and every rank makes the same number
    of ``generate`` calls (short ranks repeat a prompt and drop the result), as ZeRO-3 and
    FSDP require; the samples are gathered, measured once on the main process and the
    numbers broadcast, so every rank logs the same values. A failure on one rank does not
    change the collective calls: that rank joins the gather with no samples, the evaluation
    is then not measured (NaN everywhere), and the main process always broadcasts. (Under
    ZeRO-3 / FSDP an error inside ``generate`` on one rank can still leave the others waiting
    in the sharded forward pass; nothing outside ``generate`` can prevent that.)
    """

    def __init__(
        self,
        prompts: Sequence[str | list[dict[str, str]]],
        config: GenerationMonitorConfig | None = None,
        *,
        trainer: Any = None,
        embedder: Callable[[list[str]], Any] | None = None,
        scorer: Callable[[Sequence[str], Sequence[str]], Any] | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            raise TypeError("prompts must be a list of probe prompts (strings or chat message lists)")
        prompts = list(prompts)
        if not prompts:
            raise ValueError("prompts is empty: the generation monitor needs at least one probe prompt")
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, str):
                if not prompt.strip():
                    raise ValueError(f"probe prompt {i} is empty")
            elif not (
                isinstance(prompt, list) and prompt and all(isinstance(m, dict) and "content" in m for m in prompt)
            ):
                raise TypeError(f"probe prompt {i} must be a string or a list of {{'role', 'content'}} messages")
        if trainer is not None and not callable(getattr(trainer, "log", None)):
            raise TypeError(f"trainer must be a transformers Trainer, got {type(trainer).__name__}")
        self.config = resolve_config(GenerationMonitorConfig, config, overrides, owner="GenerationMonitorCallback")
        self.prompts = prompts
        self.trainer = trainer
        self.embedder = embedder
        self.scorer = scorer
        self.every: int | None = None
        self.by_epoch = False
        self.evaluations = 0
        self.total_seconds = 0.0
        self.last_metrics: dict[str, float] = {}
        self.failures: dict[str, int] = {}
        """How many evaluations of this run hit an error, by kind (``generate``, ``embed``, ``score``, ``measure``,
        ``save``)."""
        self._encoded: list[list[int]] | None = None
        self._last_step: int | None = None

    def bind(self, trainer: Any) -> GenerationMonitorCallback:
        """Attach the Trainer whose model, tokenizer, accelerator and ``log`` are used; returns self."""
        self.trainer = trainer
        return self

    # ------------------------------------------------------------------ events

    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is None:
            raise ValueError("GenerationMonitorCallback needs the trainer: pass trainer=... or call bind(trainer)")
        cfg = self.config
        self.by_epoch = False
        if cfg.every_n_steps is not None:
            self.every = cfg.every_n_steps
        elif str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "steps":
            self.every = max(1, int(state.eval_steps or args.eval_steps or 1))
        elif str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "epoch":
            self.every, self.by_epoch = None, True
        else:
            self.every = max(1, int(state.logging_steps or args.logging_steps or 1))
        self._encoded = self._encode_prompts()
        self._last_step = None
        if callable(getattr(self.embedder, "follow", None)):  # an Embedder runs where the model runs
            try:
                self.embedder.follow(self._model().device)
            except Exception as err:  # a monitoring callback never stops the run
                self._failed("embed", err, state.global_step)
        self.failures = {}
        if cfg.save_samples and self.trainer.accelerator.is_main_process:
            try:
                self._start_samples_file(args.output_dir, state.global_step)
            except Exception as err:  # a monitoring callback never stops the run
                self._failed("save", err, state.global_step)
        if cfg.at_start and state.global_step == 0:
            self.evaluate(state.global_step)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if self.every is not None and state.global_step % self.every == 0:
            self.evaluate(state.global_step)
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.by_epoch:
            self.evaluate(state.global_step)
        return control

    # ------------------------------------------------------------------ the evaluation

    def evaluate(self, step: int) -> dict[str, float]:
        """Generate, measure and log now (all processes must call it together); returns the metrics."""
        if self._last_step == step:  # at most once per step (an epoch end can fall on a cadence step)
            return self.last_metrics
        if self._encoded is None:
            self._encoded = self._encode_prompts()
        start = time.perf_counter()
        trainer = self.trainer
        accelerator = trainer.accelerator
        # Errors never leave this method, and every rank makes the same collective calls whatever fails where:
        # a rank whose generation fails still joins the gather (with no records and its error), and the main
        # process measures inside try and broadcasts what it got, NaN included.
        error = None
        try:
            records = self._generate_local(accelerator.process_index, accelerator.num_processes, step)
        except Exception as err:
            records, error = [], f"{type(err).__name__}: {err}"
            logger.debug(f"process {accelerator.process_index}: generation failed at step {step}", exc_info=True)
        parts = [(records, error)]
        if accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list, gather_object

            parts = gather_object(parts)
        metrics: dict[str, float] = {}
        if accelerator.is_main_process:
            metrics = self._main_process_evaluation(parts, step)
        if accelerator.num_processes > 1:
            box = [metrics]
            broadcast_object_list(box)
            metrics = box[0]
        metrics["seconds"] = time.perf_counter() - start
        logs = {PREFIX + key: value for key, value in metrics.items()}
        self.evaluations += 1
        self.last_metrics = logs
        self._last_step = step
        # not trainer.log: TRL's log() would take its metric buffer onto this record (log_record keeps should_log)
        log_record(trainer, logs)
        self.total_seconds += time.perf_counter() - start  # with the logging and the callbacks behind it
        return logs

    def _main_process_evaluation(
        self, parts: list[tuple[list[dict[str, Any]], str | None]], step: int
    ) -> dict[str, float]:
        """Save, then measure, the gathered records; an error leaves NaN values and one warning per kind."""
        metrics = dict.fromkeys(self.metric_keys(), float("nan"))
        records = sorted((r for recs, _ in parts for r in recs), key=lambda r: r["prompt_index"])
        errors = [e for _, e in parts if e is not None]
        if records:  # the samples are saved first, whatever the measuring does
            try:
                self._save(records, step)
            except Exception as err:
                self._failed("save", err, step)
        if errors:  # an incomplete set of samples is not comparable with the other evaluations: not measured
            self._failed(
                "generate", RuntimeError(f"{len(errors)} process(es) failed to generate; first: {errors[0]}"), step
            )
            return metrics
        try:
            metrics.update(self._measure(records, step))
        except Exception as err:
            self._failed("measure", err, step)
        return metrics

    def metric_keys(self) -> list[str]:
        """The keys (without the ``qdc/gen/`` prefix, without ``seconds``) every evaluation logs, NaN when not
        computed."""
        scopes = ["per_input"] + (["across_input"] if len(self.prompts) >= 2 else [])
        names = list(TEXT_METRICS) + (list(EMBEDDING_METRICS) if self.embedder is not None else [])
        keys = [f"{scope}/{name}" for name in names for scope in scopes]
        return (
            keys + ["length", "repetition", "empty_rate", "entropy"] + (["quality"] if self.scorer is not None else [])
        )

    def _failed(self, kind: str, err: BaseException, step: int) -> None:
        """Count a failure; warn the first time a kind fails in a run (with the traceback), then only at debug level."""
        self.failures[kind] = self.failures.get(kind, 0) + 1
        what = {
            "generate": "generating the samples",
            "embed": "the embedder",
            "score": "the scorer",
            "measure": "measuring the samples",
            "save": f"writing {SAMPLES_FILE}",
        }[kind]
        message = f"GenerationMonitorCallback: {what} failed at step {step} ({type(err).__name__}: {err})"
        if self.failures[kind] == 1:
            logger.warning(
                f"{message}; what it should give is logged as NaN and training goes on. "
                "Later failures of this kind in this run are logged at debug level only.",
                exc_info=err if err.__traceback__ is not None else None,
            )
        else:
            logger.debug(message)

    def _start_samples_file(self, output_dir: str, step: int) -> None:
        """A run's samples file holds only that run's samples (main process only).

        A fresh run (``global_step`` 0) starts the file anew, as the Trainer overwrites what it
        writes into ``output_dir``; a run resumed at step N keeps the records of steps <= N (those
        the checkpoint already covers) and drops later ones, which the resumed run writes again.
        The file is rewritten atomically (a temporary file, then ``os.replace``).
        """
        path = os.path.join(output_dir, SAMPLES_FILE)
        if not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as f:
            lines = [line for line in f if line.strip()]
        if step == 0:
            os.remove(path)
            if lines:
                logger.warning(
                    f"{path} held {len(lines)} sample(s) of an earlier run; this fresh run (step 0) starts it anew"
                )
            return
        kept = []
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short when the earlier run was killed
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
        if len(kept) == len(lines):
            return
        temporary = f"{path}.tmp-{os.getpid()}"
        try:
            with open(temporary, "w", encoding="utf-8") as f:
                f.writelines(kept)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        logger.info(f"resuming at step {step}: dropped {len(lines) - len(kept)} record(s) after it from {path}")

    def _tokenizer(self) -> Any:
        tok = getattr(self.trainer, "processing_class", None)
        tok = getattr(tok, "tokenizer", tok)  # a multimodal processor holds a tokenizer
        if tok is None or not callable(getattr(tok, "decode", None)):
            raise ValueError(
                "GenerationMonitorCallback needs a tokenizer: pass processing_class=tokenizer to the Trainer"
            )
        return tok

    def _model(self) -> Any:
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
            raise ValueError("GenerationMonitorCallback supports decoder-only (causal) language models")
        if not callable(getattr(model, "generate", None)):
            raise TypeError(
                f"{type(model).__name__} has no generate(): the generation monitor needs a generative model"
            )
        return model

    def _encode_prompts(self) -> list[list[int]]:
        tok = self._tokenizer()
        model = self._model()
        encoded = []
        for prompt in self.prompts:
            if isinstance(prompt, str):
                encoded.append(list(tok(prompt)["input_ids"]))
            else:
                text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
                encoded.append(list(tok(text, add_special_tokens=False)["input_ids"]))
        empty = [i for i, ids in enumerate(encoded) if not ids]
        if empty:
            raise ValueError(f"probe prompt(s) {empty[:5]} encode to no tokens")
        return fit_to_context(encoded, model, tok, self.config.max_new_tokens)

    def _generate_local(self, rank: int, world: int, step: int) -> list[dict[str, Any]]:
        """Generate for this rank's share of prompts; every rank makes the same number of generate calls."""
        cfg = self.config
        jobs, kept = split_prompts(len(self.prompts), rank, world)  # repeated prompts are generated and dropped
        samples = generate(
            self._model(),
            self._tokenizer(),
            [self._encoded[i] for i in jobs],
            num_samples=cfg.num_samples,
            max_new_tokens=cfg.max_new_tokens,
            do_sample=True,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            batch_size=cfg.batch_size,
            seed=cfg.seed + step,
            return_entropy=True,
            progress=False,
            generation_kwargs=cfg.generation_kwargs,
        )
        return [
            {
                "prompt_index": jobs[s.prompt_index],
                "completion": s.text,
                "num_tokens": s.num_tokens,
                "entropy_sum": s.entropy_sum if s.entropy is not None else 0.0,
                "entropy_count": len(s.entropy) if s.entropy is not None else 0,
            }
            for s in samples
            if s.prompt_index < kept
        ]

    def _measure(self, records: list[dict[str, Any]], step: int) -> dict[str, float]:
        k = self.config.num_samples
        by_prompt: dict[int, list[dict[str, Any]]] = {}
        for r in records:
            by_prompt.setdefault(r["prompt_index"], []).append(r)
        order = sorted(by_prompt)
        groups = [[r["completion"] for r in by_prompt[p]][:k] for p in order]
        counts = [[r["num_tokens"] for r in by_prompt[p]][:k] for p in order]
        count = sum(r["entropy_count"] for r in records)
        entropy = sum(r["entropy_sum"] for r in records) / count if count else float("nan")
        flat = [t for g in groups for t in g]
        embeddings = scores = None
        if self.embedder is not None:
            try:
                embeddings = np.asarray(self.embedder(flat), dtype=np.float64)
                if embeddings.ndim != 2 or embeddings.shape[0] != len(flat):
                    raise ValueError(f"the embedder returned shape {embeddings.shape} for {len(flat)} samples")
                if not np.isfinite(embeddings).all():
                    raise ValueError("the embedder returned NaN or inf")
            except Exception as err:
                self._failed("embed", err, step)
                embeddings = None
        if self.scorer is not None:
            try:
                prompt_texts = [self._prompt_text(p) for p in order for _ in range(k)]
                scores = np.asarray(self.scorer(prompt_texts, flat), dtype=np.float64).reshape(-1)
                if len(scores) != len(flat):
                    raise ValueError(f"the scorer returned {len(scores)} scores for {len(flat)} samples")
            except Exception as err:
                self._failed("score", err, step)
                scores = None
        return measure_generations(groups, num_tokens=counts, entropy=entropy, embeddings=embeddings, scores=scores)

    def _prompt_text(self, index: int) -> str:
        prompt = self.prompts[index]
        return prompt if isinstance(prompt, str) else prompt[-1]["content"]

    def _save(self, records: list[dict[str, Any]], step: int) -> None:
        rows = []
        sample_of: dict[int, int] = {}
        for r in records:
            j = sample_of.get(r["prompt_index"], 0)
            sample_of[r["prompt_index"]] = j + 1
            rows.append(
                {
                    "step": step,
                    "prompt_index": r["prompt_index"],
                    "prompt": self._prompt_text(r["prompt_index"]),
                    "sample": j,
                    "completion": r["completion"],
                    "num_tokens": r["num_tokens"],
                }
            )
        args = self.trainer.args
        if self.config.save_samples:
            os.makedirs(args.output_dir, exist_ok=True)
            with open(os.path.join(args.output_dir, SAMPLES_FILE), "a", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        report_to = args.report_to if isinstance(args.report_to, list) else [args.report_to]
        if "wandb" in report_to or "all" in report_to:
            try:
                import wandb
            except ImportError:
                return
            if wandb.run is not None:
                columns = (
                    list(rows[0]) if rows else ["step", "prompt_index", "prompt", "sample", "completion", "num_tokens"]
                )
                table = wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])
                wandb.run.log({PREFIX + "samples": table}, commit=False)
