"""Distinct-n and leave-one-out self-BLEU of many collections of the same texts, in one pass per n-gram order.

A GRPO batch is measured within each prompt's group and across prompts (the j-th completion of every
prompt): two ways of cutting the same texts into collections (two *views*). Measuring each collection on
its own tokenizes every text once per collection and metric and sorts every collection's n-grams
separately. Here the texts are tokenized once (a :class:`~qdc_trainer.metrics.Corpus`) and, per n-gram
order, all n-grams of all texts are sorted once, packed with their text's index in one int64 (so the
sort is a plain value sort, not an argsort); each view then reads its collections' counts off the same
sorted table. The values are those of :func:`~qdc_trainer.metrics.distinct_n` and
:func:`~qdc_trainer.metrics.self_bleu_scores` on each collection on its own, to the last bit (the
clipped counts are integer sums, and every floating-point step is the same operation in the same order).

Cost: O(T log T) per n-gram order for T tokens, plus O(P log P) for each view whose collections are not
runs of consecutive texts (P: the (text, n-gram) pairs of n-grams found in more than one text).

>>> from qdc_trainer.metrics import Corpus, distinct_n, self_bleu_scores
>>> texts = ["a b c", "a b d", "x y", "x y"]
>>> views = [np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])]  # within pairs, and across them
>>> stats = collection_stats(Corpus.from_texts(texts), views, max_n=4, distinct_orders=(2,))
>>> stats[0].distinct[2].tolist() == [distinct_n(texts[:2], 2), distinct_n(texts[2:], 2)]
True
>>> bool((stats[1].bleu == np.r_[self_bleu_scores(texts[0::2]), self_bleu_scores(texts[1::2])][[0, 2, 1, 3]]).all())
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._inputs import Corpus, check_order, unique_ids

__all__ = ["ViewStats", "collection_means", "collection_stats"]


@dataclass(frozen=True)
class ViewStats:
    """The measures of one view: ``collection[d]`` is the collection text ``d`` belongs to.

    Attributes:
        collection: the collection of each text.
        bleu: per text, its leave-one-out BLEU against the other texts of its collection (as
            :func:`~qdc_trainer.metrics.self_bleu_scores` on that collection); None when not asked for.
        distinct: per order n, distinct-n of each collection (as :func:`~qdc_trainer.metrics.distinct_n`).
    """

    collection: np.ndarray
    bleu: np.ndarray | None
    distinct: dict[int, np.ndarray]


def _bits(n: int) -> int:
    """Bits that hold the values 0 .. n - 1."""
    return max(int(n) - 1, 1).bit_length()


def _clipped_counts(
    gram: np.ndarray, coll: np.ndarray, doc: np.ndarray, count: np.ndarray, n_coll: int, n_docs: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (text, n-gram) pair: its count clipped by the largest count of the same n-gram in the *other*
    texts of its collection, BLEU's clipped count. Returns ``(doc, clipped, ends)``, the pairs' texts and
    clipped counts in sorted order, and the index of the last pair of each (n-gram, collection), for
    counting the distinct n-grams of each collection.

    The pairs are sorted by (n-gram, collection, count), one value sort of the four packed in an int64
    where they fit, else a lexsort. In a segment of equal (n-gram, collection) sorted by count, every
    pair but the last is clipped by the last (the largest: its own count stays), and the last by the one
    before it (0 when it is alone).
    """
    coll_bits, count_bits, doc_bits = _bits(n_coll), _bits(int(count.max()) + 1), _bits(n_docs)
    if _bits(int(gram.max()) + 1) + coll_bits + count_bits + doc_bits <= 62:
        packed = np.sort((((gram << coll_bits | coll) << count_bits | count) << doc_bits) | doc)
        doc = packed & ((1 << doc_bits) - 1)
        packed >>= doc_bits
        count = packed & ((1 << count_bits) - 1)
        segment = packed >> count_bits
    else:
        order = np.lexsort((doc, count, coll, gram))
        gram, coll, doc, count = gram[order], coll[order], doc[order], count[order]
        segment = np.r_[0, np.cumsum((gram[1:] != gram[:-1]) | (coll[1:] != coll[:-1]))]
    same = segment[1:] == segment[:-1]
    ends = np.append(np.flatnonzero(~same), len(segment) - 1)  # the last pair of each segment
    clipped = count.copy()
    before = ends - 1
    clipped[ends] = 0
    paired = before[(ends > 0)]
    paired = paired[same[paired]]
    clipped[paired + 1] = count[paired]
    return doc, clipped, ends


def _closest_other_length(lengths: np.ndarray, collection: np.ndarray) -> np.ndarray:
    """Per text: the length of the closest *other* text of its collection (the shorter on ties), as NLTK's
    brevity penalty takes it (see ``diversity._leave_one_out_closest_length``)."""
    order = np.lexsort((lengths, collection))
    length, group = lengths[order], collection[order]
    big = np.iinfo(np.int64).max
    same_prev = np.r_[False, group[1:] == group[:-1]]
    same_next = np.r_[group[1:] == group[:-1], False]
    prev = np.where(same_prev, np.r_[-1, length[:-1]], -1)
    nxt = np.where(same_next, np.r_[length[1:], -1], -1)
    shared = ((prev == length) & same_prev) | ((nxt == length) & same_next)
    dist_below = np.where(prev >= 0, length - prev, big)
    dist_above = np.where(nxt >= 0, nxt - length, big)
    nearest = np.where(dist_below <= dist_above, prev, nxt)
    out = np.empty(len(lengths), dtype=np.float64)
    out[order] = np.where(shared, length, nearest)
    return out


def collection_stats(
    corpus: Corpus,
    views: Sequence[np.ndarray],
    *,
    max_n: int | None = 4,
    distinct_orders: Sequence[int] = (2,),
) -> list[ViewStats]:
    """Distinct-n (for each order in ``distinct_orders``) and per-text leave-one-out self-BLEU (orders
    ``1 .. max_n``; None leaves it out) of the collections of each view of ``corpus``'s texts.

    Each view is an int array with one collection index (0, 1, ...) per text. For self-BLEU every
    collection needs at least two texts.
    """
    n_docs = corpus.n_docs
    views = [np.asarray(v, dtype=np.int64).reshape(-1) for v in views]
    for v in views:
        if len(v) != n_docs or (n_docs and v.min() < 0):
            raise ValueError(f"a view needs one collection index >= 0 per text ({n_docs} texts), got {len(v)}")
    orders = sorted({check_order(n) for n in distinct_orders} | set(range(1, (max_n or 0) + 1)))
    lengths = corpus.lengths
    tokens = corpus.tokens
    base = max(int(corpus.vocab_size), 1)
    n_coll = [int(v.max()) + 1 if n_docs else 0 for v in views]
    numerators = [dict() for _ in views]
    distinct: list[dict[int, np.ndarray]] = [dict() for _ in views]
    doc_bits = _bits(n_docs)
    doc_of_token = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
    key, bound = tokens.copy(), base  # key[i]: the n-gram starting at token i, all keys < bound
    for n in range(1, max(orders, default=0) + 1):
        if n > 1:
            key = key[:-1]
            if _bits(bound * base) + doc_bits > 62:  # re-rank so that the packed keys stay in int64
                key, bound = unique_ids(key)
            key = key * base + tokens[n - 1 :]
            bound *= base
        if n not in orders:
            continue
        if _bits(bound) + doc_bits > 62:
            key, bound = unique_ids(key)
        packed = key << doc_bits
        packed |= doc_of_token[: len(key)]
        if n > 1:  # only the n-grams that lie inside one text
            packed = packed[doc_of_token[: len(key)] == doc_of_token[n - 1 :]]
        packed.sort()
        pair_end = np.append(np.flatnonzero(packed[1:] != packed[:-1]), len(packed) - 1) if len(packed) else packed
        pair_value = packed[pair_end]
        pair_count = np.diff(pair_end, prepend=-1)
        pair_gram, pair_doc = pair_value >> doc_bits, pair_value & ((1 << doc_bits) - 1)
        # n-grams found in one text only: their pairs are alone in every collection (clipped count 0)
        new_gram = np.empty(len(pair_gram), dtype=bool)
        new_gram[:1] = True
        np.not_equal(pair_gram[1:], pair_gram[:-1], out=new_gram[1:])
        shared = np.empty(len(pair_gram), dtype=bool)
        np.logical_not(new_gram[1:], out=shared[:-1])
        shared[-1:] = False
        shared |= ~new_gram  # a pair shares its n-gram with the pair before or the pair after it
        gram = np.cumsum(new_gram[shared]) - 1
        doc, count = pair_doc[shared], pair_count[shared]
        for index, view in enumerate(views):
            if len(gram):
                d, clipped, ends = _clipped_counts(gram, view[doc], doc, count, n_coll[index], n_docs)
            else:
                d = clipped = ends = np.zeros(0, dtype=np.int64)
            if max_n and n <= max_n:
                numerators[index][n] = np.bincount(d, weights=clipped, minlength=n_docs)
            if n in distinct_orders:
                found = np.bincount(view[d[ends]], minlength=n_coll[index]) + np.bincount(
                    view[pair_doc[~shared]], minlength=n_coll[index]
                )
                total = np.bincount(view, weights=np.maximum(0, lengths - n + 1), minlength=n_coll[index])
                distinct[index][n] = np.array(
                    [f / t if t else 0.0 for f, t in zip(found.tolist(), total.astype(np.int64).tolist())]
                )
    out = []
    for index, view in enumerate(views):
        bleu = None
        if max_n:
            log_p = np.zeros(n_docs)
            for n in range(1, max_n + 1):
                numerator = numerators[index][n]
                denominator = np.maximum(1, lengths - n + 1).astype(np.float64)
                p = np.where(numerator == 0, 0.1 / denominator, numerator / denominator)
                log_p += np.log(p) / max_n
            ref_len = _closest_other_length(lengths, view)
            bp = np.where(lengths > ref_len, 1.0, np.exp(1.0 - ref_len / np.maximum(lengths, 1)))
            bleu = np.where((numerators[index][1] == 0) | (lengths == 0), 0.0, bp * np.exp(log_p))
        out.append(ViewStats(collection=view, bleu=bleu, distinct=distinct[index]))
    return out


def collection_means(collection: np.ndarray, values: np.ndarray) -> list[float]:
    """Per collection ``c = 0, 1, ...``: the mean of ``values`` over its texts, in text order (the same float as
    ``values[collection == c].mean()``).

    >>> collection_means(np.array([0, 1, 0]), np.array([1.0, 5.0, 2.0]))
    [1.5, 5.0]
    """
    members = np.argsort(collection, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(collection))]
    return [float(values[members[a:b]].mean()) for a, b in zip(bounds[:-1], bounds[1:])]
