"""Batched forward passes under a model, shared by the model-based metrics and scorers.

Each helper batches, runs under ``torch.inference_mode`` on the model's own
device, puts the model in eval mode for the call and restores its previous mode,
and shows a progress bar when there is more than one batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ._inputs import check_list, require_items


def model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for the duration; the previous mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def batches(n: int, batch_size: int, progress: bool | None, desc: str) -> Iterator[range]:
    """Index ranges of ``batch_size``; a progress bar when asked, or by default when there are several batches."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    starts = range(0, n, batch_size)
    show = len(starts) > 1 if progress is None else progress
    for start in tqdm(starts, desc=desc, disable=not show, unit="batch"):
        yield range(start, min(start + batch_size, n))


def pad_token_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def check_strings(texts: Any, name: str) -> list[str]:
    """A list of strings (model-based measures tokenize themselves, so token ids are rejected)."""
    items = check_list(texts, name)
    require_items(items, name, 1)
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise TypeError(
                f"{name}[{i}] is {type(t).__name__}; model-based measures take strings (decode token ids first)"
            )
    return items


def check_pairs(prompts: Any, completions: Any) -> tuple[list[str], list[str]]:
    """Validate (prompts, completions): lists of strings of the same length."""
    completions = check_strings(completions, "completions")
    prompts = [""] * len(completions) if prompts is None else check_strings(prompts, "prompts")
    if len(prompts) != len(completions):
        raise ValueError(
            f"prompts and completions differ in length ({len(prompts)} vs {len(completions)}); "
            "pass one prompt per completion"
        )
    return prompts, completions


def completion_nll(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str] | None,
    completions: Sequence[str],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool | None = None,
    desc: str = "Scoring",
) -> tuple[np.ndarray, np.ndarray]:
    """Summed negative log-likelihood (nats) of each completion given its prompt, and its token count.

    The sequence is ``[bos] + prompt + completion`` (``bos`` when the tokenizer
    defines one, so that the first completion token is scored too); only
    completion tokens are scored. When the sequence exceeds ``max_length``
    (default: the model's context size) the prompt is cut from the left, then
    the completion from the right.
    """
    prompts, completions = check_pairs(prompts, completions)
    device = model_device(model)
    limit = resolve_max_length(model, max_length)
    bos = getattr(tokenizer, "bos_token_id", None)
    pad = pad_token_id(tokenizer)
    nll = np.zeros(len(completions))
    count = np.zeros(len(completions), dtype=np.int64)
    with eval_mode(model):
        for idx in batches(len(completions), batch_size, progress, desc):
            rows = []
            for i in idx:
                p = tokenizer(prompts[i], add_special_tokens=False)["input_ids"] if prompts[i] else []
                c = tokenizer(completions[i], add_special_tokens=False)["input_ids"]
                head = [bos] if bos is not None else []
                if limit is not None:
                    c = c[: max(limit - len(head), 0)]
                    p = p[max(0, len(p) - (limit - len(head) - len(c))) :]
                rows.append((head + p, c))
            width = max(len(a) + len(b) for a, b in rows)
            if width == 0:
                continue
            input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
            labels = torch.full((len(rows), width), -100, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, (a, b) in enumerate(rows):
                seq = a + b
                input_ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                mask[r, : len(seq)] = 1
                labels[r, len(a) : len(seq)] = torch.tensor(b, dtype=torch.long)
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits.float()
            target = labels[:, 1:].to(device)
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            scored = target != -100
            token_nll = -logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * scored
            nll[idx.start : idx.stop] = token_nll.sum(dim=1).double().cpu().numpy()
            count[idx.start : idx.stop] = scored.sum(dim=1).cpu().numpy()
    return nll, count


def mean_completion_nll(
    model: torch.nn.Module, tokenizer: Any, prompts: Any, completions: Any, **kwargs: Any
) -> np.ndarray:
    """Mean per-token NLL of each completion; raises if a completion has no scored token."""
    nll, count = completion_nll(model, tokenizer, prompts, completions, **kwargs)
    empty = np.flatnonzero(count == 0)
    if len(empty):
        raise ValueError(
            f"completions {empty[:5].tolist()} have no token to score (empty, or no BOS token and a single token "
            "without a prompt); their perplexity is undefined: filter them out first"
        )
    return nll / count


def last_token_logits(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool | None = None,
    desc: str = "Judging",
) -> torch.Tensor:
    """Next-token logits after the last token of each text (left-truncated to ``max_length``), shape (n, vocab)."""
    device = model_device(model)
    limit = resolve_max_length(model, max_length)
    pad = pad_token_id(tokenizer)
    eos = getattr(tokenizer, "eos_token_id", None)
    out = []
    with eval_mode(model):
        for idx in batches(len(texts), batch_size, progress, desc):
            seqs = [_without_trailing_eos(tokenizer(texts[i])["input_ids"], texts[i], eos) for i in idx]
            seqs = [s[-limit:] if limit else s for s in seqs]
            if any(len(s) == 0 for s in seqs):
                raise ValueError("a judge prompt is empty after tokenization")
            width = max(len(s) for s in seqs)
            input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, s in enumerate(seqs):
                input_ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
                mask[r, : len(s)] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
            last = mask.sum(dim=1).to(device) - 1
            out.append(logits[torch.arange(len(seqs), device=device), last].float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def _without_trailing_eos(ids: list[int], text: str, eos: int | None) -> list[int]:
    """Tokenizers that append EOS would make the model predict after the end of the text: drop it."""
    if eos is not None and ids and ids[-1] == eos and len(ids) > 1:
        return ids[:-1]
    return ids


def resolve_max_length(model: torch.nn.Module, max_length: int | None) -> int | None:
    """``max_length`` checked against the model's context size (the default when None)."""
    context = _context_size(model)
    if max_length is None:
        return context
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
    if context is not None and max_length > context:
        raise ValueError(f"max_length={max_length} exceeds the model's context size ({context})")
    return max_length


def _context_size(model: torch.nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
