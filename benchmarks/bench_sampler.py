"""Speed and memory of QDCSampler against torch's samplers, and QDCTrainer's per-step overhead.

Run from the repository root::

    python benchmarks/bench_sampler.py           # full sizes (N up to 1e8): about 5 minutes, 8 GB of RAM at most
    python benchmarks/bench_sampler.py --smoke   # tiny sizes, under half a minute (CI)

Every comparison times QDC and its baseline in the same run, on the same
synthetic data (seeded), one measurement at a time with the memory of the
previous one freed.

Targets (full sizes):

* Drawing a whole epoch of indices by iterating the sampler (a Python loop that
  counts the indices, as the DataLoader's batch sampler consumes them) at
  N = 1e5, 1e7 and 1e8: QDCSampler (quality, complexity and 1,000 clusters,
  ``block_size`` 4096) within 3x of ``torch.utils.data.RandomSampler``. QDC and
  RandomSampler epochs alternate, so that load from other processes hits both.
  ``block_size`` 65536, ``block_size`` 4096 with one torch thread (the blocks'
  draws once used a multi-threaded ``torch.searchsorted``; now a guide table on
  the calling thread) and ``WeightedRandomSampler`` with the same weights
  (``sampler.probabilities()``) are reported without a target;
  ``WeightedRandomSampler`` cannot draw from more than 2**24 categories
  (``torch.multinomial``), and that failure is shown, not hidden.
* Draws: the guide table (``qdc_trainer/data/draws.py``) against the earlier
  binary search on the same sampler: an epoch each, one 320-index block at two
  torch threads, and a check that both give the same indices (N <= 1e7).
* Memory: the peak resident-memory growth while the sampler is built, divided
  by N, at most 32 bytes per example (N >= 1e7; smaller N are dominated by
  allocator noise). The memory retained after construction and the bytes of
  the sampler's own per-example arrays are printed beside it.
* Per-step training time of a tiny GPT-2 (``tests/helpers.py``) under
  ``QDCTrainer`` + ``QDCSampler`` (quality and cluster columns, default
  ``update_every``) against the plain ``transformers.Trainer`` on the same data,
  batch size and number of steps: overhead under 2% (``log_entropy=False``: the
  cost of ``qdc/train/entropy`` is measured by ``bench_monitor.py``). Runs alternate (plain,
  QDC, plain, QDC, ...); each kind's figure is the mean over the steady-state
  steps of that step's fastest time across its runs (every run of a kind trains
  on the same batches), which keeps bursts of outside load out; one extra,
  instrumented QDC run measures the sampler's own share
  (record, update, drawing blocks, per-example losses). The tiny model makes
  every fixed per-step cost look large: on a real model the same absolute
  overhead is a far smaller share of a step.

The online update (``record`` of one window of 10 steps x 256 examples, then
``update()``, the full refresh over N), its peak memory, and the construction
are measured without a target. The training comparison runs with one torch
thread (``--train-threads``): on a small shared machine intra-op threads make
single steps jump by milliseconds.

Fast calls are timed best of 3; a call that takes longer than
``--single-run-above`` seconds (default 5) is run once and its time is marked
``*``. The exit code is 0 even when a target is missed (this is a report).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import math
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # benchmark the working tree, installed or not

import qdc_trainer.trainer as qdc_trainer_module  # noqa: E402
from qdc_trainer import QDCSampler, QDCSamplerConfig, QDCTrainer  # noqa: E402

SEED = 20240601
NUM_CLUSTERS = 1_000
CHUNK = 1 << 22  # rows per chunk when building the synthetic columns

TARGET_ITERATION = 3.0  # QDC / RandomSampler epoch time, at most
TARGET_BYTES_PER_EXAMPLE = 32.0  # peak RSS growth while building, at most
TARGET_OVERHEAD_PERCENT = 2.0  # QDCTrainer vs Trainer steady-state time per step, below
MEMORY_TARGET_MIN_N = 10_000_000  # below this the RSS figures are allocator noise

UPDATE_STEPS = 10  # one online-update window: steps x examples
UPDATE_BATCH = 256


@dataclass(frozen=True)
class Sizes:
    sampler_n: tuple[int, ...]
    block_sizes: tuple[int, ...]
    texts: int  # training examples for the Trainer comparison
    text_words: int  # every text has this many words (equal lengths: padding never differs between runs)
    steps: int
    batch_size: int
    warmup_steps: int  # step times before this are not steady state
    rounds: int  # alternating plain/QDC runs; the best of each counts


FULL = Sizes(
    sampler_n=(100_000, 10_000_000, 100_000_000),
    block_sizes=(4096, 65536),
    texts=400,
    text_words=32,
    steps=60,
    batch_size=8,
    warmup_steps=10,
    rounds=5,
)
SMOKE = Sizes(
    sampler_n=(10_000, 100_000),
    block_sizes=(4096, 65536),
    texts=100,
    text_words=32,
    steps=20,
    batch_size=8,
    warmup_steps=5,
    rounds=2,
)


# --------------------------------------------------------------------------- timing, memory, results


@dataclass(frozen=True)
class Timing:
    seconds: float  # best of the runs
    runs: int
    value: Any = None  # the value returned by the last run


def timed(fn: Callable[[int], Any], repeat: int = 3, single_run_above: float = 5.0) -> Timing:
    """Best wall time (``time.perf_counter``) of up to ``repeat`` calls ``fn(run)``; one call if it is slow."""
    best = math.inf
    value = None
    runs = 0
    for run in range(repeat):
        gc.collect()
        start = time.perf_counter()
        value = fn(run)
        best = min(best, time.perf_counter() - start)
        runs += 1
        if best > single_run_above:
            break
    return Timing(best, runs, value)


def consume(indices: Iterator[int]) -> int:
    """Iterate to the end, one index at a time (as ``BatchSampler`` does), storing nothing; return the count."""
    count = 0
    for _ in indices:
        count += 1
    return count


def _status_bytes(name: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def current_rss() -> int:
    """Resident set size of this process now (psutil, else /proc/self/status, else the peak from resource)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    rss = _status_bytes("VmRSS")
    if rss is not None:
        return rss
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # kB on Linux; a peak, not current


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return _status_bytes("VmHWM") is not None


class RssPoller:
    """Fallback peak tracker: polls the RSS every millisecond in a thread (misses very short peaks)."""

    def __init__(self) -> None:
        self.peak = current_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, current_rss())

    def __enter__(self) -> RssPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())


@dataclass(frozen=True)
class Memory:
    peak: int  # bytes of RSS growth at the peak of construction
    retained: int  # bytes of RSS growth after construction
    arrays: int  # bytes of the sampler's own per-example numpy arrays
    method: str


def measured_build(build: Callable[[], Any], n: int) -> tuple[Any, float, Memory]:
    """Build the sampler once, measuring its wall time and the resident memory it adds (peak and retained)."""
    gc.collect()
    before = current_rss()
    if reset_peak_rss():
        start = time.perf_counter()
        sampler = build()
        seconds = time.perf_counter() - start
        peak, method = _status_bytes("VmHWM") or 0, "VmHWM (peak reset through /proc/self/clear_refs)"
    else:
        with RssPoller() as poller:
            start = time.perf_counter()
            sampler = build()
            seconds = time.perf_counter() - start
        peak, method = poller.peak, "RSS polled every 1 ms"
    gc.collect()
    after = current_rss()
    arrays = sum(v.nbytes for v in vars(sampler).values() if isinstance(v, np.ndarray) and v.size >= n)
    return sampler, seconds, Memory(max(peak, after) - before, after - before, arrays, method)


@dataclass
class Row:
    metric: str
    size: str
    ours: str  # formatted figure
    baseline: str = "-"
    ratio: str = "-"
    target: str = "-"
    result: str = "-"  # PASS / MISS / -
    note: str = ""


def format_seconds(timing: Timing | None) -> str:
    if timing is None:
        return "-"
    mark = "*" if timing.runs == 1 else ""
    return f"{timing.seconds:.4f}{mark}" if timing.seconds < 10 else f"{timing.seconds:.2f}{mark}"


def n_label(n: int) -> str:
    exponent = int(round(math.log10(n)))
    return f"N=1e{exponent}" if 10**exponent == n else f"N={n:,}"


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def print_table(rows: list[Row], header: list[str]) -> None:
    table = [[r.metric, r.size, r.ours, r.baseline, r.ratio, r.target, r.result, r.note] for r in rows]
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header) - 1)]
    numeric = {2, 3, 4, 5}

    def line(cells: list[str]) -> str:
        out = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join([*out, cells[-1]]).rstrip()

    print(line(header))
    print(line(["-" * w for w in widths] + ["-" * 6]))
    for cells in table:
        print(line(cells))


# --------------------------------------------------------------------------- synthetic data


def make_columns(n: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """float32 quality (normal) and complexity (gamma), int32 cluster ids over 1,000 clusters of
    Zipf-like sizes (cluster r has probability proportional to 1 / (r + 10)); built in chunks."""
    rng = np.random.default_rng(seed)
    cluster_p = 1.0 / (np.arange(NUM_CLUSTERS) + 10.0)
    cluster_p /= cluster_p.sum()
    quality = np.empty(n, dtype=np.float32)
    complexity = np.empty(n, dtype=np.float32)
    clusters = np.empty(n, dtype=np.int32)
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        quality[lo:hi] = rng.standard_normal(hi - lo, dtype=np.float32)
        complexity[lo:hi] = rng.gamma(2.0, 1.0, hi - lo)
        clusters[lo:hi] = rng.choice(NUM_CLUSTERS, size=hi - lo, p=cluster_p)
    return {"quality": quality, "complexity": complexity, "clusters": clusters}


def make_texts(n_texts: int, words: list[str], length: int, seed: int = SEED) -> list[str]:
    rng = np.random.default_rng(seed)
    vocabulary = np.array(words)
    return [" ".join(vocabulary[rng.integers(0, len(vocabulary), size=length)]) for _ in range(n_texts)]


def load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- 1. the sampler alone


@dataclass
class SamplerResult:
    n: int
    qdc: dict[int, Timing] = field(default_factory=dict)  # block size -> epoch time
    qdc_one_thread: Timing | None = None  # first block size, torch.set_num_threads(1)
    random: Timing | None = None
    weighted: Timing | None = None
    weighted_error: str = ""
    build: float = 0.0
    memory: Memory | None = None
    window: Timing | None = None  # record x UPDATE_STEPS + update
    record_share: float = 0.0  # seconds of record within the best window
    update_peak: int | None = None  # bytes of RSS growth at the peak of update() (transient)
    refresh_stats: str = ""


def bench_sampler_at(n: int, sizes: Sizes, single: float) -> SamplerResult:
    result = SamplerResult(n)
    label = n_label(n)

    progress(f"{label}: synthetic columns (float32 quality/complexity, int32 clusters)")
    columns = make_columns(n)
    progress(f"{label}: building QDCSampler")
    sampler, result.build, result.memory = measured_build(
        lambda: QDCSampler(
            n,
            quality=columns["quality"],
            complexity=columns["complexity"],
            clusters=columns["clusters"],
            block_size=sizes.block_sizes[0],
            config=QDCSamplerConfig(seed=SEED % 1000),
        ),
        n,
    )
    del columns
    gc.collect()

    # The epoch timings are interleaved (QDC, RandomSampler, QDC other settings, then the next repeat), so that a
    # burst of load from other processes hits both sides of a ratio alike.
    threads = torch.get_num_threads()
    uniform = torch.utils.data.RandomSampler(range(n), generator=torch.Generator().manual_seed(SEED))

    def qdc_epoch(block_size: int, torch_threads: int) -> Callable[[int], int]:
        def epoch(run: int) -> int:
            sampler.block_size = block_size
            sampler.set_epoch(run + 1)  # a fresh stream every repeat
            torch.set_num_threads(torch_threads)
            try:
                return consume(iter(sampler))
            finally:
                torch.set_num_threads(threads)

        return epoch

    first = sizes.block_sizes[0]
    cases: list[tuple[str, Any, Callable[[int], int]]] = [
        (f"QDCSampler block {first}", first, qdc_epoch(first, threads)),
        ("RandomSampler", "random", lambda run: consume(iter(uniform))),
    ]
    cases += [(f"QDCSampler block {bs}", bs, qdc_epoch(bs, threads)) for bs in sizes.block_sizes[1:]]
    if threads > 1:  # diagnostic: torch's intra-op threads on small blocks
        cases.append((f"QDCSampler block {first}, 1 torch thread", "one_thread", qdc_epoch(first, 1)))
    best: dict[Any, float] = {}
    runs: dict[Any, int] = {}
    for run in range(3):
        for name, key, fn in cases:
            if best.get(key, 0.0) > single:
                continue  # slow: timed once
            progress(f"{label}: epoch with {name} (repeat {run + 1})")
            gc.collect()
            start = time.perf_counter()
            count = fn(run)
            seconds = time.perf_counter() - start
            if count != n:
                raise AssertionError(f"{name} yielded {count} indices, expected {n}")
            best[key] = min(best.get(key, math.inf), seconds)
            runs[key] = runs.get(key, 0) + 1
    for _, key, _ in cases:
        timing = Timing(best[key], runs[key], n)
        if key == "random":
            result.random = timing
        elif key == "one_thread":
            result.qdc_one_thread = timing
        else:
            result.qdc[key] = timing
    del uniform
    gc.collect()

    progress(f"{label}: online update (record {UPDATE_STEPS} x {UPDATE_BATCH}, then update())")
    rng = np.random.default_rng(SEED)
    best = (math.inf, 0.0, 0.0)
    for run in range(3):
        indices = sampler.draw_block(0, 1_000_000 + run, UPDATE_STEPS * UPDATE_BATCH)  # what training would draw
        losses = rng.gamma(4.0, 0.5, size=len(indices)).astype(np.float32)
        gc.collect()
        start = time.perf_counter()
        for step in range(UPDATE_STEPS):
            part = slice(step * UPDATE_BATCH, (step + 1) * UPDATE_BATCH)
            sampler.record(indices[part], losses[part])
        record_seconds = time.perf_counter() - start
        before = current_rss()  # for the refresh's peak memory; kept out of the timing
        peak_ok = reset_peak_rss()
        start = time.perf_counter()
        sampler.update()
        update_seconds = time.perf_counter() - start
        if peak_ok:
            result.update_peak = max(result.update_peak or 0, (_status_bytes("VmHWM") or 0) - before)
        if record_seconds + update_seconds < best[0]:
            best = (record_seconds + update_seconds, record_seconds, update_seconds)
        if best[0] > single:
            break
    result.window = Timing(best[0], run + 1)
    result.record_share = best[1]
    stats = sampler.telemetry(reset=True)
    result.refresh_stats = (
        f"ESS/N {stats['qdc/sampler/ess_ratio']:.3f}, "
        f"entropy {stats['qdc/sampler/weight_entropy']:.4f}, "
        f"updates {int(stats['qdc/sampler/updates'])}"
    )

    weights = torch.from_numpy(sampler.probabilities())
    del sampler
    gc.collect()

    progress(f"{label}: WeightedRandomSampler (same weights, replacement=True)")
    weighted = torch.utils.data.WeightedRandomSampler(
        weights, num_samples=n, replacement=True, generator=torch.Generator().manual_seed(SEED)
    )
    try:
        result.weighted = timed(lambda run: consume(iter(weighted)), single_run_above=single)
    except RuntimeError as error:
        result.weighted_error = str(error).strip().splitlines()[0]
    del weighted, weights
    gc.collect()

    return result


def earlier_draw_block(sampler: QDCSampler, epoch: int, block: int, size: int) -> np.ndarray:
    """``QDCSampler.draw_block`` before the guide table: a binary search with ``torch.searchsorted``."""
    seed = np.random.SeedSequence([sampler.config.seed, int(epoch), int(block)]).generate_state(1, np.uint64)[0]
    generator = torch.Generator().manual_seed(int(seed) & ((1 << 63) - 1))
    u = torch.rand(size, generator=generator, dtype=torch.float64) * float(sampler._cdf[-1])
    idx = torch.searchsorted(torch.from_numpy(sampler._cdf), u, right=True)
    return idx.clamp_(max=sampler.num_examples - 1).numpy()


def bench_draws(n: int) -> None:
    """Draws through the guide table against the earlier binary search, on the same sampler: an epoch (block
    4096) and one 320-index block with torch at 2 threads (best of 200), and the two streams compared."""
    columns = make_columns(n)
    sampler = QDCSampler(
        n,
        quality=columns["quality"],
        complexity=columns["complexity"],
        clusters=columns["clusters"],
        block_size=4096,
        config=QDCSamplerConfig(seed=SEED % 1000),
    )
    del columns
    uniform = torch.utils.data.RandomSampler(range(n), generator=torch.Generator().manual_seed(SEED))
    ours_draw = sampler.draw_block
    same = all(np.array_equal(ours_draw(0, b, 4096), earlier_draw_block(sampler, 0, b, 4096)) for b in range(0, 50, 7))
    best = {"ours": math.inf, "earlier": math.inf, "random": math.inf}
    for run in range(3):
        for key in best:
            sampler.set_epoch(run + 1)
            if key == "earlier":
                sampler.draw_block = lambda e, b, size: earlier_draw_block(sampler, e, b, size)
            start = time.perf_counter()
            consume(iter(uniform) if key == "random" else iter(sampler))
            best[key] = min(best[key], time.perf_counter() - start)
            sampler.draw_block = ours_draw
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    block = {}
    for key, draw in (("ours", ours_draw), ("earlier", lambda e, b, size: earlier_draw_block(sampler, e, b, size))):
        times = []
        for b in range(200):
            start = time.perf_counter()
            draw(0, b, 320)
            times.append(time.perf_counter() - start)
        block[key] = min(times), float(np.median(times))
    torch.set_num_threads(threads)
    print(
        f"  draws at {n_label(n)}: epoch / RandomSampler: guide table {best['ours'] / best['random']:.2f}x, "
        f"earlier binary search {best['earlier'] / best['random']:.2f}x (RandomSampler {best['random']:.3f}s); "
        f"320-index block at 2 torch threads, best / median: {block['ours'][0] * 1e6:.0f} / "
        f"{block['ours'][1] * 1e6:.0f} µs, earlier {block['earlier'][0] * 1e6:.0f} / {block['earlier'][1] * 1e6:.0f} "
        f"µs; streams {'identical' if same else 'DIFFER'}"
    )


def sampler_rows(results: list[SamplerResult], sizes: Sizes) -> list[Row]:
    rows: list[Row] = []
    for res in results:
        size = n_label(res.n)
        base = res.random
        for block_size, timing in res.qdc.items():
            ratio = timing.seconds / base.seconds if base else None
            realistic = block_size == sizes.block_sizes[0]
            rows.append(
                Row(
                    f"epoch: QDCSampler block {block_size} vs RandomSampler",
                    size,
                    format_seconds(timing),
                    format_seconds(base),
                    f"{ratio:.2f}x" if ratio else "-",
                    f"<={TARGET_ITERATION:g}x" if realistic else "-",
                    ("PASS" if ratio <= TARGET_ITERATION else "MISS") if realistic and ratio else "-",
                    f"{timing.seconds / res.n * 1e9:.0f} ns/index",
                )
            )
        if res.qdc_one_thread is not None:
            timing = res.qdc_one_thread
            ratio = timing.seconds / base.seconds
            rows.append(
                Row(
                    f"epoch: QDCSampler block {sizes.block_sizes[0]}, 1 torch thread",
                    size,
                    format_seconds(timing),
                    format_seconds(base),
                    f"{ratio:.2f}x",
                    note=f"{timing.seconds / res.n * 1e9:.0f} ns/index; "
                    "diagnostic (RandomSampler row at default threads)",
                )
            )
        if res.weighted is not None:
            ratio = res.weighted.seconds / base.seconds
            rows.append(
                Row(
                    "epoch: WeightedRandomSampler vs RandomSampler",
                    size,
                    format_seconds(res.weighted),
                    format_seconds(base),
                    f"{ratio:.2f}x",
                    note="same weights (probabilities())",
                )
            )
        else:
            rows.append(
                Row(
                    "epoch: WeightedRandomSampler vs RandomSampler",
                    size,
                    "fails",
                    format_seconds(base),
                    note=f"fails: {res.weighted_error}",
                )
            )
        if res.window is not None:
            update = res.window.seconds - res.record_share
            rows.append(
                Row(
                    f"online update: record {UPDATE_STEPS}x{UPDATE_BATCH} + update()",
                    size,
                    format_seconds(res.window),
                    note=(
                        f"record {res.record_share * 1e3:.2f} ms + update {update * 1e3:.1f} ms "
                        f"({update / res.n * 1e9:.1f} ns/example); {res.window.seconds / UPDATE_STEPS * 1e3:.1f} ms "
                        f"per training step amortised"
                    ),
                )
            )
        rows.append(
            Row(
                "build QDCSampler (q, c, 1,000 clusters)",
                size,
                f"{res.build:.4f}",
                note=f"{res.build / res.n * 1e9:.1f} ns/example",
            )
        )
        if res.memory is not None:
            mem = res.memory
            peak = mem.peak / res.n
            judged = res.n >= MEMORY_TARGET_MIN_N
            rows.append(
                Row(
                    "memory: peak RSS growth while building",
                    size,
                    f"{peak:.2f} B/ex",
                    target=f"<={TARGET_BYTES_PER_EXAMPLE:g} B/ex",
                    result=("PASS" if peak <= TARGET_BYTES_PER_EXAMPLE else "MISS") if judged else "-",
                    note=(
                        f"{mem.peak / 2**20:,.1f} MiB; retained after build {mem.retained / res.n:.1f} B/ex; "
                        f"sampler's per-example arrays {mem.arrays / res.n:.1f} B/ex"
                        + ("" if judged else "; small N: allocator noise, not judged")
                    ),
                )
            )
        if res.update_peak is not None:
            rows.append(
                Row(
                    "memory: peak RSS growth during update()",
                    size,
                    f"{res.update_peak / res.n:.2f} B/ex",
                    note=f"{res.update_peak / 2**20:,.1f} MiB of temporaries on top of the sampler's arrays"
                    + ("" if res.n >= MEMORY_TARGET_MIN_N else "; small N: allocator noise"),
                )
            )
        rows.append(Row("weights after the timed updates", size, "-", note=res.refresh_stats))
    return rows


# --------------------------------------------------------------------------- 2. the training step


class StepClock(TrainerCallback):
    """Notes the time at the end of every optimizer step."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.ends = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


class TimedQDCSampler(QDCSampler):
    """QDCSampler with perf_counter accumulators around its methods (only for the instrumented run)."""

    def start_clock(self) -> None:
        self.clock = {"record": 0.0, "update": 0.0, "draw_block": 0.0, "iteration": 0.0}
        self.draws: list[tuple[int, int, int]] = []  # (epoch, block, updates applied when it was drawn)

    def __iter__(self) -> Iterator[int]:
        inner = super().__iter__()
        clock = self.clock
        while True:
            start = time.perf_counter()
            try:
                index = next(inner)
            except StopIteration:
                clock["iteration"] += time.perf_counter() - start
                return
            clock["iteration"] += time.perf_counter() - start
            yield index

    def draw_block(self, epoch: int, block: int, size: int) -> np.ndarray:
        start = time.perf_counter()
        out = super().draw_block(epoch, block, size)
        self.clock["draw_block"] += time.perf_counter() - start
        self.draws.append((int(epoch), int(block), self.num_updates))
        return out

    def record(self, indices: Any, losses: Any) -> None:
        start = time.perf_counter()
        super().record(indices, losses)
        self.clock["record"] += time.perf_counter() - start

    def update(self) -> bool:
        start = time.perf_counter()
        out = super().update()
        self.clock["update"] += time.perf_counter() - start
        return out


@dataclass
class TrainRun:
    kind: str  # "plain" or "qdc"
    intervals: np.ndarray  # seconds between consecutive optimizer-step ends
    runtime: float  # train_runtime reported by the Trainer
    clock: dict[str, float] | None = None
    draws: list[tuple[int, int, int]] | None = None
    block_size: int = 0


MODELS = {"tiny": (2, 32, 2), "small": (4, 128, 4)}  # GPT-2 layers, width, heads


def build_model(helpers: ModuleType, tokenizer: Any, model: str) -> Any:
    from transformers import GPT2LMHeadModel

    layers, width, heads = MODELS[model]
    torch.manual_seed(0)
    config = helpers.tiny_gpt2_config(tokenizer)
    config.n_layer, config.n_embd, config.n_head = layers, width, heads
    return GPT2LMHeadModel(config)


def bench_trainer(sizes: Sizes, threads: int, model_name: str = "tiny") -> tuple[list[TrainRun], TrainRun]:
    import datasets
    import transformers
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore")
    helpers = load_module("_bench_sampler_helpers", REPO_ROOT / "tests" / "helpers.py")
    tokenizer = helpers.build_tokenizer()
    words = [w for w in tokenizer.get_vocab() if not (w.startswith("<") and w.endswith(">"))]
    texts = make_texts(sizes.texts, words, sizes.text_words)
    encoded = tokenizer(texts)
    rng = np.random.default_rng(SEED)
    dataset = datasets.Dataset.from_dict(
        {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "quality": rng.standard_normal(sizes.texts).astype(np.float32),
            "cluster": rng.integers(0, 10, size=sizes.texts).astype(np.int32),
        }
    )
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)

    def run(kind: str, instrumented: bool = False) -> TrainRun:
        model = build_model(helpers, tokenizer, model_name)
        clock = StepClock()
        with tempfile.TemporaryDirectory() as output_dir:
            args = TrainingArguments(
                output_dir=output_dir,
                max_steps=sizes.steps,
                per_device_train_batch_size=sizes.batch_size,
                learning_rate=1e-3,
                logging_strategy="no",
                save_strategy="no",
                eval_strategy="no",
                report_to=[],
                use_cpu=True,
                disable_tqdm=True,
                seed=0,
                dataloader_num_workers=0,
                dataloader_pin_memory=False,
            )
            common = dict(model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[clock])
            sampler = None
            if kind == "plain":
                trainer = Trainer(**common)
            else:
                cls = TimedQDCSampler if instrumented else QDCSampler
                sampler = cls.from_dataset(
                    dataset,
                    quality_column="quality",
                    complexity_column=None,
                    cluster_column="cluster",
                    config=QDCSamplerConfig(seed=0),
                )
                # the sampler's own cost; qdc/train/entropy is measured by bench_monitor.py
                trainer = QDCTrainer(**common, qdc_sampler=sampler, log_entropy=False)
            trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict
            original_loss = qdc_trainer_module.per_example_loss
            if instrumented:
                sampler.start_clock()
                sampler.clock["per_example_loss"] = 0.0

                def timed_loss(*a: Any, **k: Any) -> Any:
                    start = time.perf_counter()
                    out = original_loss(*a, **k)
                    sampler.clock["per_example_loss"] += time.perf_counter() - start
                    return out

                qdc_trainer_module.per_example_loss = timed_loss
                feed_back = trainer._feed_back

                def timed_feed_back(*a: Any, **k: Any) -> Any:
                    start = time.perf_counter()
                    out = feed_back(*a, **k)
                    sampler.clock["feed_back"] += time.perf_counter() - start
                    return out

                sampler.clock["feed_back"] = 0.0
                trainer._feed_back = timed_feed_back
            try:
                output = trainer.train()
            finally:
                qdc_trainer_module.per_example_loss = original_loss
        if len(clock.ends) != sizes.steps:
            raise AssertionError(f"{kind} run took {len(clock.ends)} optimizer steps, expected {sizes.steps}")
        out = TrainRun(kind, np.diff(clock.ends), float(output.metrics["train_runtime"]))
        if instrumented:
            out.clock, out.draws, out.block_size = sampler.clock, sampler.draws, sampler.block_size or 0
        del trainer, model
        gc.collect()
        return out

    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        runs = []
        progress(f"training: warm-up run (not counted), {threads} torch thread(s)")
        run("plain")
        for round_ in range(sizes.rounds):
            for kind in ("plain", "qdc"):
                progress(f"training round {round_ + 1}/{sizes.rounds}: {kind}, {sizes.steps} steps")
                runs.append(run(kind))
        progress("training: instrumented QDC run (the sampler's own share)")
        return runs, run("qdc", instrumented=True)
    finally:
        torch.set_num_threads(saved_threads)


@dataclass(frozen=True)
class StepStats:
    best_per_step: float  # mean over steady steps of the fastest of the rounds at that step
    best_run_mean: float
    best_run_median: float
    best_runtime: float
    run_means: list[float]


def step_stats(runs: list[TrainRun], kind: str, warmup: int) -> StepStats:
    mine = [r for r in runs if r.kind == kind]
    steady = np.stack([r.intervals[max(warmup - 1, 0) :] for r in mine])  # rounds x steady steps
    return StepStats(
        best_per_step=float(steady.min(axis=0).mean()),
        best_run_mean=float(steady.mean(axis=1).min()),
        best_run_median=float(np.median(steady, axis=1).min()),
        best_runtime=min(r.runtime for r in mine),
        run_means=[float(x) for x in steady.mean(axis=1)],
    )


def trainer_report(runs: list[TrainRun], instrumented: TrainRun, sizes: Sizes) -> tuple[list[Row], float]:
    plain = step_stats(runs, "plain", sizes.warmup_steps)
    qdc = step_stats(runs, "qdc", sizes.warmup_steps)

    def pct(a: float, b: float) -> float:
        return (a / b - 1) * 100

    overhead = pct(qdc.best_per_step, plain.best_per_step)
    steady = f"{sizes.steps - sizes.warmup_steps} steps"
    rows = [
        Row(
            "transformers Trainer: ms/step",
            steady,
            f"{plain.best_per_step * 1e3:.3f}",
            note="run means " + ", ".join(f"{m * 1e3:.2f}" for m in plain.run_means),
        ),
        Row(
            "QDCTrainer + QDCSampler: ms/step",
            steady,
            f"{qdc.best_per_step * 1e3:.3f}",
            f"{plain.best_per_step * 1e3:.3f}",
            f"{overhead:+.2f}%",
            f"<{TARGET_OVERHEAD_PERCENT:g}%",
            "PASS" if overhead < TARGET_OVERHEAD_PERCENT else "MISS",
            f"+{(qdc.best_per_step - plain.best_per_step) * 1e6:.0f} us/step; run means "
            + ", ".join(f"{m * 1e3:.2f}" for m in qdc.run_means),
        ),
        Row(
            "  same, best run's mean",
            steady,
            f"{qdc.best_run_mean * 1e3:.3f}",
            f"{plain.best_run_mean * 1e3:.3f}",
            f"{pct(qdc.best_run_mean, plain.best_run_mean):+.2f}%",
        ),
        Row(
            "  same, best run's median",
            steady,
            f"{qdc.best_run_median * 1e3:.3f}",
            f"{plain.best_run_median * 1e3:.3f}",
            f"{pct(qdc.best_run_median, plain.best_run_median):+.2f}%",
        ),
        Row(
            "  same, best train_runtime (s)",
            f"{sizes.steps} steps",
            f"{qdc.best_runtime:.3f}",
            f"{plain.best_runtime:.3f}",
            f"{pct(qdc.best_runtime, plain.best_runtime):+.2f}%",
            note="all steps, including start-up",
        ),
    ]
    clock = instrumented.clock or {}
    per_step = plain.best_per_step
    own = clock.get("record", 0.0) + clock.get("update", 0.0) + clock.get("iteration", 0.0)
    for name, seconds in (
        ("sampler.record", clock.get("record", 0.0)),
        ("sampler.update (every update_every steps)", clock.get("update", 0.0)),
        ("sampler iteration (incl. draw_block)", clock.get("iteration", 0.0)),
        ("  of which draw_block", clock.get("draw_block", 0.0)),
        ("sampler total (record + update + iteration)", own),
        ("per_example_loss (trainer's extra CE pass)", clock.get("per_example_loss", 0.0)),
        ("trainer._feed_back excluding record", clock.get("feed_back", 0.0) - clock.get("record", 0.0)),
    ):
        us = seconds / sizes.steps * 1e6
        rows.append(
            Row(
                f"instrumented QDC run: {name}",
                f"{sizes.steps} steps",
                f"{us:.1f} us/step",
                note=f"{us / (per_step * 1e6) * 100:.2f}% of a plain step",
            )
        )
    return rows, overhead


def staleness_note(run: TrainRun) -> str:
    """How many weight refreshes each block drawn in epoch 0 missed (0 = drawn after the previous block's losses
    were applied)."""
    lags = [block - updates for epoch, block, updates in (run.draws or []) if epoch == 0 and block >= 1]
    if not lags:
        return "block staleness: no block after the first was drawn in epoch 0"
    counts = {lag: lags.count(lag) for lag in sorted(set(lags))}
    text = ", ".join(f"lag {lag}: {count} block(s)" for lag, count in counts.items())
    return (
        f"Block staleness (epoch 0, block_size {run.block_size} = update_every x batch): when block b was drawn, "
        f"b - (updates applied) was {text}; 0 would mean every block saw the previous block's losses."
    )


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, under half a minute: checks the benchmark still runs"
    )
    parser.add_argument(
        "--sizes",
        type=float,
        nargs="+",
        metavar="N",
        help="sampler sizes to run instead of the defaults (e.g. --sizes 1e5 1e7)",
    )
    parser.add_argument(
        "--single-run-above",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="time a call once instead of best of 3 when it takes longer than this (default 5)",
    )
    parser.add_argument("--rounds", type=int, help="alternating plain/QDC training rounds (default 5, smoke 2)")
    parser.add_argument(
        "--train-threads",
        type=int,
        default=1,
        metavar="T",
        help="torch threads during the training comparison (default 1: on a small shared machine "
        "intra-op threads make step times jump by milliseconds)",
    )
    parser.add_argument("--skip-trainer", action="store_true", help="only the sampler benchmarks")
    parser.add_argument(
        "--model",
        choices=sorted(MODELS),
        default="tiny",
        help="GPT-2 for the training comparison: tiny = 2 layers x 32 wide (the tests' model), "
        "small = 4 layers x 128 wide",
    )
    args = parser.parse_args(argv)

    sizes = SMOKE if args.smoke else FULL
    if args.sizes:
        sizes = Sizes(**{**sizes.__dict__, "sampler_n": tuple(int(n) for n in args.sizes)})
    if args.rounds:
        sizes = Sizes(**{**sizes.__dict__, "rounds": args.rounds})
    started = time.perf_counter()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None

    results = [bench_sampler_at(n, sizes, args.single_run_above) for n in sizes.sampler_n]
    rows = sampler_rows(results, sizes)
    train_rows: list[Row] = []
    overhead = None
    instrumented = None
    if not args.skip_trainer:
        runs, instrumented = bench_trainer(sizes, args.train_threads, args.model)
        train_rows, overhead = trainer_report(runs, instrumented, sizes)

    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"QDCSampler / QDCTrainer benchmark ({'smoke' if args.smoke else 'full'} sizes, seed {SEED}, torch "
        f"{torch.__version__}, numpy {np.__version__}, Python {sys.version.split()[0]}, "
        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs"
        + (f", 1-min load average {load[0]:.2f} at start, {load_end[0]:.2f} at end" if load and load_end else "")
        + ")"
    )
    print()
    print("1. Sampler: drawing an epoch of N indices, online update, construction and memory")
    print()
    print_table(rows, ["metric", "size", "QDC", "baseline", "ratio", "target", "result", "notes"])
    print()
    print(
        "Times in seconds, best of 3 (time.perf_counter); * = a single run (a call took over --single-run-above). "
        "ratio = QDC / baseline. Epoch timings alternate QDC and RandomSampler runs."
    )
    print(
        "Epoch = iterating the sampler to the end in a counting loop (nothing stored). QDCSampler: quality, "
        f"complexity, {NUM_CLUSTERS:,} Zipf-sized clusters, default config. RandomSampler(range(N)) materialises "
        "randperm(N).tolist(); WeightedRandomSampler draws torch.multinomial(weights, N, replacement=True)."
    )
    if results and results[0].memory is not None:
        print(
            f"Memory: {results[0].memory.method}; growth over the RSS before construction (the input columns are "
            "built before and not counted)."
        )
    if train_rows:
        print()
        layers, width, _ = MODELS[args.model]
        print(
            f"2. Training step: {args.model} GPT-2 ({layers} layers, {width} wide), "
            f"{sizes.texts} texts of {sizes.text_words} tokens, "
            f"batch {sizes.batch_size}, {sizes.steps} steps, CPU"
        )
        print()
        print_table(train_rows, ["metric", "steps", "QDC", "plain", "overhead", "target", "result", "notes"])
        print()
        print(
            f"ms/step: step-to-step intervals (data loading, forward, backward, optimizer, callbacks) after the "
            f"first {sizes.warmup_steps} steps, from {sizes.rounds} alternating run(s) of each kind after a warm-up "
            "run; every run of a kind trains on the same batches, so the headline figure is the mean over steps "
            "of the fastest run at each step (robust to bursts of load from other processes), with the best "
            f"run's mean and median below it. {args.train_threads} torch thread(s). QDC: sampler from the "
            "dataset's quality and cluster columns (10 clusters), default update_every. The instrumented run "
            "(perf_counter around the sampler's methods) is separate and not part of the comparison."
        )
        print(staleness_note(instrumented))

    print()
    print("3. Draws: the guide table against the earlier binary search (torch.searchsorted), same sampler")
    for n in sizes.sampler_n:
        if n <= 10_000_000:
            bench_draws(n)
    print()
    print("Summary" + (" (smoke sizes: these figures say nothing about the targets)" if args.smoke else ""))
    for res in results:
        base = res.random
        ratio = res.qdc[sizes.block_sizes[0]].seconds / base.seconds
        verdict = "PASS" if ratio <= TARGET_ITERATION else "MISS"
        print(
            f"  {verdict}  epoch iteration at {n_label(res.n)}: QDCSampler (block {sizes.block_sizes[0]}) / "
            f"RandomSampler = {ratio:.2f}x (target <= {TARGET_ITERATION:g}x; "
            f"{res.qdc[sizes.block_sizes[0]].seconds:.3f} s vs {base.seconds:.3f} s)"
        )
    for res in results:
        if res.memory is None:
            continue
        peak = res.memory.peak / res.n
        if res.n >= MEMORY_TARGET_MIN_N:
            verdict = "PASS" if peak <= TARGET_BYTES_PER_EXAMPLE else "MISS"
        else:
            verdict = "INFO"
        print(
            f"  {verdict}  sampler memory at {n_label(res.n)}: peak {peak:.2f} B/example while building, retained "
            f"{res.memory.retained / res.n:.1f} B/example (target <= {TARGET_BYTES_PER_EXAMPLE:g}"
            + ("" if res.n >= MEMORY_TARGET_MIN_N else "; not judged below N=1e7")
            + ")"
        )
    for res in results:
        if res.weighted is None:
            print(f"  INFO  WeightedRandomSampler at {n_label(res.n)} fails: {res.weighted_error}")
    for res in results:
        if res.window is not None:
            print(
                f"  INFO  online update at {n_label(res.n)}: {res.window.seconds * 1e3:.1f} ms per window of "
                f"{UPDATE_STEPS} steps = {res.window.seconds / UPDATE_STEPS * 1e3:.1f} ms per training step"
            )
    if overhead is not None:
        verdict = "PASS" if overhead < TARGET_OVERHEAD_PERCENT else "MISS"
        clock = instrumented.clock or {}
        own = sum(clock.get(k, 0.0) for k in ("record", "update", "iteration")) / sizes.steps
        print(
            f"  {verdict}  QDCTrainer per-step overhead vs Trainer: {overhead:+.2f}% (target < "
            f"{TARGET_OVERHEAD_PERCENT:g}%); the sampler's own share {own * 1e6:.0f} us/step"
        )
    print(f"\nTotal wall time: {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
