"""Old import path of :mod:`qdc_trainer.data.sampler`, kept so existing imports work (the same module object)."""

import sys

from .data import sampler as _module

sys.modules[__name__] = _module
