"""Old import path of :mod:`qdc_trainer.cli.config`, kept so existing imports work."""

import sys

from .cli import config as _module

sys.modules[__name__] = _module
