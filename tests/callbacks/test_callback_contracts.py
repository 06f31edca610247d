"""Contracts every callback keeps: two train begin/end cycles, TensorBoard read-back, TRL's SFTTrainer,
train entropy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datasets import Dataset
from helpers import build_gpt2, cpu_sft_args, cpu_training_args, random_text_dataset, tokenized
from transformers import DataCollatorForLanguageModeling

from qdc_trainer import (
    CollapseDetectorCallback,
    GenerationMonitorCallback,
    GenerationMonitorConfig,
    QDCSampler,
    QDCSamplerConfig,
    QDCTrainer,
    QDCTrainerMixin,
)
from qdc_trainer.callbacks.monitor import SAMPLES_FILE

PROMPTS = ["the cat", "a dog ran", "first add 2 and 3"]


def args_for(tmp_path, **kwargs):
    return cpu_training_args(tmp_path, **{"max_steps": 4, "logging_steps": 2, **kwargs})


def test_every_callback_survives_two_train_cycles(tokenizer, tmp_path):
    ds = tokenized(random_text_dataset(32, lengths=(3, 9), clusters=3), tokenizer)
    sampler = QDCSampler.from_dataset(ds, complexity_column=None, config=QDCSamplerConfig(update_every=1))
    monitor = GenerationMonitorCallback(
        PROMPTS, config=GenerationMonitorConfig(num_samples=2, max_new_tokens=4, every_n_steps=2)
    )
    detector = CollapseDetectorCallback(
        watch={"qdc/gen/per_input/distinct_1": "decrease", "qdc/train/entropy": "decrease"}
    )
    trainer = QDCTrainer(
        model=build_gpt2(tokenizer),
        args=args_for(tmp_path),
        train_dataset=ds.remove_columns(["quality", "cluster"]),
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        qdc_sampler=sampler,
        callbacks=[monitor, detector],
    )
    assert monitor.trainer is trainer and detector.trainer is trainer  # bound by QDCTrainer
    cycles, baselines = [], []
    for _ in range(2):
        trainer.train()
        history = trainer.state.log_history
        cycles.append(
            {
                "gen_steps": [e["step"] for e in history if "qdc/gen/length" in e],
                "detector_steps": [e["step"] for e in history if "qdc/collapse/level" in e],
                "entropy_steps": [e["step"] for e in history if "qdc/train/entropy" in e],
                "sampler_steps": [
                    e["step"]
                    for e in history
                    if "qdc/sampler/weight_ess" in e or any(k.startswith("qdc/sampler/") for k in e)
                ],
            }
        )
        first = next(e["qdc/gen/per_input/distinct_1"] for e in history if "qdc/gen/per_input/distinct_1" in e)
        baselines.append((detector.detectors["qdc/gen/per_input/distinct_1"].baseline, first))
    assert cycles[0] == cycles[1]  # the second run starts afresh: same cadence, detector reset
    assert (
        cycles[0]["gen_steps"] == [0, 2, 4]
        and cycles[0]["entropy_steps"] == [2, 4]
        and cycles[0]["sampler_steps"] == [2, 4]
    )
    assert all(baseline == first for baseline, first in baselines)  # each run's baseline is its own step 0
    assert monitor.evaluations == 6
    rows = (tmp_path / SAMPLES_FILE).read_text().splitlines()
    assert len(rows) == 3 * len(PROMPTS) * 2  # each fresh train() starts the samples file anew


def test_logged_scalars_are_read_back_from_tensorboard(tokenizer, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ds = tokenized(random_text_dataset(32, lengths=(3, 9)), tokenizer)
    monitor = GenerationMonitorCallback(
        PROMPTS, config=GenerationMonitorConfig(num_samples=2, max_new_tokens=4, every_n_steps=2)
    )
    detector = CollapseDetectorCallback(watch={"qdc/gen/per_input/distinct_1": "decrease"})
    trainer = QDCTrainer(
        model=build_gpt2(tokenizer),
        args=args_for(tmp_path, report_to=["tensorboard"]),
        train_dataset=ds,
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[monitor, detector],
    )
    trainer.train()
    trainer.callback_handler.on_train_end(trainer.args, trainer.state, trainer.control)  # flush the writer
    (event_file,) = tmp_path.rglob("events.out.tfevents*")
    events = EventAccumulator(str(event_file.parent))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for key in (
        "qdc/gen/per_input/distinct_2",
        "qdc/gen/across_input/self_bleu",
        "qdc/gen/entropy",
        "qdc/train/entropy",
        "qdc/collapse/level",
        "qdc/collapse/gen/per_input/distinct_1/change",
    ):
        assert key in tags or f"train/{key}" in tags, (key, sorted(tags))

    def series(key):
        tag = key if key in tags else f"train/{key}"
        return [(e.step, e.value) for e in events.Scalars(tag)]

    logged = [
        (e["step"], e["qdc/gen/per_input/distinct_2"])
        for e in trainer.state.log_history
        if "qdc/gen/per_input/distinct_2" in e
    ]
    assert [s for s, _ in series("qdc/gen/per_input/distinct_2")] == [s for s, _ in logged] == [0, 2, 4]
    assert [v for _, v in series("qdc/gen/per_input/distinct_2")] == pytest.approx([v for _, v in logged], rel=1e-6)


def test_sft_trainer_with_the_callbacks(tokenizer, tmp_path):
    from trl import SFTTrainer

    class QDCSFTTrainer(QDCTrainerMixin, SFTTrainer):
        pass

    ds = random_text_dataset(24, lengths=(3, 9))
    monitor = GenerationMonitorCallback(
        PROMPTS, config=GenerationMonitorConfig(num_samples=2, max_new_tokens=4, every_n_steps=2)
    )
    detector = CollapseDetectorCallback(watch={"qdc/gen/per_input/distinct_2": "decrease", "entropy": "decrease"})
    config = cpu_sft_args(tmp_path, max_steps=4, logging_steps=2, dataset_text_field="text")
    for trainer_cls in (SFTTrainer, QDCSFTTrainer):
        trainer = trainer_cls(
            model=build_gpt2(tokenizer),
            args=config,
            train_dataset=ds,
            processing_class=tokenizer,
            callbacks=[monitor, detector],
        )
        monitor.bind(trainer), detector.bind(trainer)
        trainer.train()
        history = trainer.state.log_history
        gen = [e for e in history if "qdc/gen/per_input/distinct_2" in e]
        assert [e["step"] for e in gen] == [0, 2, 4]
        # TRL decides train or eval from model.training when it logs: the monitor logs in train mode
        assert not any(k.startswith("eval_") for e in gen for k in e) and trainer.model.training
        assert any("entropy" in e for e in history)  # TRL's own per-step entropy reaches the detector
        first_entropy = next(e["entropy"] for e in history if "entropy" in e)
        assert detector.detectors["entropy"].baseline == pytest.approx(first_entropy)  # this run's, TRL's own series


TRL_KEYS = ("entropy", "mean_token_accuracy", "num_tokens")


@pytest.mark.parametrize("with_mixin", [False, True])
def test_trl_metrics_stay_on_the_trainers_own_records(tokenizer, tmp_path, with_mixin):
    """TRL's log() empties its metric buffer on every call: the callbacks' records must not take it."""
    from trl import SFTTrainer

    class QDCSFTTrainer(QDCTrainerMixin, SFTTrainer):
        pass

    ds = random_text_dataset(32, lengths=(3, 9))
    monitor = GenerationMonitorCallback(
        PROMPTS, config=GenerationMonitorConfig(num_samples=2, max_new_tokens=4, every_n_steps=1)
    )
    detector = CollapseDetectorCallback(
        watch={"qdc/gen/per_input/distinct_2": "decrease", "entropy": "decrease"}, actions=("log",)
    )
    config = cpu_sft_args(tmp_path, max_steps=6, logging_steps=3, dataset_text_field="text")
    trainer = (QDCSFTTrainer if with_mixin else SFTTrainer)(
        model=build_gpt2(tokenizer),
        args=config,
        train_dataset=ds,
        processing_class=tokenizer,
        callbacks=[monitor, detector],
    )
    if not with_mixin:
        monitor.bind(trainer), detector.bind(trainer)
    trainer.train()
    history = trainer.state.log_history
    loss_records = [e for e in history if "loss" in e]
    assert [e["step"] for e in loss_records] == [3, 6]
    for e in loss_records:  # every loss record has TRL's metrics of its whole window
        assert all(k in e for k in TRL_KEYS), e
        assert e["num_tokens"] > 0 and 0 <= e["mean_token_accuracy"] <= 1 and e["entropy"] > 0
    assert loss_records[1]["num_tokens"] > loss_records[0]["num_tokens"]  # TRL counts tokens over the run
    others = [e for e in history if "loss" not in e and "train_runtime" not in e]
    assert [e["step"] for e in others if "qdc/gen/length" in e] == [0, 1, 2, 3, 4, 5, 6]  # logged in between
    assert [e["step"] for e in others if "qdc/collapse/entropy/level" in e] == [3, 6]  # reacting to TRL's entropy
    assert not [k for e in others for k in e if k in TRL_KEYS]  # and never on the callbacks' records
    assert detector.detectors["entropy"].baseline == pytest.approx(loss_records[0]["entropy"])


def test_train_entropy_is_the_mean_predictive_entropy_at_the_scored_positions(tokenizer, tmp_path):
    """One step whose batch is the whole dataset: the logged value equals the entropy from a forward pass by hand."""
    texts = ["the cat sat on the mat", "a dog ran in the park", "first add 2 and 3", "the answer is 5"]
    ds = tokenized(Dataset.from_dict({"text": texts}), tokenizer)
    model = build_gpt2(tokenizer, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    batch = collator([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    entropy = -(logp.exp() * logp).sum(-1)
    scored = batch["labels"][:, 1:] != -100  # position t predicts token t + 1
    expected = float(entropy[scored].mean())
    trainer = QDCTrainer(
        model=model,
        args=args_for(tmp_path, per_device_train_batch_size=4, max_steps=1, logging_steps=1),
        train_dataset=ds,
        data_collator=collator,
    )
    trainer.train()
    (log,) = [e for e in trainer.state.log_history if "qdc/train/entropy" in e]
    assert log["qdc/train/entropy"] == pytest.approx(expected, rel=1e-5)
    assert 0 < expected < np.log(len(tokenizer))


def test_samples_file_is_json_lines(tokenizer, tmp_path):
    ds = tokenized(random_text_dataset(8, lengths=(3, 9)), tokenizer)
    monitor = GenerationMonitorCallback(["the cat"], config=GenerationMonitorConfig(num_samples=2, max_new_tokens=3))
    trainer = QDCTrainer(
        model=build_gpt2(tokenizer),
        args=args_for(tmp_path, max_steps=1),
        train_dataset=ds,
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[monitor],
    )
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    assert [set(r) for r in rows] == [{"step", "prompt_index", "prompt", "sample", "completion", "num_tokens"}] * 2


def test_samples_reach_a_wandb_table(tokenizer, tmp_path, monkeypatch):
    """W&B in offline mode (no network): every evaluation's samples are written as a table of the run."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    ds = tokenized(random_text_dataset(8, lengths=(3, 9)), tokenizer)
    monitor = GenerationMonitorCallback(
        PROMPTS[:2], config=GenerationMonitorConfig(num_samples=2, max_new_tokens=3, every_n_steps=2)
    )
    trainer = QDCTrainer(
        model=build_gpt2(tokenizer),
        args=args_for(tmp_path / "out", max_steps=2, report_to=["wandb"]),
        train_dataset=ds,
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[monitor],
    )
    try:
        trainer.train()
    finally:
        wandb.finish()
    tables = sorted(tmp_path.glob("wandb/offline-run-*/files/media/table/qdc/gen/samples_*.table.json"))
    assert len(tables) == 2  # steps 0 and 2
    rows = [json.loads(line) for line in (tmp_path / "out" / SAMPLES_FILE).read_text().splitlines()]
    for table in tables:
        content = json.loads(table.read_text())
        assert content["columns"] == ["step", "prompt_index", "prompt", "sample", "completion", "num_tokens"]
        assert len(content["data"]) == 2 * 2
        step = content["data"][0][0]
        assert [r[4] for r in content["data"]] == [r["completion"] for r in rows if r["step"] == step]


@pytest.mark.parametrize("setting", ["packing", "padding_free"])
def test_packed_batches_are_refused_at_construction_with_a_sampler(tokenizer, tmp_path, setting):
    from trl import SFTTrainer

    class QDCSFTTrainer(QDCTrainerMixin, SFTTrainer):
        pass

    ds = random_text_dataset(16, lengths=(3, 9))
    config = cpu_sft_args(
        tmp_path,
        max_steps=2,
        logging_steps=1,
        dataset_text_field="text",
        **{setting: True},
        max_length=None if setting == "padding_free" else 32,  # TRL: padding-free does not truncate
    )
    with pytest.raises(
        ValueError,
        match=f"does not support packed batches yet \\({setting}=True.*Set packing=False and padding_free=False",
    ):
        QDCSFTTrainer(
            model=build_gpt2(tokenizer),
            args=config,
            train_dataset=ds,
            processing_class=tokenizer,
            qdc_sampler=QDCSampler(len(ds)),
        )
    # without a sampler there is no per-example feedback, and the mixin trains packed batches
    trainer = QDCSFTTrainer(model=build_gpt2(tokenizer), args=config, train_dataset=ds, processing_class=tokenizer)
    trainer.train()
    assert trainer.state.global_step == 2 and any("loss" in e for e in trainer.state.log_history)


def test_a_batch_with_fewer_rows_than_indices_fails_with_a_clear_message(tokenizer, tmp_path):
    """A padding-free collator flattens the examples into one row; the check in compute_loss names the cause."""
    from qdc_trainer.data.collator import INDEX_KEY

    ds = tokenized(random_text_dataset(8, lengths=(3, 9)), tokenizer)
    trainer = QDCTrainer(
        model=build_gpt2(tokenizer),
        args=args_for(tmp_path),
        train_dataset=ds,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        qdc_sampler=QDCSampler(len(ds)),
    )
    ids = torch.tensor([ds[i]["input_ids"] for i in range(2)][0] + [ds[i]["input_ids"] for i in range(2)][1])[None]
    position_ids = torch.cat([torch.arange(len(ds[0]["input_ids"])), torch.arange(len(ds[1]["input_ids"]))])[None]
    batch = {"input_ids": ids, "labels": ids.clone(), "position_ids": position_ids, INDEX_KEY: torch.tensor([0, 1])}
    trainer.model.train()
    with pytest.raises(
        ValueError, match="1 rows but 2 example indices: packed or padding-free batches .* not supported"
    ):
        trainer.compute_loss(trainer.model, batch)
    assert trainer.qdc_sampler.consumed == 0  # nothing was recorded
