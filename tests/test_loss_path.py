"""The QDC loss path on a GPU's terms: one pass over the logits, a fixed number of operators, no host sync.

Timing a CPU hides what a GPU shows (extra passes over the logits and many small kernels cost little
here), so these tests count: the operators dispatched per micro-step must not grow with batch × length,
and the package's own code must not copy anything to the host inside ``compute_loss``.
"""

from __future__ import annotations

import traceback

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from helpers import build_gpt2
from torch.profiler import ProfilerActivity, profile
from transformers import DataCollatorForLanguageModeling, TrainingArguments
from transformers.loss.loss_utils import ForCausalLMLoss

from qdc_trainer import QDCSampler, QDCSamplerConfig, QDCTrainer
from qdc_trainer.losses import CausalLMLossTap, strided_entropy

VOCAB = 50_257  # GPT-2's: a chunk of 16 MB of float32 logits holds only 83 rows of it


def test_tap_equals_the_models_loss_function():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11)
    labels = torch.randint(0, 11, (3, 7))
    labels[0, 2] = labels[2, :4] = -100
    for num_items in (None, torch.tensor(9)):
        tap = CausalLMLossTap()
        loss = tap(logits, labels, vocab_size=11, num_items_in_batch=num_items)
        assert loss.item() == pytest.approx(
            ForCausalLMLoss(logits, labels, 11, num_items_in_batch=num_items).item(), rel=1e-6
        )
    per_token = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none", ignore_index=-100)
    assert torch.allclose(tap.sums, per_token.sum(dim=1))
    assert tap.counts.tolist() == (labels[:, 1:] != -100).sum(dim=1).tolist()
    weights = torch.tensor([0.5, 2.0, 1.0])
    weighted = CausalLMLossTap(weights)(logits, labels, vocab_size=11, num_items_in_batch=torch.tensor(9))
    assert weighted.item() == pytest.approx(float((weights * per_token.sum(dim=1)).sum() / 9), rel=1e-6)
    shifted = F.pad(labels, (0, 1), value=-100)[:, 1:]  # precomputed shift_labels (packed / context-parallel batches)
    assert CausalLMLossTap()(logits, None, 11, shift_labels=shifted).item() == pytest.approx(
        loss.item() * 9 / tap.counts.sum().item(), rel=1e-6
    )


def test_strided_entropy_is_the_entropy_at_the_picked_rows():
    torch.manual_seed(1)
    flat = torch.randn(1000, 13)
    mask = torch.rand(1000) > 0.3
    total, count = strided_entropy(flat, mask, positions=1000)
    logp = torch.log_softmax(flat, dim=-1)
    exact = -(logp.exp() * logp).sum(dim=-1)
    assert int(count) == int(mask.sum()) and float(total) == pytest.approx(float(exact[mask].sum()), rel=1e-5)
    total, count = strided_entropy(flat, mask, positions=100)  # a sample of 100 evenly spaced rows
    assert 55 <= int(count) <= 85
    assert float(total / count) == pytest.approx(float(exact[mask].mean()), rel=0.05)


def _trainer(tokenizer, tmp_path, batch: int, length: int, **kwargs) -> tuple[QDCTrainer, dict]:
    words = "the cat sat on the mat a dog ran in the park".split()
    texts = [" ".join(words[(i + j) % len(words)] for j in range(length)) for i in range(2 * batch)]
    ds = Dataset.from_dict({"text": texts}).map(lambda b: tokenizer(b["text"]), batched=True).remove_columns(["text"])
    model = build_gpt2(tokenizer, vocab_size=VOCAB, n_positions=max(64, length)).train()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=batch,
        max_steps=1,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
    )
    trainer = QDCTrainer(
        model=model,
        args=args,
        train_dataset=ds,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        qdc_sampler=QDCSampler(len(ds), config=QDCSamplerConfig(seed=0)),
        **kwargs,
    )
    inputs = next(iter(trainer.get_train_dataloader()))
    assert inputs["input_ids"].shape == (batch, length)
    return trainer, inputs


def _operators(trainer: QDCTrainer, inputs: dict) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loss = trainer.compute_loss(
            trainer.model, dict(inputs), num_items_in_batch=torch.tensor(inputs["input_ids"].numel())
        )
        loss.backward()
    return sum(event.count for event in prof.key_averages())


@pytest.mark.parametrize("weighting", ["none", "importance"])
def test_operator_count_does_not_grow_with_batch_and_length(tokenizer, tmp_path, weighting):
    small = _operators(*_trainer(tokenizer, tmp_path / "small", batch=2, length=16, loss_weighting=weighting))
    large = _operators(*_trainer(tokenizer, tmp_path / "large", batch=8, length=64, loss_weighting=weighting))
    assert large == small, f"{small} operators at 2 x 16 tokens, {large} at 8 x 64"


@pytest.mark.parametrize("weighting", ["none", "sampler", "importance"])
def test_the_micro_step_copies_nothing_to_the_host(tokenizer, tmp_path, weighting, monkeypatch):
    trainer, inputs = _trainer(tokenizer, tmp_path, batch=4, length=16, loss_weighting=weighting)
    trainer.qdc_sampler.loss_weights_tensor(torch.zeros(1, dtype=torch.long), "sampler")  # the per-refresh upload, done
    ours = []
    for name in ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            caller = traceback.extract_stack()[-2]
            if "qdc_trainer" in caller.filename:
                ours.append(f"{_name} at {caller.filename}:{caller.lineno}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    for _ in range(3):
        trainer.compute_loss(trainer.model, dict(inputs), num_items_in_batch=torch.tensor(40)).backward()
    monkeypatch.undo()
    assert ours == []
    assert len(trainer._qdc_pending) == 3  # kept on the device until the next refresh
    trainer._flush_feedback()
    assert trainer.qdc_sampler.consumed == 12 and trainer._qdc_pending == []


def test_a_loss_computed_without_the_tap_is_read_from_the_same_forward_pass(tokenizer, tmp_path):
    trainer, inputs = _trainer(tokenizer, tmp_path, batch=4, length=16)
    trainer.args.label_smoothing_factor = 0.1  # the Trainer's label smoother computes the loss, not the model
    trainer.label_smoother = __import__("transformers").trainer_pt_utils.LabelSmoother(epsilon=0.1)
    calls = []
    handle = trainer.model.register_forward_hook(lambda *a: calls.append(1))
    loss = trainer.compute_loss(trainer.model, dict(inputs))
    handle.remove()
    assert len(calls) == 1 and torch.isfinite(loss)
    trainer._flush_feedback()
    assert trainer.qdc_sampler.consumed == 4  # per-example losses from the outputs of that one pass
