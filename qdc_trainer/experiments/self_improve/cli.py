"""``qdc self-improve``: the experiment's own subcommand, added to the ``qdc`` command line by
:func:`add_command` (``qdc_trainer.cli.main`` calls it; nothing else registers commands)."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["COMMAND", "add_command", "run_command"]

COMMAND = "self-improve"
"""The subcommand's name; a recipe with ``experiment: self_improve`` names it too (``qdc train`` hands it over)."""

HELP = """Run the self-improvement experiment: rounds of (the model writes examples, the verifier checks
them, a selection rule keeps a fixed budget, the model trains on it), one arm per selection rule (quality:
most confident verified; qdc: budgeted QDC selection + QDCSampler; star: the model solves new problems,
select_budget keeps the verified; control: fresh data of the task; replay: the original data again;
reservoir; fixed_pool; frontier, frontier_rat and solved: new problems solved solve_k times each, verified
solutions kept by the problem's pass rate p̂, with p̂(1-p̂) or uniformly, frontier_rat adding rationalization),
each in its data modes (replace, accumulate, accumulate_fixed, mix), for several seeds. With frontier arms the
summary checks a headroom gate first (replay flat, new data >= 30%, control - replay >= 3 standard errors).
The run folder gets results.md, results.json, one PNG per metric and overview.png. A finished seed and arm
is reused when a command with the same settings runs again (other seeds, arms or modes may be added);
--overwrite true starts afresh, deleting only what an earlier run wrote there (a folder without its
config.json, the current folder, its parents, home and / are refused). --rebuild RUN_DIR writes a finished
run's results.md and figures again from its results.json and config.json.
"""


def add_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``self-improve`` to the ``qdc`` command's subparsers; the parser's default ``run`` is :func:`run_command`.

    >>> parser = argparse.ArgumentParser(prog="qdc")
    >>> command = add_command(parser.add_subparsers(dest="command"))
    >>> args, rest = parser.parse_known_args(["self-improve", "--config", "si.yaml", "--rounds", "2"])
    >>> args.command, args.config, args.run is run_command, rest
    ('self-improve', 'si.yaml', True, ['--rounds', '2'])
    """
    parser = subparsers.add_parser(
        COMMAND,
        help="the self-improvement experiment",
        description=HELP,
        add_help=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this message and every recipe key, then exit")
    parser.add_argument("--config", metavar="YAML", help="recipe file (flat key: value)")
    parser.add_argument(
        "--rebuild",
        metavar="RUN_DIR",
        help="write results.md and the figures of a finished run again from its results.json and config.json",
    )
    parser.set_defaults(run=run_command)
    return parser


def run_command(parser: argparse.ArgumentParser, args: argparse.Namespace, rest: list[str]) -> int:
    """Run ``qdc self-improve`` (``args.help``, ``args.config``, ``args.rebuild``, the other flags in ``rest``);
    returns the exit code (0 success, 2 a configuration error). Prints one line per round (the experiment's
    log), the summary and where the results are."""
    from ...cli.config import ConfigError
    from .config import load_self_improve_config, self_improve_parser

    if args.help:
        parser.print_help()
        print("\nrecipe keys (YAML keys, or flags after the file):")
        print(self_improve_parser().format_help().split("\n", 2)[-1])
        return 0
    if getattr(args, "rebuild", None):  # `qdc train` hands a recipe over with its own arguments (no --rebuild)
        return _rebuild(args.rebuild, rest)
    try:
        cfg = load_self_improve_config(args.config, rest)
    except ConfigError as err:
        return _error(err)
    from .run import PROGRESS_LOGGER, run_self_improvement

    progress = logging.getLogger(PROGRESS_LOGGER)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = progress.level
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    try:
        result = run_self_improvement(cfg)
    except (ValueError, FileNotFoundError) as err:
        return _error(err)
    finally:
        progress.removeHandler(handler)
        progress.setLevel(level)
    print(result["summary"]["text"])
    print(f"\ntable: {result['table']}")
    print(f"run folder: {result['output_dir']}")
    return 0


def _rebuild(run_dir: str, rest: list[str]) -> int:
    from .results import rebuild

    if rest:
        return _error(ValueError(f"--rebuild takes no other flags, got {' '.join(rest)}"))
    try:
        table, figures = rebuild(run_dir)
    except (OSError, ValueError, KeyError) as err:
        return _error(ValueError(f"--rebuild {run_dir}: {err}"))
    print(f"table: {table}")
    print(f"figures: {len(figures)} in {table.parent}")
    return 0


def _error(err: Exception) -> int:
    print(f"qdc {COMMAND}: error: {err}", file=sys.stderr)
    return 2
