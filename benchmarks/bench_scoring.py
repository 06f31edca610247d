"""CPU cost and cluster quality of ``score_dataset`` with the hashing embedder, against the earlier clustering
(k-means over the full 1,024-dimensional embeddings, stored in the dataset), in the same run.

Run from the repository root::

    python benchmarks/bench_scoring.py                 # 10^5 rows (the earlier pipeline too): a few minutes
    python benchmarks/bench_scoring.py --rows 1000000 --no-earlier   # 10^6 rows, ours only
    python benchmarks/bench_scoring.py --smoke         # 12,000 rows, under a minute (CI)
    python benchmarks/bench_scoring.py --sentence 512  # also: rows/s of the default sentence embedder

``--sentence N`` times ``Embedder.sentence_transformers()`` (the offline default, all-MiniLM-L6-v2, on the device it
chooses: the GPU when there is one) on N texts of 32 and of 256 words: wall time and rows/s, after one warm-up batch.

Targets: 10^5 rows in at most 25 s of CPU and 10^6 rows in at most 10 minutes, with cluster quality no worse
than the earlier clustering's. The data is labelled: each row is 20 words of one of 50 topics (each topic a
60-word lexicon) and 20 common words (of 2,000), so the adjusted Rand index (ARI) of the clusters against the
topics says how well each clustering recovers them. ``score_dataset``'s default number of clusters is
``sqrt(n / 2)``, more than the 50 topics, which lowers every ARI; the run also clusters with k = 50 (the
embeddings computed once, the clustering alone timed). Times are CPU time (``time.process_time``) of one
run, with BLAS and OpenMP on one thread for both (the earlier pipeline would use every core otherwise).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from datasets import Dataset, disable_progress_bars
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from qdc_trainer.metrics import HashingEmbedder, cluster_embeddings, score_dataset

TOPICS = 50


def labelled_texts(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, TOPICS, n)
    lexicon = rng.integers(0, 20_000, (TOPICS, 60))
    own = lexicon[label[:, None], rng.integers(0, 60, (n, 20))]
    common = rng.integers(0, 2_000, (n, 20))
    words = np.concatenate([own, common], axis=1)
    return [" ".join(f"w{w}" for w in row) for row in words], label


def earlier_clusters(embeddings: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """``cluster_embeddings`` as it was: k-means (mini-batch above 10,000 rows) over the rows as they are."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    x = np.asarray(embeddings, dtype=np.float32)
    k = min(n_clusters, len(np.unique(x, axis=0)))
    if len(x) > 10_000:
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096)
    else:
        model = KMeans(n_clusters=k, random_state=seed, n_init=3)
    return model.fit_predict(x).astype(np.int64)


def earlier_score_dataset(dataset: Dataset) -> np.ndarray:
    """The earlier pipeline's clusters: embeddings stored in the dataset by ``map``, then clustered as they are."""
    embedder = HashingEmbedder()
    n_clusters = int(min(256, max(1, round(math.sqrt(len(dataset) / 2)))))

    def batch(rows):
        return {"embedding": np.asarray(embedder(rows["text"]), dtype=np.float32).tolist()}

    scored = dataset.map(batch, batched=True, batch_size=256, load_from_cache_file=False)
    embeddings = np.asarray(scored.with_format("numpy")["embedding"], dtype=np.float32)
    return earlier_clusters(embeddings, n_clusters)


def cpu(fn):
    start = time.process_time()
    result = fn()
    return time.process_time() - start, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="12,000 rows: checks the benchmark still runs")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--no-earlier", action="store_true", help="skip the earlier pipeline (slow at 10^6 rows)")
    parser.add_argument("--sentence", type=int, default=0, help="texts for the sentence-embedder timing (0: none)")
    args = parser.parse_args(argv)
    disable_progress_bars()
    if args.sentence:
        sentence_rows_per_second(args.sentence)
    n = 12_000 if args.smoke else args.rows
    texts, label = labelled_texts(n)
    dataset = Dataset.from_dict({"text": texts})
    print(f"score_dataset with HashingEmbedder, {n:,} labelled rows ({TOPICS} topics), CPU time, one thread")
    with threadpool_limits(limits=1):
        ours_s, out = cpu(lambda: score_dataset(dataset))
        ours = np.asarray(out["cluster"])
        k = len(np.unique(ours))
        print(f"{'':<34} {'CPU':>9} {'ARI vs topics':>14}")
        print(
            f"{'ours (k = sqrt(n/2) = ' + str(k) + ')':<34} {ours_s:>8.1f}s {adjusted_rand_score(label, ours):>14.3f}"
        )
        if not args.no_earlier:
            earlier_s, earlier = cpu(lambda: earlier_score_dataset(dataset))
            print(f"{'earlier':<34} {earlier_s:>8.1f}s {adjusted_rand_score(label, earlier):>14.3f}")
            print(
                f"ratio earlier / ours: {earlier_s / ours_s:.1f}x; ARI ours vs earlier: "
                f"{adjusted_rand_score(earlier, ours):.3f}"
            )
        sample = min(n, 30_000)
        x = HashingEmbedder()(texts[:sample])
        ours_k, ours_labels = cpu(lambda: cluster_embeddings(x, TOPICS))
        earlier_k, earlier_labels = cpu(lambda: earlier_clusters(x, TOPICS))
        print(
            f"clustering alone, {sample:,} rows, k = {TOPICS}: ours {ours_k:.1f}s ARI "
            f"{adjusted_rand_score(label[:sample], ours_labels):.3f}; earlier {earlier_k:.1f}s ARI "
            f"{adjusted_rand_score(label[:sample], earlier_labels):.3f}"
        )
    return 0


def sentence_rows_per_second(n: int) -> None:
    """Rows/s of the default sentence embedder on its own device, at two text lengths."""
    import torch

    from qdc_trainer.metrics import Embedder

    embedder = Embedder.sentence_transformers(progress=False)
    texts, _ = labelled_texts(n, seed=1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"Embedder.sentence_transformers() (all-MiniLM-L6-v2), {n} texts, batch {embedder.batch_size}, {device}")
    print(f"{'words per text':>15} {'wall':>8} {'rows/s':>8} {'ms/row':>8}")
    for words in (32, 256):
        batch = [" ".join((t.split() * (words // 40 + 1))[:words]) for t in texts]  # each text has 40 words
        embedder(batch[: embedder.batch_size])  # warm-up
        start = time.perf_counter()
        embedder(batch)
        wall = time.perf_counter() - start
        print(f"{words:>15} {wall:>7.2f}s {n / wall:>8.1f} {wall / n * 1e3:>8.2f}")
    print()


if __name__ == "__main__":
    raise SystemExit(main())
