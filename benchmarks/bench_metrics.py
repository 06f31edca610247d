"""Speed and agreement of the QDC diversity metrics against reference implementations.

Run from the repository root (``make bench`` does the first)::

    python benchmarks/bench_metrics.py           # full sizes, about 2 minutes on 2 cores
    python benchmarks/bench_metrics.py --smoke   # tiny sizes, a few seconds (CI)

Every comparison times our function and the reference in the same run, on the
same synthetic data (seeded, so every run sees the same inputs), and prints
``ratio = reference time / our time``.

Targets (full sizes):

* ``self_bleu(texts, max_n=4)`` at 1,000 texts: at least 20x faster than
  leave-one-out NLTK ``sentence_bleu`` (each text against all the others,
  uniform weights, ``SmoothingFunction().method1``), same value to 1e-6.
* ``vendi_score(X, q=1)`` at 5,000 x 384: at least 50x faster than the
  ``vendi-score`` package's O(n^3) ``vendi.score_K(X X^T)``, same value to 1e-6.
  q=2 and q=inf are checked against direct formulas on ``K / n`` (no target).
* distinct-n (summed over n = 1..4) and ``compression_ratio`` at 1,000 and
  10,000 texts: at least 5x faster than the ``diversity`` package (PyPI
  ``diversity==0.3.1``). Its definitions differ, so only the time is compared
  and both values are printed side by side. Like the package, which splits the
  corpus once for all n, our side tokenizes once (a ``Corpus``) for n = 1..4.
  Both compression ratios spend most of their time in the same level-9 DEFLATE
  pass over the same bytes, so that target cannot be met without changing the
  measure (a lower level is faster and gives a different value).

Other metrics (ead, ngram_entropy, duplicate_rate, self_bleu at 10,000 texts;
the embedding metrics at 10,000 x 384) are timed without a reference.

The ``diversity`` package pins ``transformers<5``, so it is never installed into
the environment: the first run installs it without dependencies into
``.bench-deps/`` (ignored by git) and loads its two self-contained modules by
file path. Pass ``--no-install`` to skip that; its rows are then skipped.

Fast calls are timed best of 3; a call that takes longer than ``--single-run-above``
seconds (default 5) is run once and its time is marked ``*``. The exit code is 0
even when a speed target is missed (this is a report) and 1 when a value differs
from its reference by more than the tolerance (that is a bug).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # benchmark the working tree, installed or not

from qdc_trainer.metrics import Corpus  # noqa: E402
from qdc_trainer.metrics.diversity import (  # noqa: E402
    compression_ratio,
    distinct_n,
    duplicate_rate,
    ead,
    mean_nearest_neighbor_distance,
    mean_pairwise_cosine_distance,
    ngram_entropy,
    self_bleu,
    vendi_score,
)

BENCH_DEPS = REPO_ROOT / ".bench-deps"
DIVERSITY_REQUIREMENT = "diversity==0.3.1"
TOLERANCE = 1e-6
SEED = 20240601

TARGET_SELF_BLEU = 20.0
TARGET_VENDI = 50.0
TARGET_NGRAM = 5.0


@dataclass(frozen=True)
class Sizes:
    self_bleu_texts: int  # NLTK reference is O(N^2 * length)
    ngram_texts: tuple[int, ...]  # distinct-n and compression vs the diversity package
    vendi_rows: int  # vendi-score reference is O(n^3)
    big_texts: int  # metrics timed without a reference
    big_rows: int
    dim: int


FULL = Sizes(
    self_bleu_texts=1_000, ngram_texts=(1_000, 10_000), vendi_rows=5_000, big_texts=10_000, big_rows=10_000, dim=384
)
SMOKE = Sizes(self_bleu_texts=50, ngram_texts=(50, 200), vendi_rows=200, big_texts=200, big_rows=300, dim=384)


# --------------------------------------------------------------------------- synthetic data


def make_vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    """``size`` distinct lowercase pseudo-words of 2 to 10 letters, in random order."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(letters, size=int(rng.integers(2, 11)))))
    vocabulary = sorted(words)
    rng.shuffle(vocabulary)
    return vocabulary


def make_texts(n_texts: int, seed: int = SEED, vocab_size: int = 5_000, mean_length: int = 50) -> list[str]:
    """Texts of about ``mean_length`` whitespace tokens drawn from a Zipf-like word distribution.

    Word ``r`` (by rank) has probability proportional to ``1 / (r + 2.7) ** 1.1``, so a few
    words are very common (as function words are) and most are rare, which gives realistic
    n-gram overlap between texts. Lengths vary (normal, sd 8, clipped to [20, 80]) so that
    self-BLEU's brevity penalty is exercised.
    """
    rng = np.random.default_rng(seed)
    vocabulary = np.array(make_vocabulary(rng, vocab_size))
    weights = 1.0 / (np.arange(vocab_size) + 2.7) ** 1.1
    weights /= weights.sum()
    lengths = np.clip(np.rint(rng.normal(mean_length, 8, size=n_texts)), 20, 80).astype(int)
    words = vocabulary[rng.choice(vocab_size, size=int(lengths.sum()), p=weights)]
    bounds = np.r_[0, np.cumsum(lengths)]
    return [" ".join(words[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def make_embeddings(n_rows: int, dim: int, seed: int = SEED, n_clusters: int = 64) -> np.ndarray:
    """float32 embeddings around ``n_clusters`` random centres (noise as large as the centres)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim))
    labels = rng.integers(0, n_clusters, size=n_rows)
    return (centres[labels] + rng.standard_normal((n_rows, dim))).astype(np.float32)


# --------------------------------------------------------------------------- timing and results


@dataclass(frozen=True)
class Timing:
    seconds: float  # best of the runs
    runs: int
    value: Any  # the value returned by the last run


def timed(fn: Callable[[], Any], repeat: int = 3, single_run_above: float = 5.0) -> Timing:
    """Best wall time (``time.perf_counter``) of up to ``repeat`` calls; one call if it is slow."""
    best = math.inf
    value = None
    runs = 0
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
        runs += 1
        if best > single_run_above:
            break
    return Timing(best, runs, value)


@dataclass
class Row:
    metric: str
    size: str
    ours: Timing | None
    reference: Timing | None = None
    target: float | None = None  # minimum reference / ours ratio
    values: str = ""  # values and their agreement, as printed
    value_ok: bool | None = None  # None: no value check on this row
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.reference is None:
            return None
        return self.reference.seconds / self.ours.seconds

    @property
    def result(self) -> str:
        if self.target is None or self.ratio is None:
            return "-"
        return "PASS" if self.ratio >= self.target else "MISS"


def agreement(ours: float, reference: float) -> tuple[str, bool]:
    diff = abs(ours - reference)
    ok = diff <= TOLERANCE
    text = f"ours {ours:.10g}  ref {reference:.10g}  |diff| {diff:.1e} {'ok' if ok else 'DISAGREE'}"
    return text, ok


def side_by_side(ours: float, reference: float) -> str:
    return f"ours {ours:.6g}  ref {reference:.6g}  (definitions differ)"


def texts_label(n: int) -> str:
    return f"{n:,} texts"


def matrix_label(n: int, dim: int) -> str:
    return f"{n:,} x {dim}"


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- references


def nltk_self_bleu(texts: list[str], max_n: int = 4) -> float:
    """Leave-one-out self-BLEU with NLTK: each text against all the other texts."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    tokens = [text.split() for text in texts]
    smoothing = SmoothingFunction().method1
    weights = (1.0 / max_n,) * max_n
    scores = [
        sentence_bleu(tokens[:i] + tokens[i + 1 :], hypothesis, weights=weights, smoothing_function=smoothing)
        for i, hypothesis in enumerate(tokens)
    ]
    return float(np.mean(scores))


def cosine_kernel(x: np.ndarray) -> np.ndarray:
    xn = x.astype(np.float64)
    xn /= np.linalg.norm(xn, axis=1, keepdims=True)
    return xn @ xn.T


def reference_vendi_q1(x: np.ndarray) -> float:
    """The vendi-score package on the full n x n cosine kernel: O(n^3) eigendecomposition."""
    from vendi_score import vendi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy.sparse.csr deprecation inside score_K
        return float(vendi.score_K(cosine_kernel(x), q=1))


def reference_vendi_q2(x: np.ndarray) -> float:
    """exp(H_2) = 1 / sum(lambda_i^2) = 1 / ||K / n||_F^2 (sum of squared eigenvalues of a symmetric matrix)."""
    k = cosine_kernel(x)
    return float(1.0 / np.sum((k / len(k)) ** 2))


def reference_vendi_qinf(x: np.ndarray) -> float:
    """exp(H_inf) = 1 / largest eigenvalue of K / n, by Lanczos (scipy eigsh)."""
    from scipy.sparse.linalg import eigsh

    k = cosine_kernel(x)
    largest = eigsh(k / len(k), k=1, which="LA", return_eigenvectors=False)[0]
    return float(1.0 / largest)


@dataclass(frozen=True)
class DiversityPackage:
    """The two self-contained modules of PyPI ``diversity`` that we compare with."""

    compression_ratio: Callable[..., float]
    ngram_diversity_score: Callable[..., float]


def load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_diversity_package(install: bool) -> DiversityPackage | None:
    """Load ``compression.py`` and ``ngram_diversity.py`` from ``.bench-deps/diversity`` (installing it if missing).

    The package's ``__init__`` is never imported (it pulls in openai and more).
    Returns None, after printing why, when the package is not available.
    """
    package_dir = BENCH_DEPS / "diversity"
    if not package_dir.is_dir():
        if not install:
            print(
                f"note: {package_dir.relative_to(REPO_ROOT)} is missing and --no-install was given; "
                "skipping the comparisons with the diversity package",
                file=sys.stderr,
            )
            return None
        progress(f"installing {DIVERSITY_REQUIREMENT} (no dependencies) into {BENCH_DEPS.relative_to(REPO_ROOT)}/")
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(BENCH_DEPS),
            DIVERSITY_REQUIREMENT,
        ]
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0 or not package_dir.is_dir():
            print(
                f"note: could not install {DIVERSITY_REQUIREMENT} into {BENCH_DEPS.relative_to(REPO_ROOT)}/ "
                f"(pip exit code {completed.returncode}); skipping the comparisons with the diversity package.\n"
                f"      To install it by hand: python -m pip install --no-deps --target .bench-deps "
                f"{DIVERSITY_REQUIREMENT}\n      pip said: {completed.stderr.strip()[-500:]}",
                file=sys.stderr,
            )
            return None
    try:
        compression = load_module("_bench_diversity_compression", package_dir / "compression.py")
        ngram = load_module("_bench_diversity_ngram", package_dir / "ngram_diversity.py")
    except Exception as error:  # a broken or partial install: report it, skip those rows
        print(
            f"note: could not load the diversity package from {package_dir.relative_to(REPO_ROOT)}/: {error!r}; "
            "skipping the comparisons with it",
            file=sys.stderr,
        )
        return None
    return DiversityPackage(compression.compression_ratio, ngram.ngram_diversity_score)


# --------------------------------------------------------------------------- benchmarks


def bench_self_bleu(sizes: Sizes, single: float) -> list[Row]:
    n = sizes.self_bleu_texts
    texts = make_texts(n)
    ours = timed(lambda: self_bleu(texts, max_n=4), single_run_above=single)
    progress(f"NLTK leave-one-out self-BLEU at {n:,} texts (O(N^2): a minute or two at 1,000 texts)")
    reference = timed(lambda: nltk_self_bleu(texts, max_n=4), single_run_above=single)
    values, ok = agreement(ours.value, reference.value)
    return [
        Row(
            "self_bleu max_n=4 vs NLTK",
            texts_label(n),
            ours,
            reference,
            TARGET_SELF_BLEU,
            values,
            ok,
            note="NLTK run in full (every text vs all others); means compared",
        )
    ]


def bench_vendi(sizes: Sizes, single: float) -> list[Row]:
    n, dim = sizes.vendi_rows, sizes.dim
    x = make_embeddings(n, dim)
    label = matrix_label(n, dim)
    rows = []
    cases = [
        (1, "vendi-score score_K (O(n^3))", reference_vendi_q1, TARGET_VENDI),
        (2, "1/||K/n||_F^2", reference_vendi_q2, None),
        (math.inf, "1/lambda_max(K/n) (eigsh)", reference_vendi_qinf, None),
    ]
    for q, reference_name, reference_fn, target in cases:
        ours = timed(lambda: vendi_score(x, q=q), single_run_above=single)
        progress(f"vendi reference q={q} ({reference_name}) at {label}")
        reference = timed(lambda: reference_fn(x), single_run_above=single)
        values, ok = agreement(ours.value, reference.value)
        metric = f"vendi_score q={q:g} vs {reference_name}"
        rows.append(Row(metric, label, ours, reference, target, values, ok))
    return rows


def sum_distinct_n(texts: list[str], max_n: int = 4) -> float:
    """The same work as ngram_diversity_score(texts, max_n): tokenize once, distinct-n for every n = 1..max_n."""
    corpus = Corpus.from_texts(texts)
    return sum(distinct_n(corpus, n) for n in range(1, max_n + 1))


def bench_ngram_package(sizes: Sizes, package: DiversityPackage | None, single: float) -> list[Row]:
    rows = []
    for n in sizes.ngram_texts:
        texts = make_texts(n)
        label = texts_label(n)
        if package is None:
            rows.append(Row("distinct_n n=1..4 (sum) vs diversity", label, None, note="skipped: package unavailable"))
            rows.append(Row("compression_ratio vs diversity", label, None, note="skipped: package unavailable"))
            continue
        progress(f"distinct-n and compression vs the diversity package at {label}")
        ours = timed(lambda: sum_distinct_n(texts), single_run_above=single)
        reference = timed(lambda: package.ngram_diversity_score(texts, 4), single_run_above=single)
        rows.append(
            Row(
                "distinct_n n=1..4 (sum) vs diversity",
                label,
                ours,
                reference,
                TARGET_NGRAM,
                side_by_side(ours.value, reference.value),
            )
        )
        ours = timed(lambda: compression_ratio(texts), single_run_above=single)
        reference = timed(lambda: package.compression_ratio(texts, "gzip"), single_run_above=single)
        rows.append(
            Row(
                "compression_ratio vs diversity",
                label,
                ours,
                reference,
                TARGET_NGRAM,
                side_by_side(ours.value, reference.value),
            )
        )
    return rows


def bench_without_reference(sizes: Sizes, single: float) -> list[Row]:
    texts = make_texts(sizes.big_texts)
    x = make_embeddings(sizes.big_rows, sizes.dim)
    text_size, matrix_size = texts_label(sizes.big_texts), matrix_label(sizes.big_rows, sizes.dim)
    progress(f"metrics without a reference at {text_size} and {matrix_size}")
    cases: list[tuple[str, str, Callable[[], float]]] = [
        ("ead n=2 vocab_size=50,000", text_size, lambda: ead(texts, 2, vocab_size=50_000)),
        ("ngram_entropy n=1", text_size, lambda: ngram_entropy(texts, 1)),
        ("ngram_entropy n=2", text_size, lambda: ngram_entropy(texts, 2)),
        ("duplicate_rate", text_size, lambda: duplicate_rate(texts)),
        ("self_bleu max_n=4", text_size, lambda: self_bleu(texts, max_n=4)),
        ("mean_pairwise_cosine_distance", matrix_size, lambda: mean_pairwise_cosine_distance(x)),
        ("mean_nearest_neighbor_distance", matrix_size, lambda: mean_nearest_neighbor_distance(x)),
        ("vendi_score q=1", matrix_size, lambda: vendi_score(x, q=1)),
    ]
    rows = []
    for metric, size, fn in cases:
        ours = timed(fn, single_run_above=single)
        rows.append(Row(metric, size, ours, values=f"ours {ours.value:.6g}"))
    return rows


# --------------------------------------------------------------------------- report


def format_seconds(timing: Timing | None) -> str:
    if timing is None:
        return "-"
    mark = "*" if timing.runs == 1 else ""
    return f"{timing.seconds:.4f}{mark}" if timing.seconds < 10 else f"{timing.seconds:.2f}{mark}"


def print_table(rows: list[Row]) -> None:
    header = ["metric", "size", "ours (s)", "ref (s)", "ratio", "target", "result", "values"]
    table = [
        [
            row.metric,
            row.size,
            format_seconds(row.ours),
            format_seconds(row.reference),
            f"{row.ratio:,.1f}x" if row.ratio is not None else "-",
            f">={row.target:g}x" if row.target is not None else "-",
            row.result,
            row.values or row.note,
        ]
        for row in rows
    ]
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header) - 1)]
    numeric = {2, 3, 4, 5}

    def line(cells: list[str]) -> str:
        out = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join([*out, cells[-1]])

    print(line(header))
    print(line(["-" * w for w in widths] + ["-" * 6]))
    for cells in table:
        print(line(cells))
    print()
    print(
        "ours/ref: best of 3 wall-clock seconds (time.perf_counter); * = a single run (one call took over "
        "the --single-run-above limit). ratio = ref / ours."
    )
    for row in rows:
        if row.values and row.note:
            print(f"{row.metric} ({row.size}): {row.note}")


def print_notes() -> None:
    print("Reference definitions:")
    print(
        "  self_bleu: NLTK sentence_bleu(all other texts, text_i, weights=(0.25,)*4, method1 smoothing), mean "
        "over texts; time includes whitespace splitting on both sides."
    )
    print(
        "  vendi q=1: vendi_score.vendi.score_K(Xn Xn^T); reference time includes normalising rows and "
        "building the n x n kernel. q=2 and q=inf: direct formulas on the eigenvalues of K/n."
    )
    print(
        "  diversity package (0.3.1): ngram_diversity_score joins the whole corpus with spaces, so its "
        "n-grams cross text boundaries (ours never do), and rounds to 3 decimals; our side sums distinct_n "
        "over n=1..4 to do the same work. Its compression_ratio writes temp files, gzips twice (gzip.compress "
        "inside a GzipFile) and rounds to 3 decimals; ours gzips once, in memory."
    )


def print_summary(rows: list[Row], smoke: bool) -> bool:
    """Print one line per target and the value checks; return True when every value check passed."""
    print()
    print("Summary" + (" (smoke sizes: ratios at these sizes say nothing about the targets)" if smoke else ""))
    for row in rows:
        if row.target is None:
            continue
        if row.ratio is None:
            print(f"  SKIP  {row.metric} at {row.size}: {row.note}")
        else:
            ratio = f"ref/ours = {row.ratio:,.1f}x (target >= {row.target:g}x)"
            print(f"  {row.result}  {row.metric} at {row.size}: {ratio}")
    checks = [row for row in rows if row.value_ok is not None]
    failed = [row for row in checks if not row.value_ok]
    if failed:
        for row in failed:
            print(f"  VALUE DISAGREEMENT  {row.metric} at {row.size}: {row.values}")
    else:
        print(f"  values: all {len(checks)} reference checks agree within {TOLERANCE:g}")
    return not failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, a few seconds: checks the benchmark still runs"
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help=f"do not pip-install {DIVERSITY_REQUIREMENT} into .bench-deps/ when it is missing",
    )
    parser.add_argument(
        "--single-run-above",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="time a call once instead of best of 3 when it takes longer than this (default 5)",
    )
    args = parser.parse_args(argv)

    sizes = SMOKE if args.smoke else FULL
    single = args.single_run_above
    started = time.perf_counter()
    package = load_diversity_package(install=not args.no_install)

    rows = [
        *bench_self_bleu(sizes, single),
        *bench_vendi(sizes, single),
        *bench_ngram_package(sizes, package, single),
        *bench_without_reference(sizes, single),
    ]

    print(
        f"QDC diversity metrics benchmark ({'smoke' if args.smoke else 'full'} sizes, seed {SEED}, "
        f"numpy {np.__version__}, Python {sys.version.split()[0]})"
    )
    print()
    print_table(rows)
    print()
    print_notes()
    values_ok = print_summary(rows, smoke=args.smoke)
    print(f"\nTotal wall time: {time.perf_counter() - started:.1f} s")
    return 0 if values_ok else 1


if __name__ == "__main__":
    sys.exit(main())
