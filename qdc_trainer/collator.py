"""Old import path of :mod:`qdc_trainer.data.collator`, kept so existing imports work (the same module object)."""

import sys

from .data import collator as _module

sys.modules[__name__] = _module
