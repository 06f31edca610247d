"""Measurements of quality, diversity and complexity: pure, typed functions.

Diversity of a collection (texts, token-id sequences or embeddings):
    distinct_n, ead, ngram_entropy, duplicate_rate, self_bleu, self_bleu_scores, compression_ratio,
    vendi_score, vendi_score_from_kernel, mean_pairwise_cosine_distance,
    mean_nearest_neighbor_distance, grouped_diversity.
Complexity of each text:
    lengths, reasoning_steps, compression_complexity, repetition_rate,
    token_entropy (from logits), sequence_perplexity, ifd_score (under a model).
Quality scorers, ``scorer(prompts, completions) -> floats``:
    VerifierScorer, RewardModelScorer, PerplexityScorer, JudgeScorer.
Embeddings and dataset scoring:
    Embedder, HashingEmbedder, score_dataset, cluster_embeddings.
Quality against diversity (the dataset profile's measures):
    pareto_frontier, cluster_quality_diversity.
Coverage of problems by k samples each:
    pass_at_k, pass_at_k_per_problem, never_solved_share.
Text metrics accept a list of texts or a ``Corpus`` (texts tokenized once, for
computing several metrics on the same texts). The text measurements also load
with ``evaluate.load(evaluate_module_path(...))``.

>>> from qdc_trainer.metrics import distinct_n, self_bleu
>>> texts = ["the cat sat on the mat", "a dog ran in the park", "the cat sat on the mat"]
>>> round(distinct_n(texts, 2), 3), round(self_bleu(texts), 3)
(0.667, 0.68)
"""

from __future__ import annotations

from pathlib import Path

from ._inputs import Corpus
from .complexity import (
    compression_complexity,
    ifd_score,
    lengths,
    reasoning_steps,
    repetition_rate,
    sequence_perplexity,
    token_entropy,
)
from .coverage import never_solved_share, pass_at_k, pass_at_k_per_problem
from .diversity import (
    GroupedDiversity,
    compression_ratio,
    distinct_n,
    duplicate_rate,
    ead,
    grouped_diversity,
    mean_nearest_neighbor_distance,
    mean_pairwise_cosine_distance,
    nearest_neighbor_distances,
    ngram_entropy,
    self_bleu,
    self_bleu_scores,
    vendi_score,
    vendi_score_from_kernel,
)
from .embeddings import Embedder, HashingEmbedder, default_sentence_model_path
from .quality import JudgeScorer, PerplexityScorer, RewardModelScorer, Scorer, VerifierScorer, extract_final_answer
from .scoring import COMPLEXITY_MEASURES, cluster_embeddings, score_dataset
from .tradeoff import cluster_quality_diversity, pareto_frontier

EVALUATE_MODULES = ("qdc_diversity", "qdc_complexity")


def evaluate_module_path(name: str = "qdc_diversity") -> str:
    """Local path of a measurement shipped with the package, for ``evaluate.load(path)`` (works offline).

    >>> Path(evaluate_module_path("qdc_diversity")).name
    'qdc_diversity'
    """
    if name not in EVALUATE_MODULES:
        raise ValueError(f"unknown measurement {name!r}; choose one of {EVALUATE_MODULES}")
    return str(Path(__file__).resolve().parent.parent / "measurements" / name)


__all__ = [
    "COMPLEXITY_MEASURES",
    "Corpus",
    "EVALUATE_MODULES",
    "Embedder",
    "GroupedDiversity",
    "HashingEmbedder",
    "JudgeScorer",
    "PerplexityScorer",
    "RewardModelScorer",
    "Scorer",
    "VerifierScorer",
    "cluster_embeddings",
    "cluster_quality_diversity",
    "compression_complexity",
    "compression_ratio",
    "default_sentence_model_path",
    "distinct_n",
    "duplicate_rate",
    "ead",
    "evaluate_module_path",
    "extract_final_answer",
    "grouped_diversity",
    "ifd_score",
    "lengths",
    "mean_nearest_neighbor_distance",
    "nearest_neighbor_distances",
    "never_solved_share",
    "mean_pairwise_cosine_distance",
    "ngram_entropy",
    "pareto_frontier",
    "pass_at_k",
    "pass_at_k_per_problem",
    "reasoning_steps",
    "repetition_rate",
    "score_dataset",
    "self_bleu",
    "self_bleu_scores",
    "sequence_perplexity",
    "token_entropy",
    "vendi_score",
    "vendi_score_from_kernel",
]
