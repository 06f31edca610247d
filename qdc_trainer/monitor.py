"""Old import path of :mod:`qdc_trainer.callbacks.monitor`, kept so existing imports work (the same module object)."""

import sys

from .callbacks import monitor as _module

sys.modules[__name__] = _module
