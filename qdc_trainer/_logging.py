"""Old import path of :mod:`qdc_trainer.callbacks._logging`, kept so existing imports work (the same module object)."""

import sys

from .callbacks import _logging as _module

sys.modules[__name__] = _module
