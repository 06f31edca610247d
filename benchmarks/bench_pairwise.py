"""CPU cost of the pairwise embedding metrics at scale, against the earlier computations, in the same run.

Run from the repository root::

    python benchmarks/bench_pairwise.py           # 20,000 x 384 nearest neighbours, Vendi at 1,000 x 1,024
    python benchmarks/bench_pairwise.py --smoke   # tiny sizes (CI)

Target: nearest neighbours of 20,000 × 384 embeddings in at most 2 s of CPU. The earlier search computed
every pair twice in float64; ours computes each pair once in float32 tiles (see
``nearest_neighbor_distances``). Vendi with q = 2 needs no eigenproblem (the Frobenius norm of the kernel);
q = 1 still solves one (its cost is O(min(n, dim)^3), printed beside it). CPU time
(``time.process_time``), best of 3, BLAS on one thread.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from qdc_trainer.metrics import nearest_neighbor_distances, vendi_score


def earlier_nearest(x: np.ndarray, chunk_size: int = 2048) -> np.ndarray:
    """``nearest_neighbor_distances`` as it was: float64, every pair computed for both its rows."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    nearest = np.empty(len(x))
    for start in range(0, len(x), chunk_size):
        sim = x[start : start + chunk_size] @ x.T
        rows = np.arange(sim.shape[0])
        sim[rows, start + rows] = -np.inf
        nearest[start : start + chunk_size] = 1.0 - sim.max(axis=1)
    return np.clip(nearest, 0.0, 2.0)


def earlier_vendi(x: np.ndarray, q: float) -> float:
    """Vendi through the eigenvalues (the earlier path for every q)."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    n, d = x.shape
    eigenvalues = np.clip(np.linalg.eigvalsh(((x.T @ x) if n > d else (x @ x.T)) / n), 0, None)
    p = eigenvalues / eigenvalues.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum())) if q == 1 else float(1.0 / (p**q).sum()) ** (1 / (q - 1))


def best(fn, repeats=3):
    out, result = float("inf"), None
    for _ in range(repeats):
        start = time.process_time()
        result = fn()
        out = min(out, time.process_time() - start)
    return out, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the benchmark still runs")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    n, d = (2_000, 64) if args.smoke else (20_000, 384)
    vn, vd = (200, 256) if args.smoke else (1_000, 1_024)
    print("Pairwise embedding metrics, CPU time, one BLAS thread")
    with threadpool_limits(limits=1):
        x = rng.normal(size=(n, d))
        ours, got = best(lambda: nearest_neighbor_distances(x))
        earlier, want = best(lambda: earlier_nearest(x), 1)
        print(
            f"nearest neighbours {n:,} x {d}: ours {ours:.2f}s, earlier {earlier:.2f}s ({earlier / ours:.1f}x), "
            f"max |difference| {np.abs(got - want).max():.1e} (target <= 2 s: {'ok' if ours <= 2 else 'MISSED'})"
        )
        y = rng.normal(size=(vn, vd))
        for q in (2, 1):
            ours, got = best(lambda: vendi_score(y, q=q))
            earlier, want = best(lambda: earlier_vendi(y, q))
            print(
                f"vendi_score q={q} {vn:,} x {vd:,}: ours {ours:.3f}s, eigenvalues {earlier:.3f}s "
                f"({earlier / ours:.1f}x), relative difference {abs(got - want) / want:.1e}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
