"""QDCTrainer with a real transformers Trainer and a tiny GPT-2: loss equality, feedback, columns, resume, errors."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from datasets import Dataset
from helpers import WORDS, build_gpt2, cpu_sft_args, cpu_training_args, random_text_dataset, tiny_gpt2_config, tokenized
from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding, Trainer, TrainingArguments

from qdc_trainer import INDEX_KEY, QDCDataCollator, QDCSampler, QDCSamplerConfig, QDCTrainer
from qdc_trainer.trainer import LOSS_WEIGHTINGS, SAMPLER_STATE_FILE


def make_dataset(tokenizer, n: int = 48, seed: int = 0) -> Dataset:
    return tokenized(random_text_dataset(n, seed=seed, clusters=4, labels=True), tokenizer, keep_text=True)


def args_for(tmp_path, **kwargs) -> TrainingArguments:
    return cpu_training_args(tmp_path, **{"max_steps": 6, "logging_steps": 1, **kwargs})


def no_dropout_lm(tokenizer, seed=0):
    return build_gpt2(tokenizer, seed=seed, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


class FixedOrderTrainer(Trainer):
    """The plain Trainer, fed a given index order (to compare losses batch for batch)."""

    def __init__(self, *args, order=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.order = order

    def _get_train_sampler(self, train_dataset=None):
        return list(self.order)


def losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize("weighting", LOSS_WEIGHTINGS)
@pytest.mark.parametrize("grad_accum", [1, 2])
def test_uniform_weights_give_the_plain_trainer_loss(tokenizer, tmp_path, weighting, grad_accum):
    ds = make_dataset(tokenizer)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    # No quality/cluster terms and no online terms: uniform, static weights, so every loss weight is 1.
    uniform = QDCSamplerConfig(example_loss_strength=0.0, cluster_loss_strength=0.0, seed=5)
    make_sampler = lambda: QDCSampler(len(ds), config=uniform)  # noqa: E731
    args = args_for(tmp_path, gradient_accumulation_steps=grad_accum)
    order_sampler = make_sampler()
    order_sampler.block_size = args.per_device_train_batch_size * grad_accum * order_sampler.update_every
    order = list(order_sampler)

    plain = FixedOrderTrainer(
        model=no_dropout_lm(tokenizer),
        args=args,
        train_dataset=ds.remove_columns(["text"]),
        data_collator=collator,
        order=order,
    )
    plain.train()
    qdc = QDCTrainer(
        model=no_dropout_lm(tokenizer),
        args=args,
        train_dataset=ds,
        data_collator=collator,
        qdc_sampler=make_sampler(),
        loss_weighting=weighting,
    )
    qdc.train()
    assert losses(qdc) == pytest.approx(losses(plain), rel=1e-5)
    assert len(losses(qdc)) == 6


@pytest.mark.parametrize("remove_unused_columns", [True, False])
@pytest.mark.parametrize("workers", [0, 2])
def test_feedback_names_the_trained_examples(tokenizer, tmp_path, remove_unused_columns, workers):
    ds = make_dataset(tokenizer)
    if not remove_unused_columns:
        ds = ds.remove_columns(["text", "quality", "cluster", "label"])  # the collator would choke on strings
    sampler = QDCSampler(len(ds), clusters=np.arange(len(ds)) % 4, config=QDCSamplerConfig(update_every=2, seed=1))
    recorded, seen_by_model = [], []
    original_record = sampler.record
    sampler.record = lambda idx, loss: (recorded.extend(np.asarray(idx).tolist()), original_record(idx, loss))[1]
    model = no_dropout_lm(tokenizer)
    forward = model.forward

    @functools.wraps(forward)  # keeps the signature the Trainer inspects for remove_unused_columns
    def checked_forward(*a, **kw):
        assert INDEX_KEY not in kw, "the index reached the model"
        seen_by_model.append(kw["input_ids"].clone())
        return forward(*a, **kw)

    model.forward = checked_forward
    args = args_for(
        tmp_path,
        gradient_accumulation_steps=2,
        remove_unused_columns=remove_unused_columns,
        dataloader_num_workers=workers,
    )
    trainer = QDCTrainer(
        model=model,
        args=args,
        train_dataset=ds,
        data_collator=QDCDataCollator(DataCollatorForLanguageModeling(tokenizer, mlm=False)),
        qdc_sampler=sampler,
    )
    trainer.train()
    assert len(recorded) == 6 * 2 * 4 == sampler.consumed
    # The recorded indices are the examples whose tokens the model saw, in order.
    for b, input_ids in enumerate(seen_by_model):
        for row, i in zip(input_ids, recorded[b * 4 : (b + 1) * 4]):
            expected = torch.tensor(ds[i]["input_ids"])
            assert torch.equal(row[: len(expected)], expected)
    assert sampler.num_updates == 3  # every 2 of 6 optimizer steps
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert all("qdc/sampler/ess_ratio" in e and "qdc/sampler/cluster_coverage" in e for e in logged)


def test_online_weights_follow_the_training_loss(tokenizer, tmp_path):
    ds = make_dataset(tokenizer, n=32)
    sampler = QDCSampler(len(ds), config=QDCSamplerConfig(update_every=1, seed=2))
    trainer = QDCTrainer(
        model=no_dropout_lm(tokenizer),
        args=args_for(tmp_path, max_steps=8),
        train_dataset=ds,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        qdc_sampler=sampler,
    )
    trainer.train()
    seen = ~np.isnan(sampler.loss_ema)
    p = sampler.probabilities()
    hi = np.nanargmax(sampler.loss_ema)
    lo = np.nanargmin(sampler.loss_ema)
    assert seen.sum() > 8 and p[hi] > p[lo]


def test_sequence_classification_loss_and_feedback(tokenizer, tmp_path):
    from transformers import GPT2ForSequenceClassification

    ds = make_dataset(tokenizer).rename_column("label", "labels")
    torch.manual_seed(0)
    config = tiny_gpt2_config(tokenizer, num_labels=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    collator = DataCollatorWithPadding(tokenizer)
    # Online terms off (uniform weights, so the loss must match) but updates on (the loss EMA must fill).
    uniform = QDCSamplerConfig(example_loss_strength=0.0, cluster_loss_strength=0.0, update_every=2)
    make_sampler = lambda: QDCSampler(len(ds), config=uniform)  # noqa: E731
    args = args_for(tmp_path)
    order_sampler = make_sampler()
    order_sampler.block_size = 4 * order_sampler.update_every
    order = list(order_sampler)
    torch.manual_seed(0)
    plain = FixedOrderTrainer(
        model=GPT2ForSequenceClassification(config),
        args=args,
        train_dataset=ds.remove_columns(["text", "quality", "cluster"]),
        data_collator=collator,
        order=order,
    )
    plain.train()
    torch.manual_seed(0)
    sampler = make_sampler()
    qdc = QDCTrainer(
        model=GPT2ForSequenceClassification(config),
        args=args,
        train_dataset=ds,
        data_collator=collator,
        qdc_sampler=sampler,
        loss_weighting="importance",
    )
    qdc.train()
    assert losses(qdc) == pytest.approx(losses(plain), rel=1e-5)
    assert sampler.consumed == 24 and np.isfinite(sampler.global_loss_ema)


def test_exact_resume_single_process(tokenizer, tmp_path):
    ds = make_dataset(tokenizer, n=64)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)

    def run(output_dir, resume=None):
        sampler = QDCSampler.from_dataset(ds, complexity_column=None, config=QDCSamplerConfig(update_every=2, seed=3))
        trained = []
        original_record = sampler.record
        sampler.record = lambda idx, loss: (trained.append(np.asarray(idx).tolist()), original_record(idx, loss))[1]
        args = args_for(
            output_dir,
            max_steps=10,
            gradient_accumulation_steps=2,
            save_strategy="steps",
            save_steps=3,
            logging_steps=100,
        )
        trainer = QDCTrainer(
            model=no_dropout_lm(tokenizer), args=args, train_dataset=ds, data_collator=collator, qdc_sampler=sampler
        )
        trainer.train(resume_from_checkpoint=resume)
        return trained, sampler

    full_dir = tmp_path / "full"
    trained_full, sampler_full = run(full_dir)
    checkpoint = full_dir / "checkpoint-3"  # 3 steps x 8 examples = 24 of 64: mid-epoch, mid-block
    assert (checkpoint / SAMPLER_STATE_FILE).is_file()
    trained_resumed, sampler_resumed = run(tmp_path / "resumed", resume=str(checkpoint))
    examples_before = 3 * 2 * 4  # steps x micro-batches x batch size (feedback is recorded in chunks at refreshes)
    flat_full, flat_resumed = sum(trained_full, []), sum(trained_resumed, [])
    assert flat_resumed == flat_full[examples_before:]
    assert len(flat_full) == 10 * 2 * 4
    assert np.array_equal(sampler_resumed.probabilities(), sampler_full.probabilities())
    assert np.array_equal(sampler_resumed.loss_ema, sampler_full.loss_ema, equal_nan=True)


def test_second_epoch_and_resume_across_epochs(tokenizer, tmp_path):
    ds = make_dataset(tokenizer, n=20)  # 5 steps per epoch at batch 4
    sampler = QDCSampler(len(ds), config=QDCSamplerConfig(update_every=2, seed=4))
    epochs = []
    original = sampler.set_epoch
    sampler.set_epoch = lambda e: (epochs.append(e), original(e))[1]
    args = args_for(tmp_path, max_steps=-1, num_train_epochs=2, logging_steps=100)
    trainer = QDCTrainer(
        model=no_dropout_lm(tokenizer),
        args=args,
        train_dataset=ds,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        qdc_sampler=sampler,
    )
    trainer.train()
    assert sampler.epoch == 1 and sorted(set(epochs)) == [0, 1]
    assert trainer.state.global_step == 10


def test_errors_name_the_problem(tokenizer, tmp_path):
    ds = make_dataset(tokenizer)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    model = no_dropout_lm(tokenizer)
    with pytest.raises(ValueError, match="covers 10 examples but train_dataset has 48"):
        QDCTrainer(
            model=model, args=args_for(tmp_path), train_dataset=ds, data_collator=collator, qdc_sampler=QDCSampler(10)
        )
    with pytest.raises(ValueError, match="loss_weighting='heavy'"):
        QDCTrainer(
            model=model, args=args_for(tmp_path), train_dataset=ds, qdc_sampler=QDCSampler(48), loss_weighting="heavy"
        )
    with pytest.raises(TypeError, match="qdc_sampler must be a QDCSampler"):
        QDCTrainer(model=model, args=args_for(tmp_path), train_dataset=ds, qdc_sampler=[1, 2, 3])
    with pytest.raises(ValueError, match="label_smoothing_factor"):
        QDCTrainer(
            model=model,
            args=args_for(tmp_path, label_smoothing_factor=0.1),
            train_dataset=ds,
            qdc_sampler=QDCSampler(48),
            loss_weighting="sampler",
        )
    trainer = QDCTrainer(
        model=model, args=args_for(tmp_path), train_dataset=ds, data_collator=collator, qdc_sampler=QDCSampler(48)
    )
    batch = collator([{"input_ids": ds[0]["input_ids"]}])
    model.train()
    with pytest.raises(KeyError, match="has no 'qdc_idx'"):
        trainer.compute_loss(model, dict(batch))


def test_iterable_dataset_is_rejected(tokenizer, tmp_path):
    from datasets import IterableDataset

    stream = IterableDataset.from_generator(lambda: iter([{"input_ids": [1, 2]}] * 4))
    with pytest.raises(TypeError, match="map-style train_dataset"):
        QDCTrainer(
            model=no_dropout_lm(tokenizer), args=args_for(tmp_path), train_dataset=stream, qdc_sampler=QDCSampler(4)
        )


def test_without_a_sampler_it_is_the_plain_trainer(tokenizer, tmp_path):
    ds = make_dataset(tokenizer).remove_columns(["text"])
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    trainer = QDCTrainer(
        model=no_dropout_lm(tokenizer), args=args_for(tmp_path, max_steps=2), train_dataset=ds, data_collator=collator
    )
    trainer.train()
    assert trainer.data_collator is collator
    keys = {k for e in trainer.state.log_history for k in e if k.startswith("qdc/")}
    assert keys == {"qdc/train/entropy"}  # the only addition without a sampler

    quiet = QDCTrainer(
        model=no_dropout_lm(tokenizer),
        args=args_for(tmp_path / "quiet", max_steps=2),
        train_dataset=ds,
        data_collator=collator,
        log_entropy=False,
    )
    quiet.train()
    assert not any(k.startswith("qdc/") for e in quiet.state.log_history for k in e)
    assert [e["loss"] for e in quiet.state.log_history if "loss" in e] == [
        e["loss"] for e in trainer.state.log_history if "loss" in e
    ]


def test_sft_trainer_through_the_mixin(tokenizer, tmp_path):
    from trl import SFTTrainer

    from qdc_trainer import QDCTrainerMixin

    class QDCSFTTrainer(QDCTrainerMixin, SFTTrainer):
        pass

    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=6)) for _ in range(24)]
    ds = Dataset.from_dict({"text": texts, "quality": rng.random(24), "cluster": np.arange(24) % 3})
    sampler = QDCSampler.from_dataset(ds, complexity_column=None, config=QDCSamplerConfig(update_every=1))
    recorded, recorded_losses = [], []
    original = sampler.record
    sampler.record = lambda idx, loss: (
        recorded.extend(np.asarray(idx).tolist()),
        recorded_losses.append(np.asarray(loss)),
        original(idx, loss),
    )[2]
    config = cpu_sft_args(tmp_path, max_steps=4, logging_steps=1)
    trainer = QDCSFTTrainer(
        model=no_dropout_lm(tokenizer), args=config, train_dataset=ds, processing_class=tokenizer, qdc_sampler=sampler
    )
    trainer.train()
    assert len(recorded) == 16 and sampler.num_updates == 4
    assert all(0 <= i < 24 for i in recorded)
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert logged and all("qdc/sampler/weight_entropy" in e for e in logged)
    # Per-example losses come from TRL's fused per-token log-probabilities (no logits, no second forward).
    # Every text is 6 words + EOS = 7 labels, 6 of them predicted. The logged loss divides the summed NLL by the
    # Trainer's label count (7 per text: GPT-2 declares no loss_type, so the count is not shifted); ours is the
    # mean over the 6 predicted tokens. So the two agree up to exactly 6/7.
    ours = [float(np.mean(x)) * 6 / 7 for x in recorded_losses]
    assert ours == pytest.approx([e["loss"] for e in logged], rel=1e-4)
