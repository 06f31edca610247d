"""qdc-trainer: keep quality, diversity and complexity in balance while a model fine-tunes.

The measurements live in :mod:`qdc_trainer.metrics`.
"""

__version__ = "0.1.0"
