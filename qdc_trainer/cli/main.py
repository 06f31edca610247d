"""The ``qdc`` command line: ``qdc train``, ``qdc profile``, ``qdc report``, ``qdc recipes`` and ``qdc self-improve``.

::

    qdc recipes                                   # the packaged recipes, with a line on each
    qdc train --config arithmetic/sft_qdc [--any_field value ...]   # a packaged recipe's name, or a YAML file
    qdc profile --config arithmetic/sft_qdc       # QDC profile of the recipe's training data
    qdc report runs/sft_qdc [runs/sft_baseline ...]   # plots of one run, or several on the same axes
    qdc self-improve --config arithmetic/self_improve   # the self-improvement experiment

Every recipe key can be given as a flag after the file (flags win). ``qdc train --help``
lists every key with its default; an unknown key or a bad value is an error that names it.
A ``--config`` value that is not a file names a packaged recipe (:mod:`qdc_trainer.cli.recipes`).

``self-improve`` is the experiment's own subcommand: :func:`qdc_trainer.experiments.self_improve.cli.add_command`
adds it to the subparsers (plain composition: an experiment's parser carries its ``run`` function as a default).
``qdc train`` on a recipe that says ``experiment: self_improve`` hands it to that command (:func:`_hand_over`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]

TRAIN_HELP = """Train with a recipe: a flat YAML file of settings, any of which a flag after it overrides.

Keys: the model (model_name_or_path, or a tiny model: n_layer, n_embd, n_head), the data
(task: arithmetic or dataset; dataset_name, data_files, prompt_field, completion_field, ...),
QDC (trainer: qdc, plain or trl_sft; sampler, monitor, probes, detector, ...), the sampler's knobs
(QDCSamplerConfig: tradeoff, update_every, ...), the monitor's settings (GenerationMonitorConfig, prefixed
monitor_: monitor_num_samples, ...) and every transformers TrainingArguments field (output_dir, max_steps,
learning_rate, ...). The run folder gets the model, trainer_state.json, qdc_generations.jsonl, results.json
and report/. One run at a time per folder (a lock, qdc.lock). A fresh run needs a new or empty folder, or
one an earlier qdc run wrote (its marker, qdc_output.json), whose results it replaces once it has started;
the root, home and current folders (and those above them) are refused, and so is a folder with checkpoint-*
folders unless resume_from_checkpoint is set (true: the last checkpoint in output_dir). With smoke: true, a
flag on the command line wins over smoke's settings.
"""


def _add_config_command(
    sub: argparse._SubParsersAction, name: str, help_text: str, description: str
) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name,
        help=help_text,
        description=description,
        add_help=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this message and every recipe key, then exit")
    parser.add_argument(
        "--config", metavar="YAML", help="recipe file (flat key: value), or a packaged recipe's name (qdc recipes)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 2 a configuration error)."""
    parser = argparse.ArgumentParser(
        prog="qdc", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="{train,profile,report,recipes,self-improve}")
    train = _add_config_command(sub, "train", "train with a recipe", TRAIN_HELP)
    profile = _add_config_command(
        sub,
        "profile",
        "QDC profile of a recipe's training data",
        "Score the training data of a recipe (quality, complexity, clusters) as `qdc train` would, and write\n"
        "figures (distributions, cluster sizes, a quality-diversity scatter with its frontier) and a page\n"
        "to <output_dir>/profile. Takes the same keys as `qdc train`.",
    )
    report = sub.add_parser(
        "report",
        help="plots of one or more runs",
        description=(
            "Plot the qdc/... series of runs from their logs (trainer_state.json): diversity, complexity,\n"
            "sampler telemetry, with collapse warnings marked. Several folders are compared on the same axes."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders written by qdc train (or any Trainer)")
    report.add_argument(
        "--out",
        metavar="DIR",
        help="where to write the report (default: RUN_DIR/report for one run, else ./qdc_report)",
    )
    report.add_argument("--labels", nargs="+", metavar="LABEL", help="one label per run (default: folder names)")
    recipes = sub.add_parser(
        "recipes",
        help="list the packaged recipes",
        description="List the recipes that ship with the package (run one with `qdc train --config NAME`).",
    )
    recipes.add_argument("--show", metavar="NAME", help="print the recipe NAME, to copy and edit")
    from ..experiments.self_improve.cli import add_command as add_self_improve

    add_self_improve(sub)  # the experiment adds its own subcommand

    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "report":
        if rest:
            report.error(f"unrecognized arguments: {' '.join(rest)}")
        return _report(args)
    if args.command == "recipes":
        if rest:
            recipes.error(f"unrecognized arguments: {' '.join(rest)}")
        return _recipes(args)
    if args.command == "train" and not args.help and args.config:
        experiment = _experiment_of(args.config)
        if experiment is not None:
            return _hand_over(sub, experiment, args, rest)
    if hasattr(args, "run"):  # an experiment's subcommand runs itself
        return args.run(sub.choices[args.command], args, rest)
    command = train if args.command == "train" else profile
    from .config import ConfigError, config_parser, load_config

    if args.help:
        return _help(command, config_parser())

    try:
        cfg = load_config(args.config, rest)
    except ConfigError as err:
        return _error(args.command, err)
    from .run import profile_recipe, train_recipe

    try:
        if args.command == "train":
            result = train_recipe(cfg)
            if _is_main():  # under accelerate launch, one process prints
                print("results: " + ", ".join(_fmt(k, v) for k, v in result["results"].items()))
            print(f"\nrun folder: {result['output_dir']}")
            if result.get("report"):
                print(f"report: {result['report']}")
        else:
            page = profile_recipe(cfg)
            print(f"profile: {page}")
    except (ValueError, FileNotFoundError) as err:
        return _error(args.command, err)
    _end_distributed()
    return 0


def _end_distributed() -> None:
    """Under ``accelerate launch``: wait for every process, then destroy the process group that the Trainer's
    accelerator created, so that no backend thread outlives the interpreter (a gloo rank whose group is left
    alive can abort at exit with 'terminate called without an active exception')."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _help(command: argparse.ArgumentParser, settings: argparse.ArgumentParser) -> int:
    """A subcommand's help, then every recipe key of its settings parser."""
    command.print_help()
    print("\nrecipe keys (YAML keys, or flags after the file):")
    print(settings.format_help().split("\n", 2)[-1])
    return 0


def _error(command: str, err: Exception | str) -> int:
    print(f"qdc {command}: error: {err}", file=sys.stderr)
    return 2


def _experiment_of(path: str) -> str | None:
    """The ``experiment:`` key of a recipe, None for a training recipe (or one :func:`load_config` will refuse)."""
    from .config import ConfigError, recipe_experiment

    try:
        return recipe_experiment(path)
    except ConfigError:
        return None  # load_config reports the problem


def _hand_over(sub: argparse._SubParsersAction, experiment: str, args: argparse.Namespace, rest: list[str]) -> int:
    """``qdc train --config R`` where R says ``experiment: <name>``: run the command of that name (``self_improve``
    -> ``qdc self-improve``) on R, as if it had been typed. This is the one place where the command line reads a
    recipe to choose what to run."""
    command = experiment.replace("_", "-")
    parser = sub.choices.get(command)
    if parser is None or parser.get_default("run") is None:
        known = sorted(name for name, p in sub.choices.items() if p.get_default("run") is not None)
        return _error(
            "train", f"{args.config}: experiment={experiment!r} is none of {[k.replace('-', '_') for k in known]}"
        )
    return parser.get_default("run")(parser, args, rest)


def _is_main() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _fmt(key: str, value: object) -> str:
    return f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"


def _recipes(args: argparse.Namespace) -> int:
    from .recipes import format_recipes, packaged_recipes, resolve_recipe

    if args.show is None:
        print(format_recipes())
        return 0
    path = resolve_recipe(args.show)
    if path not in {str(p) for p in packaged_recipes().values()}:
        return _error("recipes", f"no packaged recipe is named {args.show!r}; `qdc recipes` lists them")
    with open(path, encoding="utf-8") as f:
        print(f.read(), end="")
    return 0


def _report(args: argparse.Namespace) -> int:
    import os

    from ..report import write_run_report

    if args.labels and len(args.labels) != len(args.runs):
        return _error("report", f"{len(args.labels)} labels for {len(args.runs)} runs")
    out = args.out or (os.path.join(args.runs[0], "report") if len(args.runs) == 1 else "qdc_report")
    try:
        page = write_run_report(args.runs, out, labels=args.labels)
    except (ValueError, FileNotFoundError) as err:
        return _error("report", err)
    print(f"report: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
