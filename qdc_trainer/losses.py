"""Per-example losses from logits and labels, matching the reductions transformers' models use.

:class:`CausalLMLossTap` is the training path for causal LMs (one pass over the logits, inside the
model's own loss call); :func:`per_example_loss` is the general one (a second pass over the logits the
model returned, in at most a fixed number of chunks), for sequence classifiers and custom losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["CausalLMLossTap", "ENTROPY_POSITIONS", "per_example_loss", "strided_entropy"]

_CHUNK_ELEMENTS = 1 << 22  # logits upcast to float32 at a time (16 MB), unless that needs more than _MAX_CHUNKS
_MAX_CHUNKS = 8  # so the kernels per call stay fixed whatever batch x length


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
        rows = max(1, _CHUNK_ELEMENTS // vocab, -(-batch * length // _MAX_CHUNKS))  # float32 upcast a chunk at a time
        for start in range(0, batch * length, rows):
            token[start : start + rows] = F.cross_entropy(
                flat[start : start + rows].float(),
                targets[start : start + rows],
                ignore_index=ignore_index,
                reduction="none",
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


ENTROPY_POSITIONS = 64
"""Positions per micro-step at which :class:`CausalLMLossTap` measures the predictive entropy. 64: over a logging
window of tens of micro-steps that is thousands of positions, and on a CPU with a vocabulary of 151,936 the
sample costs under 1% of a training step (256 positions cost about 3%)."""


class CausalLMLossTap:
    """Stands in for a causal LM's ``loss_function`` and keeps what the QDC sampler needs from the same pass.

    transformers' causal LMs compute their loss by calling ``self.loss_function(logits, labels,
    vocab_size, num_items_in_batch=..., ignore_index=..., shift_labels=...)`` (``ForCausalLMLoss``).
    Installed there for one training step, the tap computes the per-token cross-entropy **once** (on a
    float32 view of the logits, as ``ForCausalLMLoss`` does), and from that one tensor

    - returns the loss the model would have returned (``sum / num_items_in_batch``, or the mean over
      scored tokens), optionally with per-example weights (``weights`` of shape (batch,));
    - keeps the per-example loss sums and scored-token counts (:attr:`sums`, :attr:`counts`), detached,
      on the device;
    - with ``entropy_positions > 0``, measures the predictive entropy at a fixed, evenly strided subset
      of at most that many positions (:attr:`entropy`: (sum over scored positions of the subset, their
      count)), so its cost does not grow with batch × length.

    Every operation is a fixed number of kernels whatever the batch size, and nothing is copied to the
    host. With ``weights`` of ones the loss equals ``ForCausalLMLoss``'s up to float32 summation order.

    >>> tap = CausalLMLossTap(entropy_positions=8)
    >>> logits, labels = torch.zeros(2, 3, 4), torch.tensor([[5, 0, 1], [5, 2, -100]])
    >>> loss = tap(logits, labels, vocab_size=4)
    >>> round(float(loss), 4) == round(float(torch.log(torch.tensor(4.0))), 4), tap.counts.tolist()
    (True, [2, 1])
    >>> round(float(tap.entropy[0] / tap.entropy[1]), 4) == round(float(torch.log(torch.tensor(4.0))), 4)
    True
    """

    def __init__(self, weights: torch.Tensor | None = None, entropy_positions: int = 0) -> None:
        self.weights = weights
        self.entropy_positions = int(entropy_positions)
        self.calls = 0
        self.sums: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.entropy: torch.Tensor | None = None

    def __call__(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor | None,
        vocab_size: int,
        num_items_in_batch: torch.Tensor | int | None = None,
        ignore_index: int = -100,
        shift_labels: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        if shift_labels is None:
            shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
        targets = shift_labels.to(logits.device)
        flat = logits.float().view(-1, vocab_size)
        token = F.cross_entropy(flat, targets.reshape(-1), ignore_index=ignore_index, reduction="none")
        token = token.view(targets.shape)  # 0 where ignored
        mask = targets != ignore_index
        sums = token.sum(dim=-1)
        counts = mask.sum(dim=-1)
        weighted = sums if self.weights is None else sums * self.weights.to(sums.dtype)
        if num_items_in_batch is not None:
            if torch.is_tensor(num_items_in_batch):
                num_items_in_batch = num_items_in_batch.to(sums.device)
            loss = weighted.sum() / num_items_in_batch
        else:
            loss = weighted.sum() / counts.sum()
        self.calls += 1
        self.sums, self.counts = sums.detach(), counts
        if self.entropy_positions > 0:
            self.entropy = strided_entropy(flat.detach(), mask.reshape(-1), self.entropy_positions)
        return loss


def strided_entropy(flat_logits: torch.Tensor, mask: torch.Tensor, positions: int = ENTROPY_POSITIONS) -> torch.Tensor:
    """(Σ entropy, count) of the predictive distributions at the rows where ``mask`` is true, among at most
    ``positions`` evenly strided rows of ``flat_logits`` (rows, vocab); a fixed number of kernels, only the
    picked rows upcast to float32, nothing copied to the host.

    >>> pair = strided_entropy(torch.zeros(10, 4), torch.ones(10, dtype=torch.bool), positions=3)
    >>> int(pair[1]), round(float(pair[0] / pair[1]), 4) == round(float(torch.log(torch.tensor(4.0))), 4)
    (3, True)
    """
    rows = flat_logits.shape[0]
    count = min(rows, positions)
    picked = (torch.arange(count, device=flat_logits.device) * rows + rows // (2 * count)) // count
    logp = torch.log_softmax(flat_logits.index_select(0, picked).float(), dim=-1)
    entropy = -(logp.exp() * logp).nan_to_num().sum(dim=-1)
    keep = mask.index_select(0, picked).to(entropy.dtype)
    return torch.stack([(entropy * keep).sum(), keep.sum()])
