"""The self-improvement experiment: does training on the model's own filtered outputs collapse, and does QDC help?

Each seed trains a tiny model on the built-in arithmetic task (whole examples,
problem and solution, so that the model can write new problems). Then, for
``rounds`` rounds and for each arm in each data mode, starting from that same model:

1. the current model samples ``candidates`` examples (whole examples, or solutions to given problems);
2. the verifier checks each one (:func:`qdc_trainer.tasks.arithmetic.verify`);
3. the arm's selection rule keeps ``budget`` of them;
4. the model is fine-tuned for ``round_steps`` steps on the round's data, which the mode decides:
   ``replace`` (the kept data alone), ``accumulate`` (the original data and every round's kept data so far,
   Gerstgrasser et al. 2024) or ``accumulate_fixed`` (a uniform sample of that pool as large as the original
   data).

Arms (same seeds, same number of candidates, same budget):

- ``quality``: verified-correct candidates, most confident first (mean token
  log-likelihood under the model that wrote them), as self-training and
  rejection-sampling pipelines do;
- ``qdc``: the same candidates scored with :func:`qdc_trainer.metrics.score_dataset`
  (verifier quality, step complexity, clusters of hashed n-grams), chosen with
  :func:`qdc_trainer.data.selection.select_budget` (verified only, deduplicated,
  cluster coverage, complexity: a push, or a pull towards ``complexity_target``)
  and trained with :class:`qdc_trainer.data.QDCSampler`;
- ``star``: STaR-style (Zelikman et al. 2022, arXiv 2203.14465): new problems of the task's distribution,
  the model writes the solutions, the verifier keeps the correct ones, chosen with
  ``select_budget`` as in ``qdc``;
- ``control``: fresh examples of the task every round (perfect data): how far the
  round's training can lift the model at all;
- ``replay``: examples of the original data again (no new data): what more training alone does;
- ``reservoir``: like ``quality``, but ``reservoir_share`` of the budget is drawn
  from the original data every round;
- ``fixed_pool``: problems come from the original data's pool and the model writes
  only the solutions (selection as in ``quality``);
- ``frontier``, ``frontier_rat`` and ``solved`` separate problems from solutions: ``candidates // solve_k``
  new problems of the task's distribution, each solved ``solve_k`` times, give each problem its pass rate p̂
  (the verified share). ``frontier`` keeps verified solutions (distinct, at most ``per_problem_cap`` a
  problem) drawn with weight p̂(1 − p̂) (or 1 − p̂): the QDC complexity term made relative to the model;
  ``frontier_rat`` adds STaR's rationalization (problems never solved are prompted again with the answer as a
  hint; verified rationales are kept under the problem's own prompt); ``solved`` draws the same verified
  solutions uniformly (quality-only under the same separation).

``fill_budget`` fills a selection's shortfall from the original data (every arm keeps exactly ``budget``);
``train_sampler: uniform`` trains every arm with the same uniform sampler; the ``mix`` mode trains each round on
its kept data plus a sample of the pool sized so the new data is ``new_share`` of it. With frontier arms, the
summary first checks a headroom gate (replay flat, new data ≥ 30% of each round, control − replay ≥ 3 standard
errors) and reads the frontier claims only when it passed (``qdc self-improve --config
arithmetic/self_improve_frontier``).

After every round the model is measured: the validity, complexity and distinctness
of what it generates, greedy accuracy by number of operations in distribution
(held-out problems) and out of distribution (new phrasings), pass@1 and pass@k with
the share of held-out problems never solved in k samples, the diversity of its
generations per input and across inputs (probe prompts: the opening words of each
template, several samples each), and the collapse detector's verdict on the watched
series. The run folder gets ``results.md`` (the table), ``results.json`` (every
row), one PNG per metric (variants on the same axes, mean over seeds with the range),
and a summary that checks the claims (``qdc self-improve`` prints it).

Run it with ``qdc self-improve --config arithmetic/self_improve``.

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
    FRONTIER_ARMS,
    METRICS,
    MODES,
    RESULTS_FILE,
    SMOKE,
    TABLE_FILE,
    SelfImproveConfig,
    load_self_improve_config,
    self_improve_parser,
    variant_name,
)
from .results import (
    HEADLINE_COLUMNS,
    TABLE_COLUMNS,
    frontier_claims,
    frontier_over_solved,
    frontier_over_solved_table,
    frontier_verdict,
    headroom_gate,
    rebuild,
    summarize,
    write_results,
)
from .rounds import coverage, probe_prompts
from .run import run_self_improvement
from .sampling import (
    choose,
    choose_frontier,
    frontier_weights,
    hinted_prompt,
    mean_complexity,
    pass_rates,
    sample_examples,
    score_rows,
)

__all__ = [
    "ARMS",
    "CANDIDATES_FILE",
    "FRONTIER_ARMS",
    "CONFIG_FILE",
    "DETECTOR_WATCH",
    "HEADLINE_COLUMNS",
    "METRICS",
    "MODES",
    "RESULTS_FILE",
    "SMOKE",
    "TABLE_COLUMNS",
    "TABLE_FILE",
    "SelfImproveConfig",
    "choose",
    "choose_frontier",
    "coverage",
    "frontier_claims",
    "frontier_over_solved",
    "frontier_over_solved_table",
    "frontier_verdict",
    "frontier_weights",
    "headroom_gate",
    "hinted_prompt",
    "load_self_improve_config",
    "mean_complexity",
    "pass_rates",
    "probe_prompts",
    "rebuild",
    "run_self_improvement",
    "sample_examples",
    "score_rows",
    "self_improve_parser",
    "summarize",
    "variant_name",
    "write_results",
]
