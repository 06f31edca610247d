"""Per-example losses from logits and labels, matching the reductions transformers' models use."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["per_example_loss"]

_CHUNK_ELEMENTS = 1 << 22  # logits upcast to float32 at a time (16 MB)


def per_example_loss(
    logits: torch.Tensor, labels: torch.Tensor, *, shift: bool, ignore_index: int = -100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss and the number of scored items of each example, as float32 tensors of shape (batch,).

    - Token-level (``logits`` (B, T, V), ``labels`` (B, T)): cross-entropy per
      token, labels equal to ``ignore_index`` skipped; with ``shift`` (causal LMs)
      position t predicts label t + 1. ``sum / count`` is the example's mean token
      loss; ``sum(sums) / sum(counts)`` is the model's own batch loss.
    - Sequence-level (``logits`` (B, C)): regression (C == 1, MSE), multi-label
      (float labels of shape (B, C), binary cross-entropy averaged over labels)
      or single-label cross-entropy; count 1 per example, so ``sums.mean()`` is
      the model's own batch loss.

    >>> logits = torch.zeros(1, 3, 4)           # uniform over 4 tokens
    >>> s, c = per_example_loss(logits, torch.tensor([[0, 1, -100]]), shift=True)
    >>> round(float(s / c), 4) == round(float(torch.log(torch.tensor(4.0))), 4), c.tolist()
    (True, [1.0])
    """
    if logits.dim() == 3:
        if labels.shape != logits.shape[:2]:
            raise ValueError(f"labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)}")
        labels = labels.long()
        if shift:  # shift the labels, not the logits: no copy of the (B, T, V) tensor
            labels = F.pad(labels[:, 1:], (0, 1), value=ignore_index)
        batch, length, vocab = logits.shape
        flat, targets = logits.reshape(batch * length, vocab), labels.reshape(-1)
        token = torch.empty(batch * length, dtype=torch.float32, device=logits.device)
        rows = max(1, _CHUNK_ELEMENTS // vocab)  # float32 upcast a chunk of rows at a time
        for start in range(0, batch * length, rows):
            token[start : start + rows] = F.cross_entropy(
                flat[start : start + rows].float(), targets[start : start + rows], ignore_index=ignore_index, reduction="none"
            )
        mask = labels != ignore_index
        token = token.view(batch, length) * mask
        return token.sum(dim=1), mask.sum(dim=1).float()
    logits = logits.float()
    if logits.dim() != 2:
        raise ValueError(f"unsupported logits shape {tuple(logits.shape)}: expected (B, T, V) or (B, C)")
    ones = torch.ones(logits.shape[0], device=logits.device)
    if logits.shape[1] == 1:  # transformers treats one label as regression
        return (logits.reshape(-1) - labels.reshape(-1).float()) ** 2, ones
    if labels.dim() == 2 and labels.is_floating_point():
        return F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").mean(dim=1), ones
    labels = labels.reshape(-1).long()
    losses = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")
    return losses, (labels != ignore_index).float()
