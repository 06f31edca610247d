"""What the generation monitor measures and logs, without a Trainer: texts in, numbers out.

:func:`measure_generations` computes the QDC metrics of k samples for each of P probe prompts; the key
lists (:data:`SCOPES`, :data:`DIVERSITY_METRICS`, :data:`GENERATION_METRICS`, :data:`PREFIX`) name what
an evaluation logs, and :class:`GenerationMonitorConfig` holds the monitor's settings. The reports and the
self-improvement experiment read these without the callback, which lives in :mod:`qdc_trainer.callbacks.monitor`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..metrics._inputs import Corpus
from ..metrics._segmented import collection_means, collection_stats
from ..metrics.complexity import repetition_rate
from ..metrics.diversity import (
    _nanmean,
    compression_ratio,
    distinct_n,
    grouped_diversity,
    mean_pairwise_cosine_distance,
    self_bleu,
    vendi_score,
)

__all__ = [
    "DIVERSITY_METRICS",
    "GENERATION_METRICS",
    "PREFIX",
    "SAMPLES_FILE",
    "SCOPES",
    "GenerationMonitorConfig",
    "measure_generations",
]

PREFIX = "qdc/gen/"
SAMPLES_FILE = "qdc_generations.jsonl"
"""File (in ``args.output_dir``) that receives the samples of every evaluation, one JSON object per line."""


# --------------------------------------------------------------------------- pure measurement


def _defined(metric: Callable[[list[str]], float]) -> Callable[[list[str]], float]:
    """NaN for a collection of empty texts (no text to measure), else the metric."""

    def wrapped(texts: list[str]) -> float:
        return metric(texts) if any(t.strip() for t in texts) else float("nan")

    return wrapped


TEXT_METRICS: dict[str, Callable[[list[str]], float]] = {
    "distinct_1": _defined(lambda t: distinct_n(t, 1)),
    "distinct_2": _defined(lambda t: distinct_n(t, 2)),
    "self_bleu": _defined(self_bleu),
    "compression_ratio": _defined(compression_ratio),
}


def _without_zero_rows(metric: Callable[[np.ndarray], float], min_rows: int) -> Callable[[np.ndarray], float]:
    """The metric over the rows that have a direction; NaN when fewer than ``min_rows`` of them are left.

    An empty sample embedded by a lexical embedder (``HashingEmbedder``, or a mean over no
    tokens) is an all-zero row: it has no direction, so no cosine or Vendi value.
    """

    def wrapped(matrix: np.ndarray) -> float:
        rows = matrix[np.abs(matrix).max(axis=1) > 0] if len(matrix) else matrix
        return metric(rows) if len(rows) >= min_rows else float("nan")

    return wrapped


EMBEDDING_METRICS: dict[str, Callable[[np.ndarray], float]] = {
    "vendi": _without_zero_rows(vendi_score, 1),
    "cosine_distance": _without_zero_rows(mean_pairwise_cosine_distance, 2),
}

SCOPES = ("per_input", "across_input")
"""The diversity views: ``qdc/gen/<scope>/<metric>`` for ``<metric>`` in :data:`DIVERSITY_METRICS`."""
DIVERSITY_METRICS = (*TEXT_METRICS, *EMBEDDING_METRICS)
"""The diversity measures logged per scope (the embedding ones only with an embedder)."""
GENERATION_METRICS = ("length", "entropy", "repetition", "empty_rate", "quality", "seconds")
"""The other keys an evaluation logs, ``qdc/gen/<name>`` (``quality`` only with a scorer)."""


def measure_generations(
    samples: Sequence[Sequence[str]],
    *,
    num_tokens: Sequence[Sequence[int]] | None = None,
    entropy: float | None = None,
    embeddings: np.ndarray | None = None,
    scores: Sequence[float] | None = None,
) -> dict[str, float]:
    """QDC metrics of k samples for each of P prompts (``samples[p][j]``), keyed without the ``qdc/gen/`` prefix.

    Diversity, per input (the k samples of one prompt, averaged over prompts) and
    across inputs (one sample per prompt, averaged over the k positions; only with
    P >= 2): ``{per_input,across_input}/{distinct_1,distinct_2,self_bleu,compression_ratio}``,
    plus ``.../vendi`` and ``.../cosine_distance`` when ``embeddings`` (one row per
    sample, prompt-major) are given. Higher self-BLEU and compression ratio mean
    *less* diverse. A collection whose texts are all empty has no value (NaN) and is
    left out of the mean. All-zero embedding rows (what a lexical embedder such as
    ``HashingEmbedder`` gives an empty sample: no direction) are left out of the
    embedding measures; a collection with no row left (Vendi) or fewer than two
    (cosine distance) is NaN and left out of the mean.

    Complexity: ``length`` (mean generated tokens, from ``num_tokens``, else words),
    ``repetition`` (mean share of repeated word 3-grams within a sample),
    ``entropy`` (mean next-token entropy in nats, when given) and ``empty_rate``.
    Quality: ``quality``, the mean of ``scores`` (one per sample), when given.

    >>> m = measure_generations([["a b c", "a b c"], ["d e f", "g h i"]])
    >>> m["per_input/distinct_1"], m["across_input/distinct_1"], m["empty_rate"]
    (0.75, 1.0, 0.0)
    """
    groups = [list(g) for g in samples]
    if not groups:
        raise ValueError("samples is empty: nothing to measure")
    k = len(groups[0])
    if k < 2 or any(len(g) != k for g in groups):
        raise ValueError(f"every prompt needs the same number k >= 2 of samples, got {[len(g) for g in groups]}")
    for p, g in enumerate(groups):
        for j, text in enumerate(g):
            if not isinstance(text, str):
                raise TypeError(f"samples[{p}][{j}] is {type(text).__name__}, not str")
    flat = [t for g in groups for t in g]
    out: dict[str, float] = {}

    def add(name: str, metric: Callable[[Any], float], items: list[Any]) -> None:
        if len(items) >= 2:
            result = grouped_diversity(items, metric)
            out[f"per_input/{name}"], out[f"across_input/{name}"] = result.per_input, result.across_input
        else:  # one prompt: no across-input diversity
            out[f"per_input/{name}"] = float(metric(items[0]))

    corpus = Corpus.from_texts(flat, "samples")  # tokenized once, for every text measure
    out.update(_text_diversity(flat, corpus, len(groups), k))
    if embeddings is not None:
        matrix = np.asarray(embeddings, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[0] != len(flat):
            raise ValueError(f"embeddings must have one row per sample ({len(flat)}), got shape {matrix.shape}")
        if not np.isfinite(matrix).all():  # checked here: a NaN row must not pass for an all-zero one
            bad = np.unique(np.nonzero(~np.isfinite(matrix))[0])[:5].tolist()
            raise ValueError(f"embeddings contain NaN or inf (rows {bad}); fix the embedder")
        rows = [matrix[p * k : (p + 1) * k] for p in range(len(groups))]
        for name, metric in EMBEDDING_METRICS.items():
            add(name, metric, rows)

    if num_tokens is not None:
        counts = np.asarray([list(c) for c in num_tokens], dtype=np.float64)
        if counts.shape != (len(groups), k):
            raise ValueError(f"num_tokens must have the shape of samples ({len(groups)}, {k}), got {counts.shape}")
    else:
        counts = corpus.lengths.astype(np.float64).reshape(len(groups), k)
    out["length"] = float(counts.mean())
    out["repetition"] = float(repetition_rate(corpus, n=3).mean())
    out["empty_rate"] = float(np.mean([not t.strip() for t in flat]))
    if entropy is not None:
        out["entropy"] = float(entropy)
    if scores is not None:
        values = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(values) != len(flat):
            raise ValueError(f"scores must have one value per sample ({len(flat)}), got {len(values)}")
        out["quality"] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return out


def _text_diversity(flat: list[str], corpus: Corpus, n_prompts: int, k: int) -> dict[str, float]:
    """:data:`TEXT_METRICS` per input and across inputs, as ``grouped_diversity`` computes them, with the
    texts tokenized once and distinct-1, distinct-2 and self-BLEU of every collection of both views taken
    from one sort per n-gram order (:func:`~qdc_trainer.metrics._segmented.collection_stats`: the same
    values, bit for bit)."""
    docs = np.arange(len(flat), dtype=np.int64)
    scopes = [("per_input", docs // k)] + ([("across_input", docs % k)] if n_prompts >= 2 else [])
    stats = collection_stats(corpus, [view for _, view in scopes], max_n=4, distinct_orders=(1, 2))
    out: dict[str, float] = {}
    for name in TEXT_METRICS:
        for (scope, view), stat in zip(scopes, stats):
            said = np.bincount(view, weights=corpus.lengths) > 0  # a collection of empty texts has no value
            if name == "self_bleu":
                values = collection_means(view, stat.bleu)
            elif name == "compression_ratio":
                members = [[flat[d] for d in np.flatnonzero(view == c)] for c in range(len(said))]
                values = [compression_ratio(m) if ok else float("nan") for m, ok in zip(members, said)]
            else:
                values = stat.distinct[int(name[-1])].tolist()
            values = [v if ok else float("nan") for v, ok in zip(values, said)]
            out[f"{scope}/{name}"] = _nanmean(values) if n_prompts >= 2 else float(values[0])
    return out


# --------------------------------------------------------------------------- configuration


@dataclass
class GenerationMonitorConfig:
    """Settings of :class:`GenerationMonitorCallback` (all have defaults)."""

    every_n_steps: int | None = field(
        default=None,
        metadata={
            "help": "generate every N optimizer steps (default: at each evaluation; every logging_steps without one)"
        },
    )
    num_samples: int = field(default=4, metadata={"help": "samples per probe prompt (k >= 2, for per-input diversity)"})
    max_new_tokens: int = field(default=48, metadata={"help": "tokens generated per sample at most"})
    batch_size: int = field(
        default=64, metadata={"help": "sequences per generate call (prompts per call x num_samples)"}
    )
    temperature: float = field(
        default=1.0, metadata={"help": "sampling temperature (1.0: the model's own distribution)"}
    )
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass (1.0: off)"})
    top_k: int = field(default=0, metadata={"help": "top-k sampling (0: off)"})
    seed: int = field(default=0, metadata={"help": "sampling seed; the training RNG streams are left untouched"})
    at_start: bool = field(default=True, metadata={"help": "also generate before the first step (the baseline)"})
    save_samples: bool = field(
        default=True,
        metadata={
            "help": f"write the samples to <output_dir>/{SAMPLES_FILE} (a fresh run starts it anew, a resumed one "
            "keeps the steps its checkpoint covers)"
        },
    )
    generation_kwargs: dict[str, Any] | None = field(
        default=None, metadata={"help": "extra keyword arguments for model.generate (override the ones above)"}
    )

    def __post_init__(self) -> None:
        def integer(name: str, low: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} must be an int >= {low}")

        if self.every_n_steps is not None:
            integer("every_n_steps", 1)
        integer("num_samples", 2)
        integer("max_new_tokens", 1)
        integer("batch_size", 1)
        integer("top_k", 0)
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature!r} must be > 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p!r} must be in (0, 1]")
        if self.generation_kwargs is not None and not isinstance(self.generation_kwargs, dict):
            raise TypeError(f"generation_kwargs must be a dict, got {type(self.generation_kwargs).__name__}")
