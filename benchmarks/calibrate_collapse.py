"""Calibrate the collapse detector: planted collapse against healthy fine-tuning, over several seeds.

Run from the repository root::

    python benchmarks/calibrate_collapse.py                  # seeds 0-4 x 3 arms, about 2 minutes on 2 cores
    python benchmarks/calibrate_collapse.py --first-seed 5   # seeds 5-9: the check on runs not used to choose
    python benchmarks/calibrate_collapse.py --smoke          # 1 seed, few steps (CI)
    python benchmarks/calibrate_collapse.py --probes 8 --samples 4 --seeds 10   # fewer probe samples
    python benchmarks/calibrate_collapse.py --arms healthy shift --pretrained /tmp/pre   # false alarms only;
                                                             # pretrained models reused across probe settings

No paper gives a collapse threshold, so this script measures one. The task is a
synthetic language: a prompt ``topic <w> :`` is followed by a random walk over a
sparse Markov chain of 48 words (4 successors per word), so a model that has
learned it produces many different continuations for one prompt and across
prompts. Per seed, a tiny GPT-2 (4 layers, 64 wide) is first pretrained on that
language; then three fine-tuning arms start from the same weights and see the
same number of steps (200), with the generation monitor (16 probe prompts, 4
samples of up to 16 tokens each, every 10 steps; its quality scorer is the share
of word-to-word transitions the original chain allows) and an evaluation loss on
held-out walks every 10 steps:

* ``healthy``: more walks from the same chain;
* ``shift``: walks from a *different* chain of the same sparsity (a domain change
  that is not a collapse: the detector should stay quiet);
* ``planted``: the same as healthy until ``--narrow-start``, then a growing share
  of the examples (0 to 100% over ``--narrow-steps``) is one of 3 fixed
  responses, whatever the prompt: the data narrows to a few targets.

The detector runs with actions ``("log",)`` only (no stop, so every run has
every observation). Afterwards the logged series are replayed offline through
``SeriesDetector`` for a grid of settings of each series alone (the detector is
a pure function of the series, so the replay is exact), counting planted runs
flagged (a warning after the narrowing starts) and healthy or shifted runs with a
false alarm; then the shipped defaults (``DEFAULT_WATCH``) are replayed run by
run, with the thresholds as set and, below 16 x 4 probe samples, widened as the callback widens them
(see ``reference_samples``). The defaults were chosen on seeds 0-4 and checked on seeds 5-9.
Last, each series of ``KNOWN_SERIES`` alone (the rates ``empty_rate`` and ``repetition`` too):
its false alarms and largest healthy drift.
The detection delay is the first warning step minus ``--narrow-start``; it is
printed beside the step where the evaluation loss first shows the narrowing
(its first evaluation above the value at ``--narrow-start`` by more than the
largest rise any healthy run showed over the same steps).

The exit code is 0 even when no setting separates the arms (this is a report).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import (  # noqa: E402
    DataCollatorForLanguageModeling,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    PrinterCallback,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging  # noqa: E402

from qdc_trainer import (  # noqa: E402
    CollapseDetectorCallback,
    GenerationMonitorCallback,
    GenerationMonitorConfig,
    QDCTrainer,
    SeriesDetector,
)
from qdc_trainer.callbacks.collapse import DEFAULT_WATCH, KNOWN_SERIES, REFERENCE_SAMPLES, _default_watch  # noqa: E402
from qdc_trainer.metrics import VerifierScorer  # noqa: E402

WORDS = [f"w{i:02d}" for i in range(48)]
SUCCESSORS = 4
NUM_TARGETS = 3
SERIES = [  # (key, bad direction): every series the calibration considers
    ("qdc/gen/per_input/distinct_2", "decrease"),
    ("qdc/gen/across_input/distinct_2", "decrease"),
    ("qdc/gen/per_input/self_bleu", "increase"),
    ("qdc/gen/across_input/self_bleu", "increase"),
    ("qdc/gen/entropy", "decrease"),
    ("qdc/train/entropy", "decrease"),
]


# --------------------------------------------------------------------------- the synthetic language


def build_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(["<pad>", "<unk>", "<eos>", "topic", ":", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


@dataclass
class Chain:
    successors: np.ndarray  # (words, SUCCESSORS) word indices
    probs: np.ndarray  # (words, SUCCESSORS)

    @classmethod
    def random(cls, rng: np.random.Generator) -> Chain:
        n = len(WORDS)
        successors = np.stack([rng.choice(n, SUCCESSORS, replace=False) for _ in range(n)])
        return cls(successors, rng.dirichlet(np.ones(SUCCESSORS) * 2.0, size=n))

    def walk(self, rng: np.random.Generator, topic: int) -> str:
        length, word, out = int(rng.integers(6, 13)), topic, []
        for _ in range(length):
            word = int(self.successors[word, rng.choice(SUCCESSORS, p=self.probs[word])])
            out.append(WORDS[word])
        return " ".join(out)

    def validity(self, prompt: str, completion: str) -> float:
        """Share of the completion's word-to-word transitions that the chain allows (its "quality")."""
        index = {w: i for i, w in enumerate(WORDS)}
        words = [index.get(w, -1) for w in completion.split()]
        pairs = list(zip(words, words[1:]))
        if not pairs:
            return 0.0  # an empty or one-word completion is not a valid walk
        return float(np.mean([a >= 0 and b in self.successors[a] for a, b in pairs]))


def example(topic: int, response: str) -> str:
    return f"topic {WORDS[topic]} : {response} <eos>"


def stream(chain: Chain, rng, steps: int, batch: int, narrow: tuple[list[str], int, int] | None = None) -> list[str]:
    """Training texts in step order; with ``narrow=(targets, start, ramp)`` a growing share is a fixed target."""
    texts = []
    for step in range(steps):
        share = 0.0 if narrow is None else float(np.clip((step - narrow[1]) / max(narrow[2], 1), 0.0, 1.0))
        for _ in range(batch):
            topic = int(rng.integers(len(WORDS)))
            if narrow is not None and rng.random() < share:
                texts.append(example(topic, narrow[0][int(rng.integers(len(narrow[0])))]))
            else:
                texts.append(example(topic, chain.walk(rng, topic)))
    return texts


# --------------------------------------------------------------------------- training


def tokenized(tokenizer, texts: list[str]) -> Dataset:
    return Dataset.from_dict({"text": texts}).map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])


def base_args(out: str, **kwargs) -> TrainingArguments:
    defaults = dict(
        output_dir=out,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        per_device_train_batch_size=16,
        train_sampling_strategy="sequential",
        dataloader_drop_last=True,
    )
    return TrainingArguments(**{**defaults, **kwargs})


def pretrain(tokenizer, chain: Chain, seed: int, steps: int, out: str) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=32,
        n_embd=64,
        n_layer=4,
        n_head=4,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    if steps == 0:
        return model
    rng = np.random.default_rng(seed + 1000)
    trainer = QDCTrainer(
        model=model,
        args=base_args(
            out, max_steps=steps, learning_rate=3e-3, warmup_steps=steps // 10, logging_steps=steps, seed=seed
        ),
        train_dataset=tokenized(tokenizer, stream(chain, rng, steps, 16)),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        log_entropy=False,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return model


def finetune(model, tokenizer, texts, eval_texts, chain: Chain, args, seed: int, out: str) -> list[dict]:
    probes = [f"topic {WORDS[i]} :" for i in range(0, len(WORDS), len(WORDS) // args.probes)][: args.probes]
    monitor = GenerationMonitorCallback(
        probes,
        scorer=VerifierScorer(chain.validity, progress=False),
        config=GenerationMonitorConfig(
            num_samples=args.samples, max_new_tokens=16, every_n_steps=args.every, seed=seed, save_samples=False
        ),
    )
    detector = CollapseDetectorCallback(actions=("log",))
    trainer = QDCTrainer(
        model=model,
        args=base_args(
            out,
            max_steps=args.steps,
            learning_rate=1e-3,
            logging_steps=args.every,
            eval_strategy="steps",
            eval_steps=args.every,
            seed=seed,
            per_device_eval_batch_size=64,
        ),
        train_dataset=tokenized(tokenizer, texts),
        eval_dataset=tokenized(tokenizer, eval_texts),
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[monitor, detector],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return trainer.state.log_history


def run_seed(seed: int, args, tokenizer) -> dict[str, list[dict]]:
    rng = np.random.default_rng(seed)
    chain, other = Chain.random(rng), Chain.random(rng)
    eval_texts = [example(t, chain.walk(rng, t)) for t in rng.integers(len(WORDS), size=128)]
    with tempfile.TemporaryDirectory() as tmp:
        cached = Path(args.pretrained, f"seed{seed}_{args.pretrain_steps}.pt") if args.pretrained else None
        if cached is not None and cached.is_file():  # the same pretrained model for several probe settings
            base = pretrain(tokenizer, chain, seed, 0, os.path.join(tmp, "pre"))
            base.load_state_dict(torch.load(cached))
        else:
            base = pretrain(tokenizer, chain, seed, args.pretrain_steps, os.path.join(tmp, "pre"))
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                torch.save(base.state_dict(), cached)
        state = {k: v.clone() for k, v in base.state_dict().items()}
        targets = [chain.walk(rng, int(t)) for t in rng.integers(len(WORDS), size=NUM_TARGETS)]
        streams = {
            "healthy": stream(chain, np.random.default_rng(seed + 1), args.steps, 16),
            "shift": stream(other, np.random.default_rng(seed + 1), args.steps, 16),
            "planted": stream(
                chain,
                np.random.default_rng(seed + 1),
                args.steps,
                16,
                narrow=(targets, args.narrow_start, args.narrow_steps),
            ),
        }
        histories = {}
        for arm, texts in streams.items():
            if arm not in args.arms:
                continue
            base.load_state_dict(state)
            histories[arm] = finetune(base, tokenizer, texts, eval_texts, chain, args, seed, os.path.join(tmp, arm))
    return histories


# --------------------------------------------------------------------------- replay and report


def series(history: list[dict], key: str) -> list[tuple[int, float]]:
    return [(e["step"], e[key]) for e in history if key in e]


def replay(history: list[dict], detectors: list[SeriesDetector]) -> tuple[int | None, int | None, str | None]:
    """First warning step, first collapse step and the series that warned first, as the callback would decide."""
    observed = {d.key: {} for d in detectors}  # key -> {step: [values logged at that step]}
    for e in history:
        for key, by_step in observed.items():
            if key in e:
                by_step.setdefault(e["step"], []).append(e[key])
    for d in detectors:
        d.reset()
        d.max_change = -np.inf
    warn = collapse = None
    first = None
    for step in sorted({e["step"] for e in history}):
        for d in detectors:
            for v in observed[d.key].get(step, []):
                d.update(step, v)
                if d.baseline is not None:
                    d.max_change = max(d.max_change, d.signal.change)
        level = max(d.signal.level for d in detectors)
        if level >= 1 and warn is None:
            warn = step
            first = max(detectors, key=lambda d: d.signal.level).key
        if level == 2 and collapse is None:
            collapse = step
    return warn, collapse, first


def eval_detection(histories: dict[str, dict[str, list[dict]]], start: int) -> tuple[dict[int, int | None], float]:
    """Per seed, the first evaluation after ``start`` whose loss exceeds the value at ``start`` by more than any
    healthy run did."""

    def rise(history):
        losses = dict(series(history, "eval_loss"))
        at_start = losses[max(s for s in losses if s <= start)]
        return {s: (v - at_start) / at_start for s, v in losses.items() if s > start}

    margin = max((max(rise(h["healthy"]).values(), default=0.0) for h in histories.values()), default=0.0)
    found = {}
    for seed, h in histories.items():
        over = [s for s, r in sorted(rise(h["planted"]).items()) if r > margin]
        found[seed] = over[0] if over else None
    return found, margin


def grid() -> list[dict]:
    """Settings tried for each series on its own (collapse at 2.5x the warning level)."""
    settings = []
    for warmup, ema, warn, relative in itertools.product(
        (1, 2, 3), (0.5, 1.0), (0.05, 0.08, 0.1, 0.15, 0.2, 0.3), (True, False)
    ):
        settings.append(dict(warmup=warmup, ema=ema, warn_change=warn, collapse_change=2.5 * warn, relative=relative))
    return settings


def evaluate(histories, make, start) -> dict:
    """Flagged planted runs, false alarms, delays and the worst change any healthy or shifted run reached per series."""
    flagged, false_alarms, delays, collapses, worst = 0, 0, [], 0, {}
    for h in histories.values():
        for arm, history in h.items():
            detectors = make()
            warn, collapse, _ = replay(history, detectors)
            if arm == "planted":
                if warn is not None and warn > start:
                    flagged += 1
                    delays.append(warn - start)
                elif warn is not None:
                    false_alarms += 1  # warned before the narrowing started
                collapses += collapse is not None
            else:
                false_alarms += warn is not None
                for d in detectors:
                    worst[d.key] = max(worst.get(d.key, -np.inf), d.max_change)
    return {"flagged": flagged, "false_alarms": false_alarms, "delays": delays, "collapses": collapses, "worst": worst}


def report_defaults(histories, args, eval_steps, planted: int, quiet_runs: int, widen: float) -> None:
    """The shipped defaults run by run, with the monitor's thresholds widened by ``widen`` (as the callback does for
    fewer than ``REFERENCE_SAMPLES`` samples per evaluation)."""

    def make():
        return [d.widen(widen) if d.key.startswith("qdc/gen/") else d for d in _default_watch()]

    label = (
        "as set"
        if widen == 1
        else f"widened x{widen:.2f}, as the callback does for {args.probes * args.samples} samples"
    )
    print(f"\nthe shipped defaults (CollapseDetectorCallback() watching DEFAULT_WATCH, thresholds {label}), per run:")
    print(
        f"  {'seed':>4s} {'arm':8s} {'warning':>8s} {'collapse':>8s} {'first series':34s} {'eval loss shows it':>18s}"
    )
    for seed, h in histories.items():
        for arm, history in h.items():
            warn, collapse, first = replay(history, make())
            shown = str(eval_steps[seed]) if arm == "planted" else ""
            print(f"  {seed:4d} {arm:8s} {str(warn):>8s} {str(collapse):>8s} {str(first):34s} {shown:>18s}")
    r = evaluate(histories, make, args.narrow_start)
    eval_delays = [eval_steps[s] - args.narrow_start for s in histories if eval_steps[s] is not None]
    margins = ", ".join(
        f"{k.removeprefix('qdc/gen/')} {v:+.3f} "
        f"(warns at {DEFAULT_WATCH[k]['warn_change'] * (widen if k.startswith('qdc/gen/') else 1):.3g})"
        for k, v in r["worst"].items()
    )
    print(
        f"\n  defaults ({label}): {r['flagged']}/{planted} planted runs flagged "
        f"(collapse declared in {r['collapses']}), "
        f"{r['false_alarms']} false alarms in {quiet_runs} healthy and shifted runs  "
        f"{'PASS' if r['flagged'] == planted and r['false_alarms'] == 0 else 'MISS'}"
    )
    if r["delays"]:
        print(
            f"  detection delay after the narrowing starts: mean {np.mean(r['delays']):.0f}, "
            f"max {max(r['delays'])} steps; "
            f"the evaluation loss: mean {np.mean(eval_delays) if eval_delays else float('nan'):.0f} steps"
        )
    print(f"  worst change in a healthy or shifted run: {margins}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning steps per arm")
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=10, help="monitor, log and evaluation cadence")
    parser.add_argument("--narrow-start", type=int, default=80)
    parser.add_argument("--narrow-steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--probes", type=int, default=16, help="probe prompts")
    parser.add_argument("--samples", type=int, default=4, help="samples per probe prompt")
    parser.add_argument(
        "--arms",
        nargs="+",
        default=["healthy", "shift", "planted"],
        choices=["healthy", "shift", "planted"],
        help="fine-tuning arms to run (healthy and shift alone measure false alarms)",
    )
    parser.add_argument(
        "--pretrained",
        help="folder caching each seed's pretrained model, reused by later runs with other probe settings",
    )
    parser.add_argument("--save", help="write the runs' logged series to this JSON file")
    parser.add_argument("--load", help="report on the series saved by --save instead of training")
    parser.add_argument(
        "--smoke", action="store_true", help="1 seed, 40 + 30 steps (checks the code paths, not the figures)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.steps, args.pretrain_steps, args.every, args.narrow_start, args.narrow_steps = (
            1,
            40,
            30,
            5,
            15,
            10,
        )
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    logging.getLogger("qdc_trainer").setLevel(logging.ERROR)  # the detector's own warnings would flood the report
    tokenizer = build_tokenizer()
    start_time = time.perf_counter()
    histories = {}
    if args.load:
        saved = json.loads(Path(args.load).read_text())
        histories = {int(seed): h for seed, h in saved["histories"].items()}
        for name in ("steps", "every", "narrow_start", "narrow_steps", "probes", "samples"):
            setattr(args, name, saved["args"].get(name, getattr(args, name)))
        args.seeds = len(histories)
    for seed in range(args.first_seed, args.first_seed + args.seeds) if not args.load else []:
        t0 = time.perf_counter()
        histories[seed] = run_seed(seed, args, tokenizer)
        print(f"seed {seed}: {len(args.arms)} arms in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.save:
        Path(args.save).write_text(json.dumps({"args": vars(args), "histories": histories}))

    arms = [a for a in ("healthy", "shift", "planted") if all(a in h for h in histories.values())]
    planted = args.seeds if "planted" in arms else 0
    quiet_runs = args.seeds * len([a for a in arms if a != "planted"])
    print(
        f"\n== collapse detector calibration: {args.seeds} seeds ({', '.join(map(str, histories))}) "
        f"x ({', '.join(arms)}), "
        f"{args.steps} steps, {args.probes} probes x {args.samples} samples, "
        f"narrowing from step {args.narrow_start} over {args.narrow_steps} steps =="
    )
    print(
        "\nseries at the start / end of fine-tuning (mean over seeds; quality: share of valid transitions in the "
        "generations under the original chain):"
    )
    for key, _ in [*SERIES, ("qdc/gen/quality", "decrease"), ("eval_loss", "increase")]:
        cells = []
        for arm in arms:
            first = np.mean([series(h[arm], key)[0][1] for h in histories.values()])
            last = np.mean([series(h[arm], key)[-1][1] for h in histories.values()])
            cells.append(f"{arm} {first:.3f}->{last:.3f}")
        print(f"  {key:34s} " + "   ".join(cells))

    eval_steps, margin = {seed: None for seed in histories}, 0.0
    if planted and "healthy" in arms:
        eval_steps, margin = eval_detection(histories, args.narrow_start)
        print(
            f"\nevaluation loss: a planted run shows the narrowing when it rises by more than {margin:.1%} "
            "over its value at "
            f"step {args.narrow_start} (the largest rise of any healthy run)"
        )

    print(
        "\neach series alone, over a grid of settings (warm-up, EMA, warning level, relative or absolute change): "
        "settings that warn in every planted run after the narrowing starts and in no healthy or shifted run"
    )
    for key, direction in SERIES:
        good = []
        for setting in grid():
            r = evaluate(histories, lambda: [SeriesDetector(key, direction, **setting)], args.narrow_start)
            if r["flagged"] == planted and r["false_alarms"] == 0:
                good.append((np.mean(r["delays"]) if r["delays"] else 0.0, setting, r))
        good.sort(key=lambda g: (g[0], -g[1]["warn_change"]))
        line = f"  {key:34s} {len(good):3d} of {len(grid())}"
        if good:
            delay, setting, r = good[0]
            kind = "relative" if setting["relative"] else "absolute"
            line += (
                f"; earliest: warn at {setting['warn_change']} {kind}, warm-up {setting['warmup']}, "
                f"EMA {setting['ema']}"
            )
            line += f": delay {delay:.0f} steps (max {max(r['delays'])})" if r["delays"] else ""
        print(line)

    factor = max(1.0, math.sqrt(REFERENCE_SAMPLES / (args.probes * args.samples)))
    for widen in sorted({1.0, factor}):
        report_defaults(histories, args, eval_steps, planted, quiet_runs, widen)
    print(
        "\neach series of KNOWN_SERIES alone, with its known settings: "
        "false alarms in healthy and shifted runs, worst change"
    )
    for key, settings in KNOWN_SERIES.items():
        if all(series(h[arm], key) for h in histories.values() for arm in arms):
            k = evaluate(histories, lambda: [SeriesDetector(key, **settings)], args.narrow_start)
            print(
                f"  {key:34s} {k['false_alarms']}/{quiet_runs} false alarms, worst change {k['worst'][key]:+.3f} "
                f"(warns at {settings['warn_change']})"
            )
    print(f"\ntotal {time.perf_counter() - start_time:.0f} s")


if __name__ == "__main__":
    main()
