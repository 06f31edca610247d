"""CPU cost of the rollout measures and of the generation monitor's measurement, against the way they were
computed before (each collection on its own, with the public metrics), in the same run.

Run from the repository root::

    python benchmarks/bench_rollout.py           # GRPO's sizes: 32 x 16 x 512 and 64 x 16 x 1,024 words; ~1 min
    python benchmarks/bench_rollout.py --smoke   # tiny sizes, a few seconds (CI)

Targets (full sizes): rollout measures at most 0.25 µs of CPU per token; the generation monitor's measurement
at most 1.5 µs per sample-token. Section 1 also measures the texts split by Python (``str.split`` and a dict
pass, as before the NumPy split) and as token-id arrays. Section 2 also compares the compression ratio at gzip
level 6 (its definition now) with level 9 (before), on the monitor's batches and over collections from copies to
independent texts. Section 3 times what the generation path itself waits for the rollout monitor
(``RolloutMonitorCallback.observe``), measuring in the background thread (the default) or inline, and how much a
stand-in for the training that goes on meanwhile (many small torch operations, as a GPU step launches kernels)
is slowed by sharing the interpreter with the background measurement (wall time; a worst case: the stand-in
holds the interpreter almost all the time, where a GPU step mostly waits on the device).

A "token" is a whitespace word of the synthetic completions (groups of near-copies: each completion redraws 30% of
its group's words from a Zipf vocabulary of 5,000, and has 70-100% of the group's length), so a 1,024-token
completion has 1,024 words here, more than a 1,024-token one of a model's tokenizer. Every figure is CPU time
(``time.process_time``), the best of ``--repeats`` runs, and each run also checks that the values equal the earlier
computation's, bit for bit. The exit code is 0 even when a target is missed (this is a report)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from qdc_trainer.callbacks.generation_metrics import TEXT_METRICS, measure_generations
from qdc_trainer.callbacks.rollout import RolloutMonitorCallback
from qdc_trainer.grpo import Rollouts
from qdc_trainer.metrics import _inputs, compression_ratio, distinct_n, grouped_diversity, repetition_rate, self_bleu
from qdc_trainer.metrics.rollout import rollout_measures

FULL_ROLLOUT = [(32, 16, 512), (64, 16, 1024)]
SMOKE_ROLLOUT = [(4, 4, 32)]
FULL_MONITOR = [(16, 4, 48), (256, 8, 256)]
SMOKE_MONITOR = [(4, 2, 16)]


def completions(prompts: int, k: int, words: int, seed: int = 0, redraw_share: float = 0.3) -> list[str]:
    """``prompts`` groups of ``k`` near-copies of ``words`` words, each redrawing ``redraw_share`` of its group's
    words (see the module docstring)."""
    rng = np.random.default_rng(seed)
    vocab = 5000
    p = 1.0 / np.arange(1, vocab + 1) ** 1.1
    p /= p.sum()
    lexicon = np.array([f"w{i}" for i in range(vocab)])
    out = []
    for _ in range(prompts):
        base = rng.choice(vocab, size=words, p=p)
        for _ in range(k):
            text = base.copy()
            redraw = rng.random(words) < redraw_share
            text[redraw] = rng.choice(vocab, size=int(redraw.sum()), p=p)
            out.append(" ".join(lexicon[text[: int(words * rng.uniform(0.7, 1.0))]]))
    return out


def earlier_rollout_text_measures(texts: list[str], k: int) -> dict[str, float]:
    """The text measures of ``rollout_measures`` as computed before: each group and each across-prompt
    collection on its own (``grouped_diversity`` with ``distinct_n`` and ``self_bleu``)."""
    groups = [texts[i : i + k] for i in range(0, len(texts), k)]
    out = {}
    for name, metric in (("distinct_2", lambda t: distinct_n(t, 2)), ("self_bleu", self_bleu)):
        both = grouped_diversity(groups, metric)
        out[f"per_prompt/{name}"], out[f"across_prompt/{name}"] = both.per_input, both.across_input
    return out


def earlier_monitor_measures(groups: list[list[str]]) -> dict[str, float]:
    """The text measures of ``measure_generations`` as computed before: each metric on each collection on its
    own, the texts tokenized again for each, and the compression ratio at gzip level 9 (the default then)."""
    out = {}
    earlier = {**TEXT_METRICS, "compression_ratio": lambda t: compression_ratio(t, level=9)}
    for name, metric in earlier.items():
        result = grouped_diversity(groups, metric)
        out[f"per_input/{name}"], out[f"across_input/{name}"] = result.per_input, result.across_input
    flat = [t for g in groups for t in g]
    out["length"] = float(np.mean([len(t.split()) for t in flat]))
    out["repetition"] = float(repetition_rate(flat, n=3).mean())
    return out


def with_python_split(fn: Callable[..., dict[str, float]], *args: object) -> dict[str, float]:
    """``fn(*args)`` with texts split by ``str.split`` and a dict pass, as before the NumPy split."""
    threshold = _inputs.NUMPY_SPLIT_MIN_CHARS
    _inputs.NUMPY_SPLIT_MIN_CHARS = float("inf")
    try:
        return fn(*args)
    finally:
        _inputs.NUMPY_SPLIT_MIN_CHARS = threshold


def level_agreement(k: int, words: int, rates: int) -> tuple[np.ndarray, np.ndarray]:
    """Compression ratios at gzip levels 6 and 9 of collections of ``k`` completions of up to ``words`` words
    that redraw a share from 0 (copies) to 1 (independent texts) of their group's words, three per share."""
    six, nine = [], []
    for i, share in enumerate(np.repeat(np.linspace(0.0, 1.0, rates), 3)):
        texts = completions(1, k, words, seed=100 + i, redraw_share=share)
        six.append(compression_ratio(texts, level=6))
        nine.append(compression_ratio(texts, level=9))
    return np.array(six), np.array(nine)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (no ties expected among these ratios)."""
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


def best_cpu(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.process_time()
        result = fn()
        best = min(best, time.process_time() - start)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the benchmark still runs")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the best is kept")
    args = parser.parse_args(argv)
    repeats = 1 if args.smoke else args.repeats
    print(f"Rollout and generation-monitor measures ({'smoke' if args.smoke else 'full'} sizes), CPU time")
    print()
    print("1. rollout_measures (target <= 0.25 µs per token)")
    print(
        f"{'prompts x k x words':>22} {'tokens':>9} {'ours':>9} {'µs/token':>9} {'earlier':>9} {'µs/token':>9} "
        f"{'speed-up':>9} {'values':>10}"
    )
    for prompts, k, words in SMOKE_ROLLOUT if args.smoke else FULL_ROLLOUT:
        texts = completions(prompts, k, words)
        rewards = np.random.default_rng(1).integers(0, 2, len(texts)).astype(float)
        tokens = sum(len(t.split()) for t in texts)
        ours, got = best_cpu(lambda: rollout_measures(texts, rewards, k), repeats)
        earlier, want = best_cpu(lambda: earlier_rollout_text_measures(texts, k), repeats)
        same = all(got[key] == value for key, value in want.items())
        print(
            f"{f'{prompts} x {k} x {words}':>22} {tokens:>9,} {ours:>8.3f}s {ours / tokens * 1e6:>9.3f} "
            f"{earlier:>8.3f}s {earlier / tokens * 1e6:>9.3f} {earlier / ours:>8.1f}x "
            f"{'identical' if same else 'DIFFER':>10}"
        )
        python_split, got_python = best_cpu(lambda: with_python_split(rollout_measures, texts, rewards, k), repeats)
        print(
            f"{'  texts, Python split':>22} {tokens:>9,} {python_split:>8.3f}s {python_split / tokens * 1e6:>9.3f} "
            f"{'':>9} {'':>9} {earlier / python_split:>8.1f}x {'identical' if got_python == got else 'DIFFER':>10}"
        )
        # the same completions as token ids (word "w<i>" is id i), as GRPO holds them: no whitespace split
        ids = [np.array([int(w[1:]) for w in t.split()], dtype=np.int64) for t in texts]
        with_ids, got_ids = best_cpu(lambda: rollout_measures(ids, rewards, k), repeats)
        print(
            f"{'  as token-id arrays':>22} {tokens:>9,} {with_ids:>8.3f}s {with_ids / tokens * 1e6:>9.3f} "
            f"{'':>9} {'':>9} {earlier / with_ids:>8.1f}x {'identical' if got_ids == got else 'DIFFER':>10}"
        )
    print()
    print("2. generation monitor: measure_generations (target <= 1.5 µs per sample-token)")
    print("   (earlier: gzip level 9; values: every key but the compression ratio, which is now at level 6)")
    print(
        f"{'prompts x k x words':>22} {'tokens':>9} {'ours':>9} {'µs/token':>9} {'earlier':>9} {'µs/token':>9} "
        f"{'speed-up':>9} {'values':>10} {'gzip share':>10} {'ratio vs level 9':>17}"
    )
    for prompts, k, words in SMOKE_MONITOR if args.smoke else FULL_MONITOR:
        texts = completions(prompts, k, words, seed=2)
        groups = [texts[i : i + k] for i in range(0, len(texts), k)]
        tokens = sum(len(t.split()) for t in texts)
        ours, got = best_cpu(lambda: measure_generations(groups), repeats)
        earlier, want = best_cpu(lambda: earlier_monitor_measures(groups), repeats)
        same = all(got[key] == value for key, value in want.items() if not key.endswith("compression_ratio"))
        ratio_change = max(abs(got[key] / want[key] - 1) for key in want if key.endswith("compression_ratio"))
        gzip_only, _ = best_cpu(lambda: grouped_diversity(groups, TEXT_METRICS["compression_ratio"]), repeats)
        print(
            f"{f'{prompts} x {k} x {words}':>22} {tokens:>9,} {ours:>8.3f}s {ours / tokens * 1e6:>9.3f} "
            f"{earlier:>8.3f}s {earlier / tokens * 1e6:>9.3f} {earlier / ours:>8.1f}x "
            f"{'identical' if same else 'DIFFER':>10} {gzip_only / ours:>9.0%} {ratio_change:>16.2%}"
        )
    print()
    print("   the compression ratio at level 6 against level 9, over collections from copies to independent texts")
    print(f"{'k x words':>22} {'collections':>12} {'mean change':>12} {'largest':>8} {'Spearman':>9}")
    for k, words in [(4, 16)] if args.smoke else [(4, 48), (8, 256), (64, 256)]:
        six, nine = level_agreement(k, words, rates=5 if args.smoke else 21)
        change = six / nine - 1
        print(
            f"{f'{k} x {words}':>22} {len(six):>12} {change.mean():>+11.2%} {change[np.argmax(abs(change))]:>+8.2%} "
            f"{spearman(six, nine):>9.4f}"
        )
    print()
    print("3. the rollout monitor on the generation path: wall time of observe(), and of a stand-in training step")
    print(
        f"{'prompts x k x words':>22} {'inline':>9} {'background':>11} {'step alone':>11} {'step + bg':>10} "
        f"{'step slowed':>12}"
    )
    for prompts, k, words in SMOKE_ROLLOUT if args.smoke else FULL_ROLLOUT:
        texts = completions(prompts, k, words)
        rollouts = Rollouts([""] * len(texts), texts, np.ones(len(texts)), k, None, 0)
        inline = background = alone = shared = float("inf")
        for _ in range(repeats):
            monitor = RolloutMonitorCallback(background=False)
            start = time.perf_counter()
            monitor.observe(rollouts)
            inline = min(inline, time.perf_counter() - start)
        iterations = max(1, int(2 * inline / 20e-6))  # a step about twice the measurement's length
        for _ in range(repeats):
            alone = min(alone, training_standin(iterations))
            monitor = RolloutMonitorCallback()
            start = time.perf_counter()
            monitor.observe(rollouts)
            background = min(background, time.perf_counter() - start)
            shared = min(shared, training_standin(iterations))  # runs while the measurement does
            monitor.collect()
            monitor.on_train_end(None, None, None)
        print(
            f"{f'{prompts} x {k} x {words}':>22} {inline:>8.3f}s {background * 1e3:>9.2f}ms {alone:>10.3f}s "
            f"{shared:>9.3f}s {shared - alone:>+11.3f}s"
        )
    return 0


def training_standin(iterations: int) -> float:
    """Wall time of ``iterations`` small torch operations: a stand-in for the Python thread of a training step,
    which launches many small kernels."""
    import torch

    x = torch.ones(64, 64)
    start = time.perf_counter()
    for _ in range(iterations):
        x = x * 1.0000001 + 0.0
    return time.perf_counter() - start


if __name__ == "__main__":
    raise SystemExit(main())
