"""The ``qdc`` command line and what it runs: recipes and their configuration.

- :mod:`qdc_trainer.cli.main`: the ``qdc`` command (``train``, ``profile``, ``report``, and the experiments'
  own subcommands, which each experiment adds: ``self-improve``);
- :mod:`qdc_trainer.cli.config`: a recipe's configuration, read from a flat YAML file with flags on top;
- :mod:`qdc_trainer.cli.run`: the recipe runner (data, scoring, sampler, callbacks, training, evaluation, report).

``python -m qdc_trainer.cli train --config recipe.yaml`` is ``qdc train --config recipe.yaml`` (and works under
``accelerate launch -m qdc_trainer.cli ...``).
"""

from .main import main

__all__ = ["main"]
