"""Recipe configuration: dataclasses read from a flat YAML file, with command-line flags on top.

A recipe is one flat YAML mapping whose keys are fields of :class:`ModelArguments`,
:class:`DataArguments`, :class:`QDCArguments`, the library's own settings
(:class:`~qdc_trainer.data.weights.QDCSamplerConfig`, keys as its fields: ``tradeoff``, ``update_every``, ...;
:class:`~qdc_trainer.callbacks.generation_metrics.GenerationMonitorConfig`, keys prefixed ``monitor_``:
``monitor_num_samples``, ...) and ``transformers.TrainingArguments`` (TRL's ``SFTConfig`` when
``trainer: trl_sft``). Each setting is declared once, in its dataclass, with its default, help and checks:
the recipe's groups :class:`SamplerArguments` and :class:`MonitorArguments` are made from the library's
dataclasses (:func:`config_arguments`), and :func:`load_config` builds those dataclasses from them
(:attr:`RecipeConfig.sampler`, :attr:`RecipeConfig.monitor`). Flags given after the file override it:
``qdc train --config recipe.yaml --max_steps 5``. An unknown key, a bad value or a missing file raises
:class:`ConfigError` with a message that names the problem.

:func:`read_yaml`, :func:`to_flags`, :func:`check_overrides`, :func:`parse_flags`, :func:`flag_names` and
:func:`hf_parser` are the recipe format's parts, for experiments that read recipes of their own.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
import warnings
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ..callbacks.generation_metrics import GenerationMonitorConfig
from ..data.weights import QDCSamplerConfig
from ..trainer import LOSS_WEIGHTINGS

__all__ = [
    "RENAMED_KEYS",
    "TRAINERS",
    "ConfigError",
    "DataArguments",
    "ModelArguments",
    "GRPOArguments",
    "MonitorArguments",
    "QDCArguments",
    "RecipeConfig",
    "SamplerArguments",
    "check_overrides",
    "config_arguments",
    "config_from_arguments",
    "config_parser",
    "flag_names",
    "hf_parser",
    "load_config",
    "parse_flags",
    "read_yaml",
    "recipe_experiment",
    "to_flags",
]

TRAINERS = ("qdc", "plain", "trl_sft", "grpo")
"""What ``trainer:`` can name: QDCTrainer, the plain transformers Trainer, TRL's SFTTrainer with the QDC mixin, TRL's
GRPOTrainer with the QDC mixin."""


class ConfigError(ValueError):
    """A recipe configuration problem (unknown key, bad value, missing file)."""


@dataclass
class ModelArguments:
    """The model and tokenizer."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "a hub id or local folder for from_pretrained; unset: a tiny GPT-2 built from a config "
            "(random weights) with the built-in task's tokenizer"
        },
    )
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "tokenizer (default: the model's)"})
    n_layer: int = field(default=4, metadata={"help": "layers of the tiny model"})
    n_embd: int = field(default=128, metadata={"help": "width of the tiny model"})
    n_head: int = field(default=4, metadata={"help": "attention heads of the tiny model"})
    model_seed: int = field(default=0, metadata={"help": "seed of the tiny model's random weights"})


@dataclass
class DataArguments:
    """The training data: the built-in arithmetic task, or any dataset with prompt and completion columns."""

    task: Literal["arithmetic", "dataset"] = field(
        default="arithmetic", metadata={"help": "the built-in arithmetic task, or a dataset loaded with load_dataset"}
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "load_dataset path: a hub id, or a builder such as 'json' with data_files"}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "load_dataset configuration name"})
    data_files: str | None = field(default=None, metadata={"help": "local data file(s) for a builder such as 'json'"})
    train_split: str = field(default="train", metadata={"help": "split to train on"})
    eval_split: str | None = field(default=None, metadata={"help": "split for evaluation and probe prompts"})
    prompt_field: str = field(default="prompt", metadata={"help": "column with the prompt (instruction)"})
    completion_field: str = field(default="completion", metadata={"help": "column with the completion (response)"})
    max_train_examples: int | None = field(default=None, metadata={"help": "keep at most this many training examples"})
    max_tokens: int = field(default=128, metadata={"help": "tokens per training example at most"})
    train_size: int = field(default=20000, metadata={"help": "arithmetic: training problems"})
    eval_size: int = field(default=200, metadata={"help": "arithmetic: in-distribution evaluation problems"})
    ood_size: int = field(default=200, metadata={"help": "arithmetic: out-of-distribution problems"})
    noise: float = field(default=0.2, metadata={"help": "arithmetic: share of training solutions with an error"})
    task_seed: int = field(default=0, metadata={"help": "arithmetic: seed of the generated problems"})


@dataclass
class QDCArguments:
    """Which trainer, the scoring, which callbacks (monitor, detector) and the report.

    The sampler's knobs and the monitor's settings are the library's dataclasses (:class:`SamplerArguments`,
    :class:`MonitorArguments`), declared there once."""

    trainer: str = field(
        default="qdc",
        metadata={
            "help": "QDCTrainer, the plain transformers Trainer, TRL's SFTTrainer with the QDC mixin, or TRL's "
            "GRPOTrainer with the QDC mixin (a supervised warm-up, then GRPO with the task's verifier as reward)",
            "choices": list(TRAINERS),
        },
    )
    sampler: bool = field(default=True, metadata={"help": "reweight examples with QDCSampler (trainer qdc or trl_sft)"})
    loss_weighting: str = field(
        default="none", metadata={"help": "QDCTrainer loss weights", "choices": list(LOSS_WEIGHTINGS)}
    )
    quality: Literal["verifier", "none"] = field(
        default="verifier", metadata={"help": "quality score of the training examples (verifier: the task's)"}
    )
    complexity: Literal["length", "steps", "compression", "none"] = field(
        default="steps", metadata={"help": "complexity score of the training examples"}
    )
    embedder: Literal["hashing", "minilm"] = field(
        default="hashing",
        metadata={"help": "embeddings for the clusters: hashed n-grams, or all-MiniLM-L6-v2 (extra 'embeddings')"},
    )
    n_clusters: int = field(default=8, metadata={"help": "k-means clusters of the training examples"})
    monitor: bool = field(default=True, metadata={"help": "add the generation monitor"})
    probes: int = field(default=16, metadata={"help": "monitor: probe prompts (taken from the evaluation data)"})
    detector: bool = field(default=True, metadata={"help": "add the collapse detector"})
    detector_actions: list[str] = field(
        default_factory=lambda: ["log", "warn", "checkpoint", "stop"],
        metadata={"help": "collapse detector actions: log, warn, checkpoint, stop"},
    )
    detector_watch: list[str] | None = field(
        default=None,
        metadata={
            "help": "collapse detector: series to watch, 'key' (calibrated settings) or 'key:decrease' / "
            "'key:increase'; default: the calibrated DEFAULT_WATCH"
        },
    )
    detector_start_step: int = field(
        default=0, metadata={"help": "collapse detector: ignore observations before this step (training from scratch)"}
    )
    final_eval_size: int = field(default=100, metadata={"help": "problems per split in the final greedy evaluation"})
    report: bool = field(default=True, metadata={"help": "write the report (PNG figures and a page) at the end"})
    smoke: bool = field(
        default=False,
        metadata={
            "help": "a few steps on little data (checks that the recipe runs; says nothing of its "
            "results); it overrides the recipe's values, a flag on the command line wins"
        },
    )


def config_arguments(
    config_class: type, *, name: str, title: str, prefix: str = "", exclude: tuple[str, ...] = ()
) -> type:
    """A dataclass of recipe keys made from a library config dataclass: its fields (but ``exclude``), named
    ``prefix + field``, with the same types, defaults and help. The values are checked when
    :func:`config_from_arguments` builds the library's dataclass from them, by that dataclass.

    >>> Monitor = config_arguments(GenerationMonitorConfig, name="M", title="monitor", prefix="monitor_")
    >>> Monitor().monitor_num_samples == GenerationMonitorConfig().num_samples
    True
    """
    hints = typing.get_type_hints(config_class)
    specs = []
    for f in fields(config_class):
        if not f.init or f.name in exclude:
            continue
        default = (
            field(default=f.default, metadata=dict(f.metadata))
            if f.default is not dataclasses.MISSING
            else field(default_factory=f.default_factory, metadata=dict(f.metadata))
        )
        specs.append((prefix + f.name, hints[f.name], default))
    namespace = {
        "_argument_group_name": title,  # HfArgumentParser's heading of the group in --help
        "config_class": config_class,
        "prefix": prefix,
        "__module__": __name__,
    }
    made = dataclasses.make_dataclass(name, specs, namespace=namespace)
    made.__doc__ = f"The recipe keys of :class:`{config_class.__name__}` ({title})."
    return made


def config_from_arguments(arguments: Any, where: str, **fixed: Any) -> Any:
    """The library dataclass of a :func:`config_arguments` group, checked by it; ``fixed`` sets fields the
    recipe does not expose (the seed). A bad value raises :class:`ConfigError` naming the group's keys."""
    values = {f.name.removeprefix(arguments.prefix): getattr(arguments, f.name) for f in fields(arguments)}
    try:
        return arguments.config_class(**values, **fixed)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {arguments._argument_group_name}: {e}") from None


SamplerArguments = config_arguments(
    QDCSamplerConfig,
    name="SamplerArguments",
    title="QDC sampler (QDCSamplerConfig; its seed is the training seed)",
    exclude=("seed",),
)
MonitorArguments = config_arguments(
    GenerationMonitorConfig,
    name="MonitorArguments",
    title="generation monitor (GenerationMonitorConfig, keys prefixed monitor_; its seed is the training seed)",
    prefix="monitor_",
    exclude=("seed", "generation_kwargs"),
)

RENAMED_KEYS = {"monitor_samples": "monitor_num_samples", "monitor_every": "monitor_every_n_steps"}
"""Recipe keys of the previous release and their names now (the monitor's keys are its settings, prefixed
``monitor_``). The old names are still read, with a ``FutureWarning``, until the next release."""


@dataclass
class GRPOArguments:
    """The GRPO recipe (``trainer: grpo``): a supervised warm-up on the task, then GRPO with its verifier as the
    reward. The GRPO stage's own settings (``learning_rate``, ``max_steps``, ``num_generations``,
    ``max_completion_length``, ...) are TRL's ``GRPOConfig`` keys."""

    sft_steps: int = field(
        default=600, metadata={"help": "warm-up: supervised steps on the task's training split (0: none)"}
    )
    sft_learning_rate: float = field(default=3e-3, metadata={"help": "warm-up: learning rate"})
    sft_batch_size: int = field(default=32, metadata={"help": "warm-up: batch size"})
    sft_output_dir: str | None = field(
        default=None,
        metadata={
            "help": "warm-up: where the warmed-up model is saved, and reused when it was made with the same "
            "settings (default <output_dir>/sft; give two recipes the same folder to start them from one model)"
        },
    )
    grpo_prompts: int = field(
        default=0,
        metadata={
            "help": "GRPO's prompts: 0 = the warm-up's training split; N = N fresh problems of the task (their own "
            "random stream, outside the held-out share, no expression the warm-up trained on), so that GRPO can "
            "move held-out accuracy rather than sharpen memorised problems"
        },
    )
    rollout_monitor: bool = field(
        default=True, metadata={"help": "log qdc/rollout/* (diversity and pass@k of GRPO's own rollouts)"}
    )
    eval_samples: int = field(
        default=8, metadata={"help": "k of pass@k in the evaluations before and after GRPO (sampled completions)"}
    )
    eval_temperature: float = field(default=1.0, metadata={"help": "sampling temperature of those evaluations"})


@dataclass
class RecipeConfig:
    """A parsed recipe: the argument groups, where they came from, and the library settings built from them.

    ``sampler`` and ``monitor`` are what :func:`~qdc_trainer.cli.run.train_recipe` passes to ``QDCSampler`` and
    ``GenerationMonitorCallback``; :func:`load_config` sets their seeds to the training seed."""

    model: ModelArguments
    data: DataArguments
    qdc: QDCArguments
    training: Any  # transformers.TrainingArguments, trl.SFTConfig or trl.GRPOConfig
    source: str | None = None
    sampler: QDCSamplerConfig = field(default_factory=QDCSamplerConfig)
    monitor: GenerationMonitorConfig = field(default_factory=GenerationMonitorConfig)
    grpo: GRPOArguments | None = None  # trainer: grpo only


def _training_class(trainer: str) -> type:
    if trainer == "grpo":
        from .._optional import require

        require("trl", "trl", "the grpo trainer")
        from trl import GRPOConfig

        return GRPOConfig
    if trainer == "trl_sft":
        from .._optional import require

        require("trl", "trl", "the trl_sft trainer")
        from trl import SFTConfig

        return SFTConfig
    from transformers import TrainingArguments

    return TrainingArguments


def hf_parser(groups: list[type]) -> Any:
    """An ``HfArgumentParser`` over ``groups`` whose ``error`` raises :class:`ConfigError` instead of exiting."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(groups)

    def error(message: str) -> None:
        raise ConfigError(message)

    parser.error = error  # type: ignore[method-assign]
    return parser


def parse_flags(parser: Any, args: list[str], where: str) -> tuple:
    """The parsed dataclasses; a bad value becomes a :class:`ConfigError` that says where it came from."""
    try:
        return parser.parse_args_into_dataclasses(args=args)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def _groups(trainer: str) -> list[type]:
    extra = [GRPOArguments] if trainer == "grpo" else []
    return [
        ModelArguments,
        DataArguments,
        QDCArguments,
        SamplerArguments,
        MonitorArguments,
        _training_class(trainer),
        *extra,
    ]


def config_parser(trainer: str = "qdc") -> Any:
    """The ``HfArgumentParser`` over the recipe's groups; its ``error`` raises :class:`ConfigError` instead of
    exiting."""
    return hf_parser(_groups(trainer))


def _known_keys(trainer: str) -> set[str]:
    keys: set[str] = set()
    for cls in _groups(trainer):
        keys |= {f.name for f in fields(cls) if f.init}
    return keys


def _defaults(trainer: str) -> dict[str, Any]:
    """Every recipe key's default (None for one made by a factory: those are lists and dicts, never null)."""
    out: dict[str, Any] = {}
    for cls in _groups(trainer):
        for f in fields(cls):
            if f.init:
                out[f.name] = f.default if f.default is not dataclasses.MISSING else None
    return out


def to_flags(mapping: dict[str, Any], where: str, known: set[str], defaults: dict[str, Any] | None = None) -> list[str]:
    """``--key value`` flags for a recipe mapping; a key not in ``known`` raises :class:`ConfigError` with the
    closest known ones. ``key: null`` keeps the key's default; with ``defaults`` (key -> default), it is refused
    for a key whose default is not None, since null would not mean what it says (``seed: null`` would be 42)."""
    flags: list[str] = []
    for key, value in mapping.items():
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see qdc train --help for every key"
            raise ConfigError(f"unknown key {key!r} in {where}{hint}")
        if value is None:
            if defaults is not None and defaults.get(key) is not None:
                raise ConfigError(
                    f"{where}: {key}: null, but {key} has no null value (its default is {defaults[key]!r}): "
                    "give it a value, or leave the key out for the default"
                )
            continue  # the field's default
        if isinstance(value, (list, tuple)):
            flags += [f"--{key}", *[str(v) for v in value]] if value else []
        elif isinstance(value, dict):
            import json

            flags += [f"--{key}", json.dumps(value)]
        else:
            flags += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return flags


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> RecipeConfig:
    """Read a flat YAML recipe, apply ``--key value`` overrides, and return the parsed groups.

    >>> cfg = load_config(None, ["--output_dir", "out", "--max_steps", "3", "--probes", "4", "--tradeoff", "0.3"])
    >>> cfg.training.max_steps, cfg.qdc.probes, cfg.data.task, cfg.sampler.tradeoff
    (3, 4, 'arithmetic', 0.3)
    """
    mapping, where = read_yaml(path)
    if mapping.get("experiment") is not None:
        name = str(mapping["experiment"])
        raise ConfigError(
            f"{where} is the recipe of an experiment (experiment: {name}): run it with "
            f"`qdc {name.replace('_', '-')} --config ...` or `qdc train --config ...`"
        )
    mapping = _renamed_keys(mapping, where)
    overrides = _renamed_flags(list(overrides or []))
    trainer = str(mapping.get("trainer", "qdc"))
    if "--trainer" in overrides:
        trainer = (
            overrides[overrides.index("--trainer") + 1]
            if overrides.index("--trainer") + 1 < len(overrides)
            else trainer
        )
    if trainer not in TRAINERS:
        raise ConfigError(f"trainer={trainer!r} is not one of {TRAINERS}")
    known = _known_keys(trainer)
    flags = to_flags(mapping, where, known, _defaults(trainer))
    check_overrides(overrides, known)
    if trainer == "grpo":
        _check_num_generations(flags + overrides, where)
    if "output_dir" not in mapping and "--output_dir" not in overrides:
        flags += [
            "--output_dir",
            os.path.join("runs", os.path.splitext(os.path.basename(str(path)))[0] if path else "qdc"),
        ]
    model, data, qdc, sampler, monitor, training, *extra = parse_flags(config_parser(trainer), flags + overrides, where)
    grpo = extra[0] if extra else None
    _validate(model, data, qdc, where)
    if grpo is not None:
        _validate_grpo(data, qdc, grpo, training, where)
    _check_reporting(training, where)
    if qdc.smoke:
        keep = flag_names(overrides)
        _shrink(data, (qdc, sampler, monitor), training, keep=keep)
        if grpo is not None:
            _shrink_grpo(grpo, training, keep)
    return RecipeConfig(
        model=model,
        data=data,
        qdc=qdc,
        training=training,
        source=where if path else None,
        sampler=config_from_arguments(sampler, where, seed=training.seed),
        monitor=config_from_arguments(monitor, where, seed=training.seed),
        grpo=grpo,
    )


def _validate_grpo(data: DataArguments, qdc: QDCArguments, grpo: GRPOArguments, training: Any, where: str) -> None:
    if data.task != "arithmetic":
        raise ConfigError(f"{where}: trainer grpo needs task: arithmetic (its verifier is the reward)")
    if qdc.loss_weighting != "none":
        raise ConfigError(f"{where}: loss_weighting needs a loss per example; under trainer grpo leave it at none")
    for name in ("sft_steps", "sft_batch_size", "eval_samples", "grpo_prompts"):
        if getattr(grpo, name) < (0 if name in ("sft_steps", "grpo_prompts") else 1):
            raise ConfigError(f"{where}: {name}={getattr(grpo, name)} is too small")
    if not grpo.sft_learning_rate > 0 or not grpo.eval_temperature > 0:
        raise ConfigError(f"{where}: sft_learning_rate and eval_temperature must be > 0")


def _check_num_generations(flags: list[str], where: str) -> None:
    """``num_generations`` below 2 (the last value given wins), refused before ``GRPOConfig`` divides by it."""
    value = None
    for i, token in enumerate(flags):
        if token == "--num_generations" and i + 1 < len(flags):
            value = flags[i + 1]
        elif token.startswith("--num_generations="):
            value = token.split("=", 1)[1]
    if value is None:
        return
    try:
        number = int(value)
    except ValueError:
        return  # the parser names a value that is not an int
    if number < 2:
        raise ConfigError(
            f"{where}: num_generations={number} must be at least 2: GRPO compares the completions of one prompt "
            "with each other"
        )


GRPO_SMOKE = {"sft_steps": 4, "eval_samples": 2, "num_generations": 2, "max_completion_length": 16}
"""What ``smoke: true`` sets in a GRPO recipe, on top of :data:`SMOKE`."""


def _shrink_grpo(grpo: GRPOArguments, training: Any, keep: set[str]) -> None:
    for name, value in GRPO_SMOKE.items():
        if name not in keep:
            setattr(grpo if hasattr(grpo, name) else training, name, value)
    if not keep & {"generation_batch_size", "steps_per_generation"}:  # GRPOConfig derived them from the old batch
        training.steps_per_generation = training.gradient_accumulation_steps
        training.generation_batch_size = (
            training.per_device_train_batch_size * training.steps_per_generation * max(training.world_size, 1)
        )


def _renamed_keys(mapping: dict[str, Any], where: str) -> dict[str, Any]:
    """The recipe with the keys of :data:`RENAMED_KEYS` under their new names (a ``FutureWarning`` for each)."""
    for old, new in RENAMED_KEYS.items():
        if old in mapping:
            if new in mapping:
                raise ConfigError(f"{where} gives both {old!r} and {new!r}; keep {new!r} (the new name of {old!r})")
            warnings.warn(
                f"{where}: the key {old!r} is now {new!r}; the old name is read until the next release",
                FutureWarning,
                stacklevel=3,
            )
    return {RENAMED_KEYS.get(key, key): value for key, value in mapping.items()}


def _renamed_flags(overrides: list[str]) -> list[str]:
    """The flags with those of :data:`RENAMED_KEYS` under their new names (a ``FutureWarning`` for each)."""
    out = []
    for token in overrides:
        name, sep, value = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        if name in RENAMED_KEYS:
            new = RENAMED_KEYS[name]
            warnings.warn(
                f"the flag --{name} is now --{new}; the old name is read until the next release",
                FutureWarning,
                stacklevel=3,
            )
            token = f"--{new}{sep}{value}"
        out.append(token)
    return out


def read_yaml(path: str | os.PathLike | None) -> tuple[dict[str, Any], str]:
    """The flat mapping of a recipe file (empty without a file) and where it came from, for messages.

    ``path`` is a file, or a packaged recipe's name (``arithmetic/sft_qdc``;
    :func:`~qdc_trainer.cli.recipes.resolve_recipe`).
    """
    if path is None:
        return {}, "the command line"
    import yaml

    from .recipes import resolve_recipe

    given, path = path, resolve_recipe(path)
    if not os.path.isfile(path):
        raise ConfigError(
            f"config file {given} does not exist, and no packaged recipe has that name (`qdc recipes` lists them)"
        )
    with open(path, encoding="utf-8") as f:
        try:
            loaded = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if loaded is None:
        raise ConfigError(
            f"{path} holds no settings (an empty file, or comments only): write the recipe's key: value lines, "
            "or leave --config out to run with the defaults"
        )
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a flat mapping of key: value, not a {type(loaded).__name__}")
    odd = [k for k in loaded if not isinstance(k, str)]
    if odd:
        raise ConfigError(
            f"{path}: the key {odd[0]!r} is a {type(odd[0]).__name__}, not a name: recipe keys are setting names "
            "(max_steps, learning_rate, ...)"
        )
    nested = [k for k, v in loaded.items() if isinstance(v, dict) and k not in ("fsdp_config", "model_init_kwargs")]
    if nested:
        raise ConfigError(f"{path}: recipes are flat key: value files; {nested[0]!r} holds a nested mapping")
    return loaded, str(path)


def check_overrides(overrides: list[str], known: set[str]) -> None:
    """Raise :class:`ConfigError` for a ``--flag`` (or ``--no_flag``) that is not in ``known``, with the closest
    known ones."""
    for token in overrides:
        if (
            token.startswith("--")
            and token[2:].split("=")[0] not in known
            and token[2:].split("=")[0].removeprefix("no_") not in known
        ):
            name = token[2:].split("=")[0]
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f"; did you mean {', '.join('--' + c for c in close)}?" if close else ""
            raise ConfigError(f"unknown flag --{name}{hint}")


def recipe_experiment(path: str | os.PathLike | None) -> str | None:
    """The ``experiment:`` key of a recipe (``"self_improve"``), or None for a training recipe.

    An experiment's recipe is run by that experiment's command (``qdc self-improve``); ``qdc train`` hands it
    over (:func:`qdc_trainer.cli.main.main`).

    >>> recipe_experiment(None) is None
    True
    """
    mapping, where = read_yaml(path)
    name = mapping.get("experiment")
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"{where}: experiment={name!r} must name an experiment (self_improve), or be left out")
    return name


def _validate(model: ModelArguments, data: DataArguments, qdc: QDCArguments, where: str) -> None:
    from ..callbacks.collapse import ACTIONS

    if qdc.detector_watch:
        from ..callbacks.collapse import watch_from_keys

        try:
            watch_from_keys(qdc.detector_watch)
        except ValueError as e:
            raise ConfigError(f"{where}: detector_watch: {e}") from None
    bad = [a for a in qdc.detector_actions if a not in ACTIONS]
    if bad:
        raise ConfigError(f"{where}: detector_actions {bad} are not among {ACTIONS}")
    if data.task == "dataset" and not data.dataset_name:
        raise ConfigError(f"{where}: task 'dataset' needs dataset_name (a hub id, or 'json' with data_files)")
    if data.task == "dataset" and qdc.quality == "verifier":
        raise ConfigError(f"{where}: quality 'verifier' is the arithmetic task's; use quality: none for a dataset")
    if qdc.trainer == "plain" and qdc.sampler:
        qdc.sampler = False  # the plain Trainer has no sampler: that is the point of the baseline
    smallest = {"final_eval_size": 0}
    for name in ("probes", "n_clusters", "final_eval_size"):
        if getattr(qdc, name) < smallest.get(name, 1):
            raise ConfigError(f"{where}: {name}={getattr(qdc, name)} must be at least {smallest.get(name, 1)}")
    if not 0.0 <= data.noise <= 1.0:
        raise ConfigError(f"{where}: noise={data.noise} must be in [0, 1]")


def _check_reporting(training: Any, where: str) -> None:
    """Fail before training when ``report_to`` names an integration whose package is not installed (the Trainer
    would raise only once it starts, after the data are scored)."""
    from transformers.integrations import integration_utils

    missing = []
    for name in [r for r in (training.report_to or []) if r not in ("all", "none")]:
        check = getattr(integration_utils, f"is_{name.replace('-', '_')}_available", None)
        if check is not None and not check():
            missing.append(name)
    if missing:
        hint = (
            "pip install 'qdc-trainer[tensorboard]'"
            if missing == ["tensorboard"]
            else f"pip install {' '.join(missing)}"
        )
        raise ConfigError(
            f"{where}: report_to {missing} is not installed; {hint}, or set report_to: none (or another backend)"
        )


SMOKE = {
    "train_size": 64,
    "eval_size": 8,
    "ood_size": 8,
    "max_train_examples": 64,
    "probes": 2,
    "monitor_num_samples": 2,
    "monitor_max_new_tokens": 16,
    "n_clusters": 2,
    "final_eval_size": 4,
    "max_steps": 4,
    "logging_steps": 2,
    "eval_steps": 2,
    "save_steps": 2,
    "monitor_every_n_steps": 2,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "detector_start_step": 0,
}
"""What ``smoke: true`` sets: a run of a few steps on a little data."""


def flag_names(overrides: list[str]) -> set[str]:
    """The keys given as flags on the command line (``--max_steps 2``, ``--max_steps=2``, ``--no_sampler``)."""
    names = set()
    for token in overrides:
        if token.startswith("--"):
            name = token[2:].split("=")[0]
            names |= {name, name.removeprefix("no_")}
    return names


def _shrink(data: DataArguments, groups: tuple, training: Any, keep: set[str] = frozenset()) -> None:
    """Apply :data:`SMOKE` over the recipe's values; a key given as a flag on the command line (``keep``) wins."""
    for group in (data, *groups, training):
        for name, value in SMOKE.items():
            if name in keep:
                continue
            if hasattr(group, name) and (name != "max_train_examples" or data.task == "dataset"):
                setattr(group, name, value)
    if "num_train_epochs" not in keep:
        training.num_train_epochs = 1
