"""The self-improvement experiment: does training on the model's own filtered outputs collapse, and does QDC help?

Each seed trains a tiny model on the built-in arithmetic task (whole examples,
problem and solution, so that the model can write new problems). Then, for
``rounds`` rounds and for each arm, starting from that same model:

1. the current model samples ``candidates`` whole examples (problem and solution);
2. the verifier checks each one (:func:`qdc_trainer.tasks.arithmetic.verify`);
3. the arm's selection rule keeps ``budget`` of them;
4. the model is fine-tuned on the selection, which replaces the previous round's data.

Arms (same seeds, same number of candidates, same budget):

- ``quality``: verified-correct candidates, most confident first (mean token
  log-likelihood under the model that wrote them), as self-training and
  rejection-sampling pipelines do;
- ``qdc``: the same candidates scored with :func:`qdc_trainer.metrics.score_dataset`
  (verifier quality, step complexity, clusters of hashed n-grams), chosen with
  :func:`qdc_trainer.selection.select_budget` (verified only, deduplicated,
  cluster coverage, complexity) and trained with :class:`qdc_trainer.QDCSampler`;
- ``reservoir``: like ``quality``, but ``reservoir_share`` of the budget is drawn
  from the original data every round;
- ``fixed_pool``: the contrast; problems come from the original data's pool and
  the model writes only the solutions (selection as in ``quality``).

After every round the model is measured: the validity, complexity and distinctness
of what it generates, greedy accuracy by number of operations in distribution
(held-out problems) and out of distribution (new phrasings), the diversity of its
generations per input and across inputs (probe prompts: the opening words of each
template, several samples each), and the collapse detector's verdict on those
series. The run folder gets ``results.md`` (the table), ``results.json`` (every
row), one PNG per metric (arms on the same axes, mean over seeds with the range),
and a summary that checks the claims (``qdc self-improve`` prints it).

Run it with ``qdc self-improve --config recipes/arithmetic/self_improve.yaml``.

Modules, one concern each: :mod:`.config` (settings, reading a recipe), :mod:`.sampling` (candidates and the
arms' selection rules), :mod:`.rounds` (measuring and training a model; one seed's first model, one arm's
rounds), :mod:`.run` (the whole run and its process pool), :mod:`.results` (summary, table, plots) and
:mod:`.cli` (the ``qdc self-improve`` subcommand).
"""

from .config import (
    ARMS,
    CANDIDATES_FILE,
    CONFIG_FILE,
    DETECTOR_WATCH,
    METRICS,
    RESULTS_FILE,
    SMOKE,
    TABLE_FILE,
    SelfImproveConfig,
    load_self_improve_config,
    self_improve_parser,
)
from .results import HEADLINE_COLUMNS, TABLE_COLUMNS, summarize, write_results
from .rounds import probe_prompts
from .run import run_self_improvement
from .sampling import choose, sample_examples

__all__ = [
    "ARMS",
    "CANDIDATES_FILE",
    "CONFIG_FILE",
    "DETECTOR_WATCH",
    "HEADLINE_COLUMNS",
    "METRICS",
    "RESULTS_FILE",
    "SMOKE",
    "TABLE_COLUMNS",
    "TABLE_FILE",
    "SelfImproveConfig",
    "choose",
    "load_self_improve_config",
    "probe_prompts",
    "run_self_improvement",
    "sample_examples",
    "self_improve_parser",
    "summarize",
    "write_results",
]
