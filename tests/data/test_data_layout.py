"""The data room's layout: the shared helpers, the block-size API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import qdc_trainer
import qdc_trainer.data
from qdc_trainer.data import QDCSampler, QDCSamplerConfig, columns

ROOT = Path(__file__).resolve().parents[2]
# The old import paths (qdc_trainer.sampler, .selection, .collator) are tested in tests/test_aliases.py.


def test_the_data_package_exports_its_public_api():
    for name in qdc_trainer.data.__all__:
        obj = getattr(qdc_trainer.data, name)
        assert obj.__doc__ or not callable(obj), f"{name} has no docstring"
    for name in ("QDCSampler", "QDCSamplerConfig", "QDCDataCollator", "INDEX_KEY", "select_budget", "select_dataset"):
        assert getattr(qdc_trainer, name) is getattr(qdc_trainer.data, name)


def test_sampler_and_selection_share_the_column_helpers():
    from qdc_trainer.data import sampler, selection, weights

    for name in ("check_column", "dense_ids", "moments", "dataset_columns"):
        assert getattr(sampler, name) is getattr(columns, name)
    for name in ("check_column", "dense_ids", "moments", "zscore", "dataset_columns"):
        assert getattr(selection, name) is getattr(columns, name)
    assert weights.zscore is columns.zscore
    assert sampler.QDCSamplerConfig is selection.QDCSamplerConfig is weights.QDCSamplerConfig


def test_column_helpers_check_and_standardise():
    assert columns.check_column(np.array([1, 2]), "quality", 2).dtype == np.float32
    with pytest.raises(ValueError, match="quality has 2 values but the dataset has 3"):
        columns.check_column([1.0, 2.0], "quality", 3)
    with pytest.raises(ValueError, match=r"1-D"):
        columns.check_column([[1.0]], "quality", None)
    with pytest.raises(TypeError, match="integer cluster ids"):
        columns.check_column([0.5], "clusters", 1, integer=True)
    x = np.random.default_rng(0).normal(size=3000).astype(np.float32)
    mean, std = columns.moments(x)
    assert mean == pytest.approx(float(x.astype(np.float64).mean()))
    assert std == pytest.approx(float(x.astype(np.float64).std()))
    z = columns.zscore(x, (mean, std))
    assert z.min() >= -columns.ZSCORE_CLIP and z.max() <= columns.ZSCORE_CLIP
    big = np.array([10**12, 5, 10**12])  # too sparse for the lookup table: sorted instead
    assert columns.dense_ids(big).tolist() == [1, 0, 1]
    assert columns.dense_ids(np.array([2, 0, 1])).dtype == np.int32


def test_configure_block_sets_an_unset_block_and_checks_a_set_one():
    s = QDCSampler(1000, config=QDCSamplerConfig(update_every=3))
    assert s.configure_block(samples_per_step=16, global_batch=8) == 48 and s.block_size == 48
    assert s.configure_block(samples_per_step=32, global_batch=8) == 48  # a set block is kept
    fixed = QDCSampler(1000, block_size=100)
    assert fixed.configure_block(16, 8) == 100
    with pytest.raises(ValueError, match=r"block_size=100 is smaller than one global batch \(128\)"):
        fixed.configure_block(256, 128)
    with pytest.raises(ValueError, match="samples_per_step must be a positive int"):
        s.configure_block(0, 8)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_block_size_is_checked_when_it_is_set(bad):
    s = QDCSampler(10)
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        s.block_size = bad
    s.block_size = np.int64(4)
    assert s.block_size == 4 and type(s.block_size) is int
    s.block_size = None
    assert s.block_size is None
