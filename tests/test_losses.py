"""per_example_loss against the models' own losses and hand values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qdc_trainer import losses
from qdc_trainer.losses import per_example_loss


def test_causal_lm_matches_the_model_loss(tokenizer, tiny_lm):
    batch = tokenizer(["the cat sat on the mat", "a dog ran"], padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        out = tiny_lm(**batch, labels=labels)
    sums, counts = per_example_loss(out.logits, labels, shift=True)
    assert counts.tolist() == [5.0, 2.0]  # 6 and 3 tokens, each predicting all but the first
    assert (sums.sum() / counts.sum()).item() == pytest.approx(out.loss.item(), rel=1e-5)
    for row in range(2):  # each example alone
        with torch.no_grad():
            alone = tiny_lm(
                input_ids=batch["input_ids"][row : row + 1],
                attention_mask=batch["attention_mask"][row : row + 1],
                labels=labels[row : row + 1],
            )
        assert (sums[row] / counts[row]).item() == pytest.approx(alone.loss.item(), rel=1e-5)


def test_chunked_upcast_gives_the_same_values(monkeypatch):
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11).bfloat16()
    labels = torch.randint(0, 11, (3, 7))
    labels[0, 2] = -100
    full = per_example_loss(logits, labels, shift=True)
    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", 11 * 2)  # two rows per chunk
    chunked = per_example_loss(logits, labels, shift=True)
    assert torch.allclose(full[0], chunked[0]) and torch.equal(full[1], chunked[1])
    expected = F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), labels[:, 1:], reduction="none", ignore_index=-100
    )
    assert torch.allclose(full[0], expected.sum(dim=1))


def test_sequence_level_losses():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    sums, counts = per_example_loss(logits, torch.tensor([0, 0]), shift=False)
    assert sums.tolist() == pytest.approx(
        [F.cross_entropy(logits[i : i + 1], torch.tensor([0])).item() for i in range(2)]
    )
    assert counts.tolist() == [1.0, 1.0]
    sums, _ = per_example_loss(torch.tensor([[1.5], [0.0]]), torch.tensor([1.0, 2.0]), shift=False)
    assert sums.tolist() == pytest.approx([0.25, 4.0])  # regression: squared error
    multi = per_example_loss(logits, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), shift=False)[0]
    bce = F.binary_cross_entropy_with_logits(logits, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), reduction="none").mean(1)
    assert torch.allclose(multi, bce)
    with pytest.raises(ValueError, match="do not match"):
        per_example_loss(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long), shift=True)
    with pytest.raises(ValueError, match="unsupported logits shape"):
        per_example_loss(torch.zeros(2), torch.zeros(2), shift=False)
