"""Experiments built on the library, kept apart from it (as TRL keeps ``trl/experimental`` and ``examples/``).

- :mod:`qdc_trainer.experiments.self_improve`: does training on the model's own filtered outputs collapse, and
  does QDC selection help? (``qdc self-improve``; the package adds that subcommand to the ``qdc`` command line.)
"""
