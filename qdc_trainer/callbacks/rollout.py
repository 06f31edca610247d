"""Diversity and coverage of the rollouts GRPO already generates, logged every generation: no extra sampling.

:class:`RolloutMonitorCallback` receives each generation batch of a
``QDCTrainerMixin`` + TRL ``GRPOTrainer`` run (the mixin hands it the rollouts with
their rewards right after GRPO scores them) and logs, at the step that generated them,
``qdc/rollout/<measure>`` for the measures of :func:`~qdc_trainer.metrics.rollout.rollout_measures`:
within-group and across-prompt distinct-2 and self-BLEU, distinct final answers per
group, the share of groups without learning signal (all rewards equal) and pass@1 next
to pass@k (k = ``num_generations``)::

    class QDCGRPOTrainer(QDCTrainerMixin, GRPOTrainer):
        pass

    trainer = QDCGRPOTrainer(model=model, args=grpo_config, reward_funcs=[reward], train_dataset=prompts,
                             callbacks=[RolloutMonitorCallback(answer=extract_answer)])

With a :class:`~qdc_trainer.CollapseDetectorCallback` next to it (default watch:
:data:`~qdc_trainer.callbacks.series.DEFAULT_RL_WATCH` under GRPO), a narrowing of the rollouts
is flagged while the mean reward still rises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Any

from transformers import TrainerCallback
from transformers.utils import logging

from ..metrics.rollout import rollout_measures
from ._logging import log_record

__all__ = ["PREFIX", "RolloutMonitorCallback"]

logger = logging.get_logger(__name__)

PREFIX = "qdc/rollout/"
"""Prefix of the logged keys."""


class RolloutMonitorCallback(TrainerCallback):
    """Log the diversity and coverage of each GRPO generation batch under ``qdc/rollout/``.

    Args:
        answer: a function from a completion's text to its final answer (any hashable, None when there is
            none), for ``qdc/rollout/distinct_answers``; e.g. ``qdc_trainer.tasks.arithmetic.extract_answer``.
            None leaves that measure out.
        success_threshold: a completion whose combined reward is at least this counts as correct for
            pass@1 and pass@k (default 1.0, a verifier's full reward). None leaves pass@k out (for rewards
            that are scores, not verdicts).
        trainer: the trainer to log through; ``QDCTrainerMixin`` binds it itself.

    The measures are computed on every process from the same gathered rollouts, so every process logs the
    same values. Any error while measuring becomes a warning (the first time) and NaN values: monitoring
    never stops a training run.

    >>> cb = RolloutMonitorCallback(answer=str.strip)
    >>> from qdc_trainer.grpo import Rollouts
    >>> import numpy as np
    >>> cb.observe(Rollouts(["p"] * 4, [" 4", "4", "5", "6"], np.array([1.0, 1.0, 0.0, 1.0]), 2, None, 3))
    >>> record = cb.pending[-1]
    >>> record["qdc/rollout/distinct_answers"], record["qdc/rollout/pass@2"]
    (0.75, 1.0)
    """

    def __init__(
        self,
        answer: Callable[[str], Hashable | None] | None = None,
        *,
        success_threshold: float | None = 1.0,
        trainer: Any = None,
    ) -> None:
        if answer is not None and not callable(answer):
            raise TypeError(f"answer must be a function from a completion to its answer, got {type(answer).__name__}")
        if success_threshold is not None and (
            isinstance(success_threshold, bool)
            or not isinstance(success_threshold, (int, float))
            or not math.isfinite(success_threshold)
        ):
            raise ValueError(f"success_threshold must be a finite number or None, got {success_threshold!r}")
        self.answer = answer
        self.success_threshold = success_threshold
        self.trainer = trainer
        self.pending: list[dict[str, float]] = []  # records of this step's generation batches
        self.failures = 0
        self.batches = 0

    def bind(self, trainer: Any) -> RolloutMonitorCallback:
        """Attach the trainer to log through; returns self."""
        self.trainer = trainer
        return self

    def observe(self, rollouts: Any) -> None:
        """Measure one generation batch (a :class:`~qdc_trainer.grpo.Rollouts`); it is logged at the end of the
        optimizer step (several batches in one step: their mean)."""
        self.batches += 1
        try:
            values = rollout_measures(
                rollouts.completions,
                rollouts.rewards,
                rollouts.num_generations,
                answer=self.answer,
                success_threshold=self.success_threshold,
            )
        except Exception as err:  # a monitor never stops training
            self.failures += 1
            message = f"RolloutMonitorCallback: measuring the rollouts of step {rollouts.step} failed ({err!r})"
            if self.failures == 1:
                logger.warning(f"{message}; they are logged as NaN and training goes on", exc_info=err)
            else:
                logger.debug(message)
            values = {"zero_signal_share": math.nan}
        self.pending.append({PREFIX + key: float(value) for key, value in values.items()})

    def on_step_end(self, args, state, control, **kwargs):
        if not self.pending:
            return control
        pending, self.pending = self.pending, []
        if self.trainer is None:
            logger.warning("RolloutMonitorCallback has no trainer to log through; bind it (QDCTrainerMixin does)")
            return control
        keys = sorted({key for record in pending for key in record})  # several batches in one step: their mean
        log_record(self.trainer, {key: _nanmean([r.get(key, math.nan) for r in pending]) for key in keys})
        return control

    def on_train_begin(self, args, state, control, **kwargs):
        self.pending = []
        return control


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan
