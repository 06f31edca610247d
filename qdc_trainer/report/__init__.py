"""Reports with plots: training runs side by side, and the QDC profile of a scored dataset.

Two entry points, each writing PNG figures and one HTML page (plus the same page
in Markdown) into a folder:

- :func:`write_run_report` reads the logs of one or more training runs (the
  Trainer's ``trainer_state.json``, the generation monitor's samples) and plots the
  training loss, the diversity, complexity and quality of the generations, the
  sampler's telemetry and the collapse detector's verdict, one colour per run.
- :func:`write_profile_report` profiles a dataset scored by
  :func:`qdc_trainer.metrics.score_dataset`: quality and complexity histograms,
  cluster sizes, and quality against diversity with its Pareto frontier.

The figures need matplotlib (the ``plot`` extra); the loading functions and the
profile's measures (:func:`pareto_frontier`, :func:`cluster_quality_diversity`,
pure functions of :mod:`qdc_trainer.metrics`, re-exported here) work without it.

Modules: :mod:`~qdc_trainer.report.logs` (reading run logs, key groups),
:mod:`~qdc_trainer.report.figures` (run figures, matplotlib helpers),
:mod:`~qdc_trainer.report.run_page` (the run page),
:mod:`~qdc_trainer.report.profile_page` (the dataset profile) and
:mod:`~qdc_trainer.report.page` (HTML and Markdown helpers).

>>> series = log_series([{"loss": 2.0, "step": 1}, {"qdc/collapse/level": 1.0, "step": 4},
...                      {"qdc/collapse/level": 2.0, "step": 6}])
>>> collapse_steps(series)
(4, 6)
>>> pareto_frontier([1, 2, 3, 2.5], [3, 2, 1, 0.5]).tolist()
[0, 1, 2]
"""

from __future__ import annotations

from ..callbacks.generation_metrics import SAMPLES_FILE  # noqa: F401

# Besides __all__, the constants stay importable from here, as before the split: the file and page names
# (STATE_FILE, RUN_CONFIG_FILE, SAMPLES_FILE, RUN_PAGE, PROFILE_PAGE, FIGURES), the key groups (COLLAPSE_KEY,
# TRAINING_KEYS, DIVERSITY_METRICS, GENERATION_KEYS, SAMPLER_KEYS, GROUPS, TITLES), the pages' styles and limits.
from ..metrics.diversity import nearest_neighbor_distances
from ..metrics.tradeoff import CLUSTER_TEXTS, cluster_quality_diversity, pareto_frontier  # noqa: F401
from .figures import (  # noqa: F401
    COLLAPSE_STYLE,
    COLORS,
    FIGURES,
    TITLES,
    WARNING_STYLE,
    color,
    figure_class,
    plot_run_group,
    ticker,
)
from .logs import (  # noqa: F401
    COLLAPSE_KEY,
    DIVERSITY_METRICS,
    GENERATION_KEYS,
    GROUPS,
    RUN_CONFIG_FILE,
    SAMPLER_KEYS,
    STATE_FILE,
    TRAINING_KEYS,
    RunLog,
    collapse_culprits,
    collapse_steps,
    find_state_file,
    key_group,
    load_run,
    log_series,
    read_samples,
)
from .profile_page import FRONTIER_ROWS, MAX_SCATTER_POINTS, PROFILE_PAGE, write_profile_report  # noqa: F401
from .run_page import (  # noqa: F401
    NOT_GENERATED,
    RUN_PAGE,
    SAMPLE_PROMPTS,
    SAMPLES_PER_PROMPT,
    SUMMARY_HEADER,
    write_run_report,
)

__all__ = [
    "COLORS",
    "RunLog",
    "cluster_quality_diversity",
    "collapse_culprits",
    "collapse_steps",
    "color",
    "figure_class",
    "find_state_file",
    "key_group",
    "load_run",
    "log_series",
    "nearest_neighbor_distances",
    "pareto_frontier",
    "plot_run_group",
    "read_samples",
    "ticker",
    "write_profile_report",
    "write_run_report",
]
