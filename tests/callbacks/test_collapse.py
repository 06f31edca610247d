"""SeriesDetector: the collapse signals on hand-made series."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from qdc_trainer.callbacks.series import SeriesDetector


def run(detector: SeriesDetector, values) -> list[int]:
    return [detector.update(step, v).level for step, v in enumerate(values)]


def test_stable_noisy_series_never_warns():
    for seed in range(5):  # 2.5% noise around a flat level, 200 observations
        values = 0.8 + 0.02 * np.random.default_rng(seed).standard_normal(200)
        assert max(run(SeriesDetector("div"), values)) == 0


def test_gradual_decline_warns_before_it_collapses():
    values = [1.0] * 5 + [1.0 - 0.05 * i for i in range(1, 15)]
    d = SeriesDetector("div")
    levels = run(d, values)
    assert levels[:5] == [0] * 5
    assert d.first_warning_step is not None and d.first_collapse_step is not None
    assert 5 < d.first_warning_step < d.first_collapse_step
    assert max(levels) == 2
    signal = d.signal
    assert signal.change >= 0.35 and signal.streak > 3 and "collapse" in signal.reason


def test_slope_and_patience_warn_on_a_slow_steady_slide():
    # Each step loses 4% of the baseline: below warn_change for a while, but steadily.
    values = [1.0] * 3 + [1.0 - 0.04 * i for i in range(1, 4)]
    d = SeriesDetector("div", ema=1.0, warn_change=0.5, collapse_change=0.9, patience=3, warn_slope=0.03)
    levels = run(d, values)
    assert levels == [0, 0, 0, 0, 0, 1]
    assert "in a row" in d.signal.reason
    # off by default (the calibration found it adds false alarms and no earlier warnings)
    assert run(SeriesDetector("div", ema=1.0, warn_change=0.5, collapse_change=0.9), values) == [0] * 6


def test_default_watch_is_the_calibrated_one():
    from qdc_trainer.callbacks.collapse import DEFAULT_WATCH, CollapseDetectorCallback

    cb = CollapseDetectorCallback()
    assert list(cb.detectors) == list(DEFAULT_WATCH)
    d = cb.detectors["qdc/gen/per_input/self_bleu"]
    assert (d.direction, d.relative, d.warn_change, d.warmup, d.patience) == ("increase", False, 0.1, 1, None)
    # absolute change of the EMA (0.5): 0.10 -> 0.16, 0.19, 0.205: warns when it is 0.1 above the baseline
    assert run(d, [0.10, 0.22, 0.22, 0.22]) == [0, 0, 0, 1]


def test_increase_direction():
    d = SeriesDetector("self_bleu", direction="increase", warmup=2, ema=1.0)
    assert run(d, [0.2, 0.2, 0.22, 0.25, 0.3]) == [0, 0, 0, 1, 2]
    # A fall in a rise-is-bad series is healthy.
    d2 = SeriesDetector("self_bleu", direction="increase", warmup=2, ema=1.0)
    assert run(d2, [0.5, 0.5, 0.3, 0.1]) == [0, 0, 0, 0]


def test_ema_hand_values_and_recovery():
    d = SeriesDetector("x", warmup=1, ema=0.5, warn_change=0.2, collapse_change=0.9)
    d.update(0, 10.0)
    s = d.update(1, 6.0)  # EMA 8.0: change 20%
    assert s.smoothed == pytest.approx(8.0) and s.change == pytest.approx(0.2) and s.level == 1
    s = d.update(2, 12.0)  # EMA 10.0: back at baseline
    assert s.smoothed == pytest.approx(10.0) and s.level == 0 and s.streak == 0
    assert d.first_warning_step == 1


def test_absolute_scale_and_zero_baseline():
    d = SeriesDetector(
        "repetition", direction="increase", warmup=1, ema=1.0, relative=False, warn_change=0.1, collapse_change=0.3
    )
    assert run(d, [0.0, 0.05, 0.15, 0.4]) == [0, 0, 1, 2]
    # Relative scale with a zero baseline uses min_scale instead of dividing by zero.
    r = SeriesDetector("repetition", direction="increase", warmup=1, ema=1.0, min_scale=1.0)
    assert r.update(0, 0.0).level == 0 and r.update(1, 0.1).change == pytest.approx(0.1)


def test_nan_and_inf_are_skipped():
    d = SeriesDetector("x", warmup=2, ema=1.0)
    levels = run(d, [1.0, float("nan"), 1.0, float("inf"), 0.5])
    assert d.skipped == 2 and d.baseline == 1.0 and levels[-1] == 2
    with pytest.raises(TypeError, match="not a number"):
        d.update(9, "high")


def test_state_round_trip_continues_identically():
    values = [1.0, 0.98, 1.01, 0.95, 0.9, float("nan"), 0.85, 0.7, 0.6, 0.5]
    whole = SeriesDetector("div")
    expected = [whole.update(i, v) for i, v in enumerate(values)]
    first = SeriesDetector("div")
    for i, v in enumerate(values[:5]):
        first.update(i, v)
    state = json.loads(json.dumps(first.state_dict()))  # survives JSON (a checkpoint file)
    second = SeriesDetector("div")
    second.load_state_dict(state)
    resumed = [second.update(i, v) for i, v in enumerate(values) if i >= 5]
    assert resumed == expected[5:]
    assert second.first_warning_step == whole.first_warning_step
    with pytest.raises(ValueError, match="configured differently"):
        SeriesDetector("div", warmup=5).load_state_dict(state)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(key=""), "non-empty"),
        (dict(direction="down"), "direction"),
        (dict(warmup=0), "warmup"),
        (dict(slope_window=1), "slope_window"),
        (dict(ema=0.0), "ema"),
        (dict(warn_change=0.5, collapse_change=0.2), "warn_change <= collapse_change"),
        (dict(warn_slope=0.0), "warn_slope"),
    ],
)
def test_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SeriesDetector(**{"key": "x", **kwargs})


def test_warming_up_signal():
    d = SeriesDetector("x", warmup=3)
    s = d.update(0, 1.0)
    assert s.level == 0 and s.reason == "warming up" and s.baseline is None
    assert math.isclose(d.update(1, 2.0).value, 2.0)


# ----------------------------------------------------------------------------- the callback in a real Trainer


def _train_with_series(
    tmp_path, tokenizer, values, key="qdc/gen/per_input/distinct_2", actions=None, resume=None, **detector_kwargs
):
    from helpers import LogSeries, tiny_trainer

    from qdc_trainer.callbacks.collapse import CollapseDetectorCallback

    trainer = tiny_trainer(tmp_path, tokenizer, len(values))
    detector = CollapseDetectorCallback(
        trainer,
        watch=[SeriesDetector(key, ema=1.0, warmup=3, **detector_kwargs)],
        **({"actions": actions} if actions else {}),
    )
    trainer.add_callback(LogSeries(trainer, key, values))
    trainer.add_callback(detector)
    trainer.train(resume_from_checkpoint=resume)
    return trainer, detector


def test_callback_checkpoints_at_the_first_warning_and_stops_at_collapse(tmp_path, tokenizer):
    values = [0.8, 0.8, 0.8, 0.79, 0.6, 0.55, 0.4, 0.3, 0.2, 0.1]  # warning at step 5 (-25%), collapse at 7 (-50%)
    trainer, detector = _train_with_series(tmp_path, tokenizer, values)
    assert detector.warned_at == 5 and detector.stopped_at == 7
    assert trainer.state.global_step == 7  # stopped, 3 steps before max_steps
    assert (tmp_path / "checkpoint-5" / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "checkpoint-5" / "trainer_state.json").read_text())["stateful_callbacks"]
    assert saved["qdc_trainer.CollapseDetectorCallback"]['["qdc/gen/per_input/distinct_2"]']["warned_at"] == 5
    levels = [e["qdc/collapse/level"] for e in trainer.state.log_history if "qdc/collapse/level" in e]
    assert levels == [0, 0, 0, 0, 1, 1, 2]
    changes = [e for e in trainer.state.log_history if "qdc/collapse/gen/per_input/distinct_2/change" in e]
    assert changes[-1]["qdc/collapse/gen/per_input/distinct_2/change"] == pytest.approx(0.5)
    assert [e["qdc/collapse/gen/per_input/distinct_2/level"] for e in changes] == levels
    assert not any(
        k.startswith("qdc/collapse/qdc/") for e in trainer.state.log_history for k in e
    )  # no repeated prefix


def test_callback_healthy_run_trains_to_the_end(tmp_path, tokenizer):
    values = [0.8, 0.81, 0.79, 0.8, 0.82, 0.8, 0.79, 0.81]
    trainer, detector = _train_with_series(tmp_path, tokenizer, values)
    assert detector.warned_at is None and trainer.state.global_step == len(values)
    assert not any(p.name.startswith("checkpoint") for p in tmp_path.iterdir())


def test_callback_state_restores(tmp_path, tokenizer):
    values = [0.8, 0.8, 0.8, 0.79, 0.6, 0.55, 0.4, 0.3]
    _, detector = _train_with_series(tmp_path, tokenizer, values)
    from qdc_trainer.callbacks.collapse import CollapseDetectorCallback

    fresh = CollapseDetectorCallback(watch=[SeriesDetector("qdc/gen/per_input/distinct_2", ema=1.0, warmup=3)])
    fresh.load(str(tmp_path / "checkpoint-5"))
    assert fresh.warned_at == 5 and fresh.detectors["qdc/gen/per_input/distinct_2"].baseline == pytest.approx(0.8)


def test_callback_state_restores_itself_on_resume_and_resets_on_a_fresh_run(tmp_path, tokenizer, caplog):
    values = [0.8, 0.8, 0.8, 0.79, 0.6, 0.55, 0.5, 0.45]
    _, straight = _train_with_series(tmp_path, tokenizer, values, actions=("log", "checkpoint"))
    assert straight.warned_at == 5 and straight.level == 2
    # a new process: new trainer, new detector, resumed from the checkpoint written at the warning
    _, resumed = _train_with_series(
        tmp_path, tokenizer, values, actions=("log", "checkpoint"), resume=str(tmp_path / "checkpoint-5")
    )
    d, s = resumed.detectors["qdc/gen/per_input/distinct_2"], straight.detectors["qdc/gen/per_input/distinct_2"]
    assert resumed.warned_at == 5 and d.baseline == pytest.approx(0.8)  # not a new baseline from steps 6-8
    assert d.state_dict() == s.state_dict() and resumed.level == straight.level

    # without its state in the checkpoint the detector says so and takes a new baseline
    state_path = tmp_path / "checkpoint-5" / "trainer_state.json"
    trainer_state = json.loads(state_path.read_text())
    del trainer_state["stateful_callbacks"]["qdc_trainer.CollapseDetectorCallback"]
    state_path.write_text(json.dumps(trainer_state))
    with caplog.at_level(logging.WARNING, logger="qdc_trainer.callbacks.collapse"):
        _, fresh = _train_with_series(
            tmp_path, tokenizer, values, actions=("log",), resume=str(tmp_path / "checkpoint-5")
        )
    assert "takes a new baseline" in caplog.text
    assert fresh.detectors["qdc/gen/per_input/distinct_2"].baseline == pytest.approx(np.mean(values[5:8]))


def test_start_step_ignores_earlier_observations(monkeypatch):
    from types import SimpleNamespace

    from qdc_trainer.callbacks.collapse import CollapseDetectorCallback

    cb = CollapseDetectorCallback(watch=[SeriesDetector("x", ema=1.0)], actions=("warn",), start_step=3)
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    state = SimpleNamespace(global_step=0)
    for step, value in enumerate([5.0, 1.0, 0.5, 0.8, 0.8, 0.6]):  # a random model's diversity, then learning
        state.global_step = step
        cb.on_log(None, state, control, logs={"x": value})
    d = cb.detectors["x"]
    assert d.baseline == 0.8 and d.first_warning_step == 5 and cb.warned_at == 5  # not at step 1 (-80% vs 5.0)
    with pytest.raises(ValueError, match="start_step"):
        CollapseDetectorCallback(start_step=-1)


def test_watch_from_keys():
    from qdc_trainer.callbacks.collapse import KNOWN_SERIES, watch_from_keys

    (known, custom) = watch_from_keys(["qdc/gen/per_input/self_bleu", "qdc/train/entropy:decrease"])
    assert (known.direction, known.relative, known.warn_change) == (
        "increase",
        False,
        KNOWN_SERIES[known.key]["warn_change"],
    )
    assert (custom.key, custom.direction, custom.relative) == ("qdc/train/entropy", "decrease", True)
    with pytest.raises(ValueError, match="'loss' has no known settings: write 'loss:decrease' or 'loss:increase'"):
        watch_from_keys(["loss"])


def test_callback_reports_a_key_that_never_appears(monkeypatch):
    from types import SimpleNamespace

    from qdc_trainer.callbacks import collapse
    from qdc_trainer.callbacks.collapse import CollapseDetectorCallback

    warnings = []
    monkeypatch.setattr(collapse.logger, "warning", lambda msg: warnings.append(msg))
    cb = CollapseDetectorCallback(watch={"entropy": "decrease"}, missing_after=3)
    state, control = SimpleNamespace(global_step=0), SimpleNamespace(should_save=False, should_training_stop=False)
    for _ in range(5):
        cb.on_log(None, state, control, logs={"loss": 1.0})
    assert len(warnings) == 1 and "['entropy']" in warnings[0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(watch=[]), "non-empty"),
        (dict(watch={"a": "decrease", "b": "sideways"}), "direction"),
        (dict(actions=("explode",)), "unknown action"),
        (dict(watch=[SeriesDetector("a"), SeriesDetector("a")]), "watched twice"),
    ],
)
def test_callback_bad_configuration(kwargs, match):
    from qdc_trainer.callbacks.collapse import CollapseDetectorCallback

    with pytest.raises(ValueError, match=match):
        CollapseDetectorCallback(**kwargs)


# ----------------------------------------------------------------------------- messages, rates near 0, API edges


def test_messages_say_absolute_changes_in_units_and_relative_ones_in_percent():
    absolute = SeriesDetector(
        "qdc/gen/per_input/distinct_2", ema=1.0, relative=False, warn_change=0.1, collapse_change=0.25
    )
    absolute.update(0, 0.8)
    s = absolute.update(1, 0.638)
    assert s.level == 1 and s.change == pytest.approx(0.162)
    assert s.reason == "fell by 0.162 from baseline 0.8 (warning at 0.1)"  # was "changed +16.2% from baseline"
    assert absolute.update(2, 0.5).reason == "fell by 0.3 from baseline 0.8 (collapse at 0.25)"
    relative = SeriesDetector("qdc/gen/entropy", ema=1.0, warn_change=0.1, collapse_change=0.35)
    relative.update(0, 2.0)
    assert relative.update(1, 1.7).reason == "fell by 15.0% from baseline 2 (warning at 10.0%)"
    rising = SeriesDetector("self_bleu", "increase", ema=1.0, relative=False)
    rising.update(0, 0.2)
    assert rising.update(1, 0.4).reason == "rose by 0.2 from baseline 0.2 (warning at 0.15)"
    slope = SeriesDetector(
        "div", ema=1.0, relative=False, warn_change=0.5, collapse_change=0.9, patience=2, warn_slope=0.03
    )
    levels = run(slope, [1.0, 0.96, 0.92])
    assert levels[-1] == 1 and slope.signal.reason == "worsened 2 times in a row: fell by 0.04 per observation"


def test_the_warning_names_the_series_with_its_baseline_in_words(monkeypatch):
    from types import SimpleNamespace

    from qdc_trainer.callbacks import collapse
    from qdc_trainer.callbacks.collapse import CollapseDetectorCallback

    warnings = []
    monkeypatch.setattr(collapse.logger, "warning", lambda msg: warnings.append(msg))
    key = "qdc/gen/per_input/distinct_2"
    cb = CollapseDetectorCallback(
        watch=[SeriesDetector(key, ema=1.0, relative=False, warn_change=0.1, collapse_change=0.25)], actions="warn"
    )
    state, control = SimpleNamespace(global_step=0), SimpleNamespace(should_save=False, should_training_stop=False)
    for step, value in enumerate([0.8, 0.8, 0.638]):
        state.global_step = step
        cb.on_log(None, state, control, logs={key: value})
    assert warnings == [
        f"qdc collapse warning at step 2: {key} fell by 0.162 from baseline 0.8 (warning at 0.1); "
        "now 0.638 (moving average), last value 0.638"
    ]


def test_series_name_and_logged_keys_drop_the_leading_qdc():
    from qdc_trainer.callbacks.collapse import CollapseDetectorCallback, series_name

    assert series_name("qdc/gen/per_input/distinct_2") == "gen/per_input/distinct_2"
    assert series_name("entropy") == "entropy" and series_name("my/qdc/x") == "my/qdc/x"
    with pytest.raises(ValueError, match="same qdc/collapse"):
        CollapseDetectorCallback(watch={"qdc/train/entropy": "decrease", "train/entropy": "decrease"})


def test_rates_that_start_at_zero_do_not_declare_collapse_on_the_first_rise(caplog):
    from qdc_trainer.callbacks.collapse import KNOWN_SERIES, watch_from_keys

    rise = [0.0, 0.0, 1 / 64]  # one empty sample out of 64
    for key in ("qdc/gen/empty_rate", "qdc/gen/repetition"):
        assert KNOWN_SERIES[key]["relative"] is False and KNOWN_SERIES[key]["direction"] == "increase"
        (d,) = watch_from_keys([key])
        assert run(d, rise) == [0, 0, 0] and d.signal.change == pytest.approx(1 / 128)  # EMA 0.5: half of 1/64
        (d,) = watch_from_keys([key])
        assert run(d, [0.0, 0.2, 0.2, 0.4]) == [0, 1, 1, 2]  # EMA 0.1, 0.15, 0.275: absolute warning 0.1, collapse 0.25
    # a relative series whose baseline is 0 is scaled by min_scale (0.1), not blown up (it was level 2, change 7.8)
    with caplog.at_level(logging.WARNING, logger="qdc_trainer.callbacks.series"):
        d = SeriesDetector("gen_unique", "increase")
        assert run(d, rise) == [0, 0, 0] and d.signal.change == pytest.approx((1 / 128) / 0.1)
    assert "below min_scale=0.1" in caplog.text and "relative=False" in caplog.text
    assert run(SeriesDetector("gen_unique", "increase"), [0.0, 0.1, 0.1]) == [0, 2, 2]  # a real rise still counts


def test_actions_named_alone_and_bad_callback_arguments():
    from qdc_trainer.callbacks.collapse import CollapseDetectorCallback

    assert CollapseDetectorCallback(actions="log").actions == ("log",)  # not ['g', 'l', 'o']
    assert CollapseDetectorCallback(actions=["stop", "log"]).actions == ("log", "stop")
    with pytest.raises(TypeError, match="actions must be"):
        CollapseDetectorCallback(actions=3)
    with pytest.raises(TypeError, match="actions must be"):
        CollapseDetectorCallback(actions=("log", None))
    for bad in ("x", 0, -1, True, 2.5):
        with pytest.raises(ValueError, match="missing_after"):
            CollapseDetectorCallback(missing_after=bad)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(min_scale=float("nan")), ValueError, "min_scale=nan .* finite"),
        (dict(min_scale=float("inf")), ValueError, "min_scale=inf .* finite"),
        (dict(ema=float("nan")), ValueError, "ema=nan"),
        (dict(warn_change=float("nan")), ValueError, "warn_change=nan"),
        (dict(collapse_change=float("inf")), ValueError, "collapse_change=inf"),
        (dict(warn_slope=float("nan")), ValueError, "warn_slope=nan"),
        (dict(warn_change="0.1"), TypeError, "warn_change='0.1' .* must be a number"),
        (dict(ema=True), TypeError, "ema=True"),
        (dict(relative="no"), TypeError, "relative='no'"),
    ],
)
def test_bad_numbers_fail_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        SeriesDetector(**{"key": "x", **kwargs})


def test_an_unbound_detector_that_logs_raises_at_train_begin(tmp_path, tokenizer):
    from datasets import Dataset
    from helpers import build_gpt2, tokenized
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from qdc_trainer.callbacks.collapse import CollapseDetectorCallback

    ds = tokenized(Dataset.from_dict({"text": ["the cat sat on the mat"] * 8}), tokenizer)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )

    def make(detector):
        return Trainer(
            model=build_gpt2(tokenizer),
            args=args,
            train_dataset=ds,
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
            callbacks=[detector],
        )

    trainer = make(CollapseDetectorCallback())
    with pytest.raises(ValueError, match="needs the trainer to log qdc/collapse"):
        trainer.train()
    assert trainer.state.global_step == 0
    # without "log" the detector needs no trainer: warn, checkpoint and stop work unbound
    quiet = CollapseDetectorCallback(actions=("warn", "stop"))
    make(quiet).train()
    assert quiet.trainer is None


def _monitored_trainer(tmp_path, tokenizer, prompts: int, samples: int, **detector_kwargs):
    from datasets import Dataset
    from helpers import build_gpt2
    from transformers import Trainer, TrainingArguments

    from qdc_trainer import GenerationMonitorCallback, GenerationMonitorConfig
    from qdc_trainer.callbacks.collapse import CollapseDetectorCallback

    ds = Dataset.from_dict({"input_ids": [[4, 5, 6]] * 4})
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to=[], save_strategy="no", use_cpu=True)
    monitor = GenerationMonitorCallback(
        ["the cat"] * prompts, config=GenerationMonitorConfig(num_samples=samples, max_new_tokens=2)
    )
    trainer = Trainer(model=build_gpt2(tokenizer), args=args, train_dataset=ds, processing_class=tokenizer)
    detector = CollapseDetectorCallback(trainer, **detector_kwargs)
    trainer.add_callback(monitor)
    trainer.add_callback(detector)
    detector.on_train_begin(trainer.args, trainer.state, trainer.control)
    return trainer, detector


def test_thresholds_widen_with_fewer_probe_samples_than_the_calibration(tmp_path, tokenizer, caplog):
    from types import SimpleNamespace

    with caplog.at_level(logging.WARNING, logger="qdc_trainer.callbacks.collapse"):
        trainer, detector = _monitored_trainer(
            tmp_path, tokenizer, prompts=8, samples=4, watch=watch_default_and("entropy")
        )
    assert "draws 32 samples per evaluation, fewer than the 64" in caplog.text and "x1.41" in caplog.text
    factors = {key: d.threshold_factor for key, d in detector.detectors.items()}
    assert factors.pop("entropy") == 1.0  # not the monitor's series
    assert factors == pytest.approx({key: math.sqrt(2) for key in factors})

    def levels(cb, values):
        state, control = SimpleNamespace(global_step=0), SimpleNamespace(should_save=False, should_training_stop=False)
        for step, value in enumerate(values):
            state.global_step = step
            cb.on_log(trainer.args, state, control, logs={"qdc/gen/entropy": value})
        return cb.detectors["qdc/gen/entropy"].signal

    # a 10% drift of the probes' entropy, the size of the false alarm at 8 x 4: a warning with the 16 x 4
    # thresholds only
    drift = [2.0] + [1.79] * 6
    signal = levels(detector, drift)
    assert signal.level == 0 and signal.change == pytest.approx(0.1033, abs=1e-3)
    _, as_given = _monitored_trainer(tmp_path, tokenizer, prompts=8, samples=4, reference_samples=None)
    assert levels(as_given, drift).level == 1
    # a larger fall still warns, with the widened threshold in the message
    _, again = _monitored_trainer(tmp_path, tokenizer, prompts=8, samples=4)
    assert levels(again, [2.0] + [1.68] * 6).reason == "fell by 15.7% from baseline 2 (warning at 14.1%)"
    # 16 x 4 or more: the thresholds as calibrated
    _, enough = _monitored_trainer(tmp_path, tokenizer, prompts=16, samples=4)
    assert {d.threshold_factor for d in enough.detectors.values()} == {1.0}
    with pytest.raises(ValueError, match="reference_samples"):
        _monitored_trainer(tmp_path, tokenizer, prompts=1, samples=2, reference_samples=0)


def watch_default_and(key: str) -> list[SeriesDetector]:
    from qdc_trainer.callbacks.collapse import _default_watch

    return [*_default_watch(), SeriesDetector(key)]
