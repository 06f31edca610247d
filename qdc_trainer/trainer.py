"""QDCTrainer and QDCTrainerMixin: install a QDCSampler in any transformers Trainer and feed it the losses.

Plain ``Trainer``::

    trainer = QDCTrainer(model=model, args=args, train_dataset=train_ds,
                         data_collator=QDCDataCollator(base_collator), qdc_sampler=sampler)

Any Trainer subclass (TRL's ``SFTTrainer``)::

    class QDCSFTTrainer(QDCTrainerMixin, SFTTrainer):
        pass

The mixin

- wraps the training dataset so that every example carries its index
  (``qdc_idx``) and keeps that column through ``remove_unused_columns``; the
  index is popped before ``model(**inputs)``;
- hands the sampler to the dataloader (``_get_train_sampler``) with a block size
  of ``update_every`` optimizer steps;
- computes per-example losses in ``compute_loss`` from the same pass over the logits
  as the loss itself (for causal LMs a :class:`~qdc_trainer.losses.CausalLMLossTap`
  stands in for the model's ``loss_function``), keeps (index, loss) on the device,
  gathers them from every process once per weight refresh (and before a log, a
  checkpoint or a new epoch), feeds them to the sampler and refreshes its weights
  every ``update_every`` optimizer steps, so the weights are identical on every rank
  and no micro-step waits for the host;
- optionally weights the loss (``loss_weighting``): ``"none"`` (the Trainer's
  own loss, unchanged), ``"sampler"`` (``N p_i``) or ``"importance"``
  (``1 / (N p_i)``: unbiased for the uniform-sampling loss);
- sets the sampler's epoch itself (the resume path never calls ``set_epoch`` on a
  custom sampler), saves the sampler state into every checkpoint folder before
  the Trainer's own files (so no checkpoint looks complete without it), with the
  batch layout it counts its position in, and restores it in
  ``train(resume_from_checkpoint=...)``, refusing a checkpoint that lacks it or
  was saved with another batch layout (batch size, gradient accumulation,
  processes, GRPO's generations);
- adds the sampler's telemetry (``qdc/sampler/...``) to the training logs, so it
  reaches TensorBoard, W&B and MLflow;
- logs ``qdc/train/entropy``, the mean entropy (nats) of the model's next-token
  distribution at the scored positions of the training batches since the last log,
  from the logits the loss already needed, on 64 evenly spaced positions per
  micro-batch (no extra forward pass; ``log_entropy``);
- binds itself to callbacks that need the trainer (``GenerationMonitorCallback``,
  ``CollapseDetectorCallback``) when they were created without one.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback
from transformers.loss.loss_utils import LOSS_MAPPING
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from transformers.utils import logging

from . import grpo
from ._io import atomic_write
from .callbacks.rollout import RolloutMonitorCallback
from .data.collator import INDEX_KEY, IndexedDataset, QDCDataCollator
from .data.prompt_sampler import GroupedPromptSampler
from .data.sampler import LOSS_WEIGHTINGS, QDCSampler
from .losses import ENTROPY_POSITIONS, CausalLMLossTap, per_example_loss, strided_entropy

__all__ = ["QDCTrainerMixin", "QDCTrainer", "SAMPLER_STATE_FILE", "BATCH_LAYOUT_FILE", "LOSS_WEIGHTINGS"]

logger = logging.get_logger(__name__)

SAMPLER_STATE_FILE = "qdc_sampler.npz"
"""File name of the sampler state inside a checkpoint folder."""
BATCH_LAYOUT_FILE = "qdc_batch_layout.json"
"""File name, inside a checkpoint folder, of the batch layout the sampler's position counts in (beside the state)."""
ENTROPY_KEY = "qdc/train/entropy"
"""The logged mean next-token entropy (nats) of the training batches (``log_entropy``)."""

_UNSET = object()
_CHECKPOINT_RE = re.compile(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)")


class _SamplerCallback(TrainerCallback):
    """Epoch bookkeeping and weight refreshes of the sampler (identical on every rank); the mixin's
    ``_save_checkpoint`` writes its state."""

    def __init__(
        self, sampler: QDCSampler, flush: Callable[[], None], position: Callable[[Any], None] | None = None
    ) -> None:
        self.sampler = sampler
        self.flush = flush  # records the losses kept on the device since the last flush
        self.position = position  # moves the stream position on, where the trainer tracks it (GRPO)

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.flush()  # the last epoch's feedback counts in that epoch
        self.sampler.set_epoch(int(math.floor(state.epoch or 0.0)))

    def on_step_end(self, args, state, control, **kwargs):
        if self.position is not None:
            self.position(state)
        if state.global_step % self.sampler.update_every == 0:
            self.flush()
            self.sampler.update()

    def on_train_end(self, args, state, control, **kwargs):
        self.flush()


class QDCTrainerMixin:
    """Adds QDC sampling to a ``transformers.Trainer`` subclass; put it first: ``class T(QDCTrainerMixin, Base)``.

    Args:
        qdc_sampler: the :class:`~qdc_trainer.QDCSampler` over ``train_dataset``
            (None: the subclass behaves exactly like its base).
        loss_weighting: ``"none"`` (default), ``"sampler"`` or ``"importance"``.
        log_entropy: log ``qdc/train/entropy`` (default True; a softmax over 64 evenly spaced
            positions of each micro-batch, whatever its size).

    All other arguments go to the base Trainer. The data collator is wrapped in
    :class:`~qdc_trainer.QDCDataCollator` if it is not one already.

    Supported bases: ``transformers.Trainer`` and its subclasses, TRL's ``SFTTrainer`` and TRL's
    ``GRPOTrainer`` (prompts drawn in GRPO's layout, reward feedback, rollouts handed to a
    :class:`~qdc_trainer.RolloutMonitorCallback`; see :mod:`qdc_trainer.grpo`). Other TRL trainers
    (``DPOTrainer``, ``KTOTrainer``, ``RLOOTrainer``, ``RewardTrainer``, ...) are refused with a ``TypeError``:
    their batches are preference pairs or their losses are not one per example.
    """

    def __init__(
        self,
        *args: Any,
        qdc_sampler: QDCSampler | None = None,
        loss_weighting: str = "none",
        log_entropy: bool = True,
        **kwargs: Any,
    ) -> None:
        if qdc_sampler is not None and not isinstance(qdc_sampler, QDCSampler):
            raise TypeError(f"qdc_sampler must be a QDCSampler, got {type(qdc_sampler).__name__}")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting={loss_weighting!r} is not one of {LOSS_WEIGHTINGS}")
        unsupported = grpo.unsupported_trl(type(self))
        if unsupported is not None:
            raise TypeError(
                f"QDCTrainerMixin does not support TRL's {unsupported}: it works with transformers.Trainer, TRL's "
                f"{' and '.join(grpo.SUPPORTED_TRL)} (the loss or reward feedback needs one loss or one group of "
                "rollouts per example)"
            )
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)  # Trainer(model, args, ...)
        packed = [name for name in ("packing", "padding_free") if getattr(training_args, name, False) is True]
        if qdc_sampler is not None and packed:  # before the base class packs the dataset
            raise ValueError(
                f"QDC sampling does not support packed batches yet ({' and '.join(f'{n}=True' for n in packed)} in the "
                "TRL config): a packed row holds several examples, so their losses cannot be fed back one per example. "
                "Set packing=False and padding_free=False, or leave qdc_sampler unset"
            )
        super().__init__(*args, **kwargs)
        self.qdc_sampler = qdc_sampler
        self.loss_weighting = loss_weighting
        self._qdc_grpo = grpo.is_grpo_trainer(self)
        if self._qdc_grpo and loss_weighting != "none":
            raise ValueError("loss_weighting needs a loss per example; under GRPOTrainer leave it at 'none'")
        self.log_entropy = bool(log_entropy) and not self._qdc_grpo  # GRPO logs its own `entropy`
        self._qdc_grouped: GroupedPromptSampler | None = None
        self._qdc_batches_per_epoch: int | None = None
        if self._qdc_grpo:
            for scored in (self.model, getattr(self, "ref_model", None)):
                if scored is not None:
                    grpo.add_mask_positions(scored)
        self._qdc_entropy: torch.Tensor | None = None  # (sum, count) on the device, since the last log
        self._qdc_pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (index, loss) per micro-step, on the device
        for callback in self.callback_handler.callbacks:
            if callable(getattr(callback, "bind", None)) and getattr(callback, "trainer", False) is None:
                callback.bind(self)
        if qdc_sampler is None:
            return
        if loss_weighting != "none" and (self.args.label_smoothing_factor or self.compute_loss_func is not None):
            raise ValueError("loss_weighting needs the default loss: unset label_smoothing_factor / compute_loss_func")
        train_dataset = self.train_dataset
        if train_dataset is not None:
            if not hasattr(train_dataset, "__len__") or isinstance(train_dataset, torch.utils.data.IterableDataset):
                raise TypeError("QDC sampling needs a map-style train_dataset with __len__, not an iterable dataset")
            if len(train_dataset) != qdc_sampler.num_examples:
                raise ValueError(
                    f"qdc_sampler covers {qdc_sampler.num_examples} examples "
                    f"but train_dataset has {len(train_dataset)} "
                    "(was the dataset filtered or packed after the sampler was built?)"
                )
        if self._qdc_grpo:  # GRPO's batches are lists of rows: the index stays in each row
            reuse = self.args.steps_per_generation * self.num_iterations  # micro-steps per generation batch
            qdc_sampler.configure_success(
                self.num_generations,
                grpo.objective_of(self.args),
                steps_per_generation=max(1, reuse // self.args.gradient_accumulation_steps),
            )
            self.add_callback(_SamplerCallback(qdc_sampler, self._flush_feedback, self._grpo_position))
            return
        if not isinstance(self.data_collator, QDCDataCollator):
            self.data_collator = QDCDataCollator(self.data_collator)
        self.add_callback(_SamplerCallback(qdc_sampler, self._flush_feedback))

    # ------------------------------------------------------------------ data

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if getattr(self, "qdc_sampler", None) is not None and INDEX_KEY not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, INDEX_KEY]

    def get_train_dataloader(self):
        if self.qdc_sampler is None:
            return super().get_train_dataloader()
        sampler = self.qdc_sampler
        if self._qdc_grpo:
            prompts = self.args.generation_batch_size // self.num_generations
            reuse = self.args.steps_per_generation * self.num_iterations  # micro-steps per generation batch
            chunks = max(1, -(-sampler.update_every * self.args.gradient_accumulation_steps // reuse))
            try:
                sampler.configure_block(chunks * prompts, global_batch=prompts)  # whole chunks per block
            except ValueError as err:
                raise ValueError(
                    f"GRPO draws {prompts} prompts per generation batch (generation_batch_size="
                    f"{self.args.generation_batch_size} / num_generations={self.num_generations}), more than the QDC "
                    f"sampler's block_size={sampler.block_size} holds ({err}). The block size was set on the sampler, "
                    "or restored from a checkpoint saved with other GRPO settings: resume with that checkpoint's "
                    "num_generations and generation_batch_size, or build the sampler without block_size"
                ) from None
        else:
            samples_per_step = self._train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
            sampler.configure_block(samples_per_step, global_batch=self._train_batch_size * self.args.world_size)
        original = self.train_dataset
        self.train_dataset = IndexedDataset(original)
        try:
            dataloader = super().get_train_dataloader()
        finally:
            self.train_dataset = original
        self._qdc_batches_per_epoch = len(dataloader)
        return dataloader

    def _get_train_sampler(self, train_dataset=None):
        if self.qdc_sampler is None:
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if len(dataset) != self.qdc_sampler.num_examples:
            raise ValueError(
                f"qdc_sampler covers {self.qdc_sampler.num_examples} examples, train_dataset has {len(dataset)}"
            )
        if self._qdc_grpo:
            self._qdc_grouped = GroupedPromptSampler(
                self.qdc_sampler,
                num_generations=self.num_generations,
                prompts_per_generation=self.args.generation_batch_size // self.num_generations,
                repeat_count=self.args.steps_per_generation * self.num_iterations,
            )
            return self._qdc_grouped
        return self.qdc_sampler

    # ------------------------------------------------------------------ GRPO (see qdc_trainer.grpo)

    def _generate_and_score_completions(self, inputs):
        """GRPO's generation and scoring, then the rollouts' feedback to the sampler and the rollout monitors."""
        training = self.model.training
        indices = None
        if training and self.qdc_sampler is not None:
            indices = [row.pop(INDEX_KEY) for row in inputs]
        else:
            for row in inputs:
                row.pop(INDEX_KEY, None)
        output = super()._generate_and_score_completions(inputs)
        monitors = [cb for cb in self.callback_handler.callbacks if isinstance(cb, RolloutMonitorCallback)]
        if training and (indices is not None or monitors):
            if indices is not None and self.accelerator.num_processes > 1:
                from accelerate.utils import gather_object

                indices = gather_object(indices)
            token_ids = None
            if any(monitor.tokens for monitor in monitors):
                try:
                    token_ids = grpo.gather_completion_ids(self, output)
                except Exception as err:  # the monitors measure words instead; the sampler does not need the ids
                    if not getattr(self, "_qdc_token_ids_warned", False):
                        logger.warning(
                            f"could not gather GRPO's completion ids ({err!r}); the rollouts are measured as words"
                        )
                        self._qdc_token_ids_warned = True
            try:
                rollouts = grpo.read_rollouts(
                    self, None if indices is None else np.asarray(indices, dtype=np.int64), token_ids
                )
            except Exception as err:
                if indices is not None:  # the sampler cannot go on without its feedback: say so now
                    raise
                if not getattr(self, "_qdc_rollout_warned", False):  # monitors alone never stop training
                    logger.warning(f"the rollout monitor could not read GRPO's rollouts ({err!r}); it logs nothing")
                    self._qdc_rollout_warned = True
                return output
            if indices is not None:
                self.qdc_sampler.record_success(
                    *grpo.group_outcomes(rollouts, self.qdc_sampler.config.success_threshold)
                )
            for monitor in monitors:
                monitor.observe(rollouts)
        return output

    def _grpo_position(self, state: Any) -> None:
        """Move the prompt stream's position to the micro-steps this epoch has finished (counted as the Trainer
        counts what to skip when it resumes)."""
        if self._qdc_grouped is None or not self._qdc_batches_per_epoch:
            return
        accumulation = self.args.gradient_accumulation_steps
        steps_per_epoch = max(-(-self._qdc_batches_per_epoch // accumulation), 1)
        self._qdc_grouped.set_position((state.global_step % steps_per_epoch) * accumulation)

    # ------------------------------------------------------------------ loss and feedback

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        sampler = self.qdc_sampler
        if self._qdc_grpo:  # GRPO's own loss; the sampler's feedback comes from the rewards
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        if not model.training or (sampler is None and not self.log_entropy):
            inputs.pop(INDEX_KEY, None)
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        indices = None
        if sampler is not None:
            if INDEX_KEY not in inputs:
                raise KeyError(
                    f"the training batch has no {INDEX_KEY!r}: the data collator must be a QDCDataCollator "
                    f"(got {type(self.data_collator).__name__}) and the dataset must not be replaced after construction"
                )
            indices = inputs.pop(INDEX_KEY)
        labels = inputs.get("labels")
        if sampler is not None and labels is None:
            raise KeyError("QDC loss feedback needs 'labels' in the batch (use a collator that creates them)")
        if sampler is not None and labels.shape[0] != indices.numel():
            packed = any(k in inputs for k in ("position_ids", "cu_seq_lens_q", "cu_seq_lens_k"))
            raise ValueError(
                f"the training batch has {labels.shape[0]} rows but {indices.numel()} example indices"
                + (
                    ": packed or padding-free batches (TRL's packing=True / padding_free=True) "
                    "are not supported by QDC sampling yet; set packing=False and padding_free=False"
                    if packed
                    else ": the collator must keep one row per example"
                )
            )
        weights = None
        if sampler is not None and self.loss_weighting != "none":
            weights = sampler.loss_weights_tensor(indices.to(labels.device), self.loss_weighting)
        # Causal LMs: a tap in the model's own loss call computes the per-token loss once, reduces it as the
        # model would (weighted or not) and keeps the per-example sums and the entropy sample: one pass.
        tap = self._install_loss_tap(model, weights) if sampler is not None else None
        if tap is None and weights is not None:
            return self._weighted_loss(model, inputs, labels, indices, weights, return_outputs, num_items_in_batch)
        # Otherwise the base class computes the loss its own way (TRL's included); a forward hook catches the
        # model outputs on the way, for a second pass over the logits when the tap was not used.
        captured: dict[str, Any] = {}
        handle = model.register_forward_hook(lambda module, args, output: captured.__setitem__("out", output))
        try:
            result = super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        finally:
            handle.remove()
            if tap is not None:
                self._remove_loss_tap(model)
        if tap is not None and tap.calls == 1:
            if self.log_entropy and tap.entropy is not None:
                self._add_entropy(tap.entropy)
            self._feed_back(indices, tap.sums, tap.counts)
            return result
        if weights is not None:  # a label smoother or compute_loss_func took over: refused at construction
            raise RuntimeError("the model did not compute its loss through its loss_function; loss_weighting needs it")
        seen = captured.get("out")
        with torch.no_grad():
            if self.log_entropy:
                self._record_entropy(seen, labels, inputs.get("attention_mask"))
            if sampler is not None:
                sums, counts = self._per_example(seen, labels)
                self._feed_back(indices, sums, counts)
        return result

    def _weighted_loss(self, model, inputs, labels, indices, weights, return_outputs, num_items_in_batch):
        """Weighted loss for models without a causal LM loss function (sequence classifiers, fused LM heads):
        per-example losses from a second pass over the logits, reduced as the model's own loss would be."""
        outputs = model(**inputs)
        sums, counts = self._per_example(outputs, labels)
        token_level = labels.dim() == 2 and not labels.is_floating_point()  # not multi-label classification
        loss = self._reduce_weighted(weights.to(sums.dtype) * sums, counts, num_items_in_batch, token_level)
        if self.log_entropy:
            with torch.no_grad():
                self._record_entropy(outputs, labels, inputs.get("attention_mask"))
        self._feed_back(indices, sums.detach(), counts)
        return (loss, outputs) if return_outputs else loss

    def _loss_module(self, model) -> Any:
        """The module whose forward calls ``self.loss_function`` (unwrapped from DDP/FSDP and PEFT)."""
        module = self.accelerator.unwrap_model(model)
        get_base = getattr(module, "get_base_model", None)
        return get_base() if callable(get_base) and hasattr(module, "peft_config") else module

    def _install_loss_tap(self, model, weights: torch.Tensor | None) -> CausalLMLossTap | None:
        """Put a :class:`CausalLMLossTap` in place of a causal LM's standard loss function (None if it has another)."""
        if self.args.label_smoothing_factor or self.compute_loss_func is not None:
            return None
        module = self._loss_module(model)
        if getattr(module, "loss_function", None) is not LOSS_MAPPING["ForCausalLM"]:
            return None
        tap = CausalLMLossTap(weights, ENTROPY_POSITIONS if self.log_entropy else 0)
        self._qdc_saved_loss = module.__dict__.get("_loss_function", _UNSET)
        module.loss_function = tap
        return tap

    def _remove_loss_tap(self, model) -> None:
        module = self._loss_module(model)
        saved = getattr(self, "_qdc_saved_loss", _UNSET)
        if saved is _UNSET:
            module.__dict__.pop("_loss_function", None)
        else:
            module.loss_function = saved

    def _add_entropy(self, pair: torch.Tensor) -> None:
        pair = pair.detach().float()
        self._qdc_entropy = pair if self._qdc_entropy is None else self._qdc_entropy + pair

    def _record_entropy(self, outputs: Any, labels: torch.Tensor | None, attention_mask: torch.Tensor | None) -> None:
        """Add the predictive entropy at the scored positions of a token-level batch to the running (sum, count)."""
        if outputs is None:
            return
        logits = outputs.get("logits") if isinstance(outputs, dict) else getattr(outputs, "logits", None)
        if logits is None or logits.dim() != 3:  # a fused LM head keeps no logits; classifiers have no tokens
            return
        if labels is not None and labels.shape == logits.shape[:2]:
            targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100) if self._shifts_labels() else labels
            mask = targets != -100
        elif attention_mask is not None and attention_mask.shape == logits.shape[:2]:
            mask = attention_mask.bool()
        else:
            mask = None
        flat = logits.detach().reshape(-1, logits.shape[-1])
        rows = torch.ones(flat.shape[0], dtype=torch.bool, device=flat.device) if mask is None else mask.reshape(-1)
        self._add_entropy(strided_entropy(flat, rows))

    def _per_example(self, outputs: Any, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed loss, scored items) per example, from logits or from TRL's fused per-token log-probabilities."""
        get = (lambda k: outputs.get(k)) if isinstance(outputs, dict) else (lambda k: getattr(outputs, k, None))
        logits = get("logits") if outputs is not None else None
        if logits is not None:
            return per_example_loss(logits, labels, shift=self._shifts_labels())
        log_probs = get("log_probs") if outputs is not None else None
        label_mask = get("label_mask") if outputs is not None else None
        if log_probs is not None and label_mask is not None:
            return -(log_probs.float() * label_mask).sum(dim=-1), label_mask.float().sum(dim=-1)
        raise ValueError("QDC loss feedback needs model outputs with logits (or per-token log_probs and label_mask)")

    def _shifts_labels(self) -> bool:
        """Whether position t predicts label t + 1 (causal LMs), decided as the Trainer's label smoother does."""
        if getattr(self, "_qdc_shift", None) is None:
            from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

            model = self.accelerator.unwrap_model(self.model)
            base = getattr(getattr(model, "base_model", None), "model", None) if hasattr(model, "peft_config") else None
            name = (base or model)._get_name()
            self._qdc_shift = (
                bool(getattr(self, "_loss_shifts_labels", False)) or name in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()
            )
        return self._qdc_shift

    def _reduce_weighted(
        self, weighted_sums: torch.Tensor, counts: torch.Tensor, num_items_in_batch: Any, token_level: bool
    ) -> torch.Tensor:
        """The weighted loss, normalised exactly as the model's own loss would be (so weights of 1 change nothing)."""
        if not token_level:
            return weighted_sums.mean()
        if num_items_in_batch is not None and self.model_accepts_loss_kwargs:
            loss = weighted_sums.sum() / num_items_in_batch
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
            return loss
        return weighted_sums.sum() / counts.sum().clamp(min=1)

    def _feed_back(self, indices: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor) -> None:
        """Keep (index, mean loss) of this micro-step on the device until the next flush (no host sync here)."""
        device = sums.device
        idx = indices.to(device).long().reshape(-1)
        loss = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("nan"))).float()
        width = max(self._train_batch_size, idx.numel())
        if idx.numel() < width:  # equal widths, so the micro-steps stack (a short last batch)
            idx = torch.nn.functional.pad(idx, (0, width - idx.numel()), value=-1)
            loss = torch.nn.functional.pad(loss, (0, width - loss.numel()), value=0.0)
        self._qdc_pending.append((idx, loss))

    def _flush_feedback(self) -> None:
        """Gather the pending (index, loss) pairs of every process once and record them in the sampler, in the
        order of the index stream (micro-step by micro-step, rank by rank). Called on every process at the same
        points: before a weight refresh, a log and a checkpoint, and at the end of training."""
        pending, self._qdc_pending = self._qdc_pending, []
        if not pending or self.qdc_sampler is None:
            return
        width = max(idx.numel() for idx, _ in pending)
        idx = torch.stack([torch.nn.functional.pad(i, (0, width - i.numel()), value=-1) for i, _ in pending])
        loss = torch.stack([torch.nn.functional.pad(v, (0, width - v.numel()), value=0.0) for _, v in pending])
        world = self.accelerator.num_processes
        if world > 1:
            idx = self.accelerator.pad_across_processes(idx, dim=1, pad_index=-1)
            loss = self.accelerator.pad_across_processes(loss, dim=1, pad_index=0)
            steps = idx.shape[0]
            idx = self.accelerator.gather(idx).reshape(world, steps, -1).transpose(0, 1)
            loss = self.accelerator.gather(loss).reshape(world, steps, -1).transpose(0, 1)
        idx, loss = idx.reshape(-1).cpu().numpy(), loss.reshape(-1).cpu().numpy()
        keep = idx >= 0
        self.qdc_sampler.record(idx[keep], loss[keep])

    # ------------------------------------------------------------------ logging and resume

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:  # a training log, made on every process at the same step
            if getattr(self, "qdc_sampler", None) is not None:
                self._flush_feedback()
                logs = {**logs, **self.qdc_sampler.telemetry()}
            if getattr(self, "log_entropy", False):
                pair = self._qdc_entropy
                if pair is None:
                    pair = torch.zeros(2, device=self.args.device)
                if self.accelerator.num_processes > 1:
                    pair = self.accelerator.reduce(pair, reduction="sum")
                if float(pair[1]) > 0:
                    logs = {**logs, ENTROPY_KEY: float(pair[0] / pair[1])}
                self._qdc_entropy = None
        super().log(logs, *args, **kwargs)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """Write the sampler state into the checkpoint folder first, then let the Trainer save the rest.

        ``Trainer._save_checkpoint`` writes the model, optimizer, scheduler, RNG state and, last,
        ``trainer_state.json`` (without which the Trainer cannot resume from the folder), and only then
        deletes older checkpoints (``save_total_limit``). Writing the sampler state before all of it means
        a run killed at any point of a save leaves no checkpoint that looks complete without the sampler
        state, and the previous checkpoints are still there.
        """
        if getattr(self, "qdc_sampler", None) is not None:
            self._flush_feedback()  # on every process (the gather is collective), so the state is complete
        if getattr(self, "qdc_sampler", None) is not None and self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            os.makedirs(folder, exist_ok=True)
            with atomic_write(os.path.join(folder, BATCH_LAYOUT_FILE)) as f:
                json.dump(self._batch_layout(), f, indent=2)
            self.qdc_sampler.save(os.path.join(folder, SAMPLER_STATE_FILE))
        super()._save_checkpoint(model, trial)

    def _batch_layout(self) -> dict[str, int]:
        """What the sampler's stream position is counted in: the examples of a micro-batch, of an optimizer step and
        of all processes, and under GRPO the prompts and completions of a generation batch and their reuse. A resume
        must find the same layout, since the Trainer skips whole batches of the new layout."""
        args = self.args
        layout = {
            "per_device_train_batch_size": int(self._train_batch_size),
            "gradient_accumulation_steps": int(args.gradient_accumulation_steps),
            "world_size": int(args.world_size),
        }
        if self._qdc_grpo:
            layout.update(
                num_generations=int(self.num_generations),
                generation_batch_size=int(args.generation_batch_size),
                steps_per_generation=int(args.steps_per_generation),
                num_iterations=int(self.num_iterations),
            )
        return layout

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        """``Trainer.train``; with a sampler, a resume first restores the sampler state saved in the checkpoint.

        Every process reads the same file. A checkpoint without ``trainer_state.json`` (a save that was
        interrupted) or without the sampler state is refused with an error that names it, unless
        ``args.ignore_data_skip`` is set: then the run gives up the exact data order anyway, and the sampler
        keeps its current weights (or the checkpoint's, when present) and starts the epoch afresh.
        """
        checkpoint = resume_from_checkpoint
        if isinstance(checkpoint, bool):
            found = os.path.isdir(self.args.output_dir)
            checkpoint = get_last_checkpoint(self.args.output_dir) if checkpoint and found else None
        if checkpoint and os.path.isdir(os.fspath(checkpoint)):
            _check_trainer_state(os.fspath(checkpoint))
        if self.qdc_sampler is not None:
            if checkpoint:
                self._restore_sampler(os.fspath(checkpoint))
            else:
                self.qdc_sampler.reset_position()
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _restore_sampler(self, checkpoint: str) -> None:
        """Load the sampler state of ``checkpoint`` or explain why it cannot be."""
        sampler, skip_data = self.qdc_sampler, bool(self.args.ignore_data_skip)
        state_file = os.path.join(checkpoint, SAMPLER_STATE_FILE)
        if not os.path.isfile(os.path.join(checkpoint, TRAINER_STATE_NAME)):
            raise ValueError(
                f"checkpoint {checkpoint} is incomplete: it has no {TRAINER_STATE_NAME}, the last file a save writes "
                f"(a run interrupted while saving?). {_earlier_checkpoint_hint(checkpoint)}"
            )
        _check_trainer_state(checkpoint)
        if os.path.isfile(state_file):
            self._check_batch_layout(checkpoint, skip_data)
            sampler.load(state_file)
            if skip_data:  # the Trainer will not skip the batches already trained on: nor may the sampler
                sampler.reset_position()
            return
        if not skip_data:
            raise ValueError(
                f"checkpoint {checkpoint} has no {SAMPLER_STATE_FILE}, the QDC sampler state, so training cannot "
                "resume on the same examples (it was saved without a sampler, or by a version that wrote the state "
                f"after the checkpoint). {_earlier_checkpoint_hint(checkpoint)} To go on from this checkpoint with "
                "the sampler's current weights and a new data order, set TrainingArguments(ignore_data_skip=True)"
            )
        logger.warning(
            f"{checkpoint} holds no {SAMPLER_STATE_FILE}: with ignore_data_skip=True the QDC sampler keeps its current "
            "weights and starts the epoch afresh"
        )
        sampler.reset_position()

    def _check_batch_layout(self, checkpoint: str, skip_data: bool) -> None:
        """Refuse to resume with another batch layout than the checkpoint's (:meth:`_batch_layout`), naming both:
        the sampler counts its position in examples of the checkpoint's layout while the Trainer skips whole
        batches of this run's, so the stream would not go on where it stopped. With ``ignore_data_skip`` the data
        order starts afresh anyway: a warning only. A checkpoint without the file (an earlier version) is not
        checked."""
        path = os.path.join(checkpoint, BATCH_LAYOUT_FILE)
        if not os.path.isfile(path):
            return
        try:
            with open(path, encoding="utf-8") as f:
                saved = json.load(f)
        except (OSError, ValueError) as err:
            raise ValueError(f"{path} is damaged ({err}). {_earlier_checkpoint_hint(checkpoint)}") from None
        current = self._batch_layout()
        if not isinstance(saved, dict):
            raise ValueError(f"{path} does not hold a batch layout (a JSON object): {saved!r}")
        changed = [k for k in current if k in saved and saved[k] != current[k]]
        if not changed:
            return

        def show(layout: dict) -> str:
            return ", ".join(f"{k}={layout[k]}" for k in current if k in layout)

        message = (
            f"checkpoint {checkpoint} was saved with the batch layout {show(saved)}; this run has {show(current)} "
            f"(changed: {', '.join(f'{k} {saved[k]} -> {current[k]}' for k in changed)}). The QDC sampler's "
            "position counts examples in the checkpoint's layout while the Trainer skips whole batches of this run's, "
            "so the data would not go on where they stopped"
        )
        if skip_data:
            logger.warning(f"{message}; with ignore_data_skip=True the data order starts afresh")
            return
        raise ValueError(
            f"{message}. Resume with the checkpoint's settings ({', '.join(changed)}), or set "
            "TrainingArguments(ignore_data_skip=True) to go on from its weights with a new data order"
        )


def _check_trainer_state(checkpoint: str) -> None:
    """Refuse a checkpoint whose ``trainer_state.json`` cannot be read as a ``TrainerState``, naming the file."""
    from transformers import TrainerState

    path = os.path.join(checkpoint, TRAINER_STATE_NAME)
    if not os.path.isfile(path):
        return  # the sampler's restore names an incomplete checkpoint; the Trainer itself goes on without one
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:  # transformers writes it in place, not atomically
        raise ValueError(
            f"{path} is damaged ({err}): a run killed while writing it? {_earlier_checkpoint_hint(checkpoint)}"
        ) from None
    problem = None
    if not isinstance(raw, dict):
        problem = f"it holds a JSON {type(raw).__name__}, not an object"
    else:
        try:
            state = TrainerState(**raw)
        except TypeError as err:
            problem = str(err).replace("TrainerState.__init__() ", "")
        else:
            wrong = [
                name
                for name, kind in (("global_step", int), ("log_history", list), ("max_steps", int))
                if not isinstance(getattr(state, name), kind) or isinstance(getattr(state, name), bool)
            ]
            if wrong:
                problem = f"{', '.join(f'{n}={getattr(state, n)!r}' for n in wrong)} has the wrong type"
    if problem is not None:
        raise ValueError(
            f"{path} is not a Trainer state ({problem}): was it replaced or written by another program? "
            f"{_earlier_checkpoint_hint(checkpoint)}"
        )


def _earlier_checkpoint_hint(checkpoint: str) -> str:
    """Where to resume from instead: the newest earlier checkpoint next to ``checkpoint`` that is complete and has
    its sampler state."""
    parent = os.path.dirname(os.path.abspath(checkpoint))
    own = _CHECKPOINT_RE.fullmatch(os.path.basename(os.path.abspath(checkpoint)))
    below = int(own.group(1)) if own else None
    candidates = []
    if os.path.isdir(parent):
        for entry in os.listdir(parent):
            match = _CHECKPOINT_RE.fullmatch(entry)
            folder = os.path.join(parent, entry)
            complete = all(os.path.isfile(os.path.join(folder, f)) for f in (TRAINER_STATE_NAME, SAMPLER_STATE_FILE))
            if match and (below is None or int(match.group(1)) < below) and complete:
                candidates.append((int(match.group(1)), folder))
    if candidates:
        return (
            f"Resume from {max(candidates)[1]} instead "
            f"(or delete {checkpoint} and resume_from_checkpoint=True picks it)."
        )
    return "Resume from an earlier checkpoint that has it, or start a new run."


class QDCTrainer(QDCTrainerMixin, Trainer):
    """``transformers.Trainer`` with QDC sampling: ``QDCTrainer(..., qdc_sampler=sampler)``.

    See :class:`QDCTrainerMixin` for what it adds and the module docstring for an example.
    """
