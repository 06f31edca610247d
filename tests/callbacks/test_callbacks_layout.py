"""The callbacks' room, qdc_trainer/callbacks/: old import paths, the collapse level, the agreement helper."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

OLD_PATHS = {"monitor": "monitor", "collapse": "collapse", "_logging": "_logging"}


@pytest.mark.parametrize("old, new", sorted(OLD_PATHS.items()))
def test_old_paths_are_the_same_modules(old, new):
    import qdc_trainer
    import qdc_trainer.callbacks

    module = importlib.import_module(f"qdc_trainer.{old}")
    assert module is importlib.import_module(f"qdc_trainer.callbacks.{new}")
    assert getattr(qdc_trainer, old) is module  # still an attribute of the package, as before the move


def test_old_names_import_from_the_old_paths():
    import qdc_trainer.callbacks as callbacks
    import qdc_trainer.monitor
    from qdc_trainer._logging import log_record
    from qdc_trainer.collapse import (
        DEFAULT_WATCH,
        KNOWN_SERIES,
        LEVEL_KEY,
        REFERENCE_SAMPLES,
        CollapseDetectorCallback,
        CollapseSignal,
        SeriesDetector,
        _default_watch,
        watch_from_keys,
    )
    from qdc_trainer.monitor import (
        DIVERSITY_METRICS,
        PREFIX,
        SAMPLES_FILE,
        GenerationMonitorCallback,
        GenerationMonitorConfig,
        measure_generations,
    )

    assert qdc_trainer.monitor is callbacks.monitor
    assert GenerationMonitorCallback is callbacks.GenerationMonitorCallback
    assert GenerationMonitorConfig is callbacks.generation_metrics.GenerationMonitorConfig
    assert measure_generations is callbacks.generation_metrics.measure_generations
    assert SeriesDetector is callbacks.series.SeriesDetector and CollapseSignal is callbacks.series.CollapseSignal
    assert CollapseDetectorCallback is callbacks.CollapseDetectorCallback
    assert log_record is callbacks._logging.log_record
    assert DEFAULT_WATCH is callbacks.series.DEFAULT_WATCH and KNOWN_SERIES is callbacks.series.KNOWN_SERIES
    assert [d.key for d in _default_watch()] == list(DEFAULT_WATCH) and watch_from_keys(["qdc/gen/entropy"])
    assert (LEVEL_KEY, REFERENCE_SAMPLES, PREFIX, SAMPLES_FILE) == (
        "qdc/collapse/level",
        64,
        "qdc/gen/",
        "qdc_generations.jsonl",
    )
    assert "per_input" not in DIVERSITY_METRICS and "distinct_2" in DIVERSITY_METRICS


def test_a_fresh_interpreter_imports_an_old_path_first():
    code = (
        "from qdc_trainer.monitor import GenerationMonitorCallback\n"
        "import qdc_trainer, qdc_trainer.callbacks.monitor as m\n"
        "assert qdc_trainer.monitor is m and GenerationMonitorCallback is m.GenerationMonitorCallback\n"
        "from qdc_trainer.collapse import SeriesDetector\n"
        "import qdc_trainer.callbacks.series as s\n"
        "assert SeriesDetector is s.SeriesDetector\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_monkeypatching_the_old_path_patches_the_module_in_use(monkeypatch):
    import qdc_trainer.callbacks.monitor as monitor

    marker = object()
    monkeypatch.setattr("qdc_trainer.monitor.measure_generations", marker)
    assert monitor.measure_generations is marker


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
