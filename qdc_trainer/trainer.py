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
- computes per-example losses in ``compute_loss``, gathers (index, loss) from
  every process, feeds them to the sampler and refreshes its weights every
  ``update_every`` optimizer steps, so the weights are identical on every rank;
- optionally weights the loss (``loss_weighting``): ``"none"`` (the Trainer's
  own loss, unchanged), ``"sampler"`` (``N p_i``) or ``"importance"``
  (``1 / (N p_i)``: unbiased for the uniform-sampling loss);
- sets the sampler's epoch itself (the resume path never calls ``set_epoch`` on a
  custom sampler), saves the sampler state into every checkpoint folder and
  restores it in ``train(resume_from_checkpoint=...)``;
- adds the sampler's telemetry (``qdc/sampler/...``) to the training logs, so it
  reaches TensorBoard, W&B and MLflow;
- logs ``qdc/train/entropy``, the mean entropy (nats) of the model's next-token
  distribution at the scored positions of the training batches since the last log,
  from the logits the loss already needed (no extra forward pass; ``log_entropy``);
- binds itself to callbacks that need the trainer (``GenerationMonitorCallback``,
  ``CollapseDetectorCallback``) when they were created without one.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from transformers.utils import logging

from .collator import INDEX_KEY, IndexedDataset, QDCDataCollator
from .losses import per_example_loss, token_entropy_sum
from .sampler import QDCSampler

__all__ = ["QDCTrainerMixin", "QDCTrainer", "SAMPLER_STATE_FILE", "LOSS_WEIGHTINGS"]

logger = logging.get_logger(__name__)

SAMPLER_STATE_FILE = "qdc_sampler.npz"
"""File name of the sampler state inside a checkpoint folder."""

LOSS_WEIGHTINGS = ("none", "sampler", "importance")


class _SamplerCallback(TrainerCallback):
    """Epoch bookkeeping, weight refreshes and checkpointing of the sampler (identical on every rank)."""

    def __init__(self, sampler: QDCSampler) -> None:
        self.sampler = sampler

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.sampler.set_epoch(int(math.floor(state.epoch or 0.0)))

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.sampler.config.update_every == 0:
            self.sampler.update()

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
            if os.path.isdir(folder):
                self.sampler.save(os.path.join(folder, SAMPLER_STATE_FILE))


class QDCTrainerMixin:
    """Adds QDC sampling to a ``transformers.Trainer`` subclass; put it first: ``class T(QDCTrainerMixin, Base)``.

    Args:
        qdc_sampler: the :class:`~qdc_trainer.QDCSampler` over ``train_dataset``
            (None: the subclass behaves exactly like its base).
        loss_weighting: ``"none"`` (default), ``"sampler"`` or ``"importance"``.
        log_entropy: log ``qdc/train/entropy`` (default True; costs one chunked
            softmax over the logits of each training batch).

    All other arguments go to the base Trainer. The data collator is wrapped in
    :class:`~qdc_trainer.QDCDataCollator` if it is not one already.
    """

    def __init__(
        self, *args: Any, qdc_sampler: QDCSampler | None = None, loss_weighting: str = "none", log_entropy: bool = True, **kwargs: Any
    ) -> None:
        if qdc_sampler is not None and not isinstance(qdc_sampler, QDCSampler):
            raise TypeError(f"qdc_sampler must be a QDCSampler, got {type(qdc_sampler).__name__}")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting={loss_weighting!r} is not one of {LOSS_WEIGHTINGS}")
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
        self.log_entropy = bool(log_entropy)
        self._qdc_entropy: torch.Tensor | None = None  # (sum, count) on the device, since the last log
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
                    f"qdc_sampler covers {qdc_sampler.num_examples} examples but train_dataset has {len(train_dataset)} "
                    "(was the dataset filtered or packed after the sampler was built?)"
                )
        if not isinstance(self.data_collator, QDCDataCollator):
            self.data_collator = QDCDataCollator(self.data_collator)
        self.add_callback(_SamplerCallback(qdc_sampler))

    # ------------------------------------------------------------------ data

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if getattr(self, "qdc_sampler", None) is not None and INDEX_KEY not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, INDEX_KEY]

    def get_train_dataloader(self):
        if self.qdc_sampler is None:
            return super().get_train_dataloader()
        sampler = self.qdc_sampler
        if sampler.block_size is None:
            samples_per_step = self._train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
            sampler.block_size = sampler.config.update_every * samples_per_step
        global_batch = self._train_batch_size * self.args.world_size
        if sampler.block_size < global_batch:
            raise ValueError(
                f"QDCSampler block_size={sampler.block_size} is smaller than one global batch ({global_batch}); "
                "leave it unset to get update_every optimizer steps' worth of examples"
            )
        original = self.train_dataset
        self.train_dataset = IndexedDataset(original)
        try:
            return super().get_train_dataloader()
        finally:
            self.train_dataset = original

    def _get_train_sampler(self, train_dataset=None):
        if self.qdc_sampler is None:
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if len(dataset) != self.qdc_sampler.num_examples:
            raise ValueError(f"qdc_sampler covers {self.qdc_sampler.num_examples} examples, train_dataset has {len(dataset)}")
        return self.qdc_sampler

    # ------------------------------------------------------------------ loss and feedback

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        sampler = self.qdc_sampler
        if not model.training or (sampler is None and not self.log_entropy):
            inputs.pop(INDEX_KEY, None)
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
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
                + (": packed or padding-free batches (TRL's packing=True / padding_free=True) are not supported by QDC "
                   "sampling yet; set packing=False and padding_free=False" if packed else
                   ": the collator must keep one row per example")
            )
        attention_mask = inputs.get("attention_mask")
        if sampler is None or self.loss_weighting == "none":
            # The base class computes the loss its own way (TRL's fused LM head included); a forward hook
            # catches the model outputs on the way, so no second forward pass is needed.
            captured: dict[str, Any] = {}
            handle = model.register_forward_hook(lambda module, args, output: captured.__setitem__("out", output))
            try:
                result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
            finally:
                handle.remove()
            loss, outputs = result if return_outputs else (result, captured.get("out"))
            seen = captured.get("out")
            if sampler is not None:
                with torch.no_grad():
                    sums, counts = self._per_example(seen, labels)
        else:
            outputs = seen = model(**inputs)
            sums, counts = self._per_example(outputs, labels)
            weights = torch.as_tensor(
                sampler.loss_weights(indices.cpu().numpy(), self.loss_weighting), dtype=sums.dtype, device=sums.device
            )
            token_level = labels.dim() == 2 and not labels.is_floating_point()  # not multi-label classification
            loss = self._reduce_weighted(weights * sums, counts, num_items_in_batch, token_level)
        if self.log_entropy:
            with torch.no_grad():
                self._record_entropy(seen, labels, attention_mask)
        if sampler is not None:
            self._feed_back(indices, sums.detach(), counts)
        return (loss, outputs) if return_outputs else loss

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
        total, count = token_entropy_sum(logits.detach(), mask)
        pair = torch.stack([total, count.to(total.dtype)])
        self._qdc_entropy = pair if self._qdc_entropy is None else self._qdc_entropy + pair

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
            self._qdc_shift = bool(getattr(self, "_loss_shifts_labels", False)) or name in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()
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
        """Gather (index, mean loss) from every process and record them in the sampler, in stream order."""
        device = sums.device
        idx = indices.to(device).long().reshape(-1)
        loss = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("nan")))
        if self.accelerator.num_processes > 1:
            idx = self.accelerator.pad_across_processes(idx, dim=0, pad_index=-1)
            loss = self.accelerator.pad_across_processes(loss, dim=0, pad_index=0)
            idx, loss = self.accelerator.gather(idx), self.accelerator.gather(loss)
            keep = idx >= 0
            idx, loss = idx[keep], loss[keep]
        self.qdc_sampler.record(idx.cpu().numpy(), loss.float().cpu().numpy())

    # ------------------------------------------------------------------ logging and resume

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:  # a training log, made on every process at the same step
            if getattr(self, "qdc_sampler", None) is not None:
                logs = {**logs, **self.qdc_sampler.telemetry()}
            if getattr(self, "log_entropy", False):
                pair = self._qdc_entropy
                if pair is None:
                    pair = torch.zeros(2, device=self.args.device)
                if self.accelerator.num_processes > 1:
                    pair = self.accelerator.reduce(pair, reduction="sum")
                if float(pair[1]) > 0:
                    logs = {**logs, "qdc/train/entropy": float(pair[0] / pair[1])}
                self._qdc_entropy = None
        super().log(logs, *args, **kwargs)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        if self.qdc_sampler is not None:
            checkpoint = resume_from_checkpoint
            if isinstance(checkpoint, bool):
                checkpoint = get_last_checkpoint(self.args.output_dir) if checkpoint else None
            state_file = os.path.join(checkpoint, SAMPLER_STATE_FILE) if checkpoint else None
            if state_file and os.path.isfile(state_file):
                self.qdc_sampler.load(state_file)
            else:
                if checkpoint:
                    logger.warning(f"{checkpoint} holds no {SAMPLER_STATE_FILE}: the QDC sampler starts from its current weights")
                self.qdc_sampler.reset_position()
        return super().train(resume_from_checkpoint, *args, **kwargs)


class QDCTrainer(QDCTrainerMixin, Trainer):
    """``transformers.Trainer`` with QDC sampling: ``QDCTrainer(..., qdc_sampler=sampler)``.

    See :class:`QDCTrainerMixin` for what it adds and the module docstring for an example.
    """
