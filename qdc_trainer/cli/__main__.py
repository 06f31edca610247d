"""``python -m qdc_trainer.cli`` (and ``accelerate launch -m qdc_trainer.cli``): the ``qdc`` command."""

import sys

from .main import main

sys.exit(main())
