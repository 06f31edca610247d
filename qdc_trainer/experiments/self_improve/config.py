"""Settings of the self-improvement experiment: :class:`SelfImproveConfig`, what ``smoke`` sets, the arms,
the per-round measurements, the run folder's file names and what the collapse detector watches."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import Any

from ...monitor import PREFIX as GEN_PREFIX

ARMS = ("quality", "qdc", "reservoir", "fixed_pool")
"""The selection rules the experiment can compare (see :mod:`qdc_trainer.experiments.self_improve`)."""

METRICS: dict[str, str] = {
    "valid": "validity of generated examples (share verified correct)",
    "gen_ops": "complexity of valid generated problems (mean operations)",
    "gen_unique": "distinct problems among valid generated examples (share)",
    "data_ops": "complexity of the round's training data (mean operations)",
    "data_unique": "distinct problems in the round's training data (share; the original data: a budget-sized sample)",
    "data_distinct_2": "distinct-2 of the round's training data (the original data: a budget-sized sample)",
    "acc_id": "accuracy, in distribution (held-out problems)",
    "acc_id_ops1": "accuracy, in distribution, 1 operation",
    "acc_id_ops2": "accuracy, in distribution, 2 operations",
    "acc_id_ops3": "accuracy, in distribution, 3 operations",
    "acc_ood": "accuracy, out of distribution (new phrasings)",
    "acc_ood_ops3": "accuracy, out of distribution, 3 operations",
    "per_input_distinct_2": "generation distinct-2 per input (probe samples)",
    "across_input_distinct_2": "generation distinct-2 across inputs (probe samples)",
    "per_input_self_bleu": "generation self-BLEU per input (probe samples; higher = less diverse)",
    "detector": "collapse detector level (0 fine, 1 warning, 2 collapse)",
}
"""Every per-round measurement, with its meaning (the keys of a results row)."""

RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"
CONFIG_FILE = "config.json"
CANDIDATES_FILE = "round0_candidates.jsonl"
DETECTOR_WATCH = (
    f"{GEN_PREFIX}per_input/distinct_2",
    f"{GEN_PREFIX}across_input/distinct_2",
    f"{GEN_PREFIX}per_input/self_bleu",
    "gen_unique:decrease",
)
"""What the collapse detector watches, one observation per round: the probe series with their calibrated
thresholds (:data:`~qdc_trainer.collapse.KNOWN_SERIES`), and the share of distinct problems among the valid
generated examples (a relative drop of 15% warns, 35% is collapse). No accuracy or verifier signal is used."""


@dataclass
class SelfImproveConfig:
    """Settings of :func:`run_self_improvement` (the keys of ``recipes/arithmetic/self_improve.yaml``)."""

    experiment: str = field(
        default="self_improve",
        metadata={
            "help": "marks a self-improvement recipe, so that `qdc train` runs it too",
            "choices": ["self_improve"],
        },
    )
    output_dir: str = field(default="runs/self_improve", metadata={"help": "run folder (results, plots, models)"})
    arms: list[str] = field(
        default_factory=lambda: ["quality", "qdc", "reservoir", "fixed_pool"],
        metadata={"help": f"selection rules to compare, from {ARMS}"},
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "one full repetition per seed"})
    rounds: int = field(default=5, metadata={"help": "generate-select-train rounds after the first training"})
    candidates: int = field(default=2000, metadata={"help": "examples the model generates per round"})
    budget: int = field(default=500, metadata={"help": "examples kept per round (the next training set)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the candidates and probes"})
    seed_examples: int = field(default=4000, metadata={"help": "size of the original training data"})
    seed_noise: float = field(default=0.0, metadata={"help": "share of corrupted examples in the original data"})
    base_steps: int = field(default=1000, metadata={"help": "training steps on the original data"})
    base_learning_rate: float = field(default=3e-3, metadata={"help": "learning rate on the original data"})
    round_steps: int = field(default=100, metadata={"help": "training steps per round"})
    round_learning_rate: float = field(default=3e-4, metadata={"help": "learning rate per round"})
    batch_size: int = field(default=32, metadata={"help": "training batch size"})
    reservoir_share: float = field(
        default=0.25, metadata={"help": "share of the budget from the original data (reservoir arm)"}
    )
    tradeoff: float = field(
        default=0.0, metadata={"help": "QDC trade-off λ of the selection and the sampler (0 diversity .. 1 quality)"}
    )
    complexity_strength: float = field(
        default=0.5, metadata={"help": "weight of complexity in the QDC selection and sampler"}
    )
    n_clusters: int = field(default=16, metadata={"help": "clusters of the candidates (QDC arm)"})
    eval_size: int = field(default=300, metadata={"help": "in-distribution accuracy problems"})
    ood_size: int = field(default=300, metadata={"help": "out-of-distribution accuracy problems"})
    probe_samples: int = field(
        default=8, metadata={"help": "samples per probe prompt (one probe per template opening)"}
    )
    max_new_tokens: int = field(default=100, metadata={"help": "longest generated example, in tokens"})
    generation_batch_size: int = field(default=250, metadata={"help": "sequences per generate call"})
    n_layer: int = field(default=4, metadata={"help": "layers of the tiny model"})
    n_embd: int = field(default=128, metadata={"help": "width of the tiny model"})
    workers: int = field(
        default=2, metadata={"help": "processes running seeds and arms in parallel (one torch thread each)"}
    )
    threads: int = field(
        default=0, metadata={"help": "torch threads per process (0: 1 with several workers, else torch's default)"}
    )
    report: bool = field(default=True, metadata={"help": "write the PNG plots (needs the plot extra)"})
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "discard a previous run in output_dir instead of resuming it (only what qdc self-improve wrote "
            "there; a folder without its config.json, the current folder, its parents, home and / are refused)"
        },
    )
    smoke: bool = field(
        default=False,
        metadata={
            "help": "a tiny run that only checks the machinery (a flag on the command line wins over its settings)"
        },
    )

    def __post_init__(self) -> None:
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms or len(set(self.arms)) != len(self.arms):
            raise ValueError(f"arms={self.arms!r} must be distinct names from {ARMS}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds={self.seeds!r} must be distinct ints >= 0")
        for name in (
            "rounds",
            "candidates",
            "budget",
            "seed_examples",
            "base_steps",
            "round_steps",
            "batch_size",
            "n_clusters",
            "eval_size",
            "ood_size",
            "max_new_tokens",
            "generation_batch_size",
            "workers",
            "n_layer",
            "n_embd",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.probe_samples < 2:
            raise ValueError(f"probe_samples={self.probe_samples} must be at least 2 (diversity needs two samples)")
        if self.budget > self.candidates:
            raise ValueError(f"budget={self.budget} is larger than candidates={self.candidates}")
        for name in ("seed_noise", "reservoir_share", "tradeoff"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1]")
        if self.temperature <= 0 or self.complexity_strength < 0 or self.threads < 0:
            raise ValueError("temperature must be > 0, complexity_strength >= 0 and threads >= 0")
        if self.smoke:
            for name, value in SMOKE.items():
                setattr(self, name, value)


SMOKE: dict[str, Any] = dict(
    seeds=[0],
    rounds=2,
    candidates=48,
    budget=16,
    seed_examples=64,
    base_steps=4,
    round_steps=2,
    batch_size=8,
    n_clusters=4,
    eval_size=12,
    ood_size=6,
    probe_samples=2,
    max_new_tokens=40,
    n_layer=1,
    n_embd=32,
)
"""What ``smoke: true`` sets: every stage runs once on almost nothing."""


# --------------------------------------------------------------------------- reading a recipe


def self_improve_parser() -> Any:
    """The ``HfArgumentParser`` of ``qdc self-improve`` (one group: :class:`SelfImproveConfig`); its ``error``
    raises :class:`~qdc_trainer.cli.config.ConfigError` instead of exiting."""
    from ...cli.config import _hf_parser

    return _hf_parser([SelfImproveConfig])


def load_self_improve_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> SelfImproveConfig:
    """Read a flat YAML self-improvement recipe with ``--key value`` overrides into a :class:`SelfImproveConfig`.

    The recipe format and its errors (:class:`~qdc_trainer.cli.config.ConfigError`) are the training recipes'.

    >>> cfg = load_self_improve_config(None, ["--rounds", "3", "--arms", "quality", "qdc"])
    >>> cfg.rounds, cfg.arms
    (3, ['quality', 'qdc'])
    """
    from ...cli.config import ConfigError, _check_overrides, _flag_names, _parse, _read_yaml, _to_flags

    overrides = list(overrides or [])
    mapping, where = _read_yaml(path)
    known = {f.name for f in fields(SelfImproveConfig)}
    flags = _to_flags(mapping, where, known)
    _check_overrides(overrides, known)
    (cfg,) = _parse(self_improve_parser(), flags + overrides, where)
    given = _flag_names(overrides) & set(SMOKE)
    if cfg.smoke and given:  # a flag on the command line wins over smoke's setting
        (plain,) = _parse(self_improve_parser(), flags + overrides + ["--smoke", "false"], where)
        values = {**dataclasses.asdict(cfg), **{k: getattr(plain, k) for k in given}, "smoke": False}
        try:
            cfg = SelfImproveConfig(**values)  # checked again, with the flags' values
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: {e}") from None
        cfg.smoke = True
    return cfg
