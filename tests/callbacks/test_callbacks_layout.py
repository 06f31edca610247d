"""The callbacks' room, qdc_trainer/callbacks/: the collapse level, the agreement helper."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

# The old import paths (qdc_trainer.monitor, .collapse, ._logging) are tested with the others in tests/test_aliases.py.


# ----------------------------------------------------------------------------- the level


def test_levels_compare_log_and_save_as_ints():
    from qdc_trainer import CollapseLevel
    from qdc_trainer.callbacks.series import CollapseSignal, SeriesDetector

    assert [int(level) for level in CollapseLevel] == [0, 1, 2]
    assert CollapseLevel.COLLAPSE > CollapseLevel.WARNING == 1 and float(CollapseLevel.COLLAPSE) == 2.0
    d = SeriesDetector("x", ema=1.0, relative=False, warn_change=0.1, collapse_change=0.25)
    levels = [d.update(step, v).level for step, v in enumerate([0.8, 0.65, 0.5])]
    assert levels == [0, 1, 2] and all(isinstance(level, CollapseLevel) for level in levels)
    state = d.state_dict()
    assert type(state["signal"]["level"]) is int  # plain JSON values
    again = SeriesDetector("x", ema=1.0, relative=False, warn_change=0.1, collapse_change=0.25)
    again.load_state_dict(json.loads(json.dumps(state)))  # a saved state (ints) loads
    assert again.signal.level is CollapseLevel.COLLAPSE and again.signal == d.signal
    assert CollapseSignal("x", 1, None, None, None, None).level is CollapseLevel.WARNING
    with pytest.raises(ValueError, match="not a collapse level"):
        CollapseSignal("x", 3, None, None, None, None)
    bad = json.loads(json.dumps(state))
    bad["signal"]["level"] = 7
    with pytest.raises(ValueError, match="7 is not a collapse level"):
        again.load_state_dict(bad)
    assert again.signal.level is CollapseLevel.COLLAPSE  # left as it was


def test_the_callback_logs_floats_and_saves_ints():
    from qdc_trainer.callbacks import CollapseDetectorCallback, CollapseLevel, SeriesDetector

    records = []
    trainer = SimpleNamespace(log=records.append)
    cb = CollapseDetectorCallback(trainer, watch=[SeriesDetector("s", ema=1.0)], actions=("log", "stop"))
    state = SimpleNamespace(global_step=0)
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    for step, value in enumerate([1.0, 0.8, 0.5]):
        state.global_step = step
        cb.on_log(None, state, control, logs={"s": value})
    assert [r["qdc/collapse/level"] for r in records] == [0.0, 1.0, 2.0]
    assert all(type(v) is float for r in records for v in r.values())
    assert cb.level is CollapseLevel.COLLAPSE and control.should_training_stop and cb.stopped_at == 2
    saved = json.loads(json.dumps(cb.state_dict()))
    assert saved["level"] == 2 and type(cb.state_dict()["level"]) is int
    other = CollapseDetectorCallback(trainer, watch=[SeriesDetector("s", ema=1.0)])
    other.load_state_dict(saved)
    assert other.level is CollapseLevel.COLLAPSE
    saved["level"] = 3
    with pytest.raises(ValueError, match="saved collapse level: 3 is not a collapse level"):
        other.load_state_dict(saved)


# ----------------------------------------------------------------------------- agreement


class FakeAccelerator:
    """Records gather calls; the other rank's value is ``other``."""

    def __init__(self, num_processes, other=0):
        self.num_processes, self.other, self.device, self.calls = num_processes, other, torch.device("cpu"), []

    def gather(self, tensor):
        self.calls.append(tensor.tolist())
        return torch.cat([tensor, torch.tensor([self.other])])


def test_agree_max_uses_the_accelerator_and_falls_back_to_the_value():
    from qdc_trainer.callbacks import agree_max

    assert agree_max(1) == 1 and agree_max(2, None) == 2  # no process group: the value itself
    one = FakeAccelerator(1)
    assert agree_max(2, one) == 2 and one.calls == []  # one process: no collective call
    two = FakeAccelerator(2, other=2)
    assert agree_max(0, two) == 2 and two.calls == [[0]]
    assert agree_max(1, FakeAccelerator(2, other=1)) == 1  # a maximum, not a sum
    with pytest.raises(TypeError):
        agree_max(1.5)


def test_the_detector_agrees_through_the_bound_trainers_accelerator():
    from qdc_trainer.callbacks import CollapseDetectorCallback, CollapseLevel, SeriesDetector

    accelerator = FakeAccelerator(2, other=2)  # the other rank has collapsed
    trainer = SimpleNamespace(log=lambda logs: None, accelerator=accelerator)
    cb = CollapseDetectorCallback(trainer, watch=[SeriesDetector("s", ema=1.0)], actions=("log", "stop"))
    state = SimpleNamespace(global_step=0)
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    cb.on_log(None, state, control, logs={"s": 1.0})  # the baseline: level 0 here
    assert accelerator.calls == [[0]]
    assert cb.level is CollapseLevel.COLLAPSE and control.should_training_stop  # this rank's own series is healthy
