"""Old import path of :mod:`qdc_trainer.data.selection`, kept so existing imports work (the same module object)."""

import sys

from .data import selection as _module

sys.modules[__name__] = _module
