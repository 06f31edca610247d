"""Input checking and the integer n-gram tables that the text metrics share.

Every text metric accepts either strings (split on whitespace) or sequences of
tokens (for example token ids from a tokenizer). Inputs are checked here, once,
with messages that say what to fix.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TextLike = str | Sequence[Hashable]
"""A text: a string (split on whitespace) or a sequence of tokens such as token ids."""


def check_list(items: Any, name: str) -> list:
    """Return ``items`` as a list; reject a bare string and non-iterables."""
    if isinstance(items, (str, bytes)):
        raise TypeError(f"{name} must be a list of texts, not a single string; wrap it in a list: [{name}]")
    if hasattr(items, "column_names") and not hasattr(items, "ndim"):
        raise TypeError(f"{name} is a dataset; pass one of its columns, e.g. dataset['text']")
    try:
        return list(items)
    except TypeError:
        raise TypeError(f"{name} must be a list of texts, got {type(items).__name__}") from None


def tokenize(text: Any, name: str, index: int) -> list:
    """Split one text into tokens: strings on whitespace, sequences as given."""
    if isinstance(text, str):
        return text.split()
    if isinstance(text, bytes):
        raise TypeError(f"{name}[{index}] is bytes; decode it to str first")
    if hasattr(text, "tolist") and not isinstance(text, (list, tuple)):
        text = text.tolist()  # numpy arrays and torch tensors of token ids
        if not isinstance(text, list):
            raise TypeError(f"{name}[{index}] is a scalar; expected a str or a sequence of tokens")
    if isinstance(text, (list, tuple)):
        for token in text:
            if isinstance(token, float) and not math.isfinite(token):
                raise ValueError(f"{name}[{index}] contains a non-finite token {token!r}")
            if not isinstance(token, Hashable) or isinstance(token, (list, tuple)):
                raise TypeError(
                    f"{name}[{index}] contains {type(token).__name__} tokens; "
                    "expected a flat sequence of str or int tokens"
                )
        return list(text)
    raise TypeError(
        f"{name}[{index}] is {type(text).__name__}; expected a str or a sequence of tokens (e.g. token ids)"
    )


def as_strings(texts: Any, name: str = "texts", *, min_items: int = 1) -> list[str]:
    """Check a list of texts for byte-level metrics; token sequences are joined with spaces."""
    items = check_list(texts, name)
    require_items(items, name, min_items)
    out = []
    for i, text in enumerate(items):
        if isinstance(text, str):
            out.append(text)
        else:
            out.append(" ".join(str(t) for t in tokenize(text, name, i)))
    return out


def require_items(items: Sequence, name: str, min_items: int) -> None:
    if len(items) < min_items:
        if not items:
            raise ValueError(f"{name} is empty: pass at least {min_items} item(s)")
        raise ValueError(f"{name} has {len(items)} item(s); this metric needs at least {min_items}")


@dataclass(frozen=True)
class Corpus:
    """Texts tokenized once, as one flat array of integer token ids with document offsets.

    Every text metric accepts a ``Corpus`` in place of a list of texts, so code
    that computes several metrics on the same texts tokenizes them only once.
    ``tokens[offsets[d]:offsets[d + 1]]`` are the token ids of text ``d``.

    >>> c = Corpus.from_texts(["a b a", "b c"])
    >>> c.tokens.tolist(), c.offsets.tolist(), c.vocab_size
    ([0, 1, 0, 1, 2], [0, 3, 5], 3)
    """

    tokens: np.ndarray  # int64, shape (total_tokens,)
    offsets: np.ndarray  # int64, shape (n_docs + 1,)
    vocab_size: int

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_texts(cls, texts: Any, name: str = "texts", *, min_items: int = 1) -> Corpus:
        """Tokenize a list of texts (strings on whitespace, sequences as given); a Corpus is returned as is."""
        if isinstance(texts, Corpus):
            require_items(range(texts.n_docs), name, min_items)
            return texts
        items = check_list(texts, name)
        require_items(items, name, min_items)
        if all(isinstance(t, str) for t in items):
            token_lists = [t.split() for t in items]
        elif items and all(_is_id_array(t) for t in items):
            return cls._from_id_arrays(items)
        else:
            token_lists = [tokenize(t, name, i) for i, t in enumerate(items)]
        offsets = np.zeros(len(items) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, token_lists), dtype=np.int64, count=len(items)), out=offsets[1:])
        total = int(offsets[-1])
        # one dict pass: each token maps to the position of its value's first occurrence ...
        vocab: dict = {}
        first = np.fromiter(
            map(vocab.setdefault, itertools.chain.from_iterable(token_lists), itertools.count()),
            dtype=np.int64,
            count=total,
        )
        # ... and those positions, in order, to 0, 1, 2, ...: ids in order of first occurrence
        dense = np.empty(total, dtype=np.int64)
        dense[np.fromiter(vocab.values(), dtype=np.int64, count=len(vocab))] = np.arange(len(vocab))
        return cls(dense[first], offsets, len(vocab))

    @classmethod
    def _from_id_arrays(cls, items: list) -> Corpus:
        """Integer arrays or tensors of token ids, without a Python pass per token. The ids are renumbered
        ``0 .. V - 1`` in order of value (not of first occurrence, as for lists): equal tokens, equal ids,
        so every measure is the same."""
        arrays = [np.asarray(t.detach().cpu() if hasattr(t, "detach") else t).reshape(-1) for t in items]
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum([len(a) for a in arrays], out=offsets[1:])
        flat = np.concatenate(arrays).astype(np.int64, copy=False) if offsets[-1] else np.zeros(0, np.int64)
        if len(flat) and 0 <= flat.min() and flat.max() < 4 * len(flat) + (1 << 20):  # a table over the ids
            present = np.zeros(int(flat.max()) + 1, dtype=bool)
            present[flat] = True
            rank = np.cumsum(present) - 1
            return cls(rank[flat], offsets, int(rank[-1]) + 1)
        values, inverse = np.unique(flat, return_inverse=True)
        return cls(inverse.reshape(-1).astype(np.int64, copy=False), offsets, len(values))

    def ngram_keys(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """All n-grams that lie inside one text: ``(doc, key)``, equal keys meaning equal n-grams.

        Keys are ``t0 * V^(n-1) + ... + t(n-1)`` in int64; when that could
        overflow, the partial key is first replaced by its rank among the
        distinct partial keys (which keeps equality).
        """
        check_order(n)
        n_starts = len(self.tokens) - n + 1
        if n_starts <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        doc_of_token = np.repeat(np.arange(self.n_docs, dtype=np.int64), self.lengths)
        starts = np.arange(n_starts, dtype=np.int64)
        doc = doc_of_token[starts]
        keep = starts + n <= self.offsets[doc + 1]
        starts, doc = starts[keep], doc[keep]
        key = self.tokens[starts]
        base = max(self.vocab_size, 1)
        for k in range(1, n):
            if len(key) and (int(key.max()) + 1) * base >= 2**62:
                _, key = np.unique(key, return_inverse=True)
            key = key * base + self.tokens[starts + k]
        return doc, key

    def ngrams(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`ngram_keys`, with keys replaced by dense ids ``0 .. n_distinct - 1``."""
        doc, key = self.ngram_keys(n)
        _, gram = np.unique(key, return_inverse=True)
        return doc, gram.astype(np.int64, copy=False).reshape(-1)


def _is_id_array(text: Any) -> bool:
    """A 1-D integer numpy array or torch tensor (token ids)."""
    dtype = getattr(text, "dtype", None)
    if dtype is None or getattr(text, "ndim", None) != 1:
        return False
    if isinstance(text, np.ndarray):
        return np.issubdtype(dtype, np.integer)
    return hasattr(text, "detach") and not (dtype.is_floating_point or dtype.is_complex or str(dtype) == "torch.bool")


def count_distinct(keys: np.ndarray) -> int:
    """Number of distinct values, by sorting (faster than ``np.unique`` for int64 keys)."""
    if len(keys) == 0:
        return 0
    s = np.sort(keys)
    return 1 + int(np.count_nonzero(s[1:] != s[:-1]))


def check_order(n: Any, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= 1, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    return int(n)


def as_matrix(x: Any, name: str = "embeddings", *, min_rows: int = 1) -> np.ndarray:
    """Check a 2-D float matrix: finite values, at least ``min_rows`` rows."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a 2-D array of numbers (n_items, dim)") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_items, dim), got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} has {arr.shape[0]} row(s); this metric needs at least {min_rows}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has zero columns")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])[:5].tolist()
        raise ValueError(f"{name} contains NaN or inf (rows {rows}); drop or fix those rows first")
    return arr


def l2_normalize(x: np.ndarray, name: str = "embeddings") -> np.ndarray:
    """Rows scaled to unit length; raises on all-zero rows (they have no direction).

    Each row is first divided by its largest absolute value, so the norm neither
    overflows (``[1e300, 1e300]``) nor underflows (``[1e-300, 1e-300]``).

    >>> l2_normalize(np.array([[1e300, -1e300], [3e-320, 4e-320]])).round(6).tolist()
    [[0.707107, -0.707107], [0.6, 0.8]]
    """
    scale = np.abs(x).max(axis=1, keepdims=True)
    zero = scale[:, 0] == 0
    if zero.any():
        rows = np.nonzero(zero)[0][:5].tolist()
        raise ValueError(f"{name} has all-zero rows {rows}: cosine similarity is undefined for them")
    x = x / scale
    return x / np.linalg.norm(x, axis=1, keepdims=True)
