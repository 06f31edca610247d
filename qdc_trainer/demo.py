"""A short demonstration of the QDC metrics on built-in example texts.

Run with ``python -m qdc_trainer.demo`` (or ``make demo``). Four sets of model
outputs to the same kind of prompt, from healthy to collapsed, are measured for
diversity and complexity; the table shows how each metric moves as generations
narrow.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import numpy as np

from qdc_trainer import metrics as M

EXAMPLES: dict[str, list[str]] = {
    "healthy": [
        "First add 12 and 7 to get 19. Then multiply 19 by 3, which gives 57. The answer is 57.",
        "Start from 48 and split it into four equal parts: 48 / 4 = 12. Adding 5 gives 17.",
        "A train leaves at 9:15 and arrives at 11:40, so the trip takes 2 hours and 25 minutes.",
        "If each box holds 6 eggs, 9 boxes hold 54 eggs; removing the 4 broken ones leaves 50.",
        "Half of 90 is 45, and a third of that is 15, so each friend receives 15 stickers.",
        "The rectangle is 8 by 5, so its area is 40 square units and its perimeter is 26 units.",
        "Subtracting 17 from 100 leaves 83; since 83 is prime it cannot be split into equal groups.",
        "Two numbers sum to 30 and differ by 4: the larger is (30 + 4) / 2 = 17, the smaller 13.",
    ],
    "templated": [
        "First add 12 and 7 to get 19. Then multiply 19 by 3 to get 57. The answer is 57.",
        "First add 15 and 4 to get 19. Then multiply 19 by 2 to get 38. The answer is 38.",
        "First add 20 and 6 to get 26. Then multiply 26 by 3 to get 78. The answer is 78.",
        "First add 11 and 9 to get 20. Then multiply 20 by 4 to get 80. The answer is 80.",
        "First add 13 and 8 to get 21. Then multiply 21 by 2 to get 42. The answer is 42.",
        "First add 10 and 5 to get 15. Then multiply 15 by 3 to get 45. The answer is 45.",
        "First add 14 and 7 to get 21. Then multiply 21 by 3 to get 63. The answer is 63.",
        "First add 16 and 2 to get 18. Then multiply 18 by 5 to get 90. The answer is 90.",
    ],
    "short": [
        "The answer is 57.",
        "The answer is 17.",
        "The answer is 57.",
        "The answer is 50.",
        "The answer is 15.",
        "The answer is 40.",
        "The answer is 57.",
        "The answer is 17.",
    ],
    "collapsed": [
        "The answer is 57. The answer is 57. The answer is 57.",
        "The answer is 57. The answer is 57.",
        "The answer is 57. The answer is 57. The answer is 57.",
        "The answer is 57.",
        "The answer is 57. The answer is 57. The answer is 57.",
        "The answer is 57. The answer is 57.",
        "The answer is 57. The answer is 57. The answer is 57.",
        "The answer is 57.",
    ],
}

WORD_VOCABULARY = 10_000
"""EAD needs a vocabulary size; for whitespace words, a working English vocabulary."""

Column = tuple[str, Callable[[list[str], np.ndarray], float], str]


def columns() -> list[Column]:
    """(header, function of (texts, embeddings), direction) for each column of the table."""
    return [
        ("distinct-2", lambda t, e: M.distinct_n(t, 2), "↑ diverse"),
        ("EAD-2", lambda t, e: M.ead(t, 2, vocab_size=WORD_VOCABULARY), "↑ diverse"),
        ("entropy-1", lambda t, e: M.ngram_entropy(t, 1), "↑ diverse"),
        ("self-BLEU", lambda t, e: M.self_bleu(t), "↓ diverse"),
        ("gzip ratio", lambda t, e: M.compression_ratio(t), "↓ diverse"),
        ("dup rate", lambda t, e: M.duplicate_rate(t), "↓ diverse"),
        ("Vendi", lambda t, e: M.vendi_score(e), "↑ diverse"),
        ("cos dist", lambda t, e: M.mean_pairwise_cosine_distance(e), "↑ diverse"),
        ("words", lambda t, e: float(M.lengths(t).mean()), "↑ complex"),
        ("steps", lambda t, e: float(M.reasoning_steps(t).mean()), "↑ complex"),
        ("repeat-3", lambda t, e: float(M.repetition_rate(t, 3).mean()), "↓ complex"),
    ]


def make_embedder(kind: str) -> tuple[M.Embedder, str]:
    if kind in ("auto", "minilm"):
        try:
            return M.Embedder.sentence_transformers(progress=False), "all-MiniLM-L6-v2"
        except ImportError:
            if kind == "minilm":
                raise
    return M.HashingEmbedder(), "hashed word n-grams"


def format_table(rows: Sequence[tuple[str, Sequence[float]]], cols: Sequence[Column]) -> str:
    headers = ["set"] + [c[0] for c in cols]
    cells = [[name] + [f"{v:.3f}" for v in values] for name, values in rows]
    cells.append([""] + [c[2] for c in cols])
    widths = [max(len(r[i]) for r in [headers] + cells) for i in range(len(headers))]
    line = lambda r: "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qdc_trainer.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--embedder",
        choices=["auto", "minilm", "hashing"],
        default="auto",
        help="embeddings for Vendi and cosine distance (auto: MiniLM when installed, else hashing)",
    )
    args = parser.parse_args(argv)
    embedder, embedder_name = make_embedder(args.embedder)
    cols = columns()
    rows = []
    for name, texts in EXAMPLES.items():
        emb = embedder(texts)
        rows.append((name, [fn(texts, emb) for _, fn, _ in cols]))
    print(f"QDC metrics on {len(EXAMPLES)} sets of {len(EXAMPLES['healthy'])} example generations")
    print(f"(embeddings: {embedder_name})\n")
    print(format_table(rows, cols))
    print(
        "\nAs the outputs narrow from 'healthy' to 'collapsed', the diversity columns fall (distinct-n, EAD,"
        "\nentropy, Vendi, cosine distance) or rise (self-BLEU, gzip ratio, duplicates), and complexity drops."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
