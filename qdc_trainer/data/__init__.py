"""The data side of QDC training: which examples to keep, which to draw, and how their indices reach the loss.

- :mod:`~qdc_trainer.data.selection`: :func:`select_budget` / :func:`select_dataset` choose a fixed budget of
  scored candidates (synthetic-data and self-improvement pipelines);
- :mod:`~qdc_trainer.data.sampler`: :class:`QDCSampler` draws training examples with weights that balance
  quality, diversity and complexity and follow the training loss (its checkpoint state in
  :mod:`~qdc_trainer.data.sampler_state`);
- :mod:`~qdc_trainer.data.weights`: the weight formula and its knobs, :class:`QDCSamplerConfig` (shared by the
  sampler and the selection);
- :mod:`~qdc_trainer.data.collator`: :class:`IndexedDataset` and :class:`QDCDataCollator` carry each example's
  index (:data:`INDEX_KEY`) through the batch to the training step;
- :mod:`~qdc_trainer.data.columns`: the score-column helpers the sampler and the selection share.
"""

from .collator import INDEX_KEY, IndexedDataset, QDCDataCollator
from .columns import check_column, dataset_columns, dense_ids, moments, zscore
from .sampler import QDCSampler, QDCSamplerConfig
from .sampler_state import SamplerStateError
from .selection import cluster_quotas, select_budget, select_dataset

__all__ = [
    "INDEX_KEY",
    "IndexedDataset",
    "QDCDataCollator",
    "QDCSampler",
    "QDCSamplerConfig",
    "SamplerStateError",
    "check_column",
    "cluster_quotas",
    "dataset_columns",
    "dense_ids",
    "moments",
    "select_budget",
    "select_dataset",
    "zscore",
]
