"""Input checking and the integer n-gram tables that the text metrics share.

Every text metric accepts either strings (split on whitespace) or sequences of
tokens (for example token ids from a tokenizer). Inputs are checked here, once,
with messages that say what to fix.
"""

from __future__ import annotations

import itertools
import math
import re
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
            if sum(map(len, items)) >= NUMPY_SPLIT_MIN_CHARS:
                split = _split_utf8(items)
                if split is not None:
                    return cls(*split)
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
        ids, vocab_size = unique_ids(flat)
        return cls(ids, offsets, vocab_size)

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


NUMPY_SPLIT_MIN_CHARS = 2048
"""Texts of at least this many characters in all are split in NumPy (:func:`_split_utf8`); below it Python's
``str.split`` is faster (a fixed cost of about 20 µs against 0.1 µs a word)."""

_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True  # the ASCII characters str.split() splits on
_OTHER_SPACE = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")  # and the others
_LOW_BYTES = np.array([(1 << (8 * n)) - 1 for n in range(8)] + [(1 << 64) - 1], dtype=np.uint64)


def _split_utf8(texts: list[str]) -> tuple[np.ndarray, np.ndarray, int] | None:
    """``(token ids, offsets, vocab_size)`` of texts split on whitespace exactly as ``str.split()`` splits
    them, in a few NumPy passes over their UTF-8 bytes; None where that does not apply (a NUL character or a
    lone surrogate), and the caller splits in Python.

    No byte of a multi-byte UTF-8 character is below 128, so splitting the bytes on the ASCII whitespace bytes
    splits the characters on those characters, and equal words are equal bytes; the whitespace characters
    outside ASCII (U+00A0, U+3000, ...) are replaced by spaces first, which splits the same way. A word of at
    most 8 bytes is its own key (its bytes, zero-padded, as a little-endian uint64; no byte of a word is 0 or a
    space, so no two words share a key); a longer word gets its id among the longer words
    (:func:`_long_word_ids`), shifted left by 8 bits (a zero low byte, which no short word's key has). The ids
    number the distinct keys in no particular order: equal words, equal ids, which is all a measure reads. About
    40 ns a word where words are short, 80 where a quarter are longer than 8 bytes (Python's split and a dict
    pass: 110-130 ns).

    >>> ids, offsets, vocab = _split_utf8(["a bb a", "", " bb\tlonger-than-8 "])
    >>> offsets.tolist(), vocab, bool(ids[0] == ids[2]), bool(ids[1] == ids[3]), len(set(ids.tolist()))
    ([0, 3, 3, 5], 3, True, True, 3)
    """
    texts = [t if t.isascii() else _OTHER_SPACE.sub(" ", t) for t in texts]
    try:
        encoded = [t.encode("utf-8") for t in texts]
    except UnicodeEncodeError:  # a lone surrogate
        return None
    data = b"\n".join(encoded) + b" " * 8  # a newline ends each text; spaces pad the 8-byte reads
    if b"\0" in data:
        return None
    in_word = ~_ASCII_SPACE[np.frombuffer(data, dtype=np.uint8)]
    edges = np.flatnonzero(np.diff(in_word, prepend=False))  # where a word starts, then where it ends, ...
    starts, ends = edges[0::2], edges[1::2]
    text_starts = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(texts)) + 1, out=text_starts[1:])
    offsets = np.searchsorted(starts, text_starts).astype(np.int64, copy=False)
    length = ends - starts
    eight_bytes_at = np.ndarray((len(data) - 7,), dtype="<u8", buffer=data, strides=(1,))
    keys = eight_bytes_at[starts] & _LOW_BYTES[np.minimum(length, 8)]
    long = np.flatnonzero(length > 8)
    if len(long):
        keys[long] = _long_word_ids(eight_bytes_at, starts[long], length[long]).astype(np.uint64) << np.uint64(8)
    ids, vocab_size = _dense_ranks(keys)
    return ids, offsets, vocab_size


def _long_word_ids(eight_bytes_at: np.ndarray, starts: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Ids of words longer than 8 bytes, equal words equal ids: each 8-byte chunk in turn is folded into the id
    (the id so far times the number of distinct chunks, plus the chunk's rank) and the ids re-ranked, over the
    words that still have bytes; words of one length take part in the same rounds, so their final ids compare
    every chunk, and the length tells the others apart. Work in proportion to the words' bytes."""
    ids = np.zeros(len(starts), dtype=np.int64)
    active = np.arange(len(starts))
    for offset in range(0, int(length.max()), 8):
        active = active[length[active] > offset]
        chunk = eight_bytes_at[starts[active] + offset] & _LOW_BYTES[np.minimum(length[active] - offset, 8)]
        chunk_ids, n_chunks = _dense_ranks(chunk)
        folded, _ = _dense_ranks((ids[active] * n_chunks + chunk_ids).astype(np.uint64))
        ids[active] = folded
    # ids of words of different lengths were renumbered separately: tell them apart by length
    length_ids, _ = _dense_ranks(length.astype(np.uint64))
    ids, _ = _dense_ranks((length_ids * len(starts) + ids).astype(np.uint64))
    return ids


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio, odd: a multiplicative hash
_LOW_32 = np.uint64(0xFFFFFFFF)


def _dense_ranks(keys: np.ndarray) -> tuple[np.ndarray, int]:
    """Ids ``0 .. V - 1`` of uint64 keys, equal keys equal ids, and V, the number of distinct keys.

    One value sort of (32-bit hash of the key, position) pairs, instead of ``np.unique``'s argsort (about
    half its cost): equal keys are neighbours in that order unless two different keys share a hash,
    which shows as more key changes than hash changes, and then ``np.unique`` decides.

    >>> ids, n = _dense_ranks(np.array([7, 3, 7, 9], dtype=np.uint64))
    >>> n, bool(ids[0] == ids[2]), len(set(ids.tolist()))
    (3, True, 3)
    """
    if not 0 < len(keys) < 1 << 32:
        return unique_ids(keys)
    packed = (keys * _GOLDEN) >> np.uint64(32) << np.uint64(32)
    packed |= np.arange(len(keys), dtype=np.uint64)
    packed.sort()
    order = (packed & _LOW_32).astype(np.int64)
    packed >>= np.uint64(32)
    in_order = keys[order]
    new = np.empty(len(keys), dtype=bool)
    new[0] = True
    np.not_equal(in_order[1:], in_order[:-1], out=new[1:])
    distinct = int(np.count_nonzero(new))
    if distinct != 1 + int(np.count_nonzero(packed[1:] != packed[:-1])):  # two keys share a hash
        return unique_ids(keys)
    ids = np.empty(len(keys), dtype=np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids, distinct


def unique_ids(keys: np.ndarray) -> tuple[np.ndarray, int]:
    """Ids of ``keys`` in order of value (equal keys, equal ids) and their number, by ``np.unique``."""
    values, ids = np.unique(keys, return_inverse=True)
    return ids.reshape(-1).astype(np.int64, copy=False), len(values)


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
