"""Old import path of :mod:`qdc_trainer.callbacks.collapse`, kept so existing imports work (the same module object)."""

import sys

from .callbacks import collapse as _module

sys.modules[__name__] = _module
