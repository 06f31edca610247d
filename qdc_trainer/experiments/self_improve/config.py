"""Settings of the self-improvement experiment: :class:`SelfImproveConfig`, what ``smoke`` sets, the arms and
data modes, the per-round measurements, the run folder's file names and what the collapse detector watches.

The selection's and the QDC sampler's knobs (``tradeoff``, ``complexity_strength``, ``complexity_target``, ...)
are :class:`~qdc_trainer.data.weights.QDCSamplerConfig`'s, declared there once: ``SelfImproveConfig.sampler``
holds one, and a recipe names its fields as flat keys next to the experiment's own (all but ``seed``: the
experiment seeds the selection and the sampler per seed, round and arm).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from ...callbacks.generation_metrics import PREFIX as GEN_PREFIX
from ...data.weights import QDCSamplerConfig

ARMS = ("quality", "qdc", "reservoir", "fixed_pool", "star", "control", "replay", "frontier", "frontier_rat", "solved")
"""The selection rules the experiment can compare (see :mod:`qdc_trainer.experiments.self_improve`)."""

FRONTIER_ARMS = ("frontier", "frontier_rat", "solved")
"""The arms that separate problems from solutions: each candidate problem is solved ``solve_k`` times, and its
pass rate p̂ (the verified share) decides how its verified solutions are kept (:func:`.sampling.choose_frontier`)."""

FRONTIER_WEIGHTS = ("variance", "unsolved")
"""How the ``frontier`` arms weight a problem's verified solutions by its pass rate p̂: ``variance`` p̂(1 − p̂)
(highest at p̂ = 1/2, zero for problems always or never solved), ``unsolved`` 1 − p̂."""

MODES = ("replace", "accumulate", "accumulate_fixed", "mix")
"""What a round trains on: only its own kept data (``replace``); the original data and every round's kept data
so far (``accumulate``); a uniform sample of that pool as large as the original data (``accumulate_fixed``); the
round's kept data plus a uniform sample of that pool sized so that the kept data is ``new_share`` of it (``mix``:
the new data keeps a fixed, large share of every round whatever the pool's size)."""

TRAIN_SAMPLERS = ("arm", "uniform")
"""How a round's data is drawn in training: ``arm`` (the ``qdc`` arm with :class:`~qdc_trainer.data.QDCSampler`,
every other arm uniformly: the first experiment's design) or ``uniform`` (every arm uniformly, so that the
selection is the only difference between arms)."""

METRICS: dict[str, str] = {
    "valid": "validity of generated examples (share verified correct)",
    "gen_ops": "complexity of valid generated problems (mean operations)",
    "gen_unique": "distinct problems among valid generated examples (share)",
    "data_ops": "complexity of the round's training data (mean operations)",
    "data_unique": "distinct problems in the round's training data (share of a budget-sized sample)",
    "data_distinct_2": "distinct-2 of the round's training data (a budget-sized sample)",
    "data_size": "examples in the round's training data",
    "acc_id": "accuracy, in distribution (held-out problems, greedy)",
    "acc_id_ops1": "accuracy, in distribution, 1 operation",
    "acc_id_ops2": "accuracy, in distribution, 2 operations",
    "acc_id_ops3": "accuracy, in distribution, 3 operations",
    "acc_ood": "accuracy, out of distribution (new phrasings, greedy)",
    "acc_ood_ops3": "accuracy, out of distribution, 3 operations",
    "pass_at_1": "pass@1, in distribution (samples at the temperature)",
    "pass_at_k": "pass@k, in distribution (k = pass_k samples per problem)",
    "never_solved": "held-out problems never solved in pass_k samples (share)",
    "per_input_distinct_2": "generation distinct-2 per input (probe samples)",
    "across_input_distinct_2": "generation distinct-2 across inputs (probe samples)",
    "per_input_self_bleu": "generation self-BLEU per input (probe samples; higher = less diverse)",
    "detector": "collapse detector level (0 fine, 1 warning, 2 collapse)",
    "filled": "rows of the round's budget filled from the original data (selection kept fewer than the budget)",
    "new_share": "share of the round's training data that is new (kept this round and not from the original data)",
    "kept_p_hat": "mean pass rate p̂ of the problems whose solutions were kept (frontier arms)",
    "rationales": "verified rationales kept this round (frontier_rat: solutions written with the answer as a hint)",
}
"""Every per-round measurement, with its meaning (the keys of a results row besides seed, round, arm, mode)."""

TITLES: dict[str, str] = {
    "valid": "valid generated examples",
    "gen_ops": "operations, generated problems",
    "gen_unique": "distinct generated problems",
    "data_ops": "operations, training data",
    "data_unique": "distinct problems, training data",
    "data_distinct_2": "distinct-2, training data",
    "data_size": "training examples per round",
    "acc_id": "accuracy, in distribution",
    "acc_id_ops1": "accuracy ID, 1 operation",
    "acc_id_ops2": "accuracy ID, 2 operations",
    "acc_id_ops3": "accuracy ID, 3 operations",
    "acc_ood": "accuracy, new phrasings (OOD)",
    "acc_ood_ops3": "accuracy OOD, 3 operations",
    "pass_at_1": "pass@1, in distribution",
    "pass_at_k": "pass@k, in distribution",
    "never_solved": "never solved in k samples",
    "per_input_distinct_2": "probe distinct-2 per input",
    "across_input_distinct_2": "probe distinct-2 across inputs",
    "per_input_self_bleu": "probe self-BLEU per input",
    "filled": "budget filled from the original data",
    "new_share": "new data, share of the round's data",
    "kept_p_hat": "pass rate p̂ of the kept problems",
    "rationales": "rationales kept",
}
"""Short panel titles for the plots (the long meanings are in :data:`METRICS` and the table's footnote)."""

RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"
CONFIG_FILE = "config.json"
CANDIDATES_FILE = "round0_candidates.jsonl"
DETECTOR_WATCH = (
    f"{GEN_PREFIX}across_input/distinct_2",
    "gen_unique:decrease",
)
"""What the collapse detector watches by default, one observation per round: the probes' across-input
distinct-2 with its calibrated thresholds (:data:`~qdc_trainer.callbacks.series.KNOWN_SERIES`), and the share of
distinct problems among the valid generated examples (a relative drop of 15% warns, 35% is collapse). No accuracy
signal is used. The per-input probe series are left out: on a task with one right answer per prompt the samples
of one prompt should converge as the model learns (the earlier run warned on the QDC arm from per-input
self-BLEU while its accuracy held); ``detector_watch`` puts them back."""

RUN_SETTINGS_IGNORED = ("experiment", "arms", "modes", "seeds", "workers", "threads", "report", "overwrite")
"""Settings that do not change any one seed and arm's results: a run folder can be filled in parts (other seeds,
other arms) by commands that differ only in these."""


@dataclass
class SelfImproveConfig:
    """Settings of :func:`run_self_improvement` (the keys of the packaged recipe ``arithmetic/self_improve``).

    ``sampler`` holds the selection's and the QDC sampler's knobs; a recipe gives them as flat keys.
    """

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
        metadata={"help": f"selection rules from {ARMS}; 'arm/mode' runs that arm in one mode only"},
    )
    modes: list[str] = field(
        default_factory=lambda: ["replace"],
        metadata={"help": f"data modes from {MODES}: every arm named alone runs in each"},
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "one full repetition per seed"})
    rounds: int = field(default=5, metadata={"help": "generate-select-train rounds after the first training"})
    candidates: int = field(default=2000, metadata={"help": "examples the model generates per round"})
    budget: int = field(default=500, metadata={"help": "examples kept per round"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of candidates, probes, pass@k"})
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
    target_original: bool = field(
        default=False,
        metadata={
            "help": "qdc and star arms: set complexity_target to the original data's mean complexity (the "
            "selection's and the sampler's pull towards the original mix) instead of a fixed number"
        },
    )
    solve_k: int = field(
        default=8,
        metadata={
            "help": "frontier arms: samples per candidate problem (candidates // solve_k problems a round); the "
            "verified share is the problem's pass rate p̂"
        },
    )
    per_problem_cap: int = field(
        default=2, metadata={"help": "frontier arms: most distinct verified solutions kept per problem"}
    )
    frontier_weight: str = field(
        default="variance",
        metadata={
            "help": "frontier arms: weight of a problem's solutions from its pass rate p̂: variance p̂(1-p̂), "
            "unsolved 1-p̂",
            "choices": list(FRONTIER_WEIGHTS),
        },
    )
    new_share: float = field(
        default=0.4, metadata={"help": "mix mode: share of each round's training data that is the round's kept data"}
    )
    fill_budget: bool = field(
        default=False,
        metadata={
            "help": "fill a round's shortfall (selection kept fewer than budget) from the original data, so that "
            "every arm keeps exactly budget rows (the row's `filled` counts them)"
        },
    )
    train_sampler: str = field(
        default="arm",
        metadata={
            "help": "arm: the qdc arm trains with QDCSampler, the others uniformly; uniform: every arm uniformly",
            "choices": list(TRAIN_SAMPLERS),
        },
    )
    n_clusters: int = field(default=16, metadata={"help": "clusters of the candidates (qdc and star arms)"})
    eval_size: int = field(default=300, metadata={"help": "in-distribution accuracy problems (greedy)"})
    ood_size: int = field(default=300, metadata={"help": "out-of-distribution accuracy problems (greedy)"})
    pass_size: int = field(default=100, metadata={"help": "held-out problems sampled pass_k times each (pass@k)"})
    pass_k: int = field(default=8, metadata={"help": "samples per problem for pass@k and the never-solved share"})
    probe_samples: int = field(
        default=8, metadata={"help": "samples per probe prompt (one probe per template opening)"}
    )
    max_new_tokens: int = field(default=100, metadata={"help": "longest generated example, in tokens"})
    generation_batch_size: int = field(default=250, metadata={"help": "sequences per generate call"})
    n_layer: int = field(default=4, metadata={"help": "layers of the tiny model"})
    n_embd: int = field(default=128, metadata={"help": "width of the tiny model"})
    detector_watch: list[str] = field(
        default_factory=lambda: list(DETECTOR_WATCH),
        metadata={"help": "series the collapse detector watches: 'qdc/gen/<scope>/<metric>' or '<column>:decrease'"},
    )
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
    sampler: QDCSamplerConfig = field(
        default_factory=QDCSamplerConfig,
        metadata={"help": "the selection's and the QDC sampler's knobs (flat keys in a recipe)"},
    )

    def __post_init__(self) -> None:
        if isinstance(self.sampler, dict):
            self.sampler = QDCSamplerConfig(**self.sampler)
        if not isinstance(self.sampler, QDCSamplerConfig):
            raise TypeError(f"sampler must be a QDCSamplerConfig, got {type(self.sampler).__name__}")
        if not self.modes or len(set(self.modes)) != len(self.modes) or any(m not in MODES for m in self.modes):
            raise ValueError(f"modes={self.modes!r} must be distinct names from {MODES}")
        variants = self.variants()  # checks the arms
        if len(set(variants)) != len(variants):
            raise ValueError(f"arms={self.arms!r} name the same arm and mode twice")
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
            "pass_size",
            "pass_k",
            "max_new_tokens",
            "generation_batch_size",
            "workers",
            "n_layer",
            "n_embd",
            "solve_k",
            "per_problem_cap",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.probe_samples < 2:
            raise ValueError(f"probe_samples={self.probe_samples} must be at least 2 (diversity needs two samples)")
        if self.budget > self.candidates:
            raise ValueError(f"budget={self.budget} is larger than candidates={self.candidates}")
        for name in ("seed_noise", "reservoir_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1]")
        if not 0.0 < self.new_share <= 1.0:
            raise ValueError(f"new_share={self.new_share} must be in (0, 1]")
        if self.frontier_weight not in FRONTIER_WEIGHTS:
            raise ValueError(f"frontier_weight={self.frontier_weight!r} must be one of {FRONTIER_WEIGHTS}")
        if self.train_sampler not in TRAIN_SAMPLERS:
            raise ValueError(f"train_sampler={self.train_sampler!r} must be one of {TRAIN_SAMPLERS}")
        if any(arm in FRONTIER_ARMS for arm, _ in variants) and self.candidates < self.solve_k:
            raise ValueError(
                f"candidates={self.candidates} is less than solve_k={self.solve_k}: the frontier arms solve "
                "candidates // solve_k problems, so at least one"
            )
        if self.temperature <= 0 or self.threads < 0:
            raise ValueError("temperature must be > 0 and threads >= 0")
        if self.target_original and self.sampler.complexity_target is not None:
            raise ValueError(
                f"target_original=true and complexity_target={self.sampler.complexity_target} both set the "
                "complexity target: choose one"
            )
        from ...callbacks.series import watch_from_keys

        watch_from_keys(list(self.detector_watch))  # an unknown series raises here, not after the first model
        if self.smoke:
            for name, value in SMOKE.items():
                setattr(self, name, value)

    def variants(self) -> list[tuple[str, str]]:
        """The (arm, mode) pairs this run covers, in the order of ``arms`` (an arm named alone: each of ``modes``).

        >>> SelfImproveConfig(arms=["qdc", "quality/accumulate"], modes=["replace", "accumulate"]).variants()
        [('qdc', 'replace'), ('qdc', 'accumulate'), ('quality', 'accumulate')]
        """
        out = []
        for item in self.arms:
            arm, _, mode = item.partition("/")
            if arm not in ARMS or (mode and mode not in MODES):
                raise ValueError(f"arms={self.arms!r}: {item!r} is not an arm of {ARMS} (or arm/mode, modes {MODES})")
            out += [(arm, mode)] if mode else [(arm, m) for m in self.modes]
        if not out:
            raise ValueError(f"arms={self.arms!r} must name at least one arm")
        return out


def variant_name(arm: str, mode: str) -> str:
    """How tables, plots and file names call an arm in a mode.

    >>> variant_name("qdc", "accumulate")
    'qdc/accumulate'
    """
    return f"{arm}/{mode}"


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
    pass_size=4,
    pass_k=2,
    probe_samples=2,
    max_new_tokens=40,
    n_layer=1,
    n_embd=32,
)
"""What ``smoke: true`` sets: every stage runs once on almost nothing."""


# --------------------------------------------------------------------------- reading a recipe

_SAMPLER_EXCLUDED = ("seed",)
"""QDCSamplerConfig fields a recipe does not set: the experiment derives the seed per seed, round and arm."""


def _recipe_views() -> tuple[type, type]:
    """The recipe's two groups of keys, made from the dataclasses that declare them
    (:func:`~qdc_trainer.cli.config.config_arguments`): the experiment's own settings, and the selection's and
    sampler's knobs."""
    from ...cli.config import config_arguments

    return (
        config_arguments(
            SelfImproveConfig, name="SelfImproveSettings", title="self-improvement experiment", exclude=("sampler",)
        ),
        config_arguments(
            QDCSamplerConfig,
            name="SelectionAndSamplerSettings",
            title="selection and QDC sampler (QDCSamplerConfig; its seed is the experiment's, per seed and round)",
            exclude=_SAMPLER_EXCLUDED,
        ),
    )


def self_improve_parser() -> Any:
    """The ``HfArgumentParser`` of ``qdc self-improve``: the experiment's keys, then the selection's and sampler's
    (:class:`~qdc_trainer.data.weights.QDCSamplerConfig`, all but ``seed``); its ``error`` raises
    :class:`~qdc_trainer.cli.config.ConfigError` instead of exiting."""
    return _parser(_recipe_views())


def _parser(views: tuple[type, type]) -> Any:
    """An ``HfArgumentParser`` over the recipe groups ``views``."""
    from ...cli.config import hf_parser

    return hf_parser(list(views))


def load_self_improve_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> SelfImproveConfig:
    """Read a flat YAML self-improvement recipe with ``--key value`` overrides into a :class:`SelfImproveConfig`.

    The recipe format and its errors (:class:`~qdc_trainer.cli.config.ConfigError`) are the training recipes'.

    >>> cfg = load_self_improve_config(None, ["--rounds", "3", "--arms", "quality", "qdc", "--tradeoff", "0"])
    >>> cfg.rounds, cfg.arms, cfg.sampler.tradeoff
    (3, ['quality', 'qdc'], 0.0)
    """
    from ...cli.config import (
        ConfigError,
        check_overrides,
        config_from_arguments,
        flag_names,
        parse_flags,
        read_yaml,
        to_flags,
    )

    overrides = list(overrides or [])
    mapping, where = read_yaml(path)
    views = _recipe_views()
    known = {f.name for view in views for f in fields(view)}
    flags = to_flags(mapping, where, known)
    check_overrides(overrides, known)
    settings, knobs = parse_flags(_parser(views), flags + overrides, where)
    sampler = config_from_arguments(knobs, where)
    values = {f.name: getattr(settings, f.name) for f in fields(settings)}
    smoke = values["smoke"]
    if smoke:  # smoke sets its sizes; a flag on the command line wins over smoke's setting
        given = flag_names(overrides) & set(SMOKE)
        values.update({k: v for k, v in SMOKE.items() if k not in given}, smoke=False)
    try:
        cfg = SelfImproveConfig(**values, sampler=sampler)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None
    cfg.smoke = smoke
    return cfg
