"""The whole run: :func:`run_self_improvement` (settings check, resuming, ``--overwrite``) and the process pool
that runs the seeds' first models and their arms (worker processes send their log records back to this one)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..._io import read_json, write_json
from .config import CONFIG_FILE, METRICS, RESULTS_FILE, RUN_SETTINGS_IGNORED, TABLE_FILE, SelfImproveConfig
from .results import summarize, write_results
from .rounds import _arm_job, _base_job

logger = logging.getLogger(__name__)
PROGRESS_LOGGER = "qdc_trainer.experiments.self_improve"
"""The logger the rounds report progress to (INFO, one line per round)."""


def run_self_improvement(cfg: SelfImproveConfig) -> dict[str, Any]:
    """Run every seed and arm in its modes (resuming finished ones), write the table and plots and summarize.

    A folder can be filled in parts: commands that differ only in ``seeds``, ``arms``, ``modes`` or the
    process settings (:data:`~.config.RUN_SETTINGS_IGNORED`) share its finished seeds and arms; any other
    difference is refused. The table and plots cover this command's seeds and arms.

    Returns ``{"rows", "summary", "table", "figures", "output_dir"}``.
    """
    out = Path(cfg.output_dir)
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUN_SETTINGS_IGNORED}
    stored = out / CONFIG_FILE
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {str(out)!r} is a file, not a folder: choose another output_dir")
    if stored.is_file() and not cfg.overwrite:
        previous = read_json(stored, "start afresh with --overwrite true, or choose another output_dir")
        current = json.loads(json.dumps(settings))
        if previous != current:
            changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
            raise ValueError(
                f"{out} holds a run with other settings ({', '.join(changed)}); choose another "
                "output_dir or pass --overwrite true"
            )
    if cfg.overwrite and out.exists():
        _remove_previous_run(out)
    if cfg.report:
        from ..._optional import require

        require("matplotlib", "plot", "the plots (report: true)")
    out.mkdir(parents=True, exist_ok=True)
    write_json(stored, settings)
    start = time.perf_counter()
    cfg_dict = dataclasses.asdict(cfg)
    if cfg.workers > 1:
        cfg_dict["threads"] = cfg.threads or 1
    variants = cfg.variants()
    results = _run_jobs(cfg_dict, cfg.seeds, variants, cfg.workers)
    rows = [row for arm_rows in results for row in arm_rows]
    write_json(out / RESULTS_FILE, rows)
    table, figures = write_results(rows, out, plots=cfg.report, settings=settings)
    summary = summarize(rows)
    summary["seconds"] = time.perf_counter() - start
    logger.debug("%s\ntable: %s", summary["text"], table)
    return {
        "rows": rows,
        "summary": summary,
        "table": str(table),
        "figures": [str(f) for f in figures],
        "output_dir": str(out),
    }


_RUN_KEYS = ("rounds", "candidates", "budget")
"""Keys every ``config.json`` written by :func:`run_self_improvement` holds: its run marker."""


def _is_run_folder(out: Path) -> bool:
    """Whether ``out`` holds a run of :func:`run_self_improvement`: its ``config.json`` is a JSON object with the
    experiment's settings (a model folder's ``config.json`` is not), or a ``config.json`` that is cut short next to
    the run's ``seed<k>`` folders, each with its ``base.json`` (a run killed while an earlier version wrote it)."""
    import re

    try:
        stored = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        seeds = [p for p in out.iterdir() if re.fullmatch(r"seed\d+", p.name) and p.is_dir()]
        return bool(seeds) and all((p / "base.json").is_file() or (p / "tokenizer").is_dir() for p in seeds)
    except OSError:
        return False
    return isinstance(stored, dict) and all(k in stored for k in _RUN_KEYS)


def _run_outputs(out: Path) -> list[Path]:
    """What a run wrote into ``out``, by name: its settings, results, table and figures, and its ``seed<k>`` folders."""
    import re

    names = {CONFIG_FILE, RESULTS_FILE, TABLE_FILE, "overview.png", *(f"{m}.png" for m in METRICS)}
    return sorted(
        p
        for p in out.iterdir()
        if (p.name in names and p.is_file()) or (re.fullmatch(r"seed\d+", p.name) and p.is_dir())
    )


def _remove_previous_run(out: Path) -> None:
    """``--overwrite true``: delete what an earlier run wrote into ``out``, and nothing else.

    Refuses (``ValueError``) the current folder, any folder above it, the home folder and its parents, the
    filesystem root, a path that is not a folder, and a non-empty folder without the run marker (``config.json``
    with the experiment's settings). Other files in a run folder are kept (and logged).
    """
    import shutil

    where = out.resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    protected = [
        (where == Path(where.anchor), "the filesystem root"),
        (cwd == where or where in cwd.parents, "the current folder or a folder above it"),
        (home == where or where in home.parents, "the home folder or a folder above it"),
    ]
    for hit, what in protected:
        if hit:
            raise ValueError(
                f"--overwrite true: output_dir {str(out)!r} is {what}; qdc self-improve never deletes "
                "it. Choose a folder of its own (e.g. --output_dir runs/self_improve)"
            )
    if not out.is_dir():
        raise ValueError(f"--overwrite true: output_dir {str(out)!r} is not a folder; choose another output_dir")
    if not any(out.iterdir()):
        return
    if not _is_run_folder(out):
        raise ValueError(
            f"--overwrite true: {str(out)!r} holds no self-improvement run (no {CONFIG_FILE} written by "
            "qdc self-improve), so nothing in it was written by this tool; refusing to delete it. "
            "Choose a new or empty output_dir, or delete the folder yourself"
        )
    log = logging.getLogger(__name__)
    for path in _run_outputs(out):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    kept = sorted(p.name for p in out.iterdir())
    log.warning(
        "--overwrite true: removed the earlier run in %s%s",
        out,
        f"; kept what it did not write: {', '.join(kept)}" if kept else "",
    )


def _run_jobs(
    cfg_dict: dict[str, Any], seeds: Sequence[int], variants: Sequence[tuple[str, str]], workers: int
) -> list[list[dict]]:
    """Each seed's first model, then its arms in their modes; with several workers an arm starts as soon as its
    seed's first model is ready. Returns the rows of each (seed, arm, mode) in the order (seed, variant)."""
    from tqdm.auto import tqdm

    total = len(seeds) * (1 + len(variants))
    if workers <= 1:
        out = []
        with tqdm(total=total, desc="first models and arms") as bar:
            for seed in seeds:
                _base_job(cfg_dict, seed)
                bar.update()
                for arm, mode in variants:
                    out.append(_arm_job(cfg_dict, seed, arm, mode))
                    bar.update()
        return out
    import logging.handlers
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    done: dict[tuple[int, str, str], list[dict]] = {}
    context = multiprocessing.get_context("spawn")
    records = context.Queue()
    listener = logging.handlers.QueueListener(records, _Forward())
    listener.start()
    level = logging.getLogger(PROGRESS_LOGGER).getEffectiveLevel()
    try:
        with (
            ProcessPoolExecutor(
                max_workers=min(workers, total),
                mp_context=context,
                initializer=_worker_logging,
                initargs=(records, level),
            ) as pool,
            tqdm(total=total, desc="first models and arms") as bar,
        ):
            pending = {pool.submit(_base_job, cfg_dict, seed): (seed, None, None) for seed in seeds}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    seed, arm, mode = pending.pop(future)
                    result = future.result()  # re-raises a worker's error
                    bar.update()
                    if arm is None:
                        pending.update({pool.submit(_arm_job, cfg_dict, seed, a, m): (seed, a, m) for a, m in variants})
                    else:
                        done[(seed, arm, mode)] = result
    finally:
        listener.stop()
    return [done[(seed, arm, mode)] for seed in seeds for arm, mode in variants]


class _Forward:
    """Hands a worker's log record to this process's logger of the same name (and so to its handlers)."""

    def handle(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)


def _worker_logging(records: Any, level: int) -> None:
    """In a worker process: send the experiment's log records at ``level`` and above to the parent."""
    import logging.handlers

    progress = logging.getLogger(PROGRESS_LOGGER)
    progress.setLevel(level)
    progress.handlers[:] = [logging.handlers.QueueHandler(records)]
    progress.propagate = False
