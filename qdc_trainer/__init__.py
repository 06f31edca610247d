"""qdc-trainer: keep quality, diversity and complexity in balance while a model fine-tunes.

- :class:`QDCSampler` reweights training examples online (quality, diversity
  clusters, complexity, live training loss);
- :class:`QDCDataCollator` carries each example's index through the batch;
- :class:`QDCTrainer` / :class:`QDCTrainerMixin` install the sampler in a
  transformers ``Trainer`` (or any subclass, such as TRL's ``SFTTrainer``), and in TRL's
  ``GRPOTrainer`` draw its prompts by their learned pass rates (:mod:`qdc_trainer.grpo`);
- :mod:`qdc_trainer.callbacks` holds the Trainer callbacks: :class:`GenerationMonitorCallback`
  samples from the model on probe prompts during training and logs the diversity and complexity
  of its generations; :class:`CollapseDetectorCallback` watches logged series and warns,
  checkpoints or stops when they collapse; :class:`RolloutMonitorCallback` measures the rollouts GRPO
  already generates (diversity within and across prompts, pass@k);
- :func:`select_budget` / :func:`select_dataset` choose a fixed budget of scored candidates that balances
  quality, diversity and complexity (for synthetic-data and self-improvement pipelines);
- :mod:`qdc_trainer.metrics` holds the measurements;
- :mod:`qdc_trainer.generation` holds the one sampling loop (left-padded batches, forked RNG, entropy and
  log-probabilities) that the monitor, the task's evaluation and the experiment share;
- :mod:`qdc_trainer.tasks` holds the built-in synthetic arithmetic task (generator, verifier, splits,
  tiny tokenizer and model) and the task-independent tokenizing of prompt and completion data;
- :mod:`qdc_trainer.report` writes reports with plots of runs and of datasets;
- the ``qdc`` command line (:mod:`qdc_trainer.cli`) runs recipes (:mod:`qdc_trainer.cli.config`,
  :mod:`qdc_trainer.cli.run`) and the experiments' own subcommands;
- :mod:`qdc_trainer.experiments` holds experiments built on the library, kept apart from it: the
  self-improvement experiment (:mod:`qdc_trainer.experiments.self_improve`, ``qdc self-improve``).
"""

from typing import Any

from . import _aliases
from .callbacks import (
    CollapseDetectorCallback,
    CollapseLevel,
    GenerationMonitorCallback,
    GenerationMonitorConfig,
    RolloutMonitorCallback,
    SeriesDetector,
    measure_generations,
    watch_from_keys,
)
from .data import INDEX_KEY, QDCDataCollator, QDCSampler, QDCSamplerConfig, select_budget, select_dataset
from .trainer import QDCTrainer, QDCTrainerMixin

__version__ = "0.1.0"  # the one place the version is declared (pyproject.toml reads it)

# The old import paths of moved modules (qdc_trainer.sampler, ...): one map, deprecated (see _aliases).
_aliases.install()


def __getattr__(name: str) -> Any:
    if name in _aliases.OLD_PATHS:  # from qdc_trainer import sampler (an old path): warned once, then an attribute
        module = globals()[name] = _aliases.resolve(name)
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "INDEX_KEY",
    "CollapseDetectorCallback",
    "CollapseLevel",
    "GenerationMonitorCallback",
    "GenerationMonitorConfig",
    "QDCDataCollator",
    "QDCSampler",
    "QDCSamplerConfig",
    "QDCTrainer",
    "QDCTrainerMixin",
    "RolloutMonitorCallback",
    "SeriesDetector",
    "measure_generations",
    "select_budget",
    "select_dataset",
    "watch_from_keys",
]
