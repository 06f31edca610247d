"""The ways people fine-tune, with the QDC sampler, the loss path, the monitor and the detector: a LoRA-wrapped model
(PEFT) in the plain Trainer, TRL's SFTTrainer and GRPOTrainer; chat-format data (a ``messages`` dataset for
SFTTrainer, conversational prompts for GRPOTrainer and the monitor); dataloader workers; bf16 autocast on the CPU.
Each path trains a few steps of a tiny model; the resumable ones resume exactly."""

from __future__ import annotations

import numpy as np
import peft  # the 'peft' extra, part of the dev extra
import pytest
import torch
from datasets import Dataset
from helpers import build_gpt2, build_tokenizer, random_text_dataset, tokenized
from transformers import DataCollatorForLanguageModeling, TrainingArguments

from qdc_trainer import (
    CollapseDetectorCallback,
    GenerationMonitorCallback,
    GenerationMonitorConfig,
    QDCSampler,
    QDCSamplerConfig,
    QDCTrainer,
    QDCTrainerMixin,
)

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}assistant {% endif %}"
)
"""A chat template in the tiny tokenizer's words (role names are out of its vocabulary: they map to <unk>)."""


def _args(out, **overrides):
    defaults = dict(
        output_dir=str(out),
        per_device_train_batch_size=4,
        max_steps=4,
        logging_steps=2,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        learning_rate=1e-2,
    )
    return TrainingArguments(**{**defaults, **overrides})


def _lora(model):
    return peft.get_peft_model(model, _lora_config())


def _lora_config():
    """LoRA on GPT-2's attention projection (a ``Conv1D``: its weight is stored transposed, hence fan_in_fan_out)."""
    return peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.0, fan_in_fan_out=True, task_type="CAUSAL_LM"
    )


def _recording(sampler):
    """The sampler, with every recorded (index, loss) kept in ``sampler.seen``."""
    sampler.seen = []
    record = sampler.record

    def recording(idx, loss, **kwargs):
        sampler.seen.extend(zip(np.asarray(idx).tolist(), np.asarray(loss, dtype=float).tolist()))
        return record(idx, loss, **kwargs)

    sampler.record = recording
    return sampler


def _qdc_trainer(tokenizer, ds, out, model=None, resume=None, callbacks=(), **overrides):
    sampler = _recording(
        QDCSampler.from_dataset(ds, complexity_column=None, config=QDCSamplerConfig(update_every=1, seed=3))
    )
    trainer = QDCTrainer(
        model=model if model is not None else build_gpt2(tokenizer, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
        args=_args(out, **overrides),
        train_dataset=ds,
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        qdc_sampler=sampler,
        callbacks=list(callbacks),
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, sampler


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def ds(tok):
    return tokenized(random_text_dataset(32, clusters=4), tok, keep_text=False)


def _hand_losses(model, tokenizer, ds, indices):
    """Each example's mean next-token loss under ``model``, computed here without the trainer."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in indices:
            ids = torch.tensor([ds[i]["input_ids"]])
            out.append(float(model(input_ids=ids, labels=ids).loss))
    return out


# ---------------------------------------------------------------------------------------------- LoRA (PEFT)


def test_lora_in_the_plain_trainer_feeds_the_sampler_monitor_and_detector_and_resumes_exactly(tok, ds, tmp_path):
    monitor = GenerationMonitorCallback(
        ["the cat", "a dog"], GenerationMonitorConfig(num_samples=2, max_new_tokens=4, every_n_steps=2)
    )
    detector = CollapseDetectorCallback(actions=("log",))
    lora = _lora(build_gpt2(tok, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    full, sampler = _qdc_trainer(
        tok, ds, tmp_path / "full", model=lora, callbacks=[monitor, detector], save_strategy="steps", save_steps=2
    )
    # The sampler got one finite loss per trained example: 4 steps of 4.
    assert len(sampler.seen) == 16 and all(np.isfinite(loss) for _, loss in sampler.seen)
    # The per-example losses are the model's own (the loss tap reaches through the PEFT wrapper): the first
    # step's, recomputed by hand from the model as it was then (the adapter starts as a no-op: B = 0).
    base = build_gpt2(tok, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    first = sampler.seen[:4]
    np.testing.assert_allclose(
        [loss for _, loss in first], _hand_losses(base, tok, ds, [i for i, _ in first]), rtol=1e-5
    )
    assert any(k.startswith("qdc/gen/") for r in full.state.log_history for k in r)  # the monitor generated
    assert detector.trainer is full  # bound by the mixin
    assert any(k.startswith("qdc/collapse/") for r in full.state.log_history for k in r)  # it watched the series
    assert any("qdc/train/entropy" in r for r in full.state.log_history)
    # Only the adapter trained; the resume from step 2 ends on the same adapter and sampler state.
    resumed, again = _qdc_trainer(
        tok,
        ds,
        tmp_path / "full",
        model=_lora(build_gpt2(tok, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
        resume=str(tmp_path / "full" / "checkpoint-2"),
        save_strategy="steps",
        save_steps=2,
    )
    assert again.seen == sampler.seen[8:]
    assert np.array_equal(again.loss_ema, sampler.loss_ema, equal_nan=True)
    for (name, p), q in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), name


def test_lora_in_trl_sft_trainer(tok, tmp_path):
    from trl import SFTConfig, SFTTrainer

    class QDCSFTTrainer(QDCTrainerMixin, SFTTrainer):
        pass

    texts = random_text_dataset(16, clusters=2)
    data = Dataset.from_dict({"prompt": [t[:7] for t in texts["text"]], "completion": [t[7:] for t in texts["text"]]})
    sampler = _recording(QDCSampler(len(data), config=QDCSamplerConfig(update_every=1)))
    monitor = GenerationMonitorCallback(
        ["the cat", "a dog"], GenerationMonitorConfig(num_samples=2, max_new_tokens=4, every_n_steps=2)
    )
    detector = CollapseDetectorCallback(actions=("log",))
    trainer = QDCSFTTrainer(
        model=build_gpt2(tok),
        callbacks=[monitor, detector],
        args=SFTConfig(
            output_dir=str(tmp_path),
            per_device_train_batch_size=4,
            max_steps=2,
            report_to=[],
            use_cpu=True,
            save_strategy="no",
            disable_tqdm=True,
            max_length=32,
        ),
        train_dataset=data,
        processing_class=tok,
        peft_config=_lora_config(),
        qdc_sampler=sampler,
    )
    assert isinstance(trainer.model, peft.PeftModel)
    trainer.train()
    assert len(sampler.seen) == 8 and all(np.isfinite(loss) for _, loss in sampler.seen)
    assert sampler.num_updates == 2
    keys = {k for r in trainer.state.log_history for k in r}
    assert any(k.startswith("qdc/gen/") for k in keys) and any(k.startswith("qdc/collapse/") for k in keys)


def _digit_reward(completions, **kwargs):
    def text(c):
        return c if isinstance(c, str) else " ".join(m["content"] for m in c)

    return [(sum(ch.isdigit() for ch in text(c)) % 3) / 2 for c in completions]


def _grpo(tok, prompts, out, *, resume=None, max_steps=2, save_strategy="no", save_steps=500, **kwargs):
    from trl import GRPOConfig, GRPOTrainer

    from qdc_trainer import RolloutMonitorCallback

    class QDCGRPOTrainer(QDCTrainerMixin, GRPOTrainer):
        pass

    sampler = QDCSampler(len(prompts), config=QDCSamplerConfig(update_every=1, example_loss_strength=1.0))
    monitor = RolloutMonitorCallback()
    detector = CollapseDetectorCallback(actions=("log",))  # under GRPO it watches the rollout series
    trainer = QDCGRPOTrainer(
        model=build_gpt2(tok),
        args=GRPOConfig(
            output_dir=str(out),
            per_device_train_batch_size=4,
            num_generations=2,
            max_completion_length=4,
            max_steps=max_steps,
            logging_steps=1,
            report_to=[],
            use_cpu=True,
            save_strategy=save_strategy,
            save_steps=save_steps,
            disable_tqdm=True,
            seed=0,
            log_completions=False,
        ),
        reward_funcs=[_digit_reward],
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tok,
        qdc_sampler=sampler,
        callbacks=[monitor, detector],
        **kwargs,
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, sampler


def test_lora_in_trl_grpo_trainer(tok, tmp_path):
    prompts = [f"first add {i} and {i + 1} to get" for i in range(8)]
    trainer, sampler = _grpo(tok, prompts, tmp_path, peft_config=_lora_config())
    assert isinstance(trainer.model, peft.PeftModel)
    assert sampler.num_updates == 2 and sampler.consumed == 4  # 2 generation batches of 2 prompts
    rollout = [r for r in trainer.state.log_history if "qdc/rollout/zero_signal_share" in r]
    assert [r["step"] for r in rollout] == [1, 2]
    assert any(k.startswith("qdc/collapse/") for r in trainer.state.log_history for k in r)  # the detector watched


# ---------------------------------------------------------------------------------------------- chat data


def test_sft_trainer_on_a_messages_dataset_with_the_monitor_on_chat_probes(tmp_path):
    from trl import SFTConfig, SFTTrainer

    class QDCSFTTrainer(QDCTrainerMixin, SFTTrainer):
        pass

    tok = build_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    texts = random_text_dataset(16, clusters=2)["text"]
    data = Dataset.from_dict(
        {"messages": [[{"role": "user", "content": t[:7]}, {"role": "assistant", "content": t[7:]}] for t in texts]}
    )
    sampler = _recording(QDCSampler(len(data), config=QDCSamplerConfig(update_every=1)))
    probes = [[{"role": "user", "content": "the cat"}], [{"role": "user", "content": "a dog"}]]
    monitor = GenerationMonitorCallback(
        probes, GenerationMonitorConfig(num_samples=2, max_new_tokens=4, every_n_steps=2)
    )
    trainer = QDCSFTTrainer(
        model=build_gpt2(tok),
        args=SFTConfig(
            output_dir=str(tmp_path),
            per_device_train_batch_size=4,
            max_steps=2,
            report_to=[],
            use_cpu=True,
            save_strategy="no",
            disable_tqdm=True,
            max_length=48,
            logging_steps=1,
        ),
        train_dataset=data,
        processing_class=tok,
        qdc_sampler=sampler,
        callbacks=[monitor],
    )
    trainer.train()
    assert len(sampler.seen) == 8 and all(np.isfinite(loss) for _, loss in sampler.seen)
    # The probes were rendered with the chat template: the samples hold the generated text after "assistant".
    rendered = tok.apply_chat_template(probes[0], tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("assistant ")
    assert any(k.startswith("qdc/gen/") for r in trainer.state.log_history for k in r)


def test_grpo_trainer_on_conversational_prompts(tmp_path):
    tok = build_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    prompts = [[{"role": "user", "content": f"first add {i} and {i + 1} to get"}] for i in range(8)]
    trainer, sampler = _grpo(tok, prompts, tmp_path)
    assert sampler.num_updates == 2 and sampler.consumed == 4
    rollout = [r for r in trainer.state.log_history if "qdc/rollout/zero_signal_share" in r]
    assert [r["step"] for r in rollout] == [1, 2]


# ---------------------------------------------------------------------------------------------- dataloader workers


def test_dataloader_workers_give_the_same_stream_and_resume_exactly(tok, ds, tmp_path):
    _, single = _qdc_trainer(tok, ds, tmp_path / "w0")
    workers, multi = _qdc_trainer(
        tok, ds, tmp_path / "w2", dataloader_num_workers=2, save_strategy="steps", save_steps=2
    )
    assert [i for i, _ in multi.seen] == [i for i, _ in single.seen]
    np.testing.assert_allclose([v for _, v in multi.seen], [v for _, v in single.seen], rtol=1e-6)
    resumed, again = _qdc_trainer(
        tok,
        ds,
        tmp_path / "w2",
        resume=str(tmp_path / "w2" / "checkpoint-2"),
        dataloader_num_workers=2,
        save_strategy="steps",
        save_steps=2,
    )
    assert again.seen == multi.seen[8:]
    assert np.array_equal(again.loss_ema, multi.loss_ema, equal_nan=True)
    for p, q in zip(workers.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)


# ---------------------------------------------------------------------------------------------- bf16 on the CPU


@pytest.mark.parametrize("weighting", ["none", "importance"])
def test_bf16_autocast_on_the_cpu_through_the_loss_path(tok, ds, tmp_path, weighting):
    sampler = _recording(
        QDCSampler.from_dataset(ds, complexity_column=None, config=QDCSamplerConfig(update_every=1, seed=3))
    )
    trainer = QDCTrainer(
        model=build_gpt2(tok, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
        args=_args(tmp_path, bf16=True, max_steps=1, learning_rate=0.0, logging_steps=1),
        train_dataset=ds,
        data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
        qdc_sampler=sampler,
        loss_weighting=weighting,
    )
    trainer.train()
    assert trainer.accelerator.mixed_precision == "bf16"
    indices = [i for i, _ in sampler.seen]
    # The fed-back losses are float32 numbers close to the float32 model's own (bf16 keeps ~3 significant digits).
    reference = _hand_losses(build_gpt2(tok, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0), tok, ds, indices)
    np.testing.assert_allclose([v for _, v in sampler.seen], reference, rtol=2e-2)
    logged = [r for r in trainer.state.log_history if "loss" in r][0]
    assert np.isfinite(logged["loss"]) and np.isfinite(logged["qdc/train/entropy"])


def _lora_sft(tok, data, out, *, resume=None):
    """A LoRA model in TRL's SFTTrainer with the sampler: 4 steps, a checkpoint every 2 (dropout off)."""
    from trl import SFTConfig, SFTTrainer

    class QDCSFTTrainer(QDCTrainerMixin, SFTTrainer):
        pass

    sampler = _recording(QDCSampler(len(data), config=QDCSamplerConfig(update_every=1, seed=1)))
    trainer = QDCSFTTrainer(
        model=build_gpt2(tok, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
        args=SFTConfig(
            output_dir=str(out),
            per_device_train_batch_size=4,
            max_steps=4,
            learning_rate=1e-2,
            report_to=[],
            use_cpu=True,
            save_strategy="steps",
            save_steps=2,
            disable_tqdm=True,
            max_length=32,
            seed=0,
        ),
        train_dataset=data,
        processing_class=tok,
        peft_config=_lora_config(),
        qdc_sampler=sampler,
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, sampler


def test_lora_in_trl_sft_trainer_resumes_exactly(tok, tmp_path):
    texts = random_text_dataset(16, clusters=2)
    data = Dataset.from_dict({"prompt": [t[:7] for t in texts["text"]], "completion": [t[7:] for t in texts["text"]]})
    full, sampler = _lora_sft(tok, data, tmp_path)
    resumed, again = _lora_sft(tok, data, tmp_path, resume=str(tmp_path / "checkpoint-2"))
    assert len(sampler.seen) == 16 and again.seen == sampler.seen[8:]  # the same examples, the same losses
    assert np.array_equal(again.loss_ema, sampler.loss_ema, equal_nan=True)
    assert np.array_equal(again.probabilities(), sampler.probabilities())
    trained = [(n, p) for n, p in full.model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n, _ in trained)  # only the adapter trains
    for (name, p), q in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), name


def test_lora_in_trl_grpo_trainer_resumes_exactly(tok, tmp_path):
    prompts = [f"first add {i} and {i + 1} to get" for i in range(8)]
    common = dict(peft_config=_lora_config(), max_steps=4, save_strategy="steps", save_steps=2)
    full, sampler = _grpo(tok, prompts, tmp_path, **common)
    resumed, again = _grpo(tok, prompts, tmp_path, resume=str(tmp_path / "checkpoint-2"), **common)
    assert (again.num_updates, again.consumed, again.epoch) == (sampler.num_updates, sampler.consumed, sampler.epoch)
    assert np.array_equal(np.concatenate(again.success_posterior()), np.concatenate(sampler.success_posterior()))
    assert np.array_equal(again.probabilities(), sampler.probabilities())
    for (name, p), q in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), name
