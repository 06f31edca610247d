"""Resuming with another batch layout is refused naming both layouts (SFT and GRPO, end to end through the
Trainer); a checkpoint's trainer_state.json of the wrong schema is named."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from datasets import Dataset
from helpers import build_gpt2, build_tokenizer, random_text_dataset, tokenized
from transformers import DataCollatorForLanguageModeling, TrainingArguments

from qdc_trainer import QDCSampler, QDCSamplerConfig, QDCTrainer
from qdc_trainer.trainer import BATCH_LAYOUT_FILE, SAMPLER_STATE_FILE


def _sft_run(tokenizer, ds, out, resume=None, **overrides):
    sampler = QDCSampler.from_dataset(ds, complexity_column=None, config=QDCSamplerConfig(update_every=2, seed=3))
    args = dict(
        output_dir=str(out),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_steps=4,
        save_strategy="steps",
        save_steps=2,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = QDCTrainer(
        model=build_gpt2(tokenizer, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
        args=TrainingArguments(**{**args, **overrides}),
        train_dataset=ds,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        qdc_sampler=sampler,
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, sampler


@pytest.fixture(scope="module")
def sft_checkpoint(tmp_path_factory):
    tokenizer = build_tokenizer()
    ds = tokenized(random_text_dataset(64, clusters=4), tokenizer, keep_text=True)
    out = tmp_path_factory.mktemp("sft")
    _sft_run(tokenizer, ds, out)
    return tokenizer, ds, out / "checkpoint-2"


def test_the_checkpoint_holds_its_batch_layout(sft_checkpoint):
    _, _, checkpoint = sft_checkpoint
    assert json.loads((checkpoint / BATCH_LAYOUT_FILE).read_text()) == {
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "world_size": 1,
    }


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"per_device_train_batch_size": 2}, "per_device_train_batch_size 4 -> 2"),
        ({"gradient_accumulation_steps": 1}, "gradient_accumulation_steps 2 -> 1"),
        (
            {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1},
            "per_device_train_batch_size 4 -> 8, gradient_accumulation_steps 2 -> 1",
        ),
    ],
)
def test_resuming_sft_with_another_batch_layout_is_refused_naming_both(sft_checkpoint, tmp_path, changes, named):
    tokenizer, ds, checkpoint = sft_checkpoint
    with pytest.raises(ValueError) as info:
        _sft_run(tokenizer, ds, tmp_path, resume=str(checkpoint), **changes)
    message = str(info.value)
    assert named in message
    assert "per_device_train_batch_size=4, gradient_accumulation_steps=2, world_size=1" in message  # the checkpoint's
    new = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, **changes}
    assert ", ".join(f"{k}={v}" for k, v in new.items()) + ", world_size=1" in message  # this run's
    assert "ignore_data_skip=True" in message


def test_ignore_data_skip_goes_on_with_another_layout_and_warns(sft_checkpoint, tmp_path, caplog):
    tokenizer, ds, checkpoint = sft_checkpoint
    with caplog.at_level(logging.WARNING):
        trainer, sampler = _sft_run(
            tokenizer, ds, tmp_path, resume=str(checkpoint), gradient_accumulation_steps=1, ignore_data_skip=True
        )
    assert trainer.state.global_step == 4
    assert "gradient_accumulation_steps 2 -> 1" in caplog.text and "starts afresh" in caplog.text


def test_the_same_layout_resumes_exactly(sft_checkpoint, tmp_path):
    tokenizer, ds, checkpoint = sft_checkpoint
    full, full_sampler = _sft_run(tokenizer, ds, tmp_path / "full")
    resumed, sampler = _sft_run(tokenizer, ds, tmp_path / "resumed", resume=str(checkpoint))
    assert np.array_equal(full_sampler.loss_ema, sampler.loss_ema, equal_nan=True)
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    "state, problem",
    [
        ("[]", "holds a JSON list, not an object"),
        ('{"global_step": "two", "log_history": []}', "global_step='two' has the wrong type"),
        ('{"globl_step": 2}', "unexpected keyword argument 'globl_step'"),
    ],
)
def test_a_trainer_state_of_the_wrong_schema_is_named(sft_checkpoint, tmp_path, state, problem):
    import shutil

    tokenizer, ds, checkpoint = sft_checkpoint
    copy = tmp_path / "checkpoint-2"
    shutil.copytree(checkpoint, copy)
    (copy / "trainer_state.json").write_text(state)
    with pytest.raises(ValueError, match="checkpoint-2/trainer_state.json is not a Trainer state") as info:
        _sft_run(tokenizer, ds, tmp_path / "out", resume=str(copy))
    assert problem in str(info.value)


# ---------------------------------------------------------------------------------------------- GRPO


def _digit_reward(completions, **kwargs):
    return [(sum(ch.isdigit() for ch in c) % 3) / 2 for c in completions]


def _grpo_run(out, resume=None, **overrides):
    from trl import GRPOConfig, GRPOTrainer

    from qdc_trainer import QDCTrainerMixin
    from qdc_trainer.tasks.arithmetic import ArithmeticConfig, build_model, make_splits

    class QDCGRPOTrainer(QDCTrainerMixin, GRPOTrainer):
        pass

    tokenizer = build_tokenizer()
    prompts = make_splits(ArithmeticConfig(), 16, 2, 2, seed=0)["train"]["prompt"]
    args = dict(
        output_dir=str(out),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=4,
        max_steps=2,
        save_strategy="steps",
        save_steps=1,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        log_completions=False,
    )
    trainer = QDCGRPOTrainer(
        model=build_model(tokenizer, seed=0),
        args=GRPOConfig(**{**args, **overrides}),
        reward_funcs=[_digit_reward],
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
        qdc_sampler=QDCSampler(len(prompts), config=QDCSamplerConfig(update_every=1)),
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_resuming_grpo_with_other_num_generations_names_the_setting(tmp_path):
    _grpo_run(tmp_path / "run", max_steps=1)
    checkpoint = tmp_path / "run" / "checkpoint-1"
    assert (checkpoint / SAMPLER_STATE_FILE).is_file()
    assert json.loads((checkpoint / BATCH_LAYOUT_FILE).read_text())["num_generations"] == 4
    with pytest.raises(ValueError) as info:
        _grpo_run(tmp_path / "again", resume=str(checkpoint), num_generations=2)
    message = str(info.value)
    assert "num_generations 4 -> 2" in message and "num_generations=4" in message and "num_generations=2" in message
    assert "block_size" not in message
    # Without the layout file, the sampler state itself names the change: its success counts are of groups of 4.
    (checkpoint / BATCH_LAYOUT_FILE).unlink()
    with pytest.raises(ValueError) as info:
        _grpo_run(tmp_path / "older", resume=str(checkpoint), num_generations=2)
    message = str(info.value)
    assert "groups of 4" in message and "groups of 2" in message and "num_generations" in message
    # A checkpoint of an earlier version (no layout file, no success counts): the block size restored with the
    # sampler state is too small for the new generation batch, and the message names the GRPO settings.
    state_file = checkpoint / SAMPLER_STATE_FILE
    with np.load(state_file) as data:
        arrays = {k: data[k] for k in data.files if not k.startswith("success_")}
    np.savez(state_file, **arrays)
    with pytest.raises(ValueError) as info:
        _grpo_run(tmp_path / "oldest", resume=str(checkpoint), num_generations=2)
    message = str(info.value)
    assert "GRPO draws 4 prompts per generation batch (generation_batch_size=8 / num_generations=2)" in message
    assert "block_size=2" in message and "restored from a checkpoint saved with other GRPO settings" in message
