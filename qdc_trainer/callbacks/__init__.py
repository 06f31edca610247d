"""Trainer callbacks: watch the model's generations while it trains and act when they collapse.

The last two steps of the data flow (train → **monitor** → **detect**):

- :mod:`~qdc_trainer.callbacks.generation_metrics`: what the monitor measures, without a Trainer
  (:func:`measure_generations`, the logged key names, :class:`GenerationMonitorConfig`);
- :mod:`~qdc_trainer.callbacks.monitor`: :class:`GenerationMonitorCallback` samples from the model on
  probe prompts and logs ``qdc/gen/...``;
- :mod:`~qdc_trainer.callbacks.rollout`: :class:`RolloutMonitorCallback` measures the rollouts GRPO
  already generated and logs ``qdc/rollout/...`` (no extra sampling);
- :mod:`~qdc_trainer.callbacks.series`: the pure per-series detector (:class:`SeriesDetector`,
  :class:`CollapseSignal`, :class:`CollapseLevel`, the calibrated :data:`DEFAULT_WATCH` / :data:`KNOWN_SERIES`);
- :mod:`~qdc_trainer.callbacks.collapse`: :class:`CollapseDetectorCallback` feeds logged series to the
  detectors and warns, checkpoints or stops, with one decision on every process
  (:func:`~qdc_trainer.callbacks.agreement.agree_max`);
- :mod:`~qdc_trainer.callbacks._logging`: how a callback logs its own record without taking a TRL
  trainer's metric buffer.

The old paths ``qdc_trainer.monitor``, ``qdc_trainer.collapse`` and ``qdc_trainer._logging`` still work
(they are these same modules).
"""

from .agreement import agree_max
from .collapse import CollapseDetectorCallback
from .generation_metrics import GenerationMonitorConfig, measure_generations
from .monitor import GenerationMonitorCallback
from .rollout import RolloutMonitorCallback
from .series import (
    DEFAULT_WATCH,
    KNOWN_SERIES,
    CollapseLevel,
    CollapseSignal,
    SeriesDetector,
    series_name,
    watch_from_keys,
)

__all__ = [
    "DEFAULT_WATCH",
    "KNOWN_SERIES",
    "CollapseDetectorCallback",
    "CollapseLevel",
    "CollapseSignal",
    "RolloutMonitorCallback",
    "GenerationMonitorCallback",
    "GenerationMonitorConfig",
    "SeriesDetector",
    "agree_max",
    "measure_generations",
    "series_name",
    "watch_from_keys",
]
