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

Off the generation path: the measures run once, on the main process, in a background thread, while the
step trains on the rollouts; the end of the step collects them and, with several processes, broadcasts
them, so every process logs the same values at the same step (the collapse detector's agreement needs
that) and no process measures twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
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
        background: measure in a background thread (default), so that the trainer goes on training on the
            rollouts meanwhile; False measures inside :meth:`observe`, on the generation path.
        tokens: measure distinct-2 and self-BLEU on the model's tokens (GRPO's ``completion_ids``, which the
            trainer then gathers) instead of the completions' whitespace words: no tokenization (about half
            the CPU cost), other values (a token is not a word); the answers are still read from the text.
            Default False: words, the series the RL collapse detector was calibrated on.
        trainer: the trainer to log through; ``QDCTrainerMixin`` binds it itself.

    The rollouts are gathered from every process (every process holds all of them); only the main process
    measures them, and the end of the step broadcasts its records, so every process logs the same values.
    Any error while measuring becomes a warning (the first time) and NaN values: monitoring never stops a
    training run.

    >>> cb = RolloutMonitorCallback(answer=str.strip)
    >>> from qdc_trainer.grpo import Rollouts
    >>> import numpy as np
    >>> cb.observe(Rollouts(["p"] * 4, [" 4", "4", "5", "6"], np.array([1.0, 1.0, 0.0, 1.0]), 2, None, 3))
    >>> record = cb.collect()[-1]  # waits for the background measurement
    >>> record["qdc/rollout/distinct_answers"], record["qdc/rollout/pass@2"]
    (0.75, 1.0)
    """

    def __init__(
        self,
        answer: Callable[[str], Hashable | None] | None = None,
        *,
        success_threshold: float | None = 1.0,
        background: bool = True,
        tokens: bool = False,
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
        for name, flag in (("background", background), ("tokens", tokens)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        self.answer = answer
        self.success_threshold = success_threshold
        self.background = background
        self.tokens = tokens
        self.trainer = trainer
        self.pending: list[dict[str, float]] = []  # measured records of this step's generation batches
        self.failures = 0
        self.batches = 0  # generation batches observed (on every process)
        self.measured = 0  # generation batches measured here (the main process only)
        self._running: list[Future] = []  # this step's measurements still in the background thread
        self._step_batches = 0  # generation batches observed since the last logged step
        self._executor: ThreadPoolExecutor | None = None
        self._warned_no_ids = False

    def bind(self, trainer: Any) -> RolloutMonitorCallback:
        """Attach the trainer to log through; returns self."""
        self.trainer = trainer
        return self

    def observe(self, rollouts: Any) -> None:
        """Take one generation batch (a :class:`~qdc_trainer.grpo.Rollouts`, the same on every process); the
        main process measures it (in the background thread by default) and the end of the optimizer step logs
        it (several batches in one step: their mean). Returns at once."""
        self.batches += 1
        self._step_batches += 1
        if not self._is_main_process():
            return  # the main process measures; on_step_end brings its records here
        self.measured += 1
        if not self.background:
            self.pending.append(self._measure(rollouts))
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdc-rollout-measures")
        self._running.append(self._executor.submit(self._measure, rollouts))

    def collect(self) -> list[dict[str, float]]:
        """Wait for the measurements still running and return every measured record not yet logged."""
        running, self._running = self._running, []
        for future in running:
            try:
                self.pending.append(future.result())
            except Exception as err:  # _measure catches its own errors; this is the executor failing
                self.failures += 1
                logger.warning(f"RolloutMonitorCallback: a background measurement failed ({err!r})")
                self.pending.append({PREFIX + "zero_signal_share": math.nan})
        return self.pending

    def _measure(self, rollouts: Any) -> dict[str, float]:
        """The record of one generation batch; errors become NaN and one warning."""
        token_ids = getattr(rollouts, "completion_ids", None) if self.tokens else None
        if self.tokens and token_ids is None and not self._warned_no_ids:
            self._warned_no_ids = True
            logger.warning("RolloutMonitorCallback(tokens=True) got no token ids; it measures words instead")
        try:
            values = rollout_measures(
                rollouts.completions,
                rollouts.rewards,
                rollouts.num_generations,
                answer=self.answer,
                success_threshold=self.success_threshold,
                token_ids=token_ids,
            )
        except Exception as err:  # a monitor never stops training
            self.failures += 1
            message = f"RolloutMonitorCallback: measuring the rollouts of step {rollouts.step} failed ({err!r})"
            if self.failures == 1:
                logger.warning(f"{message}; they are logged as NaN and training goes on", exc_info=err)
            else:
                logger.debug(message)
            values = {"zero_signal_share": math.nan}
        return {PREFIX + key: float(value) for key, value in values.items()}

    def _accelerator(self) -> Any:
        return getattr(self.trainer, "accelerator", None)

    def _is_main_process(self) -> bool:
        accelerator = self._accelerator()
        return accelerator is None or bool(accelerator.is_main_process)

    def on_step_end(self, args, state, control, **kwargs):
        if not self._step_batches:
            return control
        self._step_batches = 0
        pending = self.collect()
        self.pending = []
        accelerator = self._accelerator()
        if accelerator is not None and accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            box = [pending if accelerator.is_main_process else None]
            broadcast_object_list(box)  # every process observed this step's batches, so every one is here
            pending = box[0] or []
        if not pending:
            return control
        if self.trainer is None:
            logger.warning("RolloutMonitorCallback has no trainer to log through; bind it (QDCTrainerMixin does)")
            return control
        keys = sorted({key for record in pending for key in record})  # several batches in one step: their mean
        log_record(self.trainer, {key: _nanmean([r.get(key, math.nan) for r in pending]) for key in keys})
        return control

    def on_train_begin(self, args, state, control, **kwargs):
        self.collect()  # nothing of an earlier run is logged into this one
        self.pending = []
        self._step_batches = 0
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.collect()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        return control


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan
