"""Complexity of individual texts: one value per text.

Text-only measures (length, reasoning steps, compression, repetition) are pure
functions. Model-based measures (token entropy from logits, perplexity, IFD)
take the model and tokenizer explicitly, batch, and run without gradients on the
model's device.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from . import _lm
from ._inputs import Corpus, TextLike, as_strings, check_list, require_items, tokenize

__all__ = [
    "lengths",
    "reasoning_steps",
    "compression_complexity",
    "repetition_rate",
    "token_entropy",
    "sequence_perplexity",
    "ifd_score",
]


def lengths(texts: Sequence[TextLike], tokenizer: Any = None) -> np.ndarray:
    """Length of each text: whitespace words, or tokens when a tokenizer is given (no special tokens).

    Token sequences are counted as they are. Empty strings have length 0.

    >>> lengths(["one two three", "", [5, 6]]).tolist()
    [3.0, 0.0, 2.0]
    """
    items = check_list(texts, "texts")
    require_items(items, "texts", 1)
    out = np.array([len(tokenize(t, "texts", i)) for i, t in enumerate(items)], dtype=np.float64)
    if tokenizer is not None:
        strings = [i for i, t in enumerate(items) if isinstance(t, str)]
        if strings:
            ids = tokenizer([items[i] for i in strings], add_special_tokens=False)["input_ids"]
            out[strings] = [len(x) for x in ids]
    return out


_STEP_SPLIT = re.compile(r"\n+|(?<=[.!?;])\s+")


def reasoning_steps(texts: Sequence[str], pattern: str | re.Pattern | None = None) -> np.ndarray:
    """Number of reasoning steps in each text.

    A step is a non-empty segment between line breaks or sentence ends
    (``.``, ``!``, ``?``, ``;`` followed by whitespace). Pass ``pattern`` (a
    regular expression that separates steps) for another convention, for example
    ``r"Step \\d+:"``. An empty text has 0 steps.

    >>> reasoning_steps(["2 + 3 = 5.\\n5 * 4 = 20.\\nThe answer is 20.", "", "42"]).tolist()
    [3.0, 0.0, 1.0]
    """
    strings = as_strings(texts)
    splitter = _STEP_SPLIT if pattern is None else re.compile(pattern)
    return np.array([sum(1 for s in splitter.split(t) if s and s.strip()) for t in strings], dtype=np.float64)


def compression_complexity(texts: Sequence[TextLike], level: int = 9) -> np.ndarray:
    """Compressed size over raw size of each text (raw DEFLATE, no container header).

    A proxy for information content: repetitive text compresses well and scores
    low, varied text scores near (or, when very short, above) 1. An empty text
    scores 0.0 (it holds no information).

    >>> c = compression_complexity(["ab" * 100, "the quick brown fox jumps over the lazy dog"])
    >>> bool(c[0] < 0.2 < c[1])
    True
    """
    out = []
    for text in as_strings(texts):
        raw = text.encode("utf-8")
        if not raw:
            out.append(0.0)
            continue
        packer = zlib.compressobj(level, zlib.DEFLATED, -15)
        out.append(len(packer.compress(raw) + packer.flush()) / len(raw))
    return np.array(out, dtype=np.float64)


def repetition_rate(texts: Sequence[TextLike], n: int = 3) -> np.ndarray:
    """Within-text repetition: the share of each text's n-grams that repeat an earlier n-gram of the same text.

    0.0 for a text without repeats and for a text shorter than ``n`` (no n-gram
    can repeat); approaches 1 for degenerate loops.

    >>> repetition_rate(["a b a b a b", "a b c d"], n=2).tolist()
    [0.6, 0.0]
    """
    corpus = Corpus.from_texts(texts)
    doc, key = corpus.ngram_keys(n)
    total = np.bincount(doc, minlength=corpus.n_docs).astype(np.float64)
    if len(key) == 0:
        return np.zeros(corpus.n_docs)
    doc_bits = max(corpus.n_docs - 1, 1).bit_length()
    if (int(key.max()) + 1).bit_length() + doc_bits > 62:
        _, key = np.unique(key, return_inverse=True)
        key = key.reshape(-1).astype(np.int64, copy=False)
    pairs = np.sort(key << doc_bits | doc)  # one value sort: equal (n-gram, text) pairs side by side
    first = np.empty(len(pairs), dtype=bool)
    first[0] = True
    np.not_equal(pairs[1:], pairs[:-1], out=first[1:])
    unique = np.bincount(pairs[first] & ((1 << doc_bits) - 1), minlength=corpus.n_docs)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 1.0 - unique / np.maximum(total, 1), 0.0)


def token_entropy(logits: Any, attention_mask: Any = None) -> torch.Tensor:
    """Mean entropy (nats) of the predictive distribution over the vocabulary, per sequence.

    ``logits`` has shape (batch, seq, vocab), or (seq, vocab) for one
    sequence. Positions where ``attention_mask`` is 0 are ignored. A sequence
    with no unmasked position gets 0.0. Computed in float32 from
    ``log_softmax``, so large logits do not overflow. Range [0, log(vocab)].

    >>> token_entropy(torch.zeros(1, 3, 4)).tolist() == [float(torch.log(torch.tensor(4.0)))]
    True
    """
    x = torch.as_tensor(logits)
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim != 3:
        raise ValueError(f"logits must have shape (batch, seq, vocab) or (seq, vocab), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"logits must be floating point, got {x.dtype}")
    x = x.float()
    if torch.isnan(x).any() or torch.isposinf(x).any():
        raise ValueError("logits contain NaN or +inf (-inf, a masked-out token, is allowed)")
    if torch.isneginf(x).all(dim=-1).any():
        raise ValueError("logits have a position where every entry is -inf (no distribution)")
    logp = torch.log_softmax(x, dim=-1)
    p = logp.exp()
    ent = -(torch.where(p > 0, p * logp, torch.zeros_like(p))).sum(-1)
    if attention_mask is None:
        return ent.mean(dim=-1)
    mask = torch.as_tensor(attention_mask, device=ent.device)
    if mask.ndim == 1:
        mask = mask.unsqueeze(0)
    if mask.shape != ent.shape:
        raise ValueError(f"attention_mask shape {tuple(mask.shape)} does not match logits {tuple(ent.shape)}")
    mask = mask.to(ent.dtype)
    return (ent * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def sequence_perplexity(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    prompts: Sequence[str] | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool | None = None,
) -> np.ndarray:
    """Perplexity of each text under a causal LM: ``exp(mean token NLL)``.

    With ``prompts``, the perplexity of each text *given* its prompt (only the
    text's tokens are scored). The tokenizer's BOS token, when it has one, is
    prepended so that every token of the text is scored. Raises for a text with
    no token to score.
    """
    return np.exp(
        _lm.mean_completion_nll(
            model,
            tokenizer,
            prompts,
            texts,
            batch_size=batch_size,
            max_length=max_length,
            progress=progress,
            desc="Perplexity",
        )
    )


def ifd_score(
    model: torch.nn.Module,
    tokenizer: Any,
    instructions: Sequence[str],
    answers: Sequence[str],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool | None = None,
) -> np.ndarray:
    """Instruction-following difficulty (IFD; Li et al., 2024, "Cherry LLM").

    ``IFD = L(answer | instruction) / L(answer)``, the ratio of the mean token
    cross-entropy of the answer with and without the instruction. Near 1 (or
    above) means the instruction barely helps the model produce the answer: a
    hard, informative example. Much below 1 means the instruction makes the
    answer easy. Raises for an empty answer.
    """
    conditioned = _lm.mean_completion_nll(
        model,
        tokenizer,
        instructions,
        answers,
        batch_size=batch_size,
        max_length=max_length,
        progress=progress,
        desc="IFD (conditioned)",
    )
    direct = _lm.mean_completion_nll(
        model,
        tokenizer,
        None,
        answers,
        batch_size=batch_size,
        max_length=max_length,
        progress=progress,
        desc="IFD (direct)",
    )
    return conditioned / np.maximum(direct, np.finfo(np.float64).tiny)
