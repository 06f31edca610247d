"""Carry each example's dataset index through the batch, so the training step knows what it trained on.

A "last indices drawn" side channel would name the wrong batch (accelerate fetches
one batch ahead and workers prefetch more), so the index travels inside the batch
under :data:`INDEX_KEY` and is removed before the model sees the inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["INDEX_KEY", "IndexedDataset", "QDCDataCollator"]

INDEX_KEY = "qdc_idx"
"""Name of the example-index entry in features and batches."""


class IndexedDataset(torch.utils.data.Dataset):
    """A map-style dataset whose items are the wrapped dataset's items plus ``{INDEX_KEY: index}``.

    >>> IndexedDataset([{"x": 1}, {"x": 2}])[1]
    {'x': 2, 'qdc_idx': 1}
    """

    def __init__(self, dataset: Any) -> None:
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"QDC sampling needs a map-style dataset with __len__, got {type(dataset).__name__}")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    @staticmethod
    def _with_index(row: Any, index: int) -> dict:
        if not isinstance(row, Mapping):
            raise TypeError(
                f"dataset items must be dicts (feature name -> value) to carry an index, got {type(row).__name__}"
            )
        if INDEX_KEY in row:
            raise ValueError(f"dataset items already have a {INDEX_KEY!r} entry; rename that column")
        return {**row, INDEX_KEY: int(index)}

    def __getitem__(self, index: int) -> dict:
        return self._with_index(self.dataset[index], index)

    def __getitems__(self, indices: list[int]) -> list[dict]:
        fetch = getattr(self.dataset, "__getitems__", None)
        rows = fetch(indices) if fetch is not None else [self.dataset[i] for i in indices]
        return [self._with_index(r, i) for r, i in zip(rows, indices)]


class QDCDataCollator:
    """Wrap any collator (``DataCollatorForLanguageModeling``, ``DataCollatorWithPadding``, TRL's, ...)
    and add the examples' indices to the batch as a ``long`` tensor under :data:`INDEX_KEY`.

    Features without an index (evaluation batches) are passed through untouched.
    The wrapped collator never sees the index.

    >>> collate = QDCDataCollator(lambda feats: {"x": torch.tensor([f["x"] for f in feats])})
    >>> batch = collate([{"x": 5, "qdc_idx": 3}, {"x": 6, "qdc_idx": 0}])
    >>> batch["x"].tolist(), batch["qdc_idx"].tolist()
    ([5, 6], [3, 0])
    """

    def __init__(self, collator: Callable[[list], Any] | None = None) -> None:
        if collator is None:
            from transformers import default_data_collator

            collator = default_data_collator
        if not callable(collator):
            raise TypeError(f"collator must be callable (a data collator), got {type(collator).__name__}")
        self.collator = collator

    def __call__(self, features: list[Any]) -> Any:
        has_index = [isinstance(f, Mapping) and INDEX_KEY in f for f in features]
        if not any(has_index):
            return self.collator(features)
        if not all(has_index):
            raise KeyError(f"some features carry {INDEX_KEY!r} and some do not; mixed batches cannot be fed back")
        indices = [int(f[INDEX_KEY]) for f in features]
        batch = self.collator([{k: v for k, v in f.items() if k != INDEX_KEY} for f in features])
        if not isinstance(batch, (dict, Mapping)) or not hasattr(batch, "__setitem__"):
            raise TypeError(f"the wrapped collator returned {type(batch).__name__}; QDCDataCollator needs a dict batch")
        batch[INDEX_KEY] = torch.tensor(indices, dtype=torch.long)
        return batch

    def __getattr__(self, name: str) -> Any:  # expose the wrapped collator's attributes (e.g. tokenizer)
        if name == "collator":
            raise AttributeError(name)
        return getattr(self.collator, name)
