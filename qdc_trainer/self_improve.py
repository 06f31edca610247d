"""Old import path of :mod:`qdc_trainer.experiments.self_improve`, kept so existing imports work.

Every public name, and the private helpers that tests used, are re-exported. Patching a name here (``monkeypatch``)
does not reach the package's modules: patch :mod:`qdc_trainer.experiments.self_improve.run` and the like instead.
"""

from .experiments.self_improve import *  # noqa: F403
from .experiments.self_improve import __all__  # noqa: F401
from .experiments.self_improve.rounds import _accuracy, _data_stats, _generation_stats  # noqa: F401
from .experiments.self_improve.run import _remove_previous_run, _run_jobs  # noqa: F401
from .experiments.self_improve.sampling import _num_ops, _problem_key, _safe_verify, _split_example  # noqa: F401
