"""Per-example losses from logits and labels, matching the reductions transformers' models use."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["per_example_loss", "token_entropy_sum"]

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


def token_entropy_sum(logits: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed entropy (nats) of the predictive distributions at the positions where ``mask`` is true, and their count.

    ``logits`` (B, T, V); ``mask`` (B, T) or None (every position). Only the masked
    rows are upcast to float32, a chunk at a time, so no full float32 copy of the
    logits is made. ``sum / count`` is the mean token entropy.

    >>> s, c = token_entropy_sum(torch.zeros(2, 3, 4), torch.tensor([[1, 1, 0], [0, 0, 1]]))
    >>> round(float(s / c), 4) == round(float(torch.log(torch.tensor(4.0))), 4), int(c)
    (True, 3)
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape (batch, seq, vocab), got {tuple(logits.shape)}")
    vocab = logits.shape[-1]
    flat = logits.reshape(-1, vocab)
    rows = torch.arange(flat.shape[0], device=logits.device)
    if mask is not None:
        if mask.shape != logits.shape[:2]:
            raise ValueError(f"mask {tuple(mask.shape)} does not match logits {tuple(logits.shape)}")
        rows = rows[mask.reshape(-1).bool()]
    total = torch.zeros((), dtype=torch.float32, device=logits.device)
    step = max(1, _CHUNK_ELEMENTS // vocab)
    for start in range(0, len(rows), step):
        logp = torch.log_softmax(flat[rows[start : start + step]].float(), dim=-1)
        total = total + (-(logp.exp() * logp).nan_to_num()).sum()
    return total, torch.tensor(float(len(rows)), device=logits.device)
