"""Cost of GenerationMonitorCallback: its share of a training run, and one evaluation against a plain generate loop.

Run from the repository root::

    python benchmarks/bench_monitor.py           # full sizes: about 3 minutes on 2 cores
    python benchmarks/bench_monitor.py --smoke   # tiny sizes, well under a minute (CI)

Model: a random-weight GPT-2 of 4 layers, 128 wide, 4 heads (``--model small``;
``--model tiny`` is the tests' 2 x 32 one), with the word-level tokenizer of
``tests/helpers.py`` (42 tokens) and a context of 256 positions, so that 128
new tokens fit. A training step (batch 8 x 32 tokens, one torch thread) takes
about 30 ms on one CPU core. The probe prompts are 16 seeded sequences of 4 to 10
vocabulary words. Everything runs on the CPU.

Target (full sizes):

* Training: ``QDCTrainer`` (no sampler, so it only adds ``qdc/train/entropy``)
  for 500 steps with ``TrainingArguments``' default ``logging_steps=500`` and
  ``GenerationMonitorCallback`` at its default settings (``every_n_steps=None``:
  with no evaluation its cadence is ``logging_steps``, so it evaluates at step 0
  and step 500; 4 samples of at most 48 new tokens for each of 16 probe prompts,
  64 sequences per ``generate`` call), plus ``CollapseDetectorCallback`` at its defaults. The
  time inside the monitor (``monitor.total_seconds``) must be under 5% of the
  wall time of ``trainer.train()``. The summary also prints the cadence at
  which the share would be 5% at this model's step time.

Measured without a target:

* The whole-run overhead: the wall time of ``trainer.train()`` with the two
  callbacks against the same training without callbacks (same model seed, data,
  batches and logging), and where the monitor's time goes (``model.generate``,
  decoding, metrics, saving the samples, and the ``trainer.log`` call with the
  collapse detector behind it).
* The cost of ``qdc/train/entropy``: ``QDCTrainer`` with ``log_entropy=True``
  against ``log_entropy=False`` (no callbacks), per training step.
* One evaluation, ``monitor.evaluate(step)`` (a ``transformers.Trainer`` with the
  monitor bound, set up once by ``on_train_begin`` with ``at_start=False``),
  against the same generation done by hand: the same model, prompts and seed,
  left-padded batches of ``batch_size // num_samples`` prompts, ``generate(
  do_sample=True, top_k=0, num_return_sequences=k, use_cache=True, pad_token_id)``
  under ``torch.no_grad()`` and ``model.eval()``, then ``tokenizer.batch_decode``.
  At 32 and 128 new tokens, 16 prompts. Both sides draw the same samples, which
  is checked. The extra time is broken down as above (the monitor also records
  the next-token entropy through a forward hook and computes the QDC metrics).

Method: the machine is noisy, so every ratio is against a baseline measured in
the same run, and the runs of the kinds alternate (no entropy, entropy, entropy
with callbacks, then again; monitor, plain, plain, monitor, ...), after one
warm-up run of each that is not counted. Training figures are the median over
``--rounds`` runs of each kind (default 2; best run beside it); per-step times
are the mean over the steps after the first 10 of each step's fastest time across
the rounds (every run of a kind trains on the same batches). An evaluation is
timed best of ``--repeats`` (default 7). The breakdowns come from
``time.perf_counter`` wrappers around the monitor's methods and
``model.generate`` (microseconds per evaluation). All timed runs use
``--train-threads`` torch threads (default 1: on a small shared machine intra-op
threads make single steps jump by milliseconds). A tiny model makes generation
look expensive: here one decoding step of 32 sequences costs about a tenth of a
training step, whereas on a real model on an accelerator a training step (compute
over batch x sequence tokens, forward and backward) grows much faster than a
decoding step of a few dozen sequences (bound by reading the weights), so the
same monitor settings take a far smaller share. The exit code is 0 even when the
target is missed (this is a report).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # benchmark the working tree, installed or not

from qdc_trainer import (  # noqa: E402
    CollapseDetectorCallback,
    GenerationMonitorCallback,
    GenerationMonitorConfig,
    QDCTrainer,
    generation,  # noqa: E402
)
from qdc_trainer.callbacks.monitor import SAMPLES_FILE  # noqa: E402

_DECODE_BATCH = generation._decode_batch

SEED = 20240601
TARGET_SHARE_PERCENT = 5.0  # monitor.total_seconds / train() wall time, below
MODELS = {"tiny": (2, 32, 2), "small": (4, 128, 4)}  # GPT-2 layers, width, heads
CONTEXT = 256  # positions: prompt + 128 new tokens fit
PROMPT_WORDS = (4, 10)  # probe prompts have between 4 and 10 words


@dataclass(frozen=True)
class Sizes:
    steps: int  # optimizer steps per training run
    cadence: int  # logging_steps, which the monitor follows at its default settings
    prompts: int  # probe prompts
    train_new_tokens: int | None  # the monitor's max_new_tokens in training (None: its default)
    rounds: int  # runs of each training kind
    warmup_steps: int  # per-step times before this are not steady state
    texts: int  # training examples
    text_words: int  # every text has this many words (equal lengths: no padding)
    batch_size: int
    eval_new_tokens: tuple[int, ...]  # max_new_tokens of the evaluation comparison
    repeats: int  # alternating evaluations of each kind


FULL = Sizes(
    steps=500,
    cadence=500,
    prompts=16,
    train_new_tokens=None,
    rounds=2,
    warmup_steps=10,
    texts=400,
    text_words=32,
    batch_size=8,
    eval_new_tokens=(32, 128),
    repeats=7,
)
SMOKE = Sizes(
    steps=8,
    cadence=4,
    prompts=2,
    train_new_tokens=8,
    rounds=1,
    warmup_steps=2,
    texts=32,
    text_words=16,
    batch_size=8,
    eval_new_tokens=(4, 8),
    repeats=2,
)


# --------------------------------------------------------------------------- helpers


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_texts(n_texts: int, words: list[str], length: int | tuple[int, int], seed: int) -> list[str]:
    """Seeded texts of random vocabulary words: ``length`` words each, or a length drawn from [lo, hi]."""
    rng = np.random.default_rng(seed)
    vocabulary = np.array(words)
    texts = []
    for _ in range(n_texts):
        size = length if isinstance(length, int) else int(rng.integers(length[0], length[1] + 1))
        texts.append(" ".join(vocabulary[rng.integers(0, len(vocabulary), size=size)]))
    return texts


def build_model(helpers: ModuleType, tokenizer: Any, name: str) -> Any:
    """The tests' GPT-2 config, resized (``build_gpt2`` cannot take n_layer/n_embd/n_head/n_positions)."""
    from transformers import GPT2LMHeadModel

    layers, width, heads = MODELS[name]
    config = helpers.tiny_gpt2_config(tokenizer)
    config.n_layer, config.n_embd, config.n_head, config.n_positions = layers, width, heads, CONTEXT
    torch.manual_seed(0)
    return GPT2LMHeadModel(config)


class Clock:
    """perf_counter accumulators, installed as instance-attribute wrappers around methods."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, key: str, owner: Any, name: str) -> None:
        original = getattr(owner, name)
        self.seconds.setdefault(key, 0.0)
        self.calls.setdefault(key, 0)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - start
                self.calls[key] += 1

        setattr(owner, name, timed)

    def get(self, key: str) -> float:
        return self.seconds.get(key, 0.0)


def instrument_monitor(monitor: GenerationMonitorCallback, model: Any) -> Clock:
    clock = Clock()
    clock.wrap("evaluate", monitor, "evaluate")
    clock.wrap("generate_local", monitor, "_generate_local")
    clock.wrap("generate", model, "generate")
    generation._decode_batch = _DECODE_BATCH  # one clock per run around the original, not a stack of wrappers
    clock.wrap("decode", generation, "_decode_batch")  # the shared sampling loop's per-batch decoding
    clock.wrap("measure", monitor, "_measure")
    clock.wrap("save", monitor, "_save")
    return clock


def breakdown(clock: Clock, inside: float) -> list[tuple[str, float]]:
    """(part, seconds) of the monitor's evaluations; ``inside`` is what total_seconds counted."""
    parts = [
        ("model.generate (with the entropy hook)", clock.get("generate")),
        ("decoding (+ entropy per sample)", clock.get("decode")),
        ("metrics (measure_generations)", clock.get("measure")),
        ("saving the samples (jsonl)", clock.get("save")),
    ]
    parts.append(("other (RNG fork, padding, trainer.log)", inside - sum(s for _, s in parts)))
    return parts


class StepClock(TrainerCallback):
    """Notes the time at the end of every optimizer step (first in the callback list)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.ends = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def print_table(header: list[str], rows: list[list[str]], numeric: set[int]) -> None:
    """Aligned plain-text table; the last column (notes) is not padded."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]

    def line(cells: list[str]) -> str:
        out = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join([*out, cells[-1]]).rstrip()

    print(line(header))
    print(line(["-" * w for w in widths] + ["-" * 5]))
    for cells in rows:
        print(line(cells))


def pct(a: float, b: float) -> str:
    return f"{(a / b - 1) * 100:+.1f}%"


# --------------------------------------------------------------------------- 1. training


@dataclass
class TrainRun:
    kind: str  # "bare" (log_entropy=False), "entropy" (default QDCTrainer), "monitored" (+ both callbacks)
    wall: float  # seconds of trainer.train()
    intervals: np.ndarray  # seconds between consecutive optimizer-step ends
    monitor_seconds: float = 0.0  # monitor.total_seconds
    evaluations: int = 0
    clock: Clock | None = None
    detector_seconds: float = 0.0
    detector_calls: int = 0
    detector_level: int = 0


KINDS = ("bare", "entropy", "monitored")


def bench_training(
    sizes: Sizes, helpers: ModuleType, tokenizer: Any, model_name: str, prompts: list[str]
) -> list[TrainRun]:
    import datasets
    from transformers import DataCollatorForLanguageModeling, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    words = [w for w in tokenizer.get_vocab() if not (w.startswith("<") and w.endswith(">"))]
    encoded = tokenizer(make_texts(sizes.texts, words, sizes.text_words, SEED))
    dataset = datasets.Dataset.from_dict(
        {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    )
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)

    def run(kind: str, steps: int) -> TrainRun:
        model = build_model(helpers, tokenizer, model_name)
        clock = StepClock()
        callbacks: list[TrainerCallback] = [clock]
        monitor = detector = None
        if kind == "monitored":
            settings = {} if sizes.train_new_tokens is None else {"max_new_tokens": sizes.train_new_tokens}
            monitor = GenerationMonitorCallback(prompts, config=GenerationMonitorConfig(**settings))
            detector = CollapseDetectorCallback()
            callbacks += [monitor, detector]
        with tempfile.TemporaryDirectory() as output_dir:
            args = TrainingArguments(
                output_dir=output_dir,
                max_steps=steps,
                per_device_train_batch_size=sizes.batch_size,
                learning_rate=1e-3,
                logging_strategy="steps",
                logging_steps=sizes.cadence,
                save_strategy="no",
                eval_strategy="no",
                report_to="none",
                use_cpu=True,
                disable_tqdm=True,
                seed=0,
                dataloader_num_workers=0,
                dataloader_pin_memory=False,
            )
            trainer = QDCTrainer(
                model=model,
                args=args,
                train_dataset=dataset,
                data_collator=collator,
                processing_class=tokenizer,
                callbacks=callbacks,
                log_entropy=kind != "bare",
            )
            trainer.remove_callback(PrinterCallback)  # it prints every log
            out = TrainRun(kind, 0.0, np.zeros(0))
            if monitor is not None:
                out.clock = instrument_monitor(monitor, model)
                on_log = detector.on_log
                detector_clock = [0.0, 0]

                def timed_on_log(*a: Any, **k: Any) -> Any:
                    start = time.perf_counter()
                    try:
                        return on_log(*a, **k)
                    finally:
                        detector_clock[0] += time.perf_counter() - start
                        detector_clock[1] += 1

                detector.on_log = timed_on_log
            gc.collect()
            start = time.perf_counter()
            trainer.train()
            out.wall = time.perf_counter() - start
        if len(clock.ends) != steps:
            raise AssertionError(f"{kind} run took {len(clock.ends)} optimizer steps, expected {steps}")
        out.intervals = np.diff(clock.ends)
        if monitor is not None:
            out.monitor_seconds, out.evaluations = monitor.total_seconds, monitor.evaluations
            out.detector_seconds, out.detector_calls = detector_clock[0], detector_clock[1]
            out.detector_level = detector.level
        del trainer, model
        gc.collect()
        return out

    for kind in KINDS:
        progress(f"training: warm-up {kind} run (not counted), {sizes.cadence} steps")
        run(kind, sizes.cadence)
    runs = []
    for round_ in range(sizes.rounds):
        for kind in KINDS:
            progress(f"training round {round_ + 1}/{sizes.rounds}: {kind}, {sizes.steps} steps")
            runs.append(run(kind, sizes.steps))
    return runs


def best_per_step(runs: list[TrainRun], warmup: int) -> float:
    steady = np.stack([r.intervals[max(warmup - 1, 0) :] for r in runs])  # rounds x steady steps
    return float(steady.min(axis=0).mean())


@dataclass
class TrainingSummary:
    rows: list[list[str]]
    parts: list[list[str]]
    share: float  # percent, median over the monitored runs
    overhead: float  # percent, median wall with callbacks vs without
    entropy_cost: float  # percent per step
    evaluations: int
    per_evaluation: float  # seconds inside the monitor per evaluation (median-share run)
    step_seconds: float  # train() wall per step without callbacks (median run)
    detector_level: int


def training_report(runs: list[TrainRun], sizes: Sizes) -> TrainingSummary:
    by_kind = {kind: [r for r in runs if r.kind == kind] for kind in KINDS}
    wall = {kind: [r.wall for r in rs] for kind, rs in by_kind.items()}
    med = {kind: statistics.median(w) for kind, w in wall.items()}
    best = {kind: min(w) for kind, w in wall.items()}
    monitored = by_kind["monitored"]
    shares = [r.monitor_seconds / r.wall * 100 for r in monitored]
    share = statistics.median(shares)
    middle = sorted(monitored, key=lambda r: r.monitor_seconds / r.wall)[len(monitored) // 2]
    evaluations = middle.evaluations
    per_evaluation = middle.monitor_seconds / max(evaluations, 1)
    overhead = (med["monitored"] / med["entropy"] - 1) * 100
    step = {kind: best_per_step(by_kind[kind], sizes.warmup_steps) for kind in ("bare", "entropy")}
    entropy_cost = (step["entropy"] / step["bare"] - 1) * 100

    def runs_of(kind: str) -> str:
        return "runs " + ", ".join(f"{w:.2f}" for w in wall[kind])

    rows = [
        ["train() wall, no callbacks (s)", f"{med['entropy']:.2f}", "-", "-", "-", "-", runs_of("entropy")],
        [
            "train() wall, monitor + collapse detector (s)",
            f"{med['monitored']:.2f}",
            f"{med['entropy']:.2f}",
            f"{med['monitored'] / med['entropy']:.3f}x",
            "-",
            "-",
            f"{overhead:+.1f}%, +{med['monitored'] - med['entropy']:.2f} s; {runs_of('monitored')}",
        ],
        [
            "  same, best run of each (s)",
            f"{best['monitored']:.2f}",
            f"{best['entropy']:.2f}",
            f"{best['monitored'] / best['entropy']:.3f}x",
            "-",
            "-",
            pct(best["monitored"], best["entropy"]),
        ],
        [
            "time inside the monitor, total_seconds (s)",
            f"{middle.monitor_seconds:.3f}",
            f"{middle.wall:.2f}",
            f"{share:.2f}%",
            f"<{TARGET_SHARE_PERCENT:g}%",
            "PASS" if share < TARGET_SHARE_PERCENT else "MISS",
            f"share of that run's train() wall; {evaluations} evaluations, {per_evaluation * 1e3:.1f} ms each; "
            "all runs " + ", ".join(f"{s:.2f}%" for s in shares),
        ],
        [
            "qdc/train/entropy: ms/step (log_entropy on)",
            f"{step['entropy'] * 1e3:.3f}",
            f"{step['bare'] * 1e3:.3f}",
            f"{step['entropy'] / step['bare']:.3f}x",
            "-",
            "-",
            f"{entropy_cost:+.2f}% per step vs log_entropy=False (no callbacks); train() wall "
            f"{med['entropy']:.2f} vs {med['bare']:.2f} s ({pct(med['entropy'], med['bare'])})",
        ],
    ]
    parts: list[list[str]] = []
    clock = middle.clock
    if clock is not None:
        per_eval = max(middle.evaluations, 1)
        wall_eval = clock.get("evaluate")
        for name, seconds in breakdown(clock, middle.monitor_seconds):
            parts.append(
                [
                    f"  {name}",
                    f"{seconds / per_eval * 1e3:.2f}",
                    f"{seconds / wall_eval * 100:.1f}%",
                    f"{seconds / middle.wall * 100:.2f}% of train() wall",
                ]
            )
        parts.append(
            [
                "  whole evaluate() call",
                f"{wall_eval / per_eval * 1e3:.2f}",
                "100.0%",
                f"{wall_eval / middle.wall * 100:.2f}% of train() wall",
            ]
        )
        parts.append(
            [
                "collapse detector on_log (per call)",
                f"{middle.detector_seconds / max(middle.detector_calls, 1) * 1e3:.3f}",
                "-",
                f"{middle.detector_calls} calls (every log), {middle.detector_seconds * 1e3:.1f} ms in all; "
                f"level {middle.detector_level} at the end",
            ]
        )
    return TrainingSummary(
        rows,
        parts,
        share,
        overhead,
        entropy_cost,
        evaluations,
        per_evaluation,
        med["entropy"] / sizes.steps,
        max(r.detector_level for r in monitored),
    )


# --------------------------------------------------------------------------- 2. one evaluation vs a plain loop


@dataclass
class EvalResult:
    new_tokens: int
    monitor: list[float] = field(default_factory=list)  # wall of monitor.evaluate per repeat
    plain: list[float] = field(default_factory=list)
    plain_generate: list[float] = field(default_factory=list)
    plain_decode: list[float] = field(default_factory=list)
    parts: list[dict[str, float]] = field(default_factory=list)  # the monitor's clock per repeat
    same: int = 0  # samples identical to the plain loop's (last checked repeat)
    compared: int = 0
    generated_tokens: int = 0  # new tokens per sequence in the last plain run


def plain_loop(
    model: Any, tokenizer: Any, prompts: list[str], k: int, per_call: int, new_tokens: int, seed: int
) -> tuple[list[str], float, float, int]:
    """The generation done by hand; returns the texts (prompt-major), generate and decode seconds, new length."""
    torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    texts: list[str] = []
    generate = decode = 0.0
    length = 0
    try:
        with torch.no_grad():
            for start in range(0, len(prompts), per_call):
                batch = tokenizer(
                    prompts[start : start + per_call], padding=True, padding_side="left", return_tensors="pt"
                )
                t0 = time.perf_counter()
                out = model.generate(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    do_sample=True,
                    top_k=0,
                    max_new_tokens=new_tokens,
                    num_return_sequences=k,
                    use_cache=True,
                    pad_token_id=tokenizer.pad_token_id,
                )
                t1 = time.perf_counter()
                new = out[:, batch["input_ids"].shape[1] :]
                texts += tokenizer.batch_decode(new, skip_special_tokens=True)
                decode += time.perf_counter() - t1
                generate += t1 - t0
                length = max(length, new.shape[1])
    finally:
        model.train(was_training)
    return texts, generate, decode, length


def bench_evaluation(
    sizes: Sizes, helpers: ModuleType, tokenizer: Any, model_name: str, prompts: list[str], new_tokens: int
) -> EvalResult:
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    result = EvalResult(new_tokens)
    model = build_model(helpers, tokenizer, model_name)
    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(
            output_dir=output_dir, report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0
        )
        trainer = Trainer(model=model, args=args, processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)
        monitor = GenerationMonitorCallback(
            prompts, trainer=trainer, config=GenerationMonitorConfig(at_start=False, max_new_tokens=new_tokens)
        )
        monitor.on_train_begin(trainer.args, trainer.state, trainer.control)
        cfg = monitor.config
        per_call = max(1, cfg.batch_size // cfg.num_samples)
        clock = instrument_monitor(monitor, model)
        samples_file = Path(output_dir) / SAMPLES_FILE

        def monitor_once(step: int) -> float:
            before = dict(clock.seconds)
            inside = monitor.total_seconds
            start = time.perf_counter()
            monitor.evaluate(step)
            seconds = time.perf_counter() - start
            part = {key: clock.seconds[key] - before.get(key, 0.0) for key in clock.seconds}
            part["inside"] = monitor.total_seconds - inside
            part["wall"] = seconds
            result.parts.append(part)
            return seconds

        def plain_once(step: int) -> tuple[float, list[str]]:
            start = time.perf_counter()
            texts, generate, decode, length = plain_loop(
                model, tokenizer, prompts, cfg.num_samples, per_call, new_tokens, cfg.seed + step
            )
            seconds = time.perf_counter() - start
            result.plain_generate.append(generate)
            result.plain_decode.append(decode)
            result.generated_tokens = length
            return seconds, texts

        progress(f"evaluation, {new_tokens} new tokens: warm-up (not counted)")
        monitor_once(10_000)
        plain_once(10_000)
        result.parts.clear()
        result.plain_generate.clear()
        result.plain_decode.clear()
        for repeat in range(sizes.repeats):
            step = repeat + 1  # evaluate() skips a step it has already done
            progress(f"evaluation, {new_tokens} new tokens: repeat {repeat + 1}/{sizes.repeats}")
            order = ("monitor", "plain") if repeat % 2 == 0 else ("plain", "monitor")
            for kind in order:
                if kind == "monitor":
                    result.monitor.append(monitor_once(step))
                else:
                    seconds, texts = plain_once(step)
                    result.plain.append(seconds)
            rows = [json.loads(line) for line in samples_file.read_text(encoding="utf-8").splitlines()]
            mine = [
                r["completion"]
                for r in sorted((r for r in rows if r["step"] == step), key=lambda r: (r["prompt_index"], r["sample"]))
            ]
            result.compared = len(texts)
            result.same = sum(a == b for a, b in zip(mine, texts)) if len(mine) == len(texts) else 0
    del trainer, model
    gc.collect()
    return result


def evaluation_rows(res: EvalResult) -> tuple[list[list[str]], float]:
    i_mon = int(np.argmin(res.monitor))
    i_plain = int(np.argmin(res.plain))
    mon, plain = res.monitor[i_mon], res.plain[i_plain]
    part = res.parts[i_mon]
    ratio = mon / plain
    label = f"max_new_tokens={res.new_tokens}"

    def runs(values: list[float]) -> str:
        return "runs " + ", ".join(f"{v * 1e3:.0f}" for v in values)

    rows = [
        [
            f"plain generate loop, {label}",
            f"{plain * 1e3:.1f}",
            "-",
            "-",
            f"generate {res.plain_generate[i_plain] * 1e3:.1f} + batch_decode {res.plain_decode[i_plain] * 1e3:.2f} "
            f"ms; {runs(res.plain)}",
        ],
        [
            f"monitor.evaluate, {label}",
            f"{mon * 1e3:.1f}",
            f"{plain * 1e3:.1f}",
            f"{ratio:.3f}x",
            f"+{(mon - plain) * 1e3:.1f} ms; same samples as the plain loop: {res.same}/{res.compared}; "
            f"{runs(res.monitor)}",
        ],
    ]
    clock = Clock()
    clock.seconds = part
    for name, seconds in breakdown(clock, part["inside"]):
        rows.append([f"  {name}", f"{seconds * 1e3:.2f}", "-", f"{seconds / mon * 100:.1f}%", ""])
    generate_extra = part.get("generate", 0.0) - res.plain_generate[i_plain]
    decode_extra = part.get("decode", 0.0) - res.plain_decode[i_plain]
    rows.append(
        [
            "  extra model.generate time over the plain loop's",
            f"{generate_extra * 1e3:.2f}",
            "-",
            f"{generate_extra / mon * 100:.1f}%",
            f"entropy hook, forked RNG, and noise; decoding extra {decode_extra * 1e3:.2f} ms",
        ]
    )
    return rows, ratio


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, well under a minute: checks the benchmark still runs"
    )
    parser.add_argument("--rounds", type=int, help="training runs of each kind (default 2, smoke 1)")
    parser.add_argument("--repeats", type=int, help="evaluations of each kind per size (default 7, smoke 2)")
    parser.add_argument("--steps", type=int, help="optimizer steps per training run (default 500)")
    parser.add_argument(
        "--every",
        type=int,
        metavar="N",
        help="logging_steps, which the monitor follows (default 500, the Trainer's default)",
    )
    parser.add_argument("--prompts", type=int, help="probe prompts (default 16, smoke 2)")
    parser.add_argument(
        "--train-threads",
        type=int,
        default=1,
        metavar="T",
        help="torch threads during all timed runs, training and generation (default 1: on a small "
        "shared machine intra-op threads make step times jump by milliseconds)",
    )
    parser.add_argument(
        "--model",
        choices=sorted(MODELS),
        default="small",
        help="GPT-2: small = 4 layers x 128 wide (default), tiny = 2 layers x 32 wide (the tests' model)",
    )
    parser.add_argument("--skip-training", action="store_true", help="only the evaluation comparison")
    args = parser.parse_args(argv)

    sizes = SMOKE if args.smoke else FULL
    changes = {
        "rounds": args.rounds,
        "repeats": args.repeats,
        "steps": args.steps,
        "cadence": args.every,
        "prompts": args.prompts,
    }
    sizes = Sizes(**{**sizes.__dict__, **{k: v for k, v in changes.items() if v is not None}})
    started = time.perf_counter()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None

    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore")
    helpers = load_module("_bench_monitor_helpers", REPO_ROOT / "tests" / "helpers.py")
    tokenizer = helpers.build_tokenizer()
    words = [w for w in tokenizer.get_vocab() if not (w.startswith("<") and w.endswith(">"))]
    prompts = make_texts(sizes.prompts, words, PROMPT_WORDS, SEED + 1)

    saved_threads = torch.get_num_threads()
    torch.set_num_threads(args.train_threads)
    try:
        training = None
        if not args.skip_training:
            training = training_report(bench_training(sizes, helpers, tokenizer, args.model, prompts), sizes)
        evaluations = [
            bench_evaluation(sizes, helpers, tokenizer, args.model, prompts, n) for n in sizes.eval_new_tokens
        ]
    finally:
        torch.set_num_threads(saved_threads)

    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    layers, width, heads = MODELS[args.model]
    train_tokens = sizes.train_new_tokens or GenerationMonitorConfig().max_new_tokens
    print(
        f"GenerationMonitorCallback benchmark ({'smoke' if args.smoke else 'full'} sizes, seed {SEED}, torch "
        f"{torch.__version__}, transformers {transformers.__version__}, Python {sys.version.split()[0]}, "
        f"{args.train_threads} torch thread(s), {os.cpu_count()} CPUs"
        + (f", 1-min load average {load[0]:.2f} at start, {load_end[0]:.2f} at end" if load and load_end else "")
        + ")"
    )
    print(
        f"Model: random-weight GPT-2, {layers} layers x {width} wide x {heads} heads, context {CONTEXT}, "
        f"vocabulary {len(tokenizer)}; {sizes.prompts} probe prompts of {PROMPT_WORDS[0]}-{PROMPT_WORDS[1]} words; CPU."
    )

    defaults = GenerationMonitorConfig()
    if training is not None:
        print()
        print(
            f"1. Training: QDCTrainer, {sizes.steps} steps, batch {sizes.batch_size} x {sizes.text_words} tokens, "
            f"logging_steps {sizes.cadence}; the monitor at default settings (at step 0 and every {sizes.cadence} "
            f"steps, {defaults.num_samples} samples x {train_tokens} new tokens per prompt, {defaults.batch_size} "
            "sequences per generate call) + the collapse detector"
        )
        print()
        print_table(
            ["metric", "value", "baseline", "ratio", "target", "result", "notes"], training.rows, numeric={1, 2, 3, 4}
        )
        print()
        print(
            f"Medians over {sizes.rounds} run(s) of each kind; the kinds alternate (log_entropy=False, the "
            "default QDCTrainer, the default QDCTrainer + callbacks) after one warm-up run of each. Baseline = the "
            "same QDCTrainer run (same model seed, data, batches and logging) without callbacks. ms/step: the mean "
            f"over the steps after the first {sizes.warmup_steps} of each step's fastest time across the runs."
        )
        print()
        print("Where the monitor's time goes, per evaluation (the run with the median share):")
        print()
        print_table(["part", "ms/eval", "share", "notes"], training.parts, numeric={1, 2})

    print()
    print(
        f"2. One evaluation vs a plain model.generate loop: {sizes.prompts} prompts x {defaults.num_samples} samples, "
        f"batches of {defaults.batch_size // defaults.num_samples} prompts ({defaults.batch_size} sequences), "
        "do_sample, top_k=0, use_cache, the same seed on both sides"
    )
    print()
    eval_rows: list[list[str]] = []
    ratios: dict[int, float] = {}
    for res in evaluations:
        rows, ratios[res.new_tokens] = evaluation_rows(res)
        eval_rows += rows
    print_table(["metric", "ms", "plain ms", "ratio", "notes"], eval_rows, numeric={1, 2, 3})
    print()
    print(
        f"Best of {sizes.repeats} alternating runs of each (one warm-up of each first); the breakdown (share = of "
        "the evaluation) is that of the fastest monitor.evaluate. The plain loop tokenizes each batch with left "
        "padding, generates under torch.no_grad() and model.eval() and decodes with tokenizer.batch_decode; the "
        "monitor also records the next-token entropy through a forward hook, computes the QDC metrics, appends the "
        "samples to a jsonl file and logs through trainer.log."
    )

    print()
    print("Summary" + (" (smoke sizes: these figures say nothing about the target)" if args.smoke else ""))
    if training is not None:
        verdict = "PASS" if training.share < TARGET_SHARE_PERCENT else "MISS"
        print(
            f"  {verdict}  monitor share of train wall time: {training.share:.2f}% (target < "
            f"{TARGET_SHARE_PERCENT:g}%; {training.evaluations} evaluations of {training.per_evaluation * 1e3:.0f} ms "
            f"in {sizes.steps} steps)"
        )
        s = TARGET_SHARE_PERCENT / 100
        break_even = training.per_evaluation * (1 - s) / (s * training.step_seconds)
        print(
            f"  INFO  one evaluation costs {training.per_evaluation / training.step_seconds:.1f} training "
            f"steps of {training.step_seconds * 1e3:.1f} ms here: the share is {TARGET_SHARE_PERCENT:g}% at one "
            f"evaluation every {break_even:.0f} steps; evaluating every 50 steps would take "
            f"{100 * training.per_evaluation / (training.per_evaluation + 50 * training.step_seconds):.1f}%"
        )
        print(
            f"  INFO  whole-run overhead of monitor + collapse detector vs no callbacks: {training.overhead:+.2f}%"
            + (f" (the detector reached level {training.detector_level})" if training.detector_level else "")
        )
        print(f"  INFO  qdc/train/entropy cost per training step: {training.entropy_cost:+.2f}%")
    for new_tokens, ratio in ratios.items():
        print(f"  INFO  evaluation vs plain generate at max_new_tokens={new_tokens}: {ratio:.2f}x")
    for res in evaluations:
        if res.same != res.compared:
            print(
                f"  NOTE  at max_new_tokens={res.new_tokens} only {res.same}/{res.compared} samples matched the "
                "plain loop's: the two sides did not generate the same thing"
            )
    print(f"\nTotal wall time: {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
