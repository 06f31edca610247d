"""Step time and peak memory of QDCTrainer against the plain transformers Trainer, in the same run.

Arms (each a fresh Trainer on the same model and data, run in turn, round after round, so that drift of
the machine hits every arm alike):

- ``plain``: ``transformers.Trainer``;
- ``qdc``: ``QDCTrainer`` with a ``QDCSampler`` (quality and cluster columns) and ``qdc/train/entropy``
  (the defaults);
- ``qdc_no_entropy``: the same with ``log_entropy=False``;
- ``qdc_importance``: the defaults with ``loss_weighting="importance"``;
- ``entropy_only``: ``QDCTrainer`` without a sampler (only ``qdc/train/entropy``).

Shapes: ``qwen2-0.5b`` (24 layers, 896 wide, vocabulary 151,936; 8 x 1024 tokens) and ``gpt2-124m``
(12 layers, 768 wide, vocabulary 50,257; 16 x 512 tokens), randomly initialised, in bf16 on a GPU. On a
CPU the same widths and vocabularies with 2 layers and 4 x 256 tokens. The median step (after warm-up,
the GPU synchronised at each step's ends) is compared with the plain arm's; peak GPU memory likewise.

    python benchmarks/bench_trainer.py                  # both shapes (GPU if there is one)
    python benchmarks/bench_trainer.py --shapes gpt2-124m --rounds 5
    python benchmarks/bench_trainer.py --smoke          # a tiny model, seconds (what CI runs)
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers import logging as hf_logging

from qdc_trainer import QDCSampler, QDCSamplerConfig, QDCTrainer

ARMS = ("plain", "qdc", "qdc_no_entropy", "qdc_importance", "entropy_only")


@dataclass(frozen=True)
class Shape:
    name: str
    vocab: int
    width: int
    layers: int
    batch: int
    tokens: int
    cpu_layers: int = 2
    cpu_batch: int = 4
    cpu_tokens: int = 256


SHAPES = {
    "qwen2-0.5b": Shape("qwen2-0.5b", 151_936, 896, 24, 8, 1024),
    "gpt2-124m": Shape("gpt2-124m", 50_257, 768, 12, 16, 512),
    "smoke": Shape("smoke", 1_000, 64, 2, 4, 32, cpu_layers=2, cpu_batch=4, cpu_tokens=32),
}


def build_model(shape: Shape, layers: int, tokens: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if shape.name.startswith("qwen2"):
        config = Qwen2Config(
            vocab_size=shape.vocab,
            hidden_size=shape.width,
            intermediate_size=4864,
            num_hidden_layers=layers,
            num_attention_heads=14,
            num_key_value_heads=2,
            max_position_embeddings=max(tokens, 2048),
            tie_word_embeddings=True,
        )
        return Qwen2ForCausalLM(config)
    heads = 12 if shape.width % 12 == 0 else 4
    config = GPT2Config(
        vocab_size=shape.vocab, n_embd=shape.width, n_layer=layers, n_head=heads, n_positions=max(tokens, 1024)
    )
    return GPT2LMHeadModel(config)


class TokenDataset(torch.utils.data.Dataset):
    """Random token sequences of one length, the labels equal to the inputs (a plain torch dataset)."""

    def __init__(self, n: int, tokens: int, vocab: int, seed: int = 0) -> None:
        self.ids = torch.randint(0, vocab, (n, tokens), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class StepClock(TrainerCallback):
    """Wall time of each optimizer step, the device synchronised at both ends."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self._t0)


def run_arm(
    arm: str, model: torch.nn.Module, data: TokenDataset, batch: int, steps: int, gpu: bool, out: str
) -> tuple[list[float], float]:
    """Per-step times and peak GPU memory (GiB; NaN on a CPU) of ``steps`` optimizer steps of one arm."""
    clock = StepClock()
    args = TrainingArguments(
        output_dir=out,
        per_device_train_batch_size=batch,
        max_steps=steps,
        logging_steps=500,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        bf16=gpu,
        use_cpu=not gpu,
        seed=0,
        dataloader_num_workers=0,
    )
    n = len(data)
    quality = np.random.default_rng(0).random(n)
    clusters = np.arange(n) % 8
    kwargs: dict[str, Any] = dict(model=model, args=args, train_dataset=data, callbacks=[clock])
    if arm == "plain":
        trainer = Trainer(**kwargs)
    elif arm == "entropy_only":
        trainer = QDCTrainer(**kwargs)
    else:
        sampler = QDCSampler(n, quality=quality, clusters=clusters, config=QDCSamplerConfig(seed=0))
        trainer = QDCTrainer(
            **kwargs,
            qdc_sampler=sampler,
            log_entropy=arm != "qdc_no_entropy",
            loss_weighting="importance" if arm == "qdc_importance" else "none",
        )
    if gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak = torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan")
    del trainer
    gc.collect()
    return clock.times, peak


def bench_shape(
    shape: Shape, rounds: int, steps: int, warmup: int, gpu: bool, arms: tuple[str, ...] = ARMS
) -> list[dict[str, Any]]:
    layers, batch, tokens = (
        (shape.layers, shape.batch, shape.tokens) if gpu else (shape.cpu_layers, shape.cpu_batch, shape.cpu_tokens)
    )
    model = build_model(shape, layers, tokens)
    if gpu:
        model = model.cuda()
    data = TokenDataset(batch * (steps + warmup) * 2, tokens, shape.vocab)
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    peaks: dict[str, float] = {arm: 0.0 for arm in arms}
    for r in range(rounds):
        order = arms if r % 2 == 0 else tuple(reversed(arms))
        for arm in order:
            t, peak = run_arm(
                arm, model, data, batch, warmup + steps, gpu, out=f"/tmp/qdc_bench_trainer/{shape.name}/{arm}"
            )
            times[arm].extend(t[warmup:])
            peaks[arm] = max(peaks[arm], peak)
            print(
                f"  {shape.name} round {r + 1}/{rounds} {arm}: median {1e3 * statistics.median(t[warmup:]):.1f} ms",
                flush=True,
            )
    base, base_peak = statistics.median(times["plain"]), peaks["plain"]
    rows = []
    for arm in arms:
        median = statistics.median(times[arm])
        rows.append(
            dict(
                shape=shape.name,
                device="cuda" if gpu else "cpu",
                layers=layers,
                batch=batch,
                tokens=tokens,
                arm=arm,
                median_ms=1e3 * median,
                mean_ms=1e3 * statistics.fmean(times[arm]),
                ratio=median / base,
                peak_gib=peaks[arm],
                memory_ratio=peaks[arm] / base_peak if gpu else float("nan"),
                steps=len(times[arm]),
            )
        )
    return rows


def bench_loss_path(shape: Shape, repeats: int, gpu: bool) -> list[dict[str, Any]]:
    """The loss call alone (forward and backward over the logits of one micro-batch), the model's own
    ``ForCausalLMLoss`` against the QDC tap with and without the entropy sample and importance weights, on the
    shape's vocabulary and batch. Its extra time, next to the plain step's, bounds what the loss path can add to
    a step; it is far steadier than whole steps on a shared CPU (the fastest of ``repeats`` calls counts)."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    from qdc_trainer.losses import ENTROPY_POSITIONS, CausalLMLossTap

    batch, tokens = (shape.batch, shape.tokens) if gpu else (shape.cpu_batch, shape.cpu_tokens)
    device = "cuda" if gpu else "cpu"
    generator = torch.Generator(device=device).manual_seed(0)
    dtype = torch.bfloat16 if gpu else torch.float32
    logits = torch.randn(batch, tokens, shape.vocab, generator=generator, device=device).to(dtype)
    labels = torch.randint(0, shape.vocab, (batch, tokens), generator=generator, device=device)
    ones = torch.ones(batch, device=device)
    calls = {
        "plain": lambda x: ForCausalLMLoss(x, labels, shape.vocab),
        "qdc": lambda x: CausalLMLossTap(None, ENTROPY_POSITIONS)(x, labels, shape.vocab),
        "qdc_no_entropy": lambda x: CausalLMLossTap(None, 0)(x, labels, shape.vocab),
        "qdc_importance": lambda x: CausalLMLossTap(ones, ENTROPY_POSITIONS)(x, labels, shape.vocab),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(repeats):
        for name in calls if r % 2 == 0 else reversed(list(calls)):
            x = logits.detach().requires_grad_(True)
            if gpu:
                torch.cuda.synchronize()
            start = time.perf_counter()
            calls[name](x).backward()
            if gpu:
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    base = min(times["plain"])
    return [
        dict(shape=shape.name, arm=name, best_ms=1e3 * min(t), extra_ms=1e3 * (min(t) - base), repeats=repeats)
        for name, t in times.items()
    ]


def print_rows(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'shape':<11} {'device':<6} {'arm':<15} {'median ms':>10} {'mean ms':>9} {'ratio':>7} "
        f"{'peak GiB':>9} {'mem ratio':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['shape']:<11} {r['device']:<6} {r['arm']:<15} {r['median_ms']:>10.1f} {r['mean_ms']:>9.1f} "
            f"{r['ratio']:>6.3f}x {r['peak_gib']:>9.2f} {r['memory_ratio']:>8.3f}x"
        )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["qwen2-0.5b", "gpt2-124m"], choices=sorted(SHAPES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="timed optimizer steps per arm and round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even if a GPU is there")
    parser.add_argument("--smoke", action="store_true", help="a tiny model, one round of 2 steps (checks that it runs)")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS, help="arms to run (plain always runs)")
    parser.add_argument(
        "--loss-path",
        type=int,
        default=0,
        metavar="REPEATS",
        help="also time the loss call alone, the fastest of REPEATS (see bench_loss_path)",
    )
    args = parser.parse_args(argv)
    hf_logging.set_verbosity_error()
    gpu = torch.cuda.is_available() and not args.cpu
    if args.smoke:
        args.shapes, args.rounds, args.steps, args.warmup = ["smoke"], 1, 2, 1
    rows = []
    for name in args.shapes:
        arms = ("plain",) + tuple(a for a in args.arms if a != "plain")
        rows.extend(bench_shape(SHAPES[name], args.rounds, args.steps, args.warmup, gpu, arms))
    print_rows(rows)
    if args.loss_path:
        loss_rows = []
        for name in args.shapes:
            loss_rows.extend(bench_loss_path(SHAPES[name], args.loss_path, gpu))
        steps = {r["shape"]: r["median_ms"] for r in rows if r["arm"] == "plain"}
        print("\nthe loss call alone (forward and backward over one micro-batch's logits), fastest of", args.loss_path)
        for r in loss_rows:
            share = r["extra_ms"] / steps[r["shape"]] if r["shape"] in steps else float("nan")
            r["extra_share_of_plain_step"] = share
            print(
                f"  {r['shape']:<11} {r['arm']:<15} {r['best_ms']:>9.1f} ms  extra {r['extra_ms']:>7.1f} ms "
                f"= {100 * share:5.2f}% of a plain step"
            )
        rows = rows + loss_rows
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
