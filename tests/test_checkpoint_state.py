"""Checkpoints and state files: a save killed at any point, damaged state files, changed settings, and the
collapse detector resumed from a checkpoint outside ``output_dir``."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from helpers import LogSeries, build_gpt2, random_text_dataset, tiny_trainer, tokenized
from transformers import DataCollatorForLanguageModeling, TrainingArguments

from qdc_trainer import QDCSampler, QDCSamplerConfig, QDCTrainer
from qdc_trainer.callbacks.collapse import CollapseDetectorCallback, SeriesDetector
from qdc_trainer.trainer import SAMPLER_STATE_FILE

KEY = "qdc/gen/per_input/distinct_2"
ENTRY = "qdc_trainer.CollapseDetectorCallback"


def make_dataset(tokenizer, n: int = 64) -> Dataset:
    return tokenized(random_text_dataset(n, clusters=4), tokenizer, keep_text=True)


def qdc_run(tokenizer, ds, output_dir, resume=None, save_hook=None, **arg_overrides):
    """A QDC run of 9 optimizer steps (2 micro-batches each), checkpoints every 3, only the last one kept."""
    sampler = QDCSampler.from_dataset(ds, complexity_column=None, config=QDCSamplerConfig(update_every=2, seed=3))
    trained: list[list[int]] = []  # the micro-batches fed back (feedback is recorded in pieces at refreshes)
    record = sampler.record

    def recording(idx, loss):
        idx = np.asarray(idx).tolist()
        trained.extend(idx[k : k + 4] for k in range(0, len(idx), 4))
        record(idx, loss)

    sampler.record = recording
    if save_hook is not None:
        save = sampler.save
        sampler.save = lambda path: (save_hook(path), save(path))[1]
    args = TrainingArguments(
        **{
            **dict(
                output_dir=str(output_dir),
                per_device_train_batch_size=4,
                gradient_accumulation_steps=2,
                max_steps=9,
                logging_steps=100,
                save_strategy="steps",
                save_steps=3,
                save_total_limit=1,
                report_to=[],
                use_cpu=True,
                disable_tqdm=True,
                seed=0,
                learning_rate=1e-3,
            ),
            **arg_overrides,
        }
    )
    model = build_gpt2(tokenizer, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    trainer = QDCTrainer(
        model=model,
        args=args,
        train_dataset=ds,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        qdc_sampler=sampler,
    )
    trainer.train(resume_from_checkpoint=resume)
    return trained, sampler, trainer


# ---------------------------------------------------------------------------------------------- a kill during a save


def test_a_kill_while_the_sampler_state_is_saved_leaves_the_previous_checkpoint_and_an_exact_resume(
    tokenizer, tmp_path
):
    ds = make_dataset(tokenizer)
    trained_full, sampler_full, trainer_full = qdc_run(tokenizer, ds, tmp_path / "full")

    saves = []

    def killed_at_the_second_save(path):
        saves.append(path)
        if len(saves) == 2:
            raise KeyboardInterrupt("killed while saving the sampler state")

    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        qdc_run(tokenizer, ds, out, save_hook=killed_at_the_second_save)
    # The Trainer had not finished checkpoint-6 (no trainer_state.json) and so had not deleted checkpoint-3.
    assert not (out / "checkpoint-6" / "trainer_state.json").exists()
    assert (out / "checkpoint-3" / "trainer_state.json").is_file() and (
        out / "checkpoint-3" / SAMPLER_STATE_FILE
    ).is_file()

    # resume_from_checkpoint=True picks the newest folder: refused, naming it and the complete one to use.
    with pytest.raises(
        ValueError, match=r"checkpoint-6 is incomplete: it has no trainer_state\.json.*Resume from .*checkpoint-3"
    ):
        qdc_run(tokenizer, ds, out, resume=True)

    # A trainer_state.json cut short (transformers writes it in place) is named too.
    (out / "checkpoint-6").rename(tmp_path / "incomplete")
    state_file = out / "checkpoint-3" / "trainer_state.json"
    whole = state_file.read_text()
    state_file.write_text(whole[: len(whole) // 2])
    with pytest.raises(
        ValueError, match=r"checkpoint-3/trainer_state\.json is damaged .*a run killed while writing it"
    ):
        qdc_run(tokenizer, ds, out, resume=True)
    state_file.write_text(whole)

    # Resuming from checkpoint-3 trains on exactly the indices of the uninterrupted run and ends with its weights.
    trained, sampler, trainer = qdc_run(tokenizer, ds, out, resume=str(out / "checkpoint-3"))
    assert trained == trained_full[3 * 2 :]
    assert np.array_equal(sampler.loss_ema, sampler_full.loss_ema, equal_nan=True)
    for (name, p), q in zip(trainer.model.named_parameters(), trainer_full.model.parameters()):
        assert torch.equal(p, q), name


def test_resume_from_a_checkpoint_without_sampler_state_is_refused(tokenizer, tmp_path, caplog):
    ds = make_dataset(tokenizer)
    qdc_run(tokenizer, ds, tmp_path, max_steps=3)
    checkpoint = tmp_path / "checkpoint-3"
    (checkpoint / SAMPLER_STATE_FILE).unlink()
    with pytest.raises(ValueError, match=rf"checkpoint-3 has no {SAMPLER_STATE_FILE}.*ignore_data_skip=True"):
        qdc_run(tokenizer, ds, tmp_path, resume=True, max_steps=6)
    # An explicit opt-out of the exact data order goes on, with a warning and a fresh position.
    with caplog.at_level(logging.WARNING, logger="qdc_trainer.trainer"):
        trained, sampler, trainer = qdc_run(tokenizer, ds, tmp_path, resume=True, max_steps=6, ignore_data_skip=True)
    assert f"holds no {SAMPLER_STATE_FILE}" in caplog.text
    assert trainer.state.global_step == 6 and len(trained) == 3 * 2


def test_ignore_data_skip_draws_fresh_batches_instead_of_the_skipped_positions(tokenizer, tmp_path):
    ds = make_dataset(tokenizer)
    qdc_run(tokenizer, ds, tmp_path, max_steps=7, save_steps=7)  # 56 of 64 examples, in blocks of 16
    expected = QDCSampler.from_dataset(ds, complexity_column=None, config=QDCSamplerConfig(update_every=2, seed=3))
    expected.load(tmp_path / "checkpoint-7" / SAMPLER_STATE_FILE)
    assert expected.consumed == 56 and 1 not in expected._replay  # block 1 was trained on and forgotten
    expected.reset_position()
    fresh = list(expected)[:24]
    trained, _, _ = qdc_run(tokenizer, ds, tmp_path, resume=True, max_steps=10, ignore_data_skip=True)
    # The Trainer does not skip the 56 examples already trained on, so the sampler must not hand out its
    # placeholders for skipped positions (index 0, positions 16-31): it draws the epoch anew from the
    # checkpoint's weights.
    flat = [i for batch in trained for i in batch]
    assert flat[16:24] != [0] * 8  # the earlier code trained on example 0 eight times here
    assert flat == fresh


# ---------------------------------------------------------------------------------------------- atomic writes


def test_a_process_killed_while_saving_leaves_the_previous_state_file_whole(tmp_path):
    path = tmp_path / "qdc_sampler.npz"
    sampler = QDCSampler(50, quality=np.linspace(0, 1, 50), block_size=10, config=QDCSamplerConfig(seed=1))
    sampler.save(path)
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import os, numpy as np
        from qdc_trainer import QDCSampler
        real = np.savez
        def dies_halfway(file, *args, **kwargs):
            real(file, *args, **kwargs)
            handle = open(file, "r+b") if isinstance(file, (str, os.PathLike)) else file
            handle.flush(); handle.truncate(100); handle.flush(); os.fsync(handle.fileno())
            os._exit(9)  # SIGKILL-like: no cleanup, no exception handlers
        np.savez = dies_halfway
        s = QDCSampler(50, quality=np.linspace(0, 1, 50), seed=1, block_size=10)
        s.record([1, 2, 3], [1.0, 2.0, 3.0]); s.update()
        s.save({str(path)!r})
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    assert subprocess.run([sys.executable, "-c", script], env=env).returncode == 9
    assert path.read_bytes() == before  # the old state, whole: the partial one went to a temporary file
    QDCSampler(50, quality=np.linspace(0, 1, 50), block_size=10, config=QDCSamplerConfig(seed=1)).load(path)


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "qdc_sampler.npz"
    sampler = QDCSampler(20, config=QDCSamplerConfig(seed=1))
    sampler.save(path)
    before = path.read_bytes()

    def fails(file, *args, **kwargs):
        (open(file, "wb") if isinstance(file, (str, os.PathLike)) else file).write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", fails)
    with pytest.raises(OSError, match="disk full"):
        sampler.save(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["qdc_sampler.npz"]


def test_atomic_write_text():
    from qdc_trainer._io import atomic_write

    with pytest.raises(ValueError, match="mode"):
        with atomic_write("x", "a"):
            pass


# ---------------------------------------------------------------------------------------------- damaged sampler states


def _saved_sampler(tmp_path):
    s = QDCSampler(
        30,
        quality=np.linspace(0, 1, 30),
        clusters=np.arange(30) % 3,
        block_size=6,
        config=QDCSamplerConfig(seed=2, update_every=3),
    )
    it = iter(s)
    batch = [next(it) for _ in range(6)]
    s.record(batch, np.arange(6, dtype=float) + 1)
    s.update()
    path = tmp_path / "state.npz"
    s.save(path)
    return s, path


def _fresh():
    return QDCSampler(
        30,
        quality=np.linspace(0, 1, 30),
        clusters=np.arange(30) % 3,
        block_size=6,
        config=QDCSamplerConfig(seed=2, update_every=3),
    )


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_damaged_state_file_is_named(tmp_path, damage):
    _, path = _saved_sampler(tmp_path)
    data = path.read_bytes()
    path.write_bytes(
        {"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"not a zip file at all" * 10}[damage]
    )
    fresh = _fresh()
    before = fresh.probabilities().copy()
    with pytest.raises(
        ValueError, match=rf"{path}.*(truncated, empty or not written by QDCSampler.save).*earlier checkpoint"
    ) as err:
        fresh.load(path)
    from qdc_trainer.data import sampler as sampler_module

    assert isinstance(err.value, sampler_module.SamplerStateError)
    assert np.array_equal(fresh.probabilities(), before) and fresh.consumed == 0


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as data:
        state = {k: data[k] for k in data.files}
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    np.savez(path, **state)


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(consumed=None), r"lacks \['consumed'\]: it is incomplete"),
        (dict(blocks=np.array([0, 1, 2, 3, 4, 99])), r"blocks has indices outside \[0, 30\): \[99\]"),
        (dict(pending_idx=np.array([-1])), r"pending_idx has indices outside \[0, 30\): \[-1\]"),
        (dict(consumed=np.int64(-6)), r"consumed=-6 is outside \[0, num_samples=30\]"),
        (dict(epoch=np.int64(-1)), r"epoch=-1 is negative"),
        (dict(global_loss_ema=np.float64(np.nan)), r"global_loss_ema is NaN \(nothing seen\) but some example"),
        (dict(loss_ema=np.full(30, np.inf, dtype=np.float32)), r"loss_ema is infinite at \[0, 1, 2, 3, 4\]"),
        (dict(loss_ema=np.zeros(29, dtype=np.float32)), r"loss_ema has 29 values, expected 30"),
        (dict(block_lengths=np.array([5])), r"block_lengths \[5\]... do not split the 6 saved indices"),
        (dict(cluster_loss_ema=np.full(3, np.nan)), r"examples have a loss EMA but their cluster has none"),
    ],
)
def test_an_out_of_range_or_incomplete_state_is_rejected_and_named(tmp_path, changes, match):
    _, path = _saved_sampler(tmp_path)
    _rewrite(path, **changes)
    fresh = _fresh()
    with pytest.raises(ValueError, match=rf"QDC sampler state {path}: .*{match}"):
        fresh.load(path)
    assert fresh.consumed == 0 and np.isnan(fresh.loss_ema).all()  # left as it was


def test_nan_marks_unseen_examples_and_loads(tmp_path):
    original, path = _saved_sampler(tmp_path)
    fresh = _fresh()
    fresh.load(path)
    assert np.isnan(fresh.loss_ema).sum() == np.isnan(original.loss_ema).sum() > 0
    assert np.array_equal(fresh.probabilities(), original.probabilities())


def test_a_changed_setting_names_the_key_and_both_values(tmp_path):
    _, path = _saved_sampler(tmp_path)
    changed = QDCSampler(
        30,
        quality=np.linspace(0, 1, 30),
        clusters=np.arange(30) % 3,
        block_size=6,
        config=QDCSamplerConfig(seed=2, update_every=10, floor=0.2),
    )
    with pytest.raises(
        ValueError,
        match=r"configured differently: floor=0\.1 in the checkpoint, 0\.2 now; "
        r"update_every=3 in the checkpoint, 10 now\. Build the sampler",
    ):
        changed.load(path)


def test_a_version_1_state_still_loads(tmp_path):
    from dataclasses import asdict

    original, path = _saved_sampler(tmp_path)
    _rewrite(path, config=np.array(repr(sorted(asdict(original.config).items()))), version=np.int64(1))
    fresh = _fresh()
    fresh.load(path)
    assert np.array_equal(fresh.probabilities(), original.probabilities())
    _rewrite(path, config=np.array(repr(sorted({**asdict(original.config), "seed": 9}.items()))))
    with pytest.raises(ValueError, match="seed=9 in the checkpoint, 2 now"):
        _fresh().load(path)


# ---------------------------------------------------------------------------------------------- the collapse detector


def _detector_run(tmp_path, tokenizer, values, output_dir, resume=None, restore_callbacks=False, warn_change=0.15):
    trainer = tiny_trainer(
        output_dir, tokenizer, len(values), restore_callback_states_from_checkpoint=restore_callbacks
    )
    detector = CollapseDetectorCallback(
        trainer, watch=[SeriesDetector(KEY, ema=1.0, warmup=3, warn_change=warn_change)], actions=("log", "checkpoint")
    )
    trainer.add_callback(LogSeries(trainer, KEY, values))
    trainer.add_callback(detector)
    trainer.train(resume_from_checkpoint=resume)
    return trainer, detector


VALUES = [0.8, 0.8, 0.8, 0.79, 0.6, 0.55, 0.5, 0.45]


@pytest.mark.parametrize("restore_callbacks", [False, True])
def test_the_detector_resumes_from_a_checkpoint_outside_output_dir(tmp_path, tokenizer, caplog, restore_callbacks):
    _, straight = _detector_run(tmp_path, tokenizer, VALUES, tmp_path / "first")
    moved = tmp_path / "archive" / "checkpoint-5"
    shutil.copytree(tmp_path / "first" / "checkpoint-5", moved)  # e.g. copied to other storage
    with caplog.at_level(logging.WARNING, logger="qdc_trainer.callbacks.collapse"):
        trainer, resumed = _detector_run(
            tmp_path, tokenizer, VALUES, tmp_path / "second", resume=str(moved), restore_callbacks=restore_callbacks
        )
    assert "new baseline" not in caplog.text
    assert resumed in trainer.callback_handler.callbacks and resumed.trainer is trainer  # still the user's, still bound
    d, s = resumed.detectors[KEY], straight.detectors[KEY]
    assert resumed.warned_at == 5 and d.baseline == pytest.approx(0.8)  # not a new baseline from steps 6-8
    assert d.state_dict() == s.state_dict() and resumed.level == straight.level == 2
    levels = [e["qdc/collapse/level"] for e in trainer.state.log_history if "qdc/collapse/level" in e]
    assert levels[-3:] == [1, 2, 2]  # logged through the trainer after the resume


def test_the_detector_state_is_saved_in_trainer_state_json(tmp_path, tokenizer):
    _detector_run(tmp_path, tokenizer, VALUES, tmp_path)
    saved = json.loads((tmp_path / "checkpoint-5" / "trainer_state.json").read_text())["stateful_callbacks"][ENTRY]
    assert saved[json.dumps([KEY])]["warned_at"] == 5
    assert not (tmp_path / "checkpoint-5" / "qdc_collapse_detector.json").exists()  # no second, separate file


def test_a_changed_detector_setting_names_the_key_and_both_values(tmp_path, tokenizer):
    _detector_run(tmp_path, tokenizer, VALUES, tmp_path / "first")
    with pytest.raises(ValueError, match=r"was configured differently: warn_change=0\.15 saved, 0\.2 now"):
        _detector_run(
            tmp_path,
            tokenizer,
            VALUES,
            tmp_path / "second",
            resume=str(tmp_path / "first" / "checkpoint-5"),
            warn_change=0.2,
        )


def test_detector_load_names_a_damaged_file_and_reads_the_old_file(tmp_path):
    detector = CollapseDetectorCallback(watch=[SeriesDetector(KEY, ema=1.0, warmup=3)])
    for step, value in enumerate([0.8, 0.8, 0.8, 0.5]):
        detector.detectors[KEY].update(step, value)
    detector.level, detector.warned_at = 1, 3
    legacy = tmp_path / "qdc_collapse_detector.json"
    legacy.write_text(json.dumps(detector.state_dict()))
    fresh = CollapseDetectorCallback(watch=[SeriesDetector(KEY, ema=1.0, warmup=3)])
    fresh.load(str(tmp_path))  # a checkpoint written by an earlier version
    assert fresh.warned_at == 3 and fresh.detectors[KEY].baseline == pytest.approx(0.8)

    legacy.write_text(legacy.read_text()[:40])
    with pytest.raises(ValueError, match=rf"{legacy} is not valid JSON .*truncated or damaged"):
        CollapseDetectorCallback(watch=[SeriesDetector(KEY, ema=1.0, warmup=3)]).load(str(tmp_path))

    state = detector.state_dict()
    state["detectors"][KEY]["baseline"] = float("nan")
    legacy.write_text(json.dumps(state))
    other = CollapseDetectorCallback(watch=[SeriesDetector(KEY, ema=1.0, warmup=3)])
    with pytest.raises(ValueError, match=rf"{legacy}: saved baseline holds nan, not a finite number"):
        other.load(str(tmp_path))
    assert other.detectors[KEY].baseline is None and other.warned_at is None  # left as it was

    del state["detectors"][KEY]["streak"]
    legacy.write_text(json.dumps(state))
    with pytest.raises(ValueError, match=r"lacks \['streak'\]"):
        other.load(str(tmp_path))


def test_two_detectors_share_the_checkpoint_entry_and_a_changed_watch_takes_a_new_baseline(caplog):
    from types import SimpleNamespace

    def event(cb, state, step, logs):
        state.global_step = step
        cb.on_log(
            SimpleNamespace(output_dir="unused"),
            state,
            SimpleNamespace(should_save=False, should_training_stop=False),
            logs=logs,
        )

    a = CollapseDetectorCallback(watch=[SeriesDetector("x", ema=1.0)], actions=())
    b = CollapseDetectorCallback(watch=[SeriesDetector("y", ema=1.0)], actions=())
    state = SimpleNamespace(global_step=0, stateful_callbacks={})
    for cb in (a, b):
        cb.on_train_begin(None, state, None)
    for step, (x, y) in enumerate([(1.0, 5.0), (0.5, 5.0)], start=1):
        for cb in (a, b):
            event(cb, state, step, {"x": x, "y": y})
    saved = json.loads(json.dumps(state.stateful_callbacks))  # as trainer_state.json holds it
    assert sorted(saved[ENTRY]) == ['["x"]', '["y"]'] and saved[ENTRY]['["x"]']["detectors"]["x"]["baseline"] == 1.0

    resumed_state = SimpleNamespace(global_step=2, stateful_callbacks=saved)
    a2 = CollapseDetectorCallback(watch=[SeriesDetector("x", ema=1.0)], actions=())
    a2.on_train_begin(SimpleNamespace(output_dir="unused"), resumed_state, None)
    assert a2.detectors["x"].baseline == 1.0 and a2.detectors["x"].smoothed == 0.5
    with caplog.at_level(logging.WARNING, logger="qdc_trainer.callbacks.collapse"):
        z = CollapseDetectorCallback(watch=[SeriesDetector("z", ema=1.0)], actions=())
        z.on_train_begin(
            SimpleNamespace(output_dir="unused"), SimpleNamespace(global_step=2, stateful_callbacks=saved), None
        )
    assert (
        "holds collapse detector states for [['x'], ['y']], this detector watches ['z']: it takes a new baseline"
        in caplog.text
    )
    assert z.detectors["z"].baseline is None
