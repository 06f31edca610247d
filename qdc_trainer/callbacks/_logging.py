"""One way for the library's callbacks to log their own records without touching the trainer's metrics.

TRL's trainers (``SFTTrainer``, ``GRPOTrainer``, ...) override ``log()``: it averages a buffer of
per-step metrics (``entropy``, ``mean_token_accuracy``, ``num_tokens``, ``reward``, ...) into the
record and empties the buffer, on *every* call. A callback that calls ``trainer.log`` between two
logging steps would take those metrics onto its own record and shorten their window.
:func:`log_record` logs through the base ``transformers.Trainer.log`` instead: it appends the record
to ``state.log_history`` and calls the callbacks' ``on_log`` (which reaches TensorBoard, W&B, MLflow
and the other reporting integrations), and skips any subclass override. The
Trainer's own decision to log at this step (``control.should_log``, which that ``on_log`` event clears)
is kept, so a record logged from ``on_step_end`` never takes the place of the training log. The
``QDCTrainerMixin``'s own additions (sampler telemetry, ``qdc/train/entropy``) only attach to
records with ``"loss"``, so skipping them changes nothing for a callback's record.
"""

from __future__ import annotations

from typing import Any

from transformers import Trainer

__all__ = ["log_record"]


def log_record(trainer: Any, logs: dict[str, float]) -> None:
    """Log ``logs`` as one record of ``trainer``, leaving the trainer's own metric buffers alone.

    A ``transformers.Trainer`` (or subclass) logs through ``Trainer.log`` itself; any other object
    through its own ``log`` method.

    >>> class Plain:  # not a Trainer: its own log() is used
    ...     def __init__(self):
    ...         self.records = []
    ...     def log(self, logs):
    ...         self.records.append(logs)
    >>> plain = Plain()
    >>> log_record(plain, {"qdc/gen/length": 3.0})
    >>> plain.records
    [{'qdc/gen/length': 3.0}]
    """
    if isinstance(trainer, Trainer):
        # the on_log event clears control.should_log: keep the Trainer's own decision to log this step
        control = getattr(trainer, "control", None)
        keep = getattr(control, "should_log", None)
        Trainer.log(trainer, logs)
        if keep is not None:
            trainer.control.should_log = keep
    else:
        trainer.log(logs)
