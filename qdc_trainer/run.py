"""Old import path of :mod:`qdc_trainer.cli.run`, kept so existing imports work."""

import sys

from .cli import run as _module

sys.modules[__name__] = _module
